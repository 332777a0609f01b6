"""Parameter types shared by several actions."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

K8S_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"

K8sName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=K8S_NAME_PATTERN,
        description="A Kubernetes object name.",
    ),
]
Namespace = Annotated[
    str,
    Field(
        min_length=1,
        max_length=63,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        description="A namespace; defaults to the runbook's target namespace.",
    ),
]
