"""Shared fixtures: each fixture module under tests/fixtures/ is registered here.

Modules that other fixture modules import come first, so that pytest registers (and
assertion-rewrites) each one before anything imports it.
"""

pytest_plugins = [
    "fixtures.cluster",
    "fixtures.redis_server",
    "fixtures.prometheus",
    "fixtures.http_mock",
    "fixtures.actions",
    "fixtures.alert_chain",
    "fixtures.gitops",
    "fixtures.hypothesis_profiles",
]
# Test data, not tests: the Kubernetes Python client's e2e suite there runs in a subprocess
# (integration/test_python_client_e2e.py).
collect_ignore = ["data"]
