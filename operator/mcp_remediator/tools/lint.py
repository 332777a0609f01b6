"""``mcp-remediator lint PATH…``: offline validation of runbooks for a GitOps repo's CI.

Checks every McpRunbook and McpRemediation document in the given YAML files (directories
are searched for ``*.yaml``/``*.yml``) with the same code the operator uses: schema,
actions, params, templates, refusals. Each problem is one line, ``file:line: Kind/name:
Reason: message``; whatever a document holds, it gets such lines, never a traceback (a
check that fails unexpectedly is the problem ``ValidationFailed``). Exit codes: 0 all
valid, 1 problems found, 2 nothing to lint or unreadable input.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml
from pydantic import ValidationError

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

KINDS = ("McpRunbook", "McpRemediation")


@dataclass(frozen=True)
class Document:
    path: Path
    line: int
    body: dict[str, Any]

    @property
    def metadata(self) -> dict[str, Any]:
        meta = self.body.get("metadata")
        return meta if isinstance(meta, dict) else {}

    @property
    def label(self) -> str:
        name = self.metadata.get("name", "?")
        return f"{self.path}:{self.line}: {self.body.get('kind')}/{name}"


def yaml_files(paths: Iterable[str]) -> Iterator[Path]:
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        else:
            yield path


def documents(path: Path) -> Iterator[Document]:
    """Every mapping document of a YAML file, with its first line number."""
    text = path.read_text()
    for node in yaml.compose_all(text, Loader=yaml.SafeLoader):
        if node is None:
            continue
        body = yaml.safe_load(yaml.serialize(node))
        if isinstance(body, dict):
            yield Document(path, node.start_mark.line + 1, body)


def check_document(doc: Document, settings: Settings) -> list[Problem]:
    """Every problem of one document; never raises."""
    try:
        return _check_document(doc, settings)
    except Exception as exc:
        return [unexpected("document", exc)]


def _check_document(doc: Document, settings: Settings) -> list[Problem]:
    body = doc.body
    if body.get("apiVersion") != API_VERSION:
        return [Problem("WrongApiVersion", f"apiVersion must be {API_VERSION}")]
    if not isinstance(body.get("metadata"), dict):
        return [Problem("InvalidMetadata", "metadata must be a mapping")]
    if not doc.metadata.get("name"):
        return [Problem("MissingName", "metadata.name is required")]
    spec = body.get("spec")
    if not isinstance(spec, dict):
        return [Problem("InvalidSpec", "spec must be a mapping")]
    namespace = doc.metadata.get("namespace")
    namespace = namespace if isinstance(namespace, str) else None
    if body["kind"] == "McpRunbook":
        return check_runbook(spec, settings, namespace)
    try:
        remediation = RemediationSpec.model_validate(spec)
    except ValidationError as exc:
        return [Problem("InvalidSpec", pydantic_message(exc))]
    if (remediation.runbookRef is None) == (not remediation.steps):
        return [Problem("InvalidSpec", "give exactly one of spec.runbookRef or spec.steps")]
    problems: list[Problem] = []
    if namespace is not None:
        try:
            refusals.check_run_namespace(settings, namespace)
        except Refused as exc:
            problems.append(Problem(exc.reason, exc.message))
    return problems + check_steps(remediation.steps, settings)


def one_line(text: str) -> str:
    """``text`` with every character that is not printable (a line break in a name, a
    control character in a value) escaped, so that each problem stays one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def lint_paths(paths: Sequence[str], settings: Settings, out: TextIO) -> int:
    checked = failed = 0
    for path in yaml_files(paths):
        try:
            docs = list(documents(path))
        except (OSError, ValueError, yaml.YAMLError) as exc:
            print(f"{path}: cannot read: {exc}", file=out)
            return 2
        for doc in docs:
            if doc.body.get("kind") not in KINDS:
                continue
            checked += 1
            problems = check_document(doc, settings)
            if problems:
                failed += 1
                for problem in problems:
                    line = f"{doc.label}: {problem.reason}: {problem.message}"
                    print(one_line(line), file=out)
            else:
                print(one_line(f"{doc.label}: ok"), file=out)
    if checked == 0:
        print("no McpRunbook or McpRemediation documents found", file=out)
        return 2
    print(f"{checked} checked, {failed} invalid", file=out)
    return 1 if failed else 0
