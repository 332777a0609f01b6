"""The action registry: every action is a function, a typed params model and its RBAC needs.

Adding an action is one file and ``make generate``. Create ``actions/<family>.py`` (or add
to one): the package imports every module under ``actions/`` by itself, and a test fails
for a module that registers nothing unless it is named in ``HELPER_MODULES``::

    class RedisPingParams(RedisParams):
        pass

    @action(
        "redisPing",
        RedisPingParams,
        "PING the Redis server and report the round-trip latency.",
        writes=False,
        access=[Access.on_kinds(["Secret"], ["get"], why="read the Redis URL's Secret.")],
    )
    async def redis_ping(params: RedisPingParams, ctx: ActionContext) -> ActionResult: ...

``access`` (required; ``[]`` for an action that only talks HTTP) says what the action
needs from the Kubernetes API and why, beside the code that needs it. Name kinds
(``Access.on_kinds``: group and plural come from ``kube.client.KINDS``; add a missing kind
there) or, for what ``KINDS`` does not hold, give ``Access(group, resources, verbs, why)``.
Steps act as their runbook's ServiceAccount (impersonated), never as the operator, so
these are needs of the *runner* accounts: ``make generate`` renders what derives from the
registry: the CRDs' action enum, the README's action table and the tenants' ClusterRole
``manifests/tenant/step-actions.yaml`` (``tools/rbacgen``); the engine, runbook validation
and ``lint`` look actions up here, and the manifest tests check the catalogue's runner
(``manifests/runner``) grants exactly what its runbooks' actions declare.

Rules every action keeps:
- Raise ``StepFailed`` (or ``TransientFailure`` for what a retry may fix) with a one-line
  message naming the cause; ``Refused`` for what must never be done.
- ``ctx.dry_run``: change nothing, return what would have been done.
- Work that takes long honours ``ctx.deadline``; the engine also cancels at the timeout.
- A write that must not happen twice calls ``await ctx.checkpoint({...})`` before it,
  and on a retry looks at ``ctx.outputs`` to see what an earlier attempt already did.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict

from mcp_remediator.kube.client import KINDS, KubeApi
from mcp_remediator.kube.refusals import api_group
from mcp_remediator.settings import Settings

if TYPE_CHECKING:
    from mcp_remediator.clients import Clients


class ActionParams(BaseModel):
    """Base of every params model: unknown params are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


@dataclass
class ActionResult:
    """What a step did: a one-line message and a flat map of string outputs."""

    message: str
    outputs: dict[str, str] = field(default_factory=dict)


Checkpoint = Callable[[Mapping[str, str]], Awaitable[None]]
T = TypeVar("T")


async def _no_checkpoint(outputs: Mapping[str, str]) -> None:
    return None


@dataclass
class ActionContext:
    """Everything an action may use; built by the engine for each attempt."""

    clients: Clients
    settings: Settings
    namespace: str
    dry_run: bool
    remediation: str
    step: str
    attempt: int = 1
    deadline: float = field(default_factory=lambda: time.monotonic() + 300)
    outputs: dict[str, str] = field(default_factory=dict)
    log: logging.Logger | logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: logging.getLogger("mcp_remediator.actions")
    )
    checkpoint_fn: Checkpoint = _no_checkpoint
    # The ServiceAccount (of ``own_namespace``) whose identity ``clients.kube`` acts with.
    service_account: str = "mcp-remediator-runner"
    # The answer of the action's ``prepare``, under way beside the attempt's start write.
    ahead: asyncio.Future[Any] | None = None

    async def prepared(self, read: Callable[[], Awaitable[T]]) -> T:
        """What the action's ``prepare`` read (the engine started it beside the attempt's
        start write), else ``read()`` now."""
        if self.ahead is not None:
            ahead, self.ahead = self.ahead, None
            result: T = await ahead
            return result
        return await read()

    @property
    def own_namespace(self) -> str:
        """The remediation's own namespace: where the Secrets its runbook names live.

        Not ``namespace`` (the target), which can come from an alert's labels: an alert
        must never choose which namespace's Secrets the operator reads.
        """
        return self.remediation.split("/", 1)[0]

    @property
    def trusted(self) -> bool:
        """Whether this remediation may use the operator-level credentials and endpoints
        (``MCP_TRUSTED_NAMESPACES``); elsewhere a step must name a Secret of its own."""
        return self.settings.is_trusted(self.own_namespace)

    def remaining(self) -> float:
        """Seconds left before this attempt's deadline."""
        return max(0.0, self.deadline - time.monotonic())

    async def checkpoint(self, outputs: Mapping[str, str]) -> None:
        """Persist partial outputs in the step's status before an irreversible write."""
        self.outputs.update(outputs)
        await self.checkpoint_fn(dict(self.outputs))


