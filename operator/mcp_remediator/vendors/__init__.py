"""Thin clients for the systems the actions talk to besides Kubernetes.

One module per vendor; each turns settings and Secret references into a connection and
the vendor's errors into step failures. Imported by the action modules only.
"""
