"""Offline commands and generators: ``lint``, ``simulate``, ``crdgen``, ``docgen``."""
