"""The Alertmanager payloads under ``tests/data`` (see its README): captured from the
real Alertmanager 0.25 that the tests run, and built for 0.34 from its source. A live
capture checks that Alertmanager 0.25 still sends what was captured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fixtures.alertmanager import CAPTURE_TOKEN, capture_notifications

DATA = Path(__file__).parents[1] / "data"


def body(version: str, status: str) -> bytes:
    return (DATA / f"alertmanager-{version}-{status}.json").read_bytes()


def without_external_url(raw: bytes) -> list[tuple[str, Any]]:
    """The body's fields in order, but ``externalURL`` (it names a free port)."""
    return [(k, v) for k, v in json.loads(raw).items() if k != "externalURL"]


def test_alertmanager_025_still_sends_what_was_captured(tmp_path: Path) -> None:
    firing, resolved = capture_notifications(tmp_path)

    for posted, status in ((firing, "firing"), (resolved, "resolved")):
        assert without_external_url(posted.body) == without_external_url(body("0.25", status))
        assert [list(a) for a in posted.json()["alerts"]] == [
            list(a) for a in json.loads(body("0.25", status))["alerts"]
        ]
        assert posted.headers["user-agent"].startswith("Alertmanager/0.25")
        assert posted.headers["content-type"] == "application/json"
        assert posted.headers["authorization"] == f"Bearer {CAPTURE_TOKEN}"
