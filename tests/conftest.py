"""Shared fixtures: each fixture module under tests/fixtures/ is registered here."""

pytest_plugins = [
    "fixtures.alert_chain",
    "fixtures.cluster",
    "fixtures.redis_server",
]
