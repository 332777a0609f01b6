"""``mcp-remediator lint PATH…``: offline validation of runbooks for a GitOps repo's CI.

Checks every McpRunbook and McpRemediation document in the given YAML files (directories
are searched for ``*.yaml``/``*.yml``) in two passes, each problem printed as
``file:line: Kind/name: Reason: message``:

1. The CRD's own schema, strictly (``tools.crdschema``): what the API server would refuse
   (a wrong type, enum or bound, a missing field: HTTP 422) and what it would silently
   drop (an unknown or misspelled field), plus fields given twice; the line is the
   field's own.
2. On a document that fits its schema, the operator's own checks, with the same code the
   operator uses (``runbook.validation``): actions, params, templates, refusals (for
   templated steps too, on their literal fields), matchers. Steps are checked against
   the namespace they would run in: a runbook's ``target.namespace``, else (like an
   McpRemediation's inline steps) the document's ``metadata.namespace``, else
   ``--namespace`` (default ``default``).

A valid document may still get warnings, ``file:line: Kind/name: warning: Reason: message``,
which do not make it invalid: ``onFailure.revert: true`` on a runbook none of whose steps
can be reverted (``RevertNothingReversible``).

Whatever a document holds, it gets such lines, never a traceback (a check that fails
unexpectedly is the problem ``ValidationFailed``), each kept on one line.

Exit codes: 0 all valid, 1 problems found, 2 nothing to lint or unreadable input.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

from mcp_remediator.actions import REGISTRY
from mcp_remediator.errors import Refused
from mcp_remediator.kube import refusals
from mcp_remediator.models import API_VERSION, RemediationSpec
from mcp_remediator.runbook.validation import (
    Problem,
    check_runbook,
    check_steps,
    pydantic_message,
    unexpected,
)
from mcp_remediator.settings import Settings
from mcp_remediator.tools import crdschema
from mcp_remediator.vendors import argocd

KINDS = ("McpRunbook", "McpRemediation")
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class Document:
    path: Path
    line: int
    body: dict[str, Any]
    node: yaml.Node | None = None  # the composed YAML, for the lines of fields

    def _meta(self, key: str) -> str | None:
        meta = self.body.get("metadata")
        value = meta.get(key) if isinstance(meta, dict) else None
        return value if isinstance(value, str) and value else None

    @property
    def namespace(self) -> str | None:
        return self._meta("namespace")

    def at(self, line: int) -> str:
        return f"{self.path}:{line}: {self.body.get('kind')}/{self._meta('name') or '?'}"

    @property
    def label(self) -> str:
        return self.at(self.line)

    def where(self, path: crdschema.Path) -> str:
        """The label, with the line of the field at ``path`` (the document's when unknown)."""
        return self.at(crdschema.line(self.node, path, self.line))


def yaml_files(paths: Iterable[str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        else:
            yield path


def documents(path: Path) -> Iterator[Document]:
    """Every mapping document of a YAML file, with its first line number and its nodes."""
    text = path.read_text()
    for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
        if node is None:
            continue
        body = yaml.safe_load(yaml.serialize(node))
        if isinstance(body, dict):
            yield Document(path, node.start_mark.line + 1, body, node)


def _in_spec(problems: Iterable[Problem]) -> list[Problem]:
    return [Problem(p.reason, p.message, ("spec", *p.path)) for p in problems]


# (namespace, name) of an Argo CD Application → the revision it tracks in Git
Tracked = dict[tuple[str, str], str]


def tracked_revisions(docs: Iterable[Document], settings: Settings) -> Tracked:
    """The Argo CD Applications among the linted documents (a GitOps repo holds them
    beside the runbooks) and what each tracks."""
    tracked: Tracked = {}
    for doc in docs:
        body = doc.body
        if body.get("kind") != "Application" or not str(body.get("apiVersion", "")).startswith(
            "argoproj.io/"
        ):
            continue
        name = doc._meta("name")
        if name is not None:
            key = (doc.namespace or settings.argocd_namespace, name)
            tracked[key] = argocd.tracked_revision(body)
    return tracked


def revision_problems(doc: Document, settings: Settings, tracked: Tracked) -> list[Problem]:
    """``argocdSync`` steps whose ``revision`` is not what Git has their Application
    track: refused at run time (``RevisionOverrideRefused``), reported here first."""
    spec = doc.body.get("spec")
    steps = spec.get("steps") if isinstance(spec, dict) else None
    problems = []
    for index, step in enumerate(steps if isinstance(steps, list) else []):
        params = step.get("params") if isinstance(step, dict) else None
        if not isinstance(params, dict) or step.get("action") != "argocdSync":
            continue
        revision, app = params.get("revision"), params.get("application")
        namespace = params.get("argocdNamespace") or settings.argocd_namespace
        if not isinstance(revision, str) or not isinstance(app, str) or "{{" in revision + app:
            continue
        wanted = tracked.get((str(namespace), app))
        if wanted is not None and revision != wanted:
            problems.append(
                Problem(
                    argocd.REVISION_OVERRIDE,
                    f"steps[{index}].params.revision: {revision!r} is not what Git has "
                    f"Application {app} track ({wanted!r}): the step would be refused; "
                    "change targetRevision in Git, or omit revision",
                    ("spec", "steps", index, "params", "revision"),
                )
            )
    return problems


def check_document(
    doc: Document,
    settings: Settings,
    namespace: str = DEFAULT_NAMESPACE,
    tracked: Tracked | None = None,
) -> list[Problem]:
    """Every problem of one McpRunbook or McpRemediation; each ``path`` is from the
    document's root. ``namespace``: the document's when its metadata names none;
    ``tracked``: the Applications linted beside it. Never raises."""
    try:
        # On a document that is otherwise valid (its steps have the shape they must).
        return _check_document(doc, settings, namespace) or revision_problems(
            doc, settings, tracked or {}
        )
    except Exception as exc:
        return [unexpected("document", exc)]


def _check_document(doc: Document, settings: Settings, namespace: str) -> list[Problem]:
    body = doc.body
    if body.get("apiVersion") != API_VERSION:
        return [Problem("WrongApiVersion", f"apiVersion must be {API_VERSION}", ("apiVersion",))]
    problems = [
        Problem(
            "DuplicateField",
            f"{crdschema.show(path)}: given twice (the API server refuses duplicate fields)",
            path,
        )
        for path, _ in crdschema.duplicate_keys(doc.node)
    ]
    problems.extend(
        Problem(v.reason, f"{crdschema.show(v.path)}: {v.message}", v.path)
        for v in crdschema.violations(body)
    )
    if problems:
        return problems
    if doc._meta("name") is None:
        return [Problem("MissingName", "metadata.name is required", ("metadata",))]
    spec = body["spec"]
    namespace = doc.namespace or namespace
    if body["kind"] == "McpRunbook":
        return _in_spec(check_runbook(spec, settings, namespace))
    try:
        remediation = RemediationSpec.model_validate(spec, strict=True)
    except ValidationError as exc:
        return [Problem("InvalidSpec", pydantic_message(exc), ("spec",))]
    if (remediation.runbookRef is None) == (not remediation.steps):
        return [Problem("InvalidSpec", "give exactly one of spec.runbookRef or spec.steps")]
    if remediation.runbookRef is not None and remediation.serviceAccountName:
        return [
            Problem(
                "InvalidSpec",
                "spec.serviceAccountName is for inline steps; a run of a runbook acts as the "
                "runbook's spec.serviceAccountName",
                ("spec", "serviceAccountName"),
            )
        ]
    problems = []
    try:
        refusals.check_run_namespace(settings, namespace)
    except Refused as exc:
        problems.append(Problem(exc.reason, exc.message, ("metadata",)))
    return problems + _in_spec(check_steps(remediation.steps, settings, namespace))


def warnings(doc: Document) -> list[Problem]:
    """What is valid but does not do what its author means (on a valid document)."""
    spec = doc.body.get("spec")
    if doc.body.get("kind") != "McpRunbook" or not isinstance(spec, dict):
        return []
    if (spec.get("onFailure") or {}).get("revert") is not True:
        return []
    steps = [s for s in spec.get("steps") or [] if isinstance(s, dict)]
    actions = [REGISTRY.get(str(s.get("action"))) for s in steps]
    if any(a is not None and a.revert is not None for a in actions):
        return []
    reversible = sorted(name for name, a in REGISTRY.items() if a.revert is not None)
    return [
        Problem(
            "RevertNothingReversible",
            "onFailure.revert: none of the steps can be reverted (reversible actions: "
            f"{', '.join(reversible)}): a failed run reverts nothing",
            ("spec", "onFailure", "revert"),
        )
    ]


def one_line(text: str) -> str:
    """``text`` with every character that is not printable (a line break in a name, a
    control character in a value) escaped, so that each problem stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def lint_paths(
    paths: Sequence[str], settings: Settings, out: TextIO, namespace: str = DEFAULT_NAMESPACE
) -> int:
    checked = failed = 0
    read: list[Document] = []
    for path in yaml_files(paths):
        try:
            read.extend(documents(path))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            print(f"{path}: cannot read: {exc}", file=out)
            return 2
    tracked = tracked_revisions(read, settings)
    for doc in read:
        if doc.body.get("kind") not in KINDS:
            continue
        checked += 1
        problems = check_document(doc, settings, namespace, tracked)
        if problems:
            failed += 1
            for problem in problems:
                line = f"{doc.where(problem.path)}: {problem.reason}: {problem.message}"
                print(one_line(line), file=out)
        else:
            for warning in warnings(doc):
                line = f"{doc.where(warning.path)}: warning: {warning.reason}: {warning.message}"
                print(one_line(line), file=out)
            print(one_line(f"{doc.label}: ok"), file=out)
    if checked == 0:
        print("no McpRunbook or McpRemediation documents found", file=out)
        return 2
    print(f"{checked} checked, {failed} invalid", file=out)
    return 1 if failed else 0
