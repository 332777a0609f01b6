"""`mcp-remediator lint` is at least as strict as the API server: the CRD's own schema
(types, enums, bounds, required and unknown fields) with the field's path and line, then
the operator's checks, refusals of templated steps included, in the document's namespace.
"""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from mcp_remediator.cli import main
from mcp_remediator.settings import Settings
from mcp_remediator.tools import crdschema
from mcp_remediator.tools.lint import lint_paths

ROOT = Path(__file__).parents[2]
SETTINGS = Settings()

RUNBOOK = """\
apiVersion: mcp.dese.ai/v1alpha1
kind: McpRunbook
metadata:
  name: x
  namespace: mcp
spec:
  target: {namespace: "{{ labels.namespace }}"}
  steps:
    - name: restart
      action: rolloutRestart
      params: {name: finbot}
"""


def lint(tmp_path: Path, text: str, namespace: str = "default") -> tuple[int, list[str]]:
    path = tmp_path / "x.yaml"
    path.write_text(textwrap.dedent(text))
    out = io.StringIO()
    code = lint_paths([str(path)], SETTINGS, out, namespace)
    return code, [line.replace(f"{path}:", "x.yaml:") for line in out.getvalue().splitlines()]


def test_a_valid_runbook_passes(tmp_path: Path) -> None:
    assert lint(tmp_path, RUNBOOK) == (0, ["x.yaml:1: McpRunbook/x: ok", "1 checked, 0 invalid"])


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
      (
        '      retries: "2"\n',
        "x.yaml:12: McpRunbook/x: InvalidType: spec.steps[0].retries: "
        "expected integer, got string '2'",
      ),
      (
        "      retries: 11\n",
        "x.yaml:12: McpRunbook/x: InvalidValue: spec.steps[0].retries: must be at most 10, got 11",
      ),
      (
        "      continueOnFailure: 1\n",
        "x.yaml:12: McpRunbook/x: InvalidType: spec.steps[0].continueOnFailure: "
        "expected boolean, got integer 1",
      ),
      (
        '  guardrails:\n    dryRun: "yes"\n',
        "x.yaml:13: McpRunbook/x: InvalidType: spec.guardrails.dryRun: "
        "expected boolean, got string 'yes'",
      ),
      (
        "  guardrails:\n    cooldownSeconds: 60\n    maxPerHuor: 3\n",
        "x.yaml:14: McpRunbook/x: UnknownField: spec.guardrails.maxPerHuor: unknown field",
      ),
      (
        "      retry: 3\n",
        "x.yaml:12: McpRunbook/x: UnknownField: spec.steps[0].retry: unknown field",
      ),
      (
        "  specs: {}\n",
        "x.yaml:12: McpRunbook/x: UnknownField: spec.specs: unknown field",
      ),
      (
        "    - name: Not_A_Label\n      action: redisPing\n",
        "x.yaml:12: McpRunbook/x: InvalidValue: spec.steps[1].name: must match "
        "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$, got 'Not_A_Label'",
      ),
      (
        "    - action: redisPing\n",
        "x.yaml:12: McpRunbook/x: MissingField: spec.steps[1].name: required field missing",
      ),
      (
        "  triggers: [{alertname: ''}]\n",
        "x.yaml:12: McpRunbook/x: InvalidValue: spec.triggers[0].alertname: "
        "must be at least this many characters: 1, got ''",
      ),
      (
        "      timeoutSeconds: 300\n      timeoutSeconds: 30\n",
        "x.yaml:13: McpRunbook/x: DuplicateField: spec.steps[0].timeoutSeconds: given twice "
        "(the API server refuses duplicate fields)",
      ),
    ],
    ids=[
        "quoted-integer", "above-maximum", "integer-for-boolean", "quoted-boolean",
        "misspelled-guardrail", "misspelled-step-field", "unknown-top-field", "bad-step-name",
        "missing-step-name", "empty-alertname", "duplicate-field",
    ],
)  # fmt: skip
def test_what_the_api_server_refuses_or_drops_is_an_error_at_its_line(
    tmp_path: Path, extra: str, expected: str
) -> None:
    code, lines = lint(tmp_path, RUNBOOK + extra)

    assert code == 1
    assert lines == [expected, "1 checked, 1 invalid"]


def test_metadata_is_checked_as_the_api_server_checks_it(tmp_path: Path) -> None:
    text = RUNBOOK.replace(
        "  namespace: mcp\n",
        "  namespace: Team_A\n  lables: {app: x}\n  labels: {tier: 1}\n",
    )
    code, lines = lint(tmp_path, text)

    assert code == 1
    assert lines == [
        "x.yaml:7: McpRunbook/x: InvalidType: metadata.labels.tier: expected string, got integer 1",
        "x.yaml:6: McpRunbook/x: UnknownField: metadata.lables: unknown field",
        "x.yaml:5: McpRunbook/x: InvalidValue: metadata.namespace: must match "
        "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$, got 'Team_A'",
        "1 checked, 1 invalid",
    ]


