"""Offline commands and generators: ``lint``, ``simulate``; ``generate`` writes every
generated file (``crdgen``'s CRDs, ``docgen``'s README tables, the packaged catalogue,
``rbacgen``'s step-actions ClusterRole for tenants)."""
