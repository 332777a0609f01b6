"""Generates the README's action reference and settings table from the code.

The README holds each table between ``<!-- BEGIN name -->`` / ``<!-- END name -->``
markers; ``make generate`` (``tools.generate``) rewrites them and a test fails when they
are stale, so the documentation cannot drift from the registry and the settings model.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic.fields import FieldInfo

from mcp_remediator.actions import REGISTRY
from mcp_remediator.settings import SECRET_SETTINGS, Settings, env_var_name


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    text = re.sub(r"typing\.|mcp_remediator\.[\w.]+\.|pydantic\.types\.", "", str(text))
    return text.replace("NoneType", "None").replace("|", "\\|")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    return "" if value is None else f"`{value!r}`".replace("|", "\\|")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def actions_table() -> str:
    lines = ["| action | params | does |", "|---|---|---|"]
    for name in sorted(REGISTRY):
        spec = REGISTRY[name]
        params = []
        for field_name, field in spec.params.model_fields.items():
            default = _default(field)
            suffix = f" = {default}" if default and default != "required" else ""
            required = " (required)" if default == "required" else ""
            description = _cell(field.description or "")
            shown = field.alias or field_name
            params.append(f"`{shown}`{suffix}{required}: {description}")
        writes = "" if spec.writes else " Read-only."
        lines.append(
            f"| `{name}` | {'<br>'.join(params) or '—'} | {_cell(spec.description)}{writes} |"
        )
    return "\n".join(lines)


def settings_table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        variable = f"`{env_var_name(name)}`"
        if name in SECRET_SETTINGS:
            variable += f" / `{env_var_name(name)}_FILE`"
        default = "" if name in SECRET_SETTINGS else _default(field)
        lines.append(f"| {variable} | {default} | {_cell(field.description or '')} |")
    return "\n".join(lines)


SECTIONS = {"actions": actions_table, "settings": settings_table}


def render(text: str) -> str:
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", flags=re.DOTALL)
        match = pattern.search(text)
        if match is None:
            raise ValueError(f"markers for {name!r} are missing")
        block = match.group(1) + make() + "\n" + match.group(2)
        text = text[: match.start()] + block + text[match.end() :]
    return text