Verb = Literal["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
VERBS: tuple[Verb, ...] = get_args(Verb)
# One RBAC grant: (API group, resource, verb).
Grant = tuple[str, str, Verb]


@dataclass(frozen=True)
class Access:
    """One Kubernetes RBAC need of an action, declared beside its code.

    ``verbs`` on ``resources`` of the API group ``group`` (``""``: the core group), and
    ``why`` the action needs them: ``tools/rbacgen`` renders each as a commented rule of
    ``manifests/tenant/step-actions.yaml``, and the manifest tests check the catalogue's
    runner account is granted exactly what its runbooks' actions need. Prefer
    ``Access.on_kinds``, which takes the group and the plurals from ``kube.client.KINDS``
    so that they cannot drift from the paths the client calls.
    """

    group: str
    resources: tuple[str, ...]
    verbs: tuple[Verb, ...]
    why: str

    def __post_init__(self) -> None:
        if not self.resources or not self.verbs:
            raise ValueError(f"{self}: give at least one resource and one verb")
        unknown = sorted(set(self.verbs) - set(VERBS))
        if unknown:
            raise ValueError(f"{self}: unknown verbs {unknown}; known: {list(VERBS)}")
        if "*" in self.resources or len(set(self.resources)) != len(self.resources):
            raise ValueError(f"{self}: name each resource once, no wildcard")
        if len(set(self.verbs)) != len(self.verbs):
            raise ValueError(f"{self}: a verb given twice")
        if not self.why.strip():
            raise ValueError(f"{self}: say why the action needs it")

    @classmethod
    def on_kinds(cls, kinds: Iterable[str], verbs: Iterable[Verb], why: str) -> Access:
        """``verbs`` on the plurals of ``kinds``, which must share one API group."""
        names = list(kinds)
        unknown = [kind for kind in names if kind not in KINDS]
        if unknown:
            raise ValueError(f"kinds {unknown} are not in kube.client.KINDS")
        groups = {api_group(KINDS[kind].api_version) for kind in names}
        if len(groups) != 1:
            raise ValueError(f"kinds {names} span API groups {sorted(groups)}: one Access each")
        return cls(groups.pop(), tuple(KINDS[kind].plural for kind in names), tuple(verbs), why)

    def grants(self) -> frozenset[Grant]:
        return frozenset((self.group, r, v) for r in self.resources for v in self.verbs)


@dataclass(frozen=True)
class Reverted:
    """How undoing one step's change went (``onFailure.revert``): ``phase`` as in
    ``models.StepRevert``, ``restored`` the paths put back."""

    phase: Literal["Reverted", "Unchanged", "Conflict", "Failed"]
    message: str
    restored: tuple[str, ...] = ()


# Undo a step from its outputs (the snapshot it checkpointed before writing), acting with
# the step's own client (its ServiceAccount, the refusal layer). Called again after a
# restart: a change already undone is found undone, never undone twice.
Revert = Callable[[Mapping[str, str], KubeApi], Awaitable[Reverted]]
P = TypeVar("P", bound=ActionParams)
ActionFn = Callable[[P, ActionContext], Awaitable[ActionResult]]
Validator = Callable[[P, Settings, str | None], None]
Intent = Callable[[], dict[str, str]]
Prepare = Callable[[P, ActionContext], Awaitable[Any]]


@dataclass(frozen=True)
class ActionSpec(Generic[P]):
    """One registered action."""

    name: str
    params: type[P]
    fn: ActionFn[P]
    description: str
    writes: bool
    access: tuple[Access, ...]
    validate: Validator[P] | None = None
    intent: Intent | None = None
    prepare: Prepare[P] | None = None
    revert: Revert | None = None

    def grants(self) -> frozenset[Grant]:
        """Every (API group, resource, verb) this action needs from the Kubernetes API."""
        return frozenset(grant for a in self.access for grant in a.grants())

    def parse(self, raw: Mapping[str, Any]) -> P:
        return self.params.model_validate(dict(raw))


REGISTRY: dict[str, ActionSpec[Any]] = {}


def action(
    name: str,
    params: type[P],
    description: str,
    *,
    writes: bool,
    access: Sequence[Access],
    validate: Validator[P] | None = None,
    intent: Intent | None = None,
    prepare: Prepare[P] | None = None,
    revert: Revert | None = None,
) -> Callable[[ActionFn[P]], ActionFn[P]]:
    """Register ``fn`` as the action ``name``.

    ``intent()`` gives outputs the engine writes in the same status write that starts
    the step's first attempt — what the action would otherwise checkpoint before its first
    change (``rolloutRestart``'s ``restartedAt``): one write fewer before the action acts.

    ``prepare(params, ctx)`` makes the reads the action starts with (never a write): the
    engine runs it beside the status write that starts the attempt, and the action takes
    its answer with ``ctx.prepared(...)``, one round trip sooner. Should the write fail,
    the answer is dropped.

    ``access`` lists what the action needs from the Kubernetes API (``[]`` for actions
    that only talk HTTP); ``manifests/tenant/step-actions.yaml`` is rendered from it.

    ``validate(params, settings, namespace)`` raises ``Refused`` for targets that are
    refused before anything runs; ``namespace`` is the default target namespace when it
    is known. Called when a runbook is validated and again before each step runs.

    ``revert(outputs, kube)`` makes the action reversible (``onFailure.revert``): the action
    checkpoints a snapshot of what it changes before it writes, and ``revert`` puts it
    back, only where the object still holds the step's values. A writing action without it
    is named irreversible in the plans of runbooks that ask for reverts.
    """

    def decorator(fn: ActionFn[P]) -> ActionFn[P]:
        if name in REGISTRY:
            raise ValueError(f"action {name!r} registered twice")
        REGISTRY[name] = ActionSpec(
            name,
            params,
            fn,
            description,
            writes,
            tuple(access),
            validate,
            intent,
            prepare,
            revert,
        )
        return fn

    return decorator
