"""Field labels (testing/fields.py, events.py) as the real registries' GetAttrs give them."""

from __future__ import annotations

from mcp_remediator.testing import events, fields, scale


def test_a_core_events_source_falls_back_to_its_reporting_controller() -> None:
    event = {"metadata": {"name": "e", "namespace": "mcp"}, "reportingController": "ctl"}
    assert events.core_fields(event)["source"] == "ctl"
    event["source"] = {"component": "kubelet"}
    assert events.core_fields(event)["source"] == "kubelet"


def test_more_built_in_kinds_have_their_field_labels() -> None:
    assert "spec.unschedulable" in fields.labels("v1", "nodes")
    assert fields.values("v1", "nodes", {"metadata": {"name": "n"}})["spec.unschedulable"] == (
        "false"
    )
    assert fields.values("batch/v1", "jobs", {"metadata": {}})["status.successful"] == "0"
    assert "status.replicas" in fields.labels("v1", "replicationcontrollers")
    # A custom resource's absent field is "", not a Go zero value.
    assert fields.values("x/v1", "things", {"metadata": {}}, ["status.replicas"]) == {
        "metadata.name": "",
        "metadata.namespace": "",
        "status.replicas": "",
    }


def test_a_label_selector_is_written_sorted_by_key() -> None:
    selector = {"matchLabels": {"z": "1"}, "matchExpressions": [
        {"key": "a", "operator": "In", "values": ["y", "x"]},
        {"key": "m", "operator": "Exists"}]}  # fmt: skip
    assert scale.selector_text(selector) == "a in (x,y),m,z=1"