def test_remediations_are_strict_too(tmp_path: Path) -> None:
    code, lines = lint(
        tmp_path,
        """\
        apiVersion: mcp.dese.ai/v1alpha1
        kind: McpRemediation
        metadata: {name: by-hand, namespace: mcp}
        spec:
          runbookRef: {name: redis-down}
          dryRun: "yes"
          aproved: true
        """,
    )
    assert code == 1
    assert lines == [
        "x.yaml:7: McpRemediation/by-hand: UnknownField: spec.aproved: unknown field",
        "x.yaml:6: McpRemediation/by-hand: InvalidType: spec.dryRun: expected boolean, got "
        "string 'yes'",
        "1 checked, 1 invalid",
    ]


def test_an_unknown_action_names_the_known_ones_at_its_line(tmp_path: Path) -> None:
    code, lines = lint(tmp_path, RUNBOOK.replace("action: rolloutRestart", "action: flushAll"))
    assert code == 1
    assert lines[0].startswith(
        "x.yaml:10: McpRunbook/x: UnknownAction: spec.steps[0].action: unknown action "
        "'flushAll' (known: argocdSync, httpHealthCheck, "
    )


def test_the_operators_own_problems_point_at_the_step(tmp_path: Path) -> None:
    text = RUNBOOK + "    - {name: ping, action: redisPing, params: {nope: 1}}\n"
    code, lines = lint(tmp_path, text)
    assert code == 1
    assert lines[0] == (
        "x.yaml:12: McpRunbook/x: InvalidParams: step ping (redisPing): nope: Extra inputs "
        "are not permitted"
    )


# -- refusals of templated steps ------------------------------------------------------------

KYVERNO_STEP = """\
    - name: relax
      action: patchResource
      params:
        apiVersion: kyverno.io/v1
        kind: ClusterPolicy
        name: "{{ labels.policy }}"
        mergePatch: {spec: {validationFailureAction: Audit}}
"""


def test_a_templated_write_to_kyverno_is_refused_on_its_literal_fields(tmp_path: Path) -> None:
    code, lines = lint(tmp_path, RUNBOOK + KYVERNO_STEP)
    assert code == 1
    assert lines == [
        "x.yaml:12: McpRunbook/x: ManualKyvernoOverrideRefused: step relax: refused: writing "
        "kyverno.io/ClusterPolicy/{{ labels.policy }} would override Kyverno by hand; Kyverno "
        "policy changes go through the GitOps repository (policies/kyverno) and Argo CD, "
        "never through the operator",
        "1 checked, 1 invalid",
    ]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        # literal kind outside MCP_PATCH_ALLOWED_KINDS, templated name: refused
        ('{kind: Secret, name: "{{ labels.secret }}", mergePatch: {a: b}}', "KindNotAllowed"),
        # templated kind: may render an allowed one, left to the run
        ('{kind: "{{ labels.kind }}", name: cm, mergePatch: {a: b}}', None),
        # literal protected namespace, templated name: refused
        ('{namespace: kube-system, name: "{{ labels.cm }}", mergePatch: {a: b}}',
         "ProtectedNamespace"),
        # templated namespace: left to the run
        ('{namespace: "{{ labels.ns }}", name: cm, mergePatch: {a: b}}', None),
        # PolicyException in any group is Kyverno's
        ('{apiVersion: "{{ labels.v }}", kind: PolicyException, name: x, mergePatch: {a: b}}',
         "ManualKyvernoOverrideRefused"),
    ],
    ids=["literal-kind", "templated-kind", "literal-namespace", "templated-namespace",
         "policy-exception"],
)  # fmt: skip
def test_templated_patches_are_refused_only_for_what_is_literal(
    tmp_path: Path, params: str, reason: str | None
) -> None:
    step = f"    - {{name: patch, action: patchResource, params: {params}}}\n"
    code, lines = lint(tmp_path, RUNBOOK + step)
    if reason is None:
        assert (code, lines[-1]) == (0, "1 checked, 0 invalid")
    else:
        assert code == 1
        assert lines[0].startswith(f"x.yaml:12: McpRunbook/x: {reason}: step patch: refused")


def test_a_literal_host_is_refused_whatever_the_templated_path(tmp_path: Path) -> None:
    step = (
        "    - {name: get, action: httpRequest, "
        'params: {url: "http://evil.example:8080/{{ labels.module }}/x"}}\n'
        "    - {name: get2, action: httpRequest, "
        'params: {url: "http://{{ labels.host }}:8080/x"}}\n'
    )
    code, lines = lint(tmp_path, RUNBOOK + step)
    assert code == 1
    assert lines == [
        "x.yaml:12: McpRunbook/x: HostNotAllowed: step get: refused: host evil.example:8080 "
        "is not in the allowed hosts (MCP_HTTP_ALLOWED_HOSTS)",
        "1 checked, 1 invalid",
    ]


# -- the namespace steps run in -------------------------------------------------------------

REMEDIATION = """\
apiVersion: mcp.dese.ai/v1alpha1
kind: McpRemediation
metadata: {{name: by-hand{namespace}}}
spec:
  steps:
    - {{name: restart, action: rolloutRestart, params: {{name: "{{{{ labels.app }}}}"}}}}
"""
PROTECTED = (
    "x.yaml:6: McpRemediation/by-hand: ProtectedNamespace: step restart: refused: namespace "
    "{0} is protected (MCP_PROTECTED_NAMESPACES); not writing deployments/{{{{ labels.app }}}} "
    "in namespace {0}"
)


def test_inline_steps_are_checked_in_the_remediations_namespace(tmp_path: Path) -> None:
    own = REMEDIATION.format(namespace=", namespace: kube-system")
    # No remediation runs in a protected namespace at all; its steps are refused there too.
    assert PROTECTED.format("kube-system") in lint(tmp_path, own, namespace="mcp")[1]
    given = REMEDIATION.format(namespace="")
    assert PROTECTED.format("kube-public") in lint(tmp_path, given, namespace="kube-public")[1]
    assert lint(tmp_path, given)[0] == 0  # "default"


def test_a_runbook_without_a_target_is_checked_in_its_own_namespace(tmp_path: Path) -> None:
    text = RUNBOOK.replace("  namespace: mcp\n", "  namespace: kube-system\n").replace(
        '  target: {namespace: "{{ labels.namespace }}"}\n', ""
    )
    code, lines = lint(tmp_path, text)
    assert code == 1
    assert any(
        line.startswith("x.yaml:8: McpRunbook/x: ProtectedNamespace: step restart:")
        for line in lines
    )


def test_the_cli_takes_the_namespace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(REMEDIATION.format(namespace=""))
    assert main(["lint", str(path)]) == 0
    assert main(["lint", "--namespace", "kube-system", str(path)]) == 1
    assert "ProtectedNamespace" in capsys.readouterr().out


def test_a_revision_git_does_not_track_is_reported_when_the_application_is_linted_too(
    tmp_path: Path,
) -> None:
    text = """\
    apiVersion: argoproj.io/v1alpha1
    kind: Application
    metadata: {name: dese-api, namespace: argocd}
    spec:
      project: default
      source: {repoURL: "https://git.example/deploy.git", path: apps/api, targetRevision: main}
      destination: {server: "https://kubernetes.default.svc", namespace: mcp}
    ---
    apiVersion: mcp.dese.ai/v1alpha1
    kind: McpRunbook
    metadata: {name: sync, namespace: mcp}
    spec:
      steps:
        - {name: pinned, action: argocdSync, params: {application: dese-api, revision: main}}
        - {name: branch, action: argocdSync,
           params: {application: dese-api, revision: some-branch}}
        - {name: elsewhere, action: argocdSync,
           params: {application: not-linted, revision: some-branch}}
    """
    code, lines = lint(tmp_path, text)
    assert code == 1
    assert lines[0] == (
        "x.yaml:16: McpRunbook/sync: RevisionOverrideRefused: steps[1].params.revision: "
        "'some-branch' is not what Git has Application dese-api track ('main'): the step "
        "would be refused; change targetRevision in Git, or omit revision"
    )
    assert lines[1:] == ["1 checked, 1 invalid"]


def test_the_shipped_catalogue_and_samples_pass() -> None:
    out = io.StringIO()
    code = lint_paths(
        [str(ROOT / "manifests" / "runbooks"), str(ROOT / "manifests" / "samples")], SETTINGS, out
    )
    assert code == 0, out.getvalue()


# -- the schema translation -----------------------------------------------------------------


def test_openapi_specifics_are_translated_to_json_schema() -> None:
    schema = crdschema.json_schema(
        {
            "type": "object",
            "properties": {
                "a": {"type": "string", "nullable": True},
                "b": {"x-kubernetes-int-or-string": True},
                "c": {"type": "integer", "minimum": 0, "exclusiveMinimum": True},
                "d": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "e": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        }
    )
    assert schema == {
        "type": "object",
        "properties": {
            "a": {"type": ["string", "null"]},
            "b": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
            "c": {"type": "integer", "exclusiveMinimum": 0},
            "d": {"type": "object"},
            "e": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": False,
    }


def test_the_schema_is_the_one_of_the_generated_crds() -> None:
    import yaml

    for kind, plural in (("McpRunbook", "mcprunbooks"), ("McpRemediation", "mcpremediations")):
        crd = yaml.safe_load((ROOT / "crds" / f"mcp.dese.ai_{plural}.yaml").read_text())
        on_disk = crdschema.json_schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
        in_use = crdschema.validator(kind).schema
        assert on_disk["properties"]["spec"] == in_use["properties"]["spec"]
