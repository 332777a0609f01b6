"""An in-process Kubernetes API server for the test suite and the ``demo`` command.

``ApiServerEmulator`` extends KMock's ``KubernetesEmulator``: KMock still parses and records
every request (``list(em)``, ``em[...]`` filters) and serves API discovery from
``em.resources``; user reactions (``em['get /api/v1/namespaces/ns/pods/x'] << 503``) still
win over the emulated behaviour, and an intercepted write changes nothing. The stock state
handling (KMock applies every write before it looks for a reaction, and ignores
resourceVersions) is replaced by the semantics a Kopf operator and the ``kubernetes``
client depend on:

* create stamps ``uid``, ``resourceVersion`` (one global, rising counter),
  ``creationTimestamp`` and ``generation``, honours ``generateName``, answers 409
  AlreadyExists, and drops ``status`` for kinds with a status subresource;
* CRD structural schemas prune unknown fields (``x-kubernetes-preserve-unknown-fields``,
  ``additionalProperties``), apply ``default`` values, then validate every write of a custom
  resource (``schema.py``: types, ``enum``, ``required``, bounds, lengths, ``pattern``,
  sizes, formats, int-or-string, ``allOf``/``anyOf``/``oneOf``/``not``, list-type sets and
  maps, embedded resources); a refusal is kube-apiserver's 422 Invalid, worded as it words
  it (``McpRemediation.mcp.dese.ai "x" is invalid: spec.dryRun: Invalid value: ...``, one
  cause per field); updates ratchet (a bad value the update left alone passes), ``/status``
  writes are checked against the status schema, ratcheted by the stored status. The sync helpers
  (``seed``, ``apply``...) are refused the same way (``ApiError``). Unknown fields follow
  the write's ``fieldValidation``: ``Strict`` is 400 BadRequest (``strict decoding error:
  unknown field "spec.foo"``; a 422 on ``patch`` for a PATCH), ``Warn``, the default, a
  ``Warning`` header (``299 - "unknown field ..."``), ``Ignore`` nothing; another value
  is the real 422 on ``CreateOptions``/``UpdateOptions``/``PatchOptions``;
* PATCH as JSON merge patch, JSON patch (RFC 6902; a failed ``test`` is 422 Invalid) and,
  for built-in kinds, strategic merge patch; PUT replaces; a stale
  ``metadata.resourceVersion`` is 409 Conflict; writes that change nothing keep the
  resourceVersion and send no event; ``generation`` rises when anything outside
  ``metadata`` changes (for kinds with a status subresource, ``status`` is written only
  through ``/status``, and a write to ``/status`` changes nothing else);
* deletion with finalizers sets ``deletionTimestamp``; the object goes once the last
  finalizer is removed;
* list with label and field selectors, cluster-wide or per namespace, with the current
  resourceVersion; watch resumes from a resourceVersion out of a per-resource event log
  (410 Gone once it is compacted), or starts with ADDED events for a snapshot taken
  under the same lock as the subscription, honours ``timeoutSeconds``, selectors and
  ``sendInitialEvents`` (its closing bookmark only with ``allowWatchBookmarks``); ``watch``
  is read as Go's ``strconv.ParseBool`` (``1``, ``t``, ``True``... stream), and the stream is
  ``application/json``, one event a line, as kube-apiserver answers a JSON watch;
* CustomResourceDefinitions are objects too: ``register_crd`` stores the CRD with the
  status the apiextensions controllers write (names accepted, established, stored
  versions), so ``kubectl get crd`` lists it; a CRD created or changed through the API is
  served at once (a reactor stands in for the controllers), and a deleted one stops being
  served, its objects gone (without DELETED events);
* discovery as kube-apiserver serves it (``kubectl`` resolves kinds, short names and
  categories from it): the core group's ``groupVersion`` is ``v1``, subresources such as
  ``pods/status`` carry neither short names nor categories, and pods, services, the
  workload kinds, Jobs, CronJobs and HorizontalPodAutoscalers are in the ``all`` category;
  aggregated discovery (``apidiscovery.k8s.io`` v2 or v2beta1 ``APIGroupDiscoveryList``
  from ``/api`` and ``/apis`` when the ``Accept`` asks for it first, as kubectl does), so a
  client learns every group's resources in two requests;
* Table output (``tables.py``): a list, get or watch whose ``Accept`` asks for
  ``as=Table;g=meta.k8s.io`` (``kubectl get``) is answered with a ``meta.k8s.io`` Table, the
  Name column then a CRD version's ``additionalPrinterColumns`` (or Age), or columns like
  kube-apiserver's printers for the built-in kinds (Name and Created At for the others),
  rows carrying ``includeObject``'s PartialObjectMetadata, object or nothing; in a watch only
  the first Table has the column definitions. ``as=PartialObjectMetadata[List]`` too;
* OpenAPI (``openapi.py``): ``/openapi/v2`` (JSON; 406 to kubectl's protobuf-only Accept),
  the ``/openapi/v3`` index with hashed ``serverRelativeURL``s and a document per
  group-version, with the CRDs' structural schemas, built-in schemas generated from the
  ``kubernetes`` client's models, and the paths with their operations and ``fieldValidation``
  parameter (so ``kubectl explain`` works and ``kubectl apply`` leaves field validation to
  the server);
* ``deletecollection`` (DELETE on a namespace's collection, with label and field
  selectors): each listed object is deleted as by its own DELETE (finalizers honoured), and
  the answer is the ``…List`` of the objects as listed, as the real registry answers;
* field selectors on the labels each kind's ``GetAttrs`` gives (``fields.py``: Pods'
  ``status.phase``..., a CRD version's ``selectableFields``), any other label 400
  ``field label not supported``;
* core ``v1`` and ``events.k8s.io/v1`` Events are one store, each shape converted from the
  other and selectable by its own field labels (``involvedObject.*``/``regarding.*``,
  ``reason``, ``type``, ``source``, ``reportingComponent``/``reportingController``; others
  are 400 ``field label not supported``), as ``events.py`` describes;
* ``/scale`` (``autoscaling/v1`` Scale: get, update, patch) for Deployments, StatefulSets,
  ReplicaSets and CRD versions declaring ``subresources.scale`` (``scale.py``);
* server-side dry run (``dryRun=All`` on a write, or in a deletion's DeleteOptions body, as
  ``kubectl --dry-run=server`` sends it): the write is defaulted, validated and answered as
  it would be, and nothing is stored, logged or reacted to (a create's answer has no
  resourceVersion); any other value is 422 on ``dryRun``;
* server-side apply (``application/apply-patch+yaml``, ``fieldManager`` required,
  ``force``) and ``metadata.managedFields`` recorded by every write of a request, with
  conflicts answered as the real server words them (``apply.py``);
* request bodies in JSON or YAML, and the protobuf that ``kubectl create <kind>`` sends for
  the kinds ``protobuf.py`` reads; any other media type is 415 UnsupportedMediaType, and a
  patch type the resource does not take (strategic merge on a CRD) too;
* errors are ``kind: Status`` bodies with the real ``reason``s and ``details`` (none on a
  400 BadRequest or a 415, ``{}`` on a 405 or an unknown resource, the core group left out);
  they are ordinary answers and stay out of ``em.errors``, except for a watch that cannot
  start (an unknown resource, a bad selector), which KMock's own error rendering answers and
  records.

Authentication and authorization are off until ``enable_auth()``; from then on every HTTP
request, to any path (discovery, watches, KMock's own fallbacks, the namespaces alias), is
authenticated, impersonated and authorized before anything else sees it, as kube-apiserver's
filters run before routing; user reactions are the server's answer after that, so a refused
request gets its 401/403 and never reaches a reaction (it is still recorded in
``em.requests``). The pure logic is in ``authz.py``:

* static bearer tokens (``add_token``, ``service_account_token``, ``admin_token`` in
  ``system:masters``); no ``Authorization`` is ``system:anonymous`` (or 401 with
  ``enable_auth(anonymous=False)``), an unknown or non-bearer credential 401 Unauthorized;
* impersonation (``Impersonate-User``/``-Group``/``-Uid``/``-Extra-*``) checked with the
  ``impersonate`` verb on users, serviceaccounts, groups, uids and userextras, with the groups
  the real filter adds; Impersonate-Group without Impersonate-User is the real plain-text 500;
* the RBAC authorizer over the stored Roles, ClusterRoles and their bindings (subresources,
  wildcards, resourceNames, nonResourceURLs, ServiceAccount subjects), ``system:masters``
  allowed everything; 403 bodies worded as the real server's; the bootstrap roles
  (discovery, basic-user, public-info-viewer, cluster-admin, admin/edit/view);
* ClusterRole aggregation: a ClusterRole with an ``aggregationRule`` gets the union of the
  rules it selects written into its stored ``rules`` (a write watchers see) whenever any
  ClusterRole changes, as the aggregation controller does;
* SelfSubjectAccessReview, LocalSubjectAccessReview, SubjectAccessReview,
  SelfSubjectRulesReview and SelfSubjectReview are answered (create only; with auth off, as
  an AlwaysAllow server with an anonymous user would);
* every decision goes to ``em.audit`` (``authz.AuditEntry``: who, impersonated by whom, what,
  allowed or the answer instead).

Simplified or left out: ``x-kubernetes-validations`` (CEL rules) are evaluated by ``cel.py``
with standard CEL only (no Kubernetes CEL libraries, no cost budget), and of
ObjectMeta only names are validated (labels, annotations, finalizers are not); errors among
sibling fields come in the schema's order (the real server's order varies); several warnings
share one ``Warning`` header, comma-separated; built-in kinds are not validated and warn of
no unknown fields; server-side apply prunes unknown fields without a word (the real one
refuses them: ``field not declared in schema``). No admission webhooks, namespace lifecycle
(objects may be created in namespaces that do not exist), garbage collection of owned
objects or ``propagationPolicy``; field selectors beyond ``metadata.*`` only where fields.py
lists them; server-side apply and ``managedFields`` work from the JSON without the types'
schemas (list merge keys of the common built-in lists, CRD ``x-kubernetes-list-type``; the
rest of apply.py's docstring), ignore a client-sent ``managedFields``, and record no manager
for the sync helpers' and reactors' writes (the ClusterRole aggregation's writes during a
request are recorded as that request's manager's); protobuf bodies only for
``protobuf.py``'s kinds and
fields, and answers are always JSON; a list is one page unless ``limit`` asks for
pages, whose ``continue`` token resumes after the last name (later pages show objects as
they are then, not as of the first page). Built-in kinds get no pruning (a Secret's
write-only ``stringData`` is written into ``data``, as the real server does), and defaults
only on an HTTP create of a Service (``clusterIP`` picked at random from 10.96.0.0/12, no
allocator; an update that leaves out its cluster IPs or node ports keeps them), a
Namespace, a Pod (its ``Pending`` status; no kubelet ever runs it) or an apps/v1 workload
(replicas, strategy, history: not its pod template's fields), as
``core_kinds.create_defaults`` lists; every kind gets ``metadata.generation``. The built-in
kinds beyond those the operator touches (``core_kinds.MORE_BUILTINS``: ReplicationControllers,
Nodes, Jobs, CronJobs, Ingresses, APIServices, ...) are stored and served, each in one
version, with no controller behind them. Strategic merge patch merges lists whose items
all carry a ``name`` by that name and replaces every other list (the real one uses per-field
merge keys); on custom resources it is refused with 415, as a real server does. The OpenAPI
documents' built-in schemas are generated (coarse formats, no ``x-kubernetes-patch-*`` merge
keys), their PATCH operations leave strategic merge patch out (kubectl then patches with its
compiled-in merge keys), and an Accept naming nothing servable gets JSON, not 406. All served
versions of a CRD share one storage with ``conversion: None`` (only ``apiVersion`` differs). Objects
deleted while their last finalizer is removed show the emptied finalizers in the DELETED
event. Of authentication and authorization: no client certificates, JWT service account
tokens, TokenRequest/TokenReview, webhook or Node authorizers; RBAC objects are not
validated and writing them needs no ``escalate``/``bind`` (no escalation prevention); the
bootstrap ``system:aggregate-to-*`` roles only name kinds this emulator serves, and none of
``core_kinds.MORE_BUILTINS`` (so ``admin``/``edit``/``view`` grant no Jobs, Ingresses...); RBAC
changes do not cut open watches; a watch of one object by its URL is authorized as a
``watch`` of that name (the real server would serve it as a ``get``). RBAC objects put into
``em.objects`` directly are not seen until an RBAC object is written through the emulator.

Objects live in KMock's ``em.objects``, keyed by ``(resource, namespace, name)`` with the
CRD's storage version and ``None`` as the namespace of cluster-scoped objects; every write
appends a version to the object's history and deletion soft-deletes it, so
``em.objects[resource, ns, name]`` assertions keep working. Put objects in with
``seed()``: an object assigned to ``em.objects`` directly bypasses all stamping.

Controllers are stood in for by reactors: ``add_reactor`` runs a function after every write
to a resource and applies the merge patch it returns as a separate write;
``complete_rollouts`` finishes Deployment, StatefulSet and DaemonSet rollouts at once.
All state changes are synchronous sections under one re-entrant lock, so the sync helpers
(``seed``, ``get``, ...) may be called from any thread, and before the server runs.
``get`` with four arguments reads an object; with a URL it is still KMock's HTTP shortcut.
``apply``/``apply_file``/``apply_dir`` put manifests in (RBAC, ServiceAccounts, ...) the same
way, without HTTP; the sync helpers are never authenticated.
KMock's path parser misreads ``/api/v1/namespaces[/name]``, so those requests reach it
under an alias and are put back before any reaction sees them.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import contextvars
import copy
import dataclasses
import datetime
import functools
import hashlib
import json
import pathlib
import random
import re
import secrets
import string
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import aiohttp.web
import attrs
import kmock
import yaml

# Public in KMock's API but left out of ``kmock.__all__``: a payload with an HTTP status, and
# the type its HTTP shortcuts (``em.get(url)``) return.
from kmock._internal.apps import _RequestContextManager
from kmock._internal.rendering import Response

from mcp_remediator.testing import apply as ssa
from mcp_remediator.testing import (
    authz,
    cel,
    core_kinds,
    events,
    fields,
    openapi,
    protobuf,
    scale,
    schema,
    tables,
)

JsonDict = dict[str, Any]
Reactor = Callable[[JsonDict], JsonDict | None]
Matcher = Callable[[JsonDict], bool]
Scope = Literal["main", "status", "all"]

MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
JSON = "application/json"
YAML = "application/yaml"

VERBS = frozenset(
    {"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
INITIAL_EVENTS_END = "k8s.io/initial-events-end"

# Metadata the server owns: ignored in create bodies, restored on every update.
_SERVER_META = (
    "uid",
    "resourceVersion",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
# Metadata lists/maps that a real server never stores empty (Go's omitempty).
_OMIT_EMPTY_META = ("labels", "annotations", "finalizers", "ownerReferences")
_NAME_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MAX_REACTOR_ROUNDS = 32

ADMIN_USERNAME = "kubernetes-admin"  # the user of ``admin_token`` (in group system:masters)
# Who the HTTP request being served acts as (``None`` while auth is off), for the reviews.
_REQUEST_USER: contextvars.ContextVar[authz.UserInfo | None] = contextvars.ContextVar(
    "emulated_request_user", default=None
)
# The write being served over HTTP (``None`` for the sync helpers and reactors): its
# ``fieldValidation`` and the warnings it earns (``Warning`` headers).
_WRITE: contextvars.ContextVar[_Write | None] = contextvars.ContextVar(
    "emulated_write", default=None
)


# ``dryRun=All`` on the write being served: everything up to storing it, nothing stored.
_DRY_RUN: contextvars.ContextVar[bool] = contextvars.ContextVar("emulated_dry_run", default=False)


@dataclass(frozen=True)
class _Writer:
    """Who a write request records in ``managedFields`` (see apply.py)."""

    manager: str
    operation: str  # "Update" or "Apply"
    subresource: str


_REQUEST_WRITER: contextvars.ContextVar[_Writer | None] = contextvars.ContextVar(
    "emulated_request_writer", default=None
)
_RBAC = f"{authz.RBAC_GROUP}/v1"
_AUTHORIZATION = f"{authz.AUTHORIZATION_GROUP}/v1"
_AUTHENTICATION = f"{authz.AUTHENTICATION_GROUP}/v1"
# The review resources: created (and answered), never stored; any other method is 405.
_REVIEWS = frozenset(
    {
        (authz.AUTHORIZATION_GROUP, "selfsubjectaccessreviews"),
        (authz.AUTHORIZATION_GROUP, "selfsubjectrulesreviews"),
        (authz.AUTHORIZATION_GROUP, "subjectaccessreviews"),
        (authz.AUTHORIZATION_GROUP, "localsubjectaccessreviews"),
        (authz.AUTHENTICATION_GROUP, "selfsubjectreviews"),
    }
)

# KMock's path parser cannot read /api/v1/namespaces[/name[/status|/finalize]] (it takes the
# name for a namespace of a namespaced resource), so these paths reach it under an alias.
_NAMESPACES_PATH = re.compile(r"/api/v1/namespaces(/[^/]+(/(status|finalize))?)?/?")
_NAMESPACES_ALIAS = "namespaces.emulated"

_LABEL_KEY = r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_LABEL_VALUE = r"(?:[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?"
_LABEL_REQUIREMENT = re.compile(
    rf"""\s*(?:
        !\s*(?P<absent>{_LABEL_KEY})
        |(?P<key>{_LABEL_KEY})(?:
            \s*(?P<op>==|=|!=)\s*(?P<value>{_LABEL_VALUE})
            |\s+(?P<setop>in|notin)\s*\((?P<values>[^()]*)\)
        )?
    )\s*""",
    re.VERBOSE,
)
_FIELD_REQUIREMENT = re.compile(
    r"\s*(?P<field>[A-Za-z.]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^,]*?)\s*"
)
_SELECTABLE_FIELDS = frozenset({"metadata.name", "metadata.namespace"})


class ApiError(Exception):
    """An API error answered as a ``kind: Status`` body (also raised by the sync helpers)."""

    def __init__(self, code: int, reason: str, message: str, details: JsonDict | None = None):
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details  # ``None``: no ``details`` at all, as NewBadRequest answers

    def status(self) -> JsonDict:
        """The error as a Kubernetes ``Status`` object."""
        # In the order Go's encoder writes metav1.Status's fields (clients that compare error
        # texts, as the Python client's e2e tests do, see the same bytes).
        status: JsonDict = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            status["details"] = self.details
        status["code"] = self.code
        return status


@dataclass(frozen=True)
class _Spec:
    """What the server knows about one served resource (a group/version/plural)."""

    resource: kmock.resource
    storage: kmock.resource
    kind: str
    namespaced: bool
    has_status: bool
    custom: bool
    schema: JsonDict | None
    scale: scale.ScalePaths | None = None
    selectable: tuple[str, ...] = ()  # a CRD version's selectableFields

    @property
    def api_version(self) -> str:
        return _api_version(self.resource)

    @property
    def qualified(self) -> str:
        """``plural.group`` as the real server names a resource in its messages."""
        return f"{self.resource.plural}.{self.resource.group}".rstrip(".")


@dataclass
class _Write:
    verb: Literal["create", "update", "patch"]
    field_validation: str
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Event:
    rv: int
    type: str
    obj: JsonDict
    old: JsonDict | None  # the previous state of MODIFIED objects, for selector transitions


@dataclass(eq=False)
class _Waiter:
    """Wakes one watch stream up; safe to call from any thread."""

    loop: asyncio.AbstractEventLoop
    event: asyncio.Event = field(default_factory=asyncio.Event)

    def wake(self) -> None:
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.event.set()
        else:
            with contextlib.suppress(RuntimeError):  # the stream's loop is already closed
                self.loop.call_soon_threadsafe(self.event.set)


@dataclass(eq=False)
class _EventLog:
    """The recent events of one stored resource, oldest first."""

    events: list[_Event] = field(default_factory=list)
    expired_rv: int = 0  # events up to this resourceVersion may have been dropped
    waiters: set[_Waiter] = field(default_factory=set)


@attrs.define(kw_only=True)
class ApiServerEmulator(kmock.KubernetesEmulator):
    """A Kubernetes API server in memory; see the module docstring for its semantics."""

    event_log_limit: int = 1000  # events kept per resource for watch resumption
    # KMock matches each request against every request recorded so far: a load test that
    # does not read ``requests`` sets this false, and only the request being served is kept.
    keep_requests: bool = attrs.field(default=True, init=False)

    _state_lock: threading.RLock = attrs.field(factory=threading.RLock, init=False)
    _rv: int = attrs.field(default=0, init=False)
    _schemas: dict[kmock.resource, JsonDict] = attrs.field(factory=dict, init=False)
    _storage: dict[kmock.resource, kmock.resource] = attrs.field(factory=dict, init=False)
    _custom: set[kmock.resource] = attrs.field(factory=set, init=False)
    _logs: dict[kmock.resource, _EventLog] = attrs.field(factory=dict, init=False)
    _reactors: dict[kmock.resource, list[Reactor]] = attrs.field(factory=dict, init=False)
    # Each served CRD version's additionalPrinterColumns, for Table output (tables.py).
    _printer_columns: dict[kmock.resource, list[JsonDict]] = attrs.field(factory=dict, init=False)
    _scales: dict[kmock.resource, scale.ScalePaths] = attrs.field(factory=dict, init=False)
    _selectable: dict[kmock.resource, tuple[str, ...]] = attrs.field(factory=dict, init=False)

    # Authentication and authorization (see enable_auth).
    admin_token: str = attrs.field(factory=lambda: secrets.token_urlsafe(32), init=False)
    audit: list[authz.AuditEntry] = attrs.field(factory=list, init=False)
    _auth_enabled: bool = attrs.field(default=False, init=False)
    _anonymous: bool = attrs.field(default=True, init=False)
    _tokens: dict[str, authz.UserInfo] = attrs.field(factory=dict, init=False)
    _account_tokens: dict[str, tuple[str, str]] = attrs.field(factory=dict, init=False)
    _policy: authz.RbacPolicy | None = attrs.field(default=None, init=False)
    _aggregating: bool = attrs.field(default=False, init=False)
    _closing: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # KMock derives no action for PUT; the other fallbacks are its own, overridden below.
        self.fallback[kmock.method.PUT] << self._serve_replace
        self.fallback["get", re.compile(r"/openapi/.*")] << self._serve_openapi
        # ... nor for DELETE on a collection (deletecollection).
        self.fallback[kmock.method.DELETE] << self._serve_delete
        # POST to an object's URL and PATCH of a collection: no route, 405 as the real one.
        self.fallback[kmock.method.POST] << self._serve_unrouted
        self.fallback[kmock.method.PATCH] << self._serve_unrouted
        self.add_token(self.admin_token, ADMIN_USERNAME, (authz.MASTERS,))

    def end_watches(self) -> None:
        """End every open watch stream (and refuse to start new ones), before the servers
        close: a server's shutdown waits for the handlers still running, and a watch whose
        client has gone stays blocked until its next event, which may never come."""
        with self._state_lock:
            self._closing = True
            for log in self._logs.values():
                for waiter in log.waiters:
                    waiter.wake()

    # --- registration ---------------------------------------------------------------------

    def register_crd(self, crd: Mapping[str, Any]) -> None:
        """Serve the resource a CRD manifest (apiextensions.k8s.io/v1) declares, and keep the
        CRD itself (established, as ``kubectl get crd`` lists it) once CRDs are served."""
        with self._state_lock:
            self._serve_crd(crd)
            crds = kmock.resource(*_CRDS)
            if crds not in self.resources:
                return
            spec = self._spec_of_names(*_CRDS)
            name = str(crd["metadata"]["name"])
            body = {**copy.deepcopy(dict(crd)), "status": _crd_status(crd)}
            if self._current(spec, None, name) is None:
                self._create(spec, None, body, keep_status=True, react=False)
            else:
                self._update(spec, None, name, lambda _: body, "all")

    def _crd_controller(self, crd: JsonDict) -> JsonDict | None:
        """A reactor on CRDs written through the API: serve what it declares and mark it
        established, as the apiextensions controllers do."""
        self._serve_crd(crd)
        status = _crd_status(crd)
        current = crd.get("status") or {}
        if all(current.get(key) == value for key, value in status.items() if key != "conditions"):
            types = {c.get("type"): c.get("status") for c in current.get("conditions") or []}
            if types.get("Established") == "True" and types.get("NamesAccepted") == "True":
                return None
        return {"status": status}

    def _unserve_crd(self, crd: Mapping[str, Any]) -> None:
        """A deleted CRD: its resources are no longer served and its objects are gone."""
        spec = crd.get("spec") or {}
        group, plural = spec.get("group"), (spec.get("names") or {}).get("plural")
        for resource in [r for r in self.resources if (r.group, r.plural) == (group, plural)]:
            storage = self._storage.pop(resource, None)
            self.resources.pop(resource, None)
            self._schemas.pop(resource, None)
            self._scales.pop(resource, None)
            self._selectable.pop(resource, None)
            self._printer_columns.pop(resource, None)
            self._custom.discard(resource)
            if storage is not None:
                for key in [k for k in self._objects if k[0] == storage]:
                    if not self._objects[key].deleted:
                        self._objects[key].delete()

    def _serve_crd(self, crd: Mapping[str, Any]) -> None:
        spec = crd["spec"]
        names = spec["names"]
        group, plural, kind = spec["group"], names["plural"], names["kind"]
        versions = [v for v in spec["versions"] if v.get("served", True)]
        stored = next((v for v in spec["versions"] if v.get("storage")), versions[0])
        storage = kmock.resource(group, stored["name"], plural)
        with self._state_lock:
            for version in versions:
                resource = kmock.resource(group, version["name"], plural)
                self.resources[resource] = kmock.ResourceInfo(
                    kind=kind,
                    singular=names.get("singular", kind.lower()),
                    namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                    shortnames=names.get("shortNames", []),
                    categories=names.get("categories", []),
                    subresources={"status", "scale"} & set(version.get("subresources") or {}),
                    verbs=VERBS,
                )
                self._selectable[resource] = fields.crd_selectable(version)
                declared_scale = (version.get("subresources") or {}).get("scale")
                if isinstance(declared_scale, dict):
                    self._scales[resource] = scale.ScalePaths.of_crd(declared_scale)
                else:
                    self._scales.pop(resource, None)
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema:
                    self._schemas[resource] = schema
                else:
                    self._schemas.pop(resource, None)
                self._storage[resource] = storage
                self._custom.add(resource)
                self._printer_columns[resource] = version.get("additionalPrinterColumns") or []

    def register_crd_file(self, path: str | pathlib.Path) -> list[str]:
        """Register every CRD among the YAML documents of a file (other kinds, such as a
        Kustomization, are skipped); return the names of the registered CRDs.
        """
        names: list[str] = []
        for doc in yaml.safe_load_all(pathlib.Path(path).read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                self.register_crd(doc)
                names.append(doc["metadata"]["name"])
        return names

    def register_crd_dir(self, path: str | pathlib.Path) -> list[str]:
        """Register the CRDs of every ``*.yaml``/``*.yml`` file in a directory."""
        folder = pathlib.Path(path)
        files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
        return [name for file in files for name in self.register_crd_file(file)]

    def register_builtins(self) -> None:
        """Serve the built-in kinds (ServiceAccounts, RBAC and the access reviews among them)
        and the third-party CRDs the operator touches.
        """
        with self._state_lock:
            for api_version, plural, kind, namespaced, status, shortnames in (
                *_BUILTINS,
                *core_kinds.MORE_BUILTINS,
            ):
                resource = kmock.resource(api_version, plural)
                scaled = (resource.group, plural) in scale.BUILTIN_SCALED
                self.resources[resource] = kmock.ResourceInfo(
                    kind=kind,
                    singular=kind.lower(),
                    namespaced=namespaced,
                    shortnames=shortnames,
                    categories=["all"]
                    if plural in _CATEGORY_ALL | core_kinds.IN_CATEGORY_ALL
                    else [],
                    subresources=({"status"} if status else set())
                    | ({"scale"} if scaled else set()),
                    verbs=VERBS,
                )
                if scaled:
                    self._scales[resource] = scale.ScalePaths()
        with self._state_lock:
            # One store for both Event shapes, as kube-apiserver keeps them (see events.py).
            self._storage[kmock.resource(events.EVENTS_V1, "events")] = kmock.resource(
                events.CORE, "events"
            )
        self._register_auth_kinds()
        self.add_reactor(*_CRDS, self._crd_controller)
        for api_version, plural, kind, namespaced, status, shortnames in _THIRD_PARTY_CRDS:
            self.register_crd(_crd(api_version, plural, kind, namespaced, status, shortnames))

    def _register_auth_kinds(self) -> None:
        with self._state_lock:
            for api_version, plural, kind, namespaced, verbs, shortnames in _AUTH_KINDS:
                self.resources[kmock.resource(api_version, plural)] = kmock.ResourceInfo(
                    kind=kind,
                    singular=kind.lower(),
                    namespaced=namespaced,
                    shortnames=shortnames,
                    verbs=verbs,
                )

    # --- authentication and authorization ---------------------------------------------------

    def enable_auth(self, *, anonymous: bool = True) -> None:
        """Authenticate and authorize every HTTP request from now on, as kube-apiserver does.

        Serves the ServiceAccount, RBAC and review kinds and seeds the bootstrap ClusterRoles
        and ClusterRoleBindings (``authz.bootstrap_policy``) that do not exist yet. Requests
        without an ``Authorization`` header are ``system:anonymous``, or 401 when
        ``anonymous`` is false (``--anonymous-auth=false``). The sync helpers stay
        unauthenticated back doors.
        """
        self._register_auth_kinds()
        with self._state_lock:
            for obj in authz.bootstrap_policy():
                spec = self._spec_of_kind(obj["apiVersion"], obj["kind"])
                if self._current(spec, None, obj["metadata"]["name"]) is None:
                    self._create(spec, None, obj, keep_status=True, react=False)
            self._anonymous = anonymous
            self._auth_enabled = True

    def disable_auth(self) -> None:
        """Serve every request unauthenticated again (what was seeded stays)."""
        with self._state_lock:
            self._auth_enabled = False

    @property
    def auth_enabled(self) -> bool:
        return self._auth_enabled

    def add_token(
        self,
        token: str,
        username: str,
        groups: Iterable[str] = (),
        uid: str | None = None,
    ) -> None:
        """Accept a static bearer token for a user (``--token-auth-file``); the user is also
        in ``system:authenticated``.
        """
        user = authz.UserInfo(username, tuple(groups), uid or "")
        with self._state_lock:
            self._tokens[token] = authz.with_authenticated_group(user)

    def service_account_token(self, namespace: str, name: str) -> str:
        """A bearer token of ``system:serviceaccount:<namespace>:<name>`` (the same one on
        every call); the ServiceAccount need not exist (when it does, its uid is the user's).
        """
        with self._state_lock:
            for token, account in self._account_tokens.items():
                if account == (namespace, name):
                    return token
            token = secrets.token_urlsafe(32)
            self._account_tokens[token] = namespace, name
            return token

    def authenticate(self, token: str) -> authz.UserInfo | None:
        """The user a bearer token stands for, or ``None`` for an unknown token."""
        with self._state_lock:
            user = self._tokens.get(token)
            if user is not None:
                return user
            account = self._account_tokens.get(token)
            if account is None:
                return None
            namespace, name = account
            uid = ""
            sa_key = (kmock.resource("v1", "serviceaccounts"), namespace, name)
            if sa_key in self._objects and not self._objects[sa_key].deleted:
                uid = str(self._objects[sa_key].raw["metadata"].get("uid", ""))
        groups = (*authz.service_account_groups(namespace), authz.AUTHENTICATED)
        return authz.UserInfo(authz.service_account_username(namespace, name), groups, uid)

    def authorize(self, attributes: authz.Attributes) -> authz.Decision:
        """The decision on a request's attributes, from the stored RBAC objects (everything is
        allowed while auth is off).
        """
        if not self._auth_enabled:
            return authz.Decision(True, "")
        return authz.authorize(self._rbac_policy(), attributes)

    def can(
        self,
        user: authz.UserInfo,
        verb: str,
        resource: str,
        *,
        group: str = "",
        namespace: str = "",
        name: str = "",
        subresource: str = "",
    ) -> bool:
        """Whether RBAC lets ``user`` do ``verb`` on the resource (``kubectl auth can-i``)."""
        attributes = authz.Attributes(
            user=user,
            verb=verb,
            resource_request=True,
            api_group=group,
            resource=resource,
            subresource=subresource,
            namespace=namespace,
            name=name,
        )
        return authz.authorize(self._rbac_policy(), attributes).allowed

    def _rbac_policy(self) -> authz.RbacPolicy:
        """A snapshot of the RBAC objects, rebuilt after any of them changes."""
        with self._state_lock:
            if self._policy is None:
                specs = [
                    self._spec_of_names(_RBAC, plural)
                    for plural in ("clusterroles", "roles", "clusterrolebindings", "rolebindings")
                ]
                self._policy = authz.RbacPolicy.of(
                    *(list(self._objects_of(spec, None, _match_all)) for spec in specs)
                )
            return self._policy

    # --- applying manifests (sync, like seed) -----------------------------------------------

    def apply(
        self, docs: Iterable[Mapping[str, Any] | None], *, namespace: str | None = None
    ) -> list[JsonDict]:
        """Create or update objects from manifests, without HTTP; return them as stored.

        ``None`` documents and ``Kustomization``s are skipped, ``List``s unfolded and
        CustomResourceDefinitions registered (they are not objects here). An object of a
        namespaced kind without a namespace goes to ``namespace``, else to "default"; one that
        names another namespace than ``namespace`` is refused, as ``kubectl apply -n`` does.
        New objects are stamped like ``seed()`` (status kept, reactors not run); existing ones
        are replaced like a PUT (status kept for kinds with a status subresource). A kind the
        emulator does not serve raises ``ApiError`` (NotFound).
        """
        applied: list[JsonDict] = []
        for doc in docs:
            if not isinstance(doc, Mapping):
                continue
            kind = doc.get("kind")
            if kind == "Kustomization":
                continue
            if kind == "List":
                applied.extend(self.apply(doc.get("items") or [], namespace=namespace))
                continue
            if kind == "CustomResourceDefinition" and str(doc.get("apiVersion", "")).startswith(
                "apiextensions.k8s.io/"
            ):
                self.register_crd(doc)
                continue
            applied.append(self._apply_one(doc, namespace))
        return applied

    def _apply_one(self, doc: Mapping[str, Any], namespace: str | None) -> JsonDict:
        spec = self._spec_of_kind(str(doc.get("apiVersion", "")), str(doc.get("kind", "")))
        meta = doc.get("metadata") or {}
        name = str(meta.get("name") or "")
        target: str | None = None
        if spec.namespaced:
            own = meta.get("namespace")
            if own and namespace and own != namespace:
                raise ValueError(
                    f"the namespace from the provided object {own!r} does not match"
                    f" the namespace {namespace!r}"
                )
            target = own or namespace or "default"
        with self._state_lock:
            if not name or self._current(spec, target, name) is None:
                created = self._create(spec, target, doc, keep_status=True, react=False)
                return copy.deepcopy(self._present(spec, created))
            proposed = copy.deepcopy(dict(doc))
            proposed.setdefault("metadata", {}).pop("resourceVersion", None)
            updated = self._update(spec, target, name, lambda _: proposed, "main")
            return copy.deepcopy(self._present(spec, updated))

    def apply_file(
        self, path: str | pathlib.Path, *, namespace: str | None = None
    ) -> list[JsonDict]:
        """``apply`` the YAML documents of a file."""
        text = pathlib.Path(path).read_text(encoding="utf-8")
        return self.apply(yaml.safe_load_all(text), namespace=namespace)

    def apply_dir(
        self, path: str | pathlib.Path, *, namespace: str | None = None
    ) -> list[JsonDict]:
        """``apply`` every ``*.yaml``/``*.yml`` file of a directory, in name order."""
        folder = pathlib.Path(path)
        files = sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
        return [obj for file in files for obj in self.apply_file(file, namespace=namespace)]

    # --- sync helpers for tests and the demo (no HTTP) --------------------------------------

    def seed(self, obj: Mapping[str, Any]) -> JsonDict:
        """Create an object with its status, stamped like a create; reactors do not run."""
        spec = self._spec_of_kind(obj["apiVersion"], obj["kind"])
        meta = obj.get("metadata") or {}
        namespace = (meta.get("namespace") or "default") if spec.namespaced else None
        with self._state_lock:
            created = self._create(spec, namespace, obj, keep_status=True, react=False)
        return copy.deepcopy(created)

    @overload
    def get(self, url: str, **kwargs: Any) -> _RequestContextManager: ...

    @overload
    def get(
        self, api_version: str, plural: str, namespace: str | None, name: str, /
    ) -> JsonDict | None: ...

    def get(self, *args: Any, **kwargs: Any) -> _RequestContextManager | JsonDict | None:
        """``get(api_version, plural, namespace, name)``: the object as the API would serve
        it, or ``None`` if it does not exist; ``get(url, **kwargs)``: KMock's HTTP GET.
        """
        if len(args) != 4 or kwargs:
            return super().get(*args, **kwargs)
        return self._get_object(*args)

    def _get_object(
        self, api_version: str, plural: str, namespace: str | None, name: str
    ) -> JsonDict | None:
        spec = self._spec_of_names(api_version, plural)
        with self._state_lock:
            obj = self._current(spec, namespace, name)
            return None if obj is None else copy.deepcopy(self._present(spec, obj))

    def list_objects(
        self, api_version: str, plural: str, namespace: str | None = None
    ) -> list[JsonDict]:
        """All objects of a resource (in one namespace, or in all), ordered by namespace/name."""
        spec = self._spec_of_names(api_version, plural)
        with self._state_lock:
            objs = self._objects_of(spec, namespace, _match_all)
            return [copy.deepcopy(self._present(spec, obj)) for obj in objs]

    async def patch_object(
        self,
        api_version: str,
        plural: str,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: Literal["status"] | None = None,
    ) -> JsonDict:
        """Merge-patch an object as a client would, without HTTP and without recording it."""
        spec = self._spec_of_names(api_version, plural)
        scope: Scope = "status" if subresource == "status" else "main"
        if scope == "status" and not spec.has_status:
            raise _not_found_resource()
        with self._state_lock:
            merge = functools.partial(_merge_patch, patch=dict(patch))
            updated = self._update(spec, namespace, name, merge, scope)
            return copy.deepcopy(self._present(spec, updated))

    def touch(self, api_version: str, plural: str, namespace: str | None, name: str) -> JsonDict:
        """Force a write that changes nothing but the resourceVersion, so reactors and
        watchers see the object again (a real server never does this for an unchanged object).
        """
        spec = self._spec_of_names(api_version, plural)
        with self._state_lock:
            current = self._current(spec, namespace, name)
            if current is None:
                raise _not_found(spec, name)
            touched = self._commit(spec, namespace, name, current, copy.deepcopy(current), 0)
            return copy.deepcopy(self._present(spec, touched))

    def write_requests(self) -> list[kmock.Request]:
        """The recorded API write requests (POST/PUT/PATCH/DELETE), whatever their outcome."""
        return [
            request
            for request in self._requests
            if request.resource is not None and request.method.value in WRITE_METHODS
        ]

    def write_count(self, predicate: Callable[[kmock.Request], bool] | None = None) -> int:
        """How many recorded write requests satisfy the predicate (all if none is given)."""
        return sum(1 for r in self.write_requests() if predicate is None or predicate(r))

    def trim_requests(self) -> None:
        """Forget the recorded requests: KMock matches each request against all of them."""
        self._requests.clear()
        for reaction in self._payloads:
            reaction._requests.clear()

    def watched_plurals(self) -> set[str]:
        """The plurals that have at least one open watch stream."""
        with self._state_lock:
            return {str(res.plural) for res, log in self._logs.items() if log.waiters}

    # --- controller stand-ins ---------------------------------------------------------------

    def add_reactor(self, api_version: str, plural: str, fn: Reactor) -> None:
        """Call ``fn(obj)`` after every write to the resource; apply its result as a merge patch."""
        spec = self._spec_of_names(api_version, plural)
        with self._state_lock:
            self._reactors.setdefault(spec.storage, []).append(fn)

    def clear_reactors(self, api_version: str, plural: str) -> None:
        """Remove every reactor of the resource."""
        spec = self._spec_of_names(api_version, plural)
        with self._state_lock:
            self._reactors.pop(spec.storage, None)

    # --- discovery ---------------------------------------------------------------------------

    async def _serve_api(self, request: kmock.Request) -> kmock.Payload:
        version = _aggregated_version(_header(request, "Accept"))
        if version is not None:
            return _aggregated(version, [("", ["v1"])], self._version_entries)
        address = request.url.host or "127.0.0.1"
        if request.url.port is not None:
            address = f"{address}:{request.url.port}"
        body = {
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": address}],
        }
        # The Content-Type every time: KMock keeps a Response's headers on the reaction.
        return Response(payload=body, headers={"Content-Type": "application/json"})

    def _group_versions(self) -> dict[str, list[str]]:
        """Every named group's versions, the preferred first (KMock picks one from a set)."""
        groups: dict[str, set[str]] = {}
        with self._state_lock:
            for resource in self._get_resources():
                if resource.group and isinstance(resource.version, str):
                    groups.setdefault(resource.group, set()).add(resource.version)
        return {
            group: sorted(versions, key=_version_priority)
            for group, versions in sorted(groups.items())
        }

    async def _serve_apis(self, request: kmock.Request) -> kmock.Payload:
        groups = self._group_versions()
        version = _aggregated_version(_header(request, "Accept"))
        if version is not None:
            return _aggregated(version, list(groups.items()), self._version_entries)
        body = {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [_api_group(group, versions) for group, versions in groups.items()],
        }
        return Response(payload=body, headers={"Content-Type": "application/json"})

    async def _serve_group(self, request: kmock.Request) -> kmock.Payload:
        group = request.resource.group if request.resource is not None else None
        versions = self._group_versions().get(group or "")
        if not versions:
            raise kmock.KubernetesResourceNotFoundError()
        return {"kind": "APIGroup", "apiVersion": "v1", **_api_group(str(group), versions)}

    async def _serve_version(self, request: kmock.Request) -> kmock.Payload:
        """An APIResourceList as kube-apiserver serves it: the core group is ``v1`` (KMock
        says ``/v1``), subresources carry neither short names nor categories (kubectl would
        resolve ``cm`` or a category to ``…/status`` too), empty lists are left out.
        """
        wanted = request.resource
        assert wanted is not None  # the fallback's path pattern ensures it
        group, version = wanted.group or "", str(wanted.version)
        entries = self._version_entries(group, version)
        if entries is None:
            raise kmock.KubernetesResourceNotFoundError()
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": entries,
        }

    def _version_entries(self, group: str, version: str) -> list[JsonDict] | None:
        """A group-version's APIResources (subresources after their parent), or None when
        the group-version is not served."""
        with self._state_lock:
            served = [
                (resource, self.resources[resource])
                for resource in self._get_resources()
                if resource.group == group and resource.version == version
                if resource.plural is not None and resource in self.resources
            ]
        if not served and group != "":
            return None
        entries: list[JsonDict] = []
        for resource, info in sorted(served, key=lambda item: str(item[0].plural)):
            kind = info.kind or str(resource.plural).capitalize()
            entry: JsonDict = {
                "name": resource.plural,
                "singularName": info.singular or resource.plural,
                "namespaced": bool(info.namespaced),
                "kind": kind,
                "verbs": sorted(info.verbs),
            }
            if info.shortnames:
                entry["shortNames"] = list(info.shortnames)
            if info.categories:
                entry["categories"] = list(info.categories)
            entries.append(entry)
            for subresource in sorted(info.subresources):
                entries.append(
                    {
                        "name": f"{resource.plural}/{subresource}",
                        "singularName": "",
                        "namespaced": bool(info.namespaced),
                        "kind": kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
                if subresource == "scale":  # served in another group, as the real one is
                    entries[-1].update(
                        group=scale.SCALE_GROUP, version=scale.SCALE_VERSION, kind="Scale"
                    )
        return entries

    def _openapi_kinds(self) -> dict[str, list[openapi.Kind]]:
        """Every served kind by group-version, for the OpenAPI documents (openapi.py)."""
        kinds: dict[str, list[openapi.Kind]] = {}
        with self._state_lock:
            for resource in self._get_resources():
                try:
                    spec = self._spec_of(resource)
                except ApiError:  # not a served resource (a reaction's pattern, say)
                    continue
                kind = openapi.Kind(
                    group=resource.group or "",
                    version=str(resource.version),
                    plural=str(resource.plural),
                    kind=spec.kind,
                    namespaced=spec.namespaced,
                    has_status=spec.has_status,
                    custom=spec.custom,
                    verbs=frozenset(self.resources[resource].verbs),
                    schema=spec.schema,
                )
                kinds.setdefault(kind.group_version, []).append(kind)
        return kinds

    async def _serve_openapi(self, request: kmock.Request) -> kmock.Payload:
        """``/openapi/v2``, the ``/openapi/v3`` index and its group-version documents."""
        status, body = self._openapi(request)
        # Status and Content-Type every time: KMock keeps them on the reaction (see _as_table).
        return Response(status=status, payload=body, headers={"Content-Type": "application/json"})

    def _openapi(self, request: kmock.Request) -> tuple[int, JsonDict]:
        path = request.url.path.rstrip("/")
        kinds = self._openapi_kinds()
        if path == "/openapi/v2":
            if not openapi.accepts_json(_header(request, "Accept")):
                message = "only the following media types are accepted: application/json"
                return 406, ApiError(406, "NotAcceptable", message).status()
            return 200, openapi.v2_document(kind for served in kinds.values() for kind in served)
        documents = {openapi.document_path(gv): served for gv, served in kinds.items()}
        if path == "/openapi/v3":
            encoded = {key: openapi.encode(openapi.v3_document(v)) for key, v in documents.items()}
            return 200, openapi.v3_index(encoded)
        served = documents.get(path.removeprefix("/openapi/v3/"))
        if not path.startswith("/openapi/v3/") or served is None:
            return 404, _not_found_resource().status()
        return 200, openapi.v3_document(served)

    # --- KMock integration ------------------------------------------------------------------

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if _NAMESPACES_PATH.fullmatch(raw_request.path):
            aliased = _NAMESPACES_ALIAS + raw_request.path.removeprefix("/api/v1/namespaces")
            url = raw_request.rel_url.with_path(f"/api/v1/{aliased}")
            raw_request = raw_request.clone(rel_url=url.with_query(raw_request.rel_url.query))
        if raw_request.content_type == protobuf.CONTENT_TYPE:
            raw_request = await _from_protobuf(raw_request)
        return await super().__call__(raw_request)

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        if not self.keep_requests:
            self.trim_requests()
            self._requests.append(request)
        if request.resource is not None and request.resource.plural == _NAMESPACES_ALIAS:
            request = self._unalias(request)
        request = self._as_watch(request)
        user: authz.UserInfo | None = None
        if self._auth_enabled:
            # Before any reaction or fallback, as the real server's filters run before routing.
            admitted = self._admit(request)
            if isinstance(admitted, aiohttp.web.StreamResponse):
                return admitted
            user = admitted
        token = _REQUEST_USER.set(user)
        try:
            # Skip KubernetesEmulator._handle: its state changes happen before any reaction.
            return await super(kmock.KubernetesEmulator, self)._handle(request)
        finally:
            _REQUEST_USER.reset(token)

    def _admit(self, request: kmock.Request) -> aiohttp.web.StreamResponse | authz.UserInfo:
        """Authenticate, impersonate and authorize a request, and audit the outcome: the user
        it acts as, or the answer that refuses it (401, 403, or 500 for bad impersonation).
        """
        raw = request._raw_request
        # KMock's ``request.headers`` keeps one value per name; Impersonate-Group repeats.
        headers = list((raw.headers if raw is not None else request.headers).items())
        method, path = request.method.value, request.url.path
        wanted_users = [v for k, v in headers if k.lower() == authz.IMPERSONATE_USER.lower()]

        def audit(
            attributes: authz.Attributes,
            code: int | None,
            reason: str,
            impersonated_by: str | None = None,
        ) -> None:
            self.audit.append(
                authz.AuditEntry(
                    method=method,
                    path=path,
                    user=attributes.user.username,
                    groups=attributes.user.groups,
                    impersonated_by=impersonated_by,
                    impersonate_user=wanted_users[0] if wanted_users else None,
                    verb=attributes.verb,
                    api_group=attributes.api_group,
                    resource=attributes.resource,
                    subresource=attributes.subresource,
                    namespace=attributes.namespace,
                    name=attributes.name,
                    allowed=code is None,
                    code=code,
                    reason=reason,
                    request=request,
                )
            )

        def attributes_of(user: authz.UserInfo) -> authz.Attributes:
            attributes = authz.request_attributes(user, method, path, request.params)
            if request.action == kmock.action.WATCH and attributes.verb == "get":
                # A watch of one object by its URL: the emulator streams it, so it is a watch
                # (the real server would answer a plain get; clients watch by fieldSelector).
                attributes = dataclasses.replace(attributes, verb="watch")
            return attributes

        authorization = [v for k, v in headers if k.lower() == "authorization"]
        requestor: authz.UserInfo | None
        if not authorization:
            requestor = authz.anonymous_user() if self._anonymous else None
        else:
            bearer = authz.bearer_token(authorization[0])
            requestor = None if bearer is None else self.authenticate(bearer)
        if requestor is None:
            audit(attributes_of(authz.UserInfo("")), 401, "Unauthorized")
            return aiohttp.web.json_response(authz.unauthorized_status(), status=401)

        try:
            wanted = authz.impersonation_requests(headers)
        except authz.ImpersonationError as exc:
            text = authz.internal_error_text(request.url.raw_path_qs, str(exc))
            audit(attributes_of(requestor), 500, text.strip())
            return aiohttp.web.Response(
                text=text, status=500, headers={"X-Content-Type-Options": "nosniff"}
            )
        policy = self._rbac_policy()
        for item in wanted:
            check = authz.impersonation_attributes(requestor, item)
            decision = authz.authorize(policy, check)
            if not decision.allowed:
                body = authz.forbidden_status(check, decision.reason)
                audit(attributes_of(requestor), 403, body["message"])
                return _forbidden(body)
        user = authz.impersonated_user(wanted) if wanted else requestor
        impersonated_by = requestor.username if wanted else None

        attributes = attributes_of(user)
        decision = authz.authorize(policy, attributes)
        if not decision.allowed:
            body = authz.forbidden_status(attributes, decision.reason)
            audit(attributes, 403, body["message"], impersonated_by)
            return _forbidden(body)
        audit(attributes, None, decision.reason, impersonated_by)
        return user

    def _unalias(self, request: kmock.Request) -> kmock.Request:
        path = request.url.path.replace(f"/{_NAMESPACES_ALIAS}", "/namespaces", 1)
        fixed = attrs.evolve(
            request,
            url=request.url.with_path(path).with_query(request.url.query),
            resource=kmock.resource("", "v1", "namespaces"),
        )
        return self._replace_recorded(request, fixed)

    def _as_watch(self, request: kmock.Request) -> kmock.Request:
        """KMock takes only ``watch=true`` for a watch; the real server parses the parameter
        as Go's ``strconv.ParseBool`` (``1``, ``t``, ``T``, ``TRUE``, ``true``, ``True``).
        """
        if (
            request.resource is None
            or request.method != kmock.method.GET
            or request.action == kmock.action.WATCH
            or not _bool_param(request, "watch")
        ):
            return request
        return self._replace_recorded(request, attrs.evolve(request, action=kmock.action.WATCH))

    def _replace_recorded(self, request: kmock.Request, fixed: kmock.Request) -> kmock.Request:
        for index in range(len(self._requests) - 1, -1, -1):
            if self._requests[index] is request:
                self._requests[index] = fixed
                break
        return fixed

    async def _serve_list(self, request: kmock.Request) -> kmock.Payload:
        return self._as_table(request, self._respond(request, self._list))

    async def _serve_fetch(self, request: kmock.Request) -> kmock.Payload:
        return self._as_table(request, self._respond(request, self._fetch))

    async def _serve_create(self, request: kmock.Request) -> kmock.Payload:
        return self._respond(request, self._create_request)

    async def _serve_update(self, request: kmock.Request) -> kmock.Payload:
        return self._respond(request, self._patch_request)

    async def _serve_replace(self, request: kmock.Request) -> kmock.Payload:
        return self._respond(request, self._replace_request)

    async def _serve_delete(self, request: kmock.Request) -> kmock.Payload:
        return self._respond(request, self._delete_request)

    async def _serve_unrouted(self, request: kmock.Request) -> kmock.Payload:
        def refuse(request: kmock.Request) -> tuple[int, JsonDict]:
            if request.resource is None:
                raise _not_found_resource()
            self._spec_of(request.resource)  # an unknown resource is 404
            raise _method_not_allowed()

        return self._respond(request, refuse)

    def _respond(
        self, request: kmock.Request, op: Callable[[kmock.Request], tuple[int, JsonDict]]
    ) -> Response:
        # API errors are answers, not failures of the mock: they stay out of ``em.errors``.
        write: _Write | None = None
        token = _REQUEST_WRITER.set(_writer_of(request))
        dry_token = _DRY_RUN.set(False)
        try:
            write = _write_of(request)
            write_token = _WRITE.set(write)
            try:
                _DRY_RUN.set(_dry_run_of(request))
                with self._state_lock:
                    code, body = op(request)
            finally:
                _WRITE.reset(write_token)
        except ApiError as exc:
            # Compact, one line and a newline, as kube-apiserver's JSON serializer writes it.
            text = json.dumps(exc.status(), separators=(",", ":")) + "\n"
            return Response(
                status=exc.code,
                headers={"Content-Type": "application/json", "Warning": _warning(write)},
                payload=text.encode(),
            )
        finally:
            _REQUEST_WRITER.reset(token)
            _DRY_RUN.reset(dry_token)
        # KMock merges the headers of an answer into its fallback reaction, where they stay:
        # ``None`` clears a previous answer's warnings.
        return Response(status=code, payload=body, headers={"Warning": _warning(write)})

    async def _serve_watch(  # type: ignore[override]
        self, request: kmock.Request
    ) -> Response:
        # kube-apiserver answers a JSON watch as ``application/json``, one event a line;
        # KMock's stream would go out as ``application/octet-stream``, which kubectl refuses.
        events = self._watch(request)
        target = tables.conversion(_header(request, "Accept"))
        if target is not None:  # kubectl get -w: each event's object as a Table
            with self._state_lock, contextlib.suppress(ApiError):  # _watch answers the error
                printer = self._printer(self._spec_of(request.resource))
                include = request.params.get("includeObject", "Metadata")
                events = tables.convert_events(events, target, printer, include)
        return Response(headers={"Content-Type": "application/json"}, payload=events)

    def _printer(self, spec: _Spec) -> tables.Printer:
        if spec.custom:
            return tables.crd_printer(self._printer_columns.get(spec.resource))
        return tables.builtin_printer(spec.resource.group or "", str(spec.resource.plural))

    def _as_table(self, request: kmock.Request, response: Response) -> Response:
        """A successful read as the Table (or PartialObjectMetadata) its Accept asks for.

        Every answer names its Content-Type: KMock keeps the headers (and status) of a
        returned ``Response`` on the reaction, so a Table's would stick to the next answer.
        """
        target = tables.conversion(_header(request, "Accept"))
        if target is None or response.status != 200 or not isinstance(response.payload, dict):
            return Response(
                status=response.status,
                payload=response.payload,
                headers={"Content-Type": "application/json"},
            )
        with self._state_lock:
            printer = self._printer(self._spec_of(request.resource))
        include = request.params.get("includeObject", "Metadata")
        body = tables.convert(target, printer, response.payload, include_object=include)
        return Response(status=200, payload=body, headers={"Content-Type": target.media_type})

    async def _watch(self, request: kmock.Request) -> AsyncIterator[kmock.Payload]:
        loop = asyncio.get_running_loop()
        waiter = _Waiter(loop)
        try:
            # The snapshot (or the resume point) and the subscription: under one lock.
            with self._state_lock:
                spec = self._resolve(request, named=False)
                matcher = self._matcher(request, spec)
                timeout = _float_param(request, "timeoutSeconds")
                since = request.params.get("resourceVersion", "")
                log = self._logs.setdefault(spec.storage, _EventLog())
                initial: list[JsonDict] = []
                if since in ("", "0"):
                    cursor = self._rv
                    for obj in self._objects_of(spec, request.namespace, matcher):
                        initial.append({"type": "ADDED", "object": self._present(spec, obj)})
                else:
                    cursor = _int_param(request, "resourceVersion")
                log.waiters.add(waiter)
        except ApiError as exc:  # before the stream starts: a plain error response
            raise kmock.KubernetesError(exc.code, exc.reason, exc.message, exc.details) from None

        deadline = None if timeout is None else loop.time() + timeout
        try:
            yield b""  # send the headers now, even if no event comes
            for added in initial:
                yield added
            if _bool_param(request, "sendInitialEvents") and _bool_param(
                request, "allowWatchBookmarks"
            ):
                yield self._bookmark(spec, cursor)
            while not self._closing:
                with self._state_lock:
                    waiter.event.clear()
                    expired = cursor < log.expired_rv
                    start = bisect.bisect_right(log.events, cursor, key=lambda e: e.rv)
                    events = log.events[start:]
                if expired:
                    yield _gone(cursor, log.expired_rv)
                    return
                for event in events:
                    cursor = event.rv
                    shown = self._watch_event(spec, event, matcher)
                    if shown is not None:
                        yield shown
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    return
                try:
                    await asyncio.wait_for(waiter.event.wait(), remaining)
                except TimeoutError:
                    return
        finally:
            with self._state_lock:
                log.waiters.discard(waiter)

    # --- request handlers (called under the state lock) -------------------------------------

    def _list(self, request: kmock.Request) -> tuple[int, JsonDict]:
        spec = self._resolve(request, named=False)
        matcher = self._matcher(request, spec)
        objects = list(self._objects_of(spec, request.namespace, matcher))
        metadata: JsonDict = {"resourceVersion": str(self._rv)}
        limit = _int_param(request, "limit") if request.params.get("limit") else 0
        token = request.params.get("continue")
        if token:
            listed_rv, after = _read_continue(token)
            metadata["resourceVersion"] = listed_rv
            objects = [o for o in objects if _order_key(o) > after]
        if limit > 0 and len(objects) > limit:
            objects = objects[:limit]
            metadata["continue"] = _write_continue(metadata["resourceVersion"], objects[-1])
            metadata["remainingItemCount"] = 0  # unknown here; present as the real one is
        items = [self._present(spec, obj) for obj in objects]
        return 200, {
            "apiVersion": spec.api_version,
            "kind": f"{spec.kind}List",
            "metadata": metadata,
            "items": items,
        }

    def _fetch(self, request: kmock.Request) -> tuple[int, JsonDict]:
        spec = self._resolve(request, named=True)
        obj = self._current(spec, request.namespace, str(request.name))
        if obj is None:
            raise _not_found(spec, str(request.name))
        if request.subresource == "scale" and spec.scale is not None:
            return 200, scale.scale_of(obj, spec.scale)
        return 200, self._present(spec, obj)

    def _create_request(self, request: kmock.Request) -> tuple[int, JsonDict]:
        spec = self._resolve(request, named=False)
        if (spec.resource.group, spec.resource.plural) in _REVIEWS:
            return self._review(spec, request)
        if spec.namespaced and request.namespace is None:
            raise ApiError(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
                {"group": spec.resource.group, "kind": spec.resource.plural},
            )
        body = _object_body(request, spec)
        if not isinstance(body, dict):
            raise _bad_request("the body of a create must be a JSON object")
        body_ns = (body.get("metadata") or {}).get("namespace")
        if spec.namespaced and body_ns and body_ns != request.namespace:
            raise _bad_request(
                "the namespace of the provided object does not match"
                " the namespace sent on the request"
            )
        _unknown_fields(spec, _typed(spec, body))  # decoding comes first: 400 before 409
        created = self._create(spec, request.namespace, body, keep_status=False, react=True)
        return 201, self._present(spec, created)

    def _review(self, spec: _Spec, request: kmock.Request) -> tuple[int, JsonDict]:
        """Answer an access review or a SelfSubjectReview (created, never stored)."""
        body = _object_body(request, spec)
        if not isinstance(body, dict):
            raise _bad_request("the body of a create must be a JSON object")
        review_spec = body.get("spec") or {}
        if not isinstance(review_spec, dict):
            raise _invalid(spec, "", "spec: Invalid value: must be an object")
        user = _REQUEST_USER.get() or authz.anonymous_user()
        answer: JsonDict = {
            "kind": spec.kind,
            "apiVersion": spec.api_version,
            "metadata": body.get("metadata") or {},
        }
        plural = spec.resource.plural
        if plural == "selfsubjectreviews":
            return 201, {**answer, "status": {"userInfo": user.as_json()}}
        if plural == "selfsubjectrulesreviews":
            namespace = str(review_spec.get("namespace") or "")
            if self._auth_enabled:
                resource_rules, non_resource_rules, error = authz.rules_for(
                    self._rbac_policy(), user, namespace
                )
            else:  # AlwaysAllow
                resource_rules = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]
                non_resource_rules = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
                error = ""
            status: JsonDict = {
                "resourceRules": resource_rules,
                "nonResourceRules": non_resource_rules,
                "incomplete": bool(error),
            }
            if error:
                status["evaluationError"] = error
            return 201, {**answer, "spec": review_spec, "status": status}

        if plural in ("subjectaccessreviews", "localsubjectaccessreviews"):
            if not review_spec.get("user") and not review_spec.get("groups"):
                raise _invalid(
                    spec,
                    "",
                    'spec.user: Invalid value: "": at least one of user or group must be specified',
                )
            extra = review_spec.get("extra") or {}
            user = authz.UserInfo(
                str(review_spec.get("user") or ""),
                tuple(str(group) for group in review_spec.get("groups") or []),
                str(review_spec.get("uid") or ""),
                {str(key): tuple(map(str, values)) for key, values in extra.items()},
            )
        resource = review_spec.get("resourceAttributes")
        non_resource = review_spec.get("nonResourceAttributes")
        for key, value in (
            ("resourceAttributes", resource),
            ("nonResourceAttributes", non_resource),
        ):
            if value is not None and not isinstance(value, dict):
                raise _invalid(spec, "", f"spec.{key}: Invalid value: must be an object")
        if (resource is None) == (non_resource is None):
            raise _invalid(
                spec,
                "",
                "spec.resourceAttributes: Invalid value: exactly one of nonResourceAttributes"
                " or resourceAttributes must be specified",
            )
        if plural == "localsubjectaccessreviews":
            if non_resource is not None:
                raise _invalid(
                    spec,
                    "",
                    "spec.nonResourceAttributes: Invalid value: disallowed on this kind of request",
                )
            if str((resource or {}).get("namespace") or "") != request.namespace:
                raise _bad_request(
                    f"spec.resourceAttributes.namespace must match namespace: {request.namespace}"
                )
        if resource is not None:
            attributes = authz.Attributes(
                user=user,
                verb=str(resource.get("verb") or ""),
                resource_request=True,
                api_group=str(resource.get("group") or ""),
                api_version=str(resource.get("version") or ""),
                resource=str(resource.get("resource") or ""),
                subresource=str(resource.get("subresource") or ""),
                namespace=str(resource.get("namespace") or ""),
                name=str(resource.get("name") or ""),
            )
        else:
            attributes = authz.Attributes(
                user=user,
                verb=str((non_resource or {}).get("verb") or ""),
                resource_request=False,
                path=str((non_resource or {}).get("path") or ""),
            )
        decision = self.authorize(attributes)
        verdict: JsonDict = {"allowed": decision.allowed}
        if decision.reason:
            verdict["reason"] = decision.reason
        return 201, {**answer, "spec": review_spec, "status": verdict}

    def _patch_request(self, request: kmock.Request) -> tuple[int, JsonDict]:
        spec = self._resolve(request, named=True)
        content_type = _content_type(request)
        accepted = [JSON_PATCH, MERGE_PATCH]
        if not spec.custom or request.subresource == "scale":
            accepted.append(STRATEGIC_MERGE_PATCH)
        accepted.append(APPLY_PATCH)
        if content_type not in accepted:
            raise _unsupported_media_type(accepted)
        if content_type == APPLY_PATCH:
            return self._apply_request(spec, request)
        if "force" in request.params:
            raise _invalid_options(
                "PatchOptions", "force", "Forbidden: may not be specified for non-apply patch"
            )
        patch = _json_body(request)
        compute: Callable[[JsonDict], Any]
        if content_type == JSON_PATCH:
            if not isinstance(patch, list):
                raise _bad_request("a JSON patch must be a list of operations")
            compute = functools.partial(_json_patch, ops=patch)
        else:
            if not isinstance(patch, dict):
                raise _bad_request("a merge patch must be a JSON object")
            strategic = content_type == STRATEGIC_MERGE_PATCH
            compute = functools.partial(_merge_patch, patch=patch, strategic=strategic)
        return self._write_named(spec, request, compute)

    def _write_named(
        self, spec: _Spec, request: kmock.Request, compute: Callable[[JsonDict], Any]
    ) -> tuple[int, JsonDict]:
        """Update the object a request names (or its ``/status``, or its ``/scale``)."""
        name = str(request.name)
        if request.subresource == "scale" and spec.scale is not None:
            paths = spec.scale

            def scaled(current: JsonDict) -> JsonDict:
                written = compute(scale.scale_of(current, paths))
                if not isinstance(written, dict):
                    raise _bad_request("the body of a Scale must be a JSON object")
                problem = scale.invalid_replicas(written)
                if problem is not None:
                    raise ApiError(
                        422,
                        "Invalid",
                        f'Scale.autoscaling "{name}" is invalid: {problem}',
                        {"name": name, "group": "autoscaling", "kind": "Scale"},
                    )
                return scale.with_replicas(current, written, paths)

            updated = self._update(spec, request.namespace, name, scaled, "main")
            return 200, scale.scale_of(updated, paths)
        scope: Scope = "status" if request.subresource == "status" else "main"
        updated = self._update(spec, request.namespace, name, compute, scope)
        return 200, self._present(spec, updated)

    def _apply_request(self, spec: _Spec, request: kmock.Request) -> tuple[int, JsonDict]:
        """Server-side apply: create the object, or merge the applied fields (apply.py)."""
        manager = request.params.get("fieldManager", "")
        if not manager:
            raise _invalid_options(
                "PatchOptions", "fieldManager", "Required value: is required for apply patch"
            )
        if request.subresource not in (None, "status"):
            raise _unsupported_media_type([JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH])
        body = _yaml_body(request)
        if not isinstance(body, dict):
            raise _bad_request("the body of an apply patch must be an object")
        name = str(request.name)
        for key, expected in (("apiVersion", spec.api_version), ("kind", spec.kind)):
            if body.get(key) != expected:
                raise _bad_request(
                    f"the {key} of the applied object ({body.get(key)}) does not match"
                    f" the {key} of the URL ({expected})"
                )
        meta = body.get("metadata")
        body_name = meta.get("name") if isinstance(meta, dict) else None
        if body_name not in (None, "", name):
            raise _bad_request(
                f"the name of the object ({body_name}) does not match the name on the URL ({name})"
            )
        body_namespace = meta.get("namespace") if isinstance(meta, dict) else None
        if spec.namespaced and body_namespace not in (None, "", request.namespace):
            raise _bad_request(
                "the namespace of the provided object does not match the namespace sent on"
                " the request"
            )
        subresource = request.subresource or ""
        reset: tuple[str, ...] = ()
        if spec.has_status and not subresource:
            reset = ("status",)
        elif subresource:  # an apply to /status applies the status alone
            reset = tuple(key for key in body if key not in ("apiVersion", "kind", "status"))
        keys = self._list_keys(spec)

        def applied(current: JsonDict | None) -> JsonDict:
            try:
                return ssa.apply(
                    current,
                    body,
                    manager=manager,
                    api_version=spec.api_version,
                    force=_bool_param(request, "force"),
                    list_keys=keys,
                    now=_now(),
                    reset=reset,
                    subresource=subresource,
                )
            except ssa.ApplyConflict as exc:
                raise ApiError(409, "Conflict", exc.message, {"causes": exc.causes}) from None
            except ssa.ApplyInvalid as exc:
                gvk = f"{spec.api_version}, Kind={spec.kind}"
                raise _bad_request(f"failed to create typed patch object ({gvk}): {exc}") from None

        if self._current(spec, request.namespace, name) is None:
            if subresource:
                raise _not_found(spec, name)
            created_body = applied(None)
            created_body.setdefault("metadata", {})["name"] = name
            created = self._create(
                spec, request.namespace, created_body, keep_status=False, react=True
            )
            return 201, self._present(spec, created)
        scope: Scope = "status" if subresource == "status" else "main"
        updated = self._update(
            spec, request.namespace, name, lambda current: applied(current), scope
        )
        return 200, self._present(spec, updated)

    def _list_keys(self, spec: _Spec) -> ssa.ListKeys:
        if spec.custom:
            return ssa.schema_list_keys(spec.schema)
        return ssa.builtin_list_keys(spec.kind)

    def _manage_fields(
        self,
        spec: _Spec,
        current: JsonDict | None,
        final: JsonDict,
        scope: Scope,
        proposed: JsonDict,
    ) -> None:
        """Record the request's field manager in ``final`` (apply.py); writes of no request
        (the sync helpers, reactors) leave ``managedFields`` as they were.
        """
        writer = _REQUEST_WRITER.get()
        meta = final["metadata"]
        if writer is None or scope == "all":
            previous = (current or {}).get("metadata", {}).get("managedFields")
            if previous:
                meta["managedFields"] = copy.deepcopy(previous)
            else:
                meta.pop("managedFields", None)
            return
        if writer.operation == ssa.APPLY:  # the apply computed them
            meta["managedFields"] = (proposed.get("metadata") or {}).get("managedFields") or []
            return
        old, new = current, final
        if spec.resource != spec.storage and _is_event(spec):  # fields of the request's shape
            old = None if current is None else events.convert(current, spec.api_version)
            new = events.convert(final, spec.api_version)
        managed = ssa.record_update(
            old,
            new,
            manager=writer.manager,
            api_version=spec.api_version,
            subresource=writer.subresource,
            list_keys=self._list_keys(spec),
            now=_now(),
        )
        if managed:
            meta["managedFields"] = managed
        else:
            meta.pop("managedFields", None)

    def _replace_request(self, request: kmock.Request) -> tuple[int, JsonDict]:
        if request.resource is not None and request.name is None:
            raise _method_not_allowed()
        spec = self._resolve(request, named=True)
        body = _object_body(request, spec)
        if not isinstance(body, dict):
            raise _bad_request("the body of an update must be a JSON object")
        replaced: JsonDict = body
        return self._write_named(spec, request, lambda _: replaced)

    def _delete_request(self, request: kmock.Request) -> tuple[int, JsonDict]:
        if request.resource is not None and request.name is None:
            return self._delete_collection(request)
        spec = self._resolve(request, named=True)
        if request.subresource is not None:
            raise _method_not_allowed()
        name = str(request.name)
        return 200, self._delete_one(spec, request.namespace, name, _json_body(request))

    def _delete_collection(self, request: kmock.Request) -> tuple[int, JsonDict]:
        """``deletecollection``: delete what a list with the same selectors shows, each as a
        DELETE of its own (finalizers honoured); the answer is that list, as listed.
        """
        spec = self._resolve(request, named=False)
        if (spec.namespaced and request.namespace is None) or (
            spec.resource.group,
            spec.resource.plural,
        ) in _REVIEWS:
            raise _method_not_allowed()
        options = _json_body(request)
        code, listed = self._list(request)
        for item in listed["items"]:
            name = item["metadata"]["name"]
            if self._current(spec, request.namespace, name) is not None:
                self._delete_one(spec, request.namespace, name, options)
        return code, copy.deepcopy(listed)

    def _delete_one(self, spec: _Spec, namespace: str | None, name: str, options: Any) -> JsonDict:
        current = self._current(spec, namespace, name)
        if current is None:
            raise _not_found(spec, name)
        preconditions = (options.get("preconditions") if isinstance(options, dict) else None) or {}
        meta = current["metadata"]
        if preconditions.get("uid") not in (None, meta["uid"]):
            raise _conflict(
                spec,
                name,
                f"Precondition failed: UID in precondition: {preconditions['uid']},"
                f" UID in object meta: {meta['uid']}",
            )
        if preconditions.get("resourceVersion") not in (None, meta["resourceVersion"]):
            raise _conflict(spec, name, _stale_message(spec, name))
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return self._present(spec, current)
            marked = copy.deepcopy(current)
            marked["metadata"]["deletionTimestamp"] = _now()
            marked["metadata"]["deletionGracePeriodSeconds"] = 0
            marked["metadata"]["generation"] = meta.get("generation", 0) + 1
            marked = self._commit(spec, namespace, name, current, marked, 0)
            return self._present(spec, marked)
        if _DRY_RUN.get():
            return self._present(spec, copy.deepcopy(current))
        self._rv += 1
        gone = copy.deepcopy(current)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[self._key(spec, namespace, name)].delete()
        self._log(spec, "DELETED", gone, current)
        return self._present(spec, gone)

    # --- the state machine (called under the state lock) ------------------------------------

    def _create(
        self,
        spec: _Spec,
        namespace: str | None,
        body: Mapping[str, Any],
        *,
        keep_status: bool,
        react: bool,
    ) -> JsonDict:
        obj = copy.deepcopy(dict(body))
        if spec.resource != spec.storage and _is_event(spec):
            obj = events.to_core(obj)
        meta = obj.get("metadata")
        meta = obj["metadata"] = dict(meta) if isinstance(meta, dict) else {}
        name = meta.get("name") or ""
        if not name:
            prefix = meta.get("generateName") or ""
            if not prefix:
                raise _invalid(spec, "", "metadata.name: Required value: name or generateName")
            name = self._generate_name(spec, namespace, prefix)
        elif self._current(spec, namespace, name) is not None:
            raise ApiError(
                409,
                "AlreadyExists",
                f'{spec.qualified} "{name}" already exists',
                _details(spec, name),
            )
        if spec.storage.group == authz.RBAC_GROUP:
            # RBAC names are path segments (``system:discovery``), not DNS subdomains.
            if name in (".", "..") or "/" in name or "%" in name:
                raise _invalid(
                    spec, name, f"metadata.name: Invalid value: {name!r}: may not contain '/'"
                )
        elif len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
            raise _invalid(
                spec,
                name,
                f"metadata.name: Invalid value: {name!r}: a lowercase RFC 1123 subdomain"
                " must consist of lower case alphanumeric characters, '-' or '.'",
            )
        for field_name in _SERVER_META:
            meta.pop(field_name, None)
        meta["name"] = name
        if spec.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = _now()
        meta["generation"] = 1
        _tidy_meta(meta)
        obj = _typed(spec, obj)
        if spec.has_status and not keep_status:
            obj.pop("status", None)
        if not keep_status and not spec.custom:  # an HTTP create of a built-in kind
            obj = core_kinds.create_defaults(_api_version(spec.storage), spec.kind, obj)
        obj = core_kinds.fold_string_data(_api_version(spec.storage), spec.kind, obj)
        obj = _normalize(obj, spec.schema)
        _validate(spec, name, obj, None, "main")
        self._manage_fields(spec, None, obj, "main", obj)
        if _DRY_RUN.get():
            return obj  # as the real dry run answers: no resourceVersion, nothing stored
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = self._key(spec, namespace, name)
        if key in self._objects:
            self._objects[key].history.append(obj)
        else:
            self._objects[key] = obj
        self._log(spec, "ADDED", obj, None)
        if react:
            self._react(spec, namespace, name, 0)
        return obj

    def _update(
        self,
        spec: _Spec,
        namespace: str | None,
        name: str,
        compute: Callable[[JsonDict], Any],
        scope: Scope,
        rounds: int = 0,
    ) -> JsonDict:
        current = self._current(spec, namespace, name)
        if current is None:
            raise _not_found(spec, name)
        if spec.resource != spec.storage and _is_event(spec):
            # Written in the events.k8s.io shape, stored in the core one.
            proposed = compute(events.to_events_v1(current))
            proposed = events.to_core(proposed) if isinstance(proposed, dict) else proposed
        else:
            proposed = compute(copy.deepcopy(current))
        if not isinstance(proposed, dict):
            raise _invalid(spec, name, "the patched object is not a JSON object")
        final = self._reconcile(spec, name, current, proposed, scope)
        if final == current:
            return current  # a no-op write: same resourceVersion, no event
        return self._commit(spec, namespace, name, current, final, rounds)

    def _reconcile(
        self, spec: _Spec, name: str, current: JsonDict, proposed: JsonDict, scope: Scope
    ) -> JsonDict:
        """Turn a client's proposed object into what the server stores (or refuse it)."""
        if scope != "all":  # a reactor's write is no client's
            _unknown_fields(spec, _typed(spec, proposed))
        old_meta = current["metadata"]
        new_meta = proposed.get("metadata")
        new_meta = dict(new_meta) if isinstance(new_meta, dict) else {}
        rv = new_meta.get("resourceVersion")
        if rv not in (None, "") and str(rv) != old_meta["resourceVersion"]:
            raise _conflict(spec, name, _stale_message(spec, name))
        for key in ("name", "namespace"):
            if new_meta.get(key) not in (None, "", old_meta.get(key)):
                raise _bad_request(
                    f"the {key} of the object ({new_meta[key]}) does not match"
                    f" the {key} on the URL ({old_meta.get(key)})"
                )

        if scope == "status":
            final = copy.deepcopy(current)
            if "status" in proposed:
                final["status"] = proposed["status"]
            else:
                final.pop("status", None)
        else:
            final = dict(proposed)
            if scope == "main" and spec.has_status:
                if "status" in current:
                    final["status"] = copy.deepcopy(current["status"])
                else:
                    final.pop("status", None)
            if old_meta.get("deletionTimestamp"):
                added = set(new_meta.get("finalizers") or []) - set(old_meta.get("finalizers", []))
                if added:
                    raise _invalid(
                        spec,
                        name,
                        "metadata.finalizers: Forbidden: no new finalizers can be added"
                        " if the object is being deleted",
                    )
            for key in ("name", "namespace", *_SERVER_META):
                if key in old_meta:
                    new_meta[key] = old_meta[key]
                else:
                    new_meta.pop(key, None)
            _tidy_meta(new_meta)
            final["metadata"] = new_meta

        final = core_kinds.fold_string_data(_api_version(spec.storage), spec.kind, final)
        if scope == "main":
            final = core_kinds.keep_allocated(_api_version(spec.storage), spec.kind, final, current)
        final = _normalize(_typed(spec, final), spec.schema)
        _validate(spec, name, final, current, scope)
        self._manage_fields(spec, current, final, scope, proposed)
        if _content(spec, final) != _content(spec, current):
            final["metadata"]["generation"] = old_meta.get("generation", 0) + 1
        return final

    def _commit(
        self,
        spec: _Spec,
        namespace: str | None,
        name: str,
        current: JsonDict,
        final: JsonDict,
        rounds: int,
    ) -> JsonDict:
        if _DRY_RUN.get():
            # The object as it would be, under the resourceVersion it has; nothing stored,
            # no event, no reactor.
            final["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            return final
        self._rv += 1
        final["metadata"]["resourceVersion"] = str(self._rv)
        stored = self._objects[self._key(spec, namespace, name)]
        stored.history.append(final)
        meta = final["metadata"]
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            stored.delete()
            self._log(spec, "DELETED", final, current)
        else:
            self._log(spec, "MODIFIED", final, current)
            self._react(spec, namespace, name, rounds)
        return final

    def _react(self, spec: _Spec, namespace: str | None, name: str, rounds: int) -> None:
        for reactor in list(self._reactors.get(spec.storage, [])):
            current = self._current(spec, namespace, name)
            if current is None:
                return
            patch = reactor(copy.deepcopy(current))
            if patch:
                if rounds >= _MAX_REACTOR_ROUNDS:
                    raise RuntimeError(f"reactors keep changing {spec.qualified} {name!r}")
                merge = functools.partial(_merge_patch, patch=patch)
                self._update(spec, namespace, name, merge, "all", rounds + 1)

    def _log(self, spec: _Spec, kind: str, obj: JsonDict, old: JsonDict | None) -> None:
        log = self._logs.setdefault(spec.storage, _EventLog())
        log.events.append(_Event(self._rv, kind, obj, old))
        excess = len(log.events) - max(self.event_log_limit, 1)
        if excess > 0:
            log.expired_rv = log.events[excess - 1].rv
            del log.events[:excess]
        for waiter in log.waiters:
            waiter.wake()
        if (spec.storage.group, spec.storage.plural) == _CRDS_GROUP_PLURAL and kind == "DELETED":
            self._unserve_crd(obj)
        if spec.storage.group == authz.RBAC_GROUP:
            self._policy = None
            if spec.storage.plural == "clusterroles" and not self._aggregating:
                self._aggregate_cluster_roles()

    def _aggregate_cluster_roles(self) -> None:
        """The aggregation controller: give every ClusterRole with an ``aggregationRule`` the
        rules of the ClusterRoles it selects, as a write of its own (watchers see it).
        """
        spec = self._spec_of_names(_RBAC, "clusterroles")
        self._aggregating = True
        try:
            for _ in range(_MAX_REACTOR_ROUNDS):
                roles = list(self._objects_of(spec, None, _match_all))
                changed = False
                for role in roles:
                    if not role.get("aggregationRule"):
                        continue
                    rules = authz.aggregated_rules(role, roles)
                    if [authz.normalized_rule(rule) for rule in role.get("rules") or []] == rules:
                        continue
                    name = role["metadata"]["name"]
                    merge = functools.partial(_merge_patch, patch={"rules": rules})
                    self._update(spec, None, name, merge, "main")
                    changed = True
                if not changed:
                    return
            raise RuntimeError("ClusterRole aggregation does not settle")
        finally:
            self._aggregating = False

    # --- lookups ----------------------------------------------------------------------------

    def _spec_of(self, resource: kmock.resource | None) -> _Spec:
        if (
            resource is None
            or resource.group is None
            or resource.version is None
            or resource.plural is None
            or resource not in self.resources
        ):
            raise _not_found_resource()
        info = self.resources[resource]
        return _Spec(
            resource=resource,
            storage=self._storage.get(resource, resource),
            kind=info.kind or resource.plural.capitalize(),
            namespaced=info.namespaced is not False,
            has_status="status" in info.subresources,
            custom=resource in self._custom,
            schema=self._schemas.get(resource),
            scale=self._scales.get(resource) if "scale" in info.subresources else None,
            selectable=self._selectable.get(resource, ()),
        )

    def _spec_of_names(self, api_version: str, plural: str) -> _Spec:
        return self._spec_of(kmock.resource(api_version, plural))

    def _spec_of_kind(self, api_version: str, kind: str) -> _Spec:
        wanted = kmock.resource(api_version, "-")
        for key in list(self.resources):
            resource = kmock.resource(key)
            if (resource.group, resource.version) == (wanted.group, wanted.version):
                if self.resources[resource].kind == kind:
                    return self._spec_of(resource)
        raise ApiError(404, "NotFound", f"no resource is registered for {api_version} {kind}")

    def _resolve(self, request: kmock.Request, *, named: bool) -> _Spec:
        spec = self._spec_of(request.resource)
        if (spec.resource.group, spec.resource.plural) in _REVIEWS and (
            request.method != kmock.method.POST or request.name is not None
        ):
            raise _method_not_allowed()
        if request.namespace is not None and not spec.namespaced:
            raise _not_found_resource()
        if named:
            if spec.namespaced and request.namespace is None:
                raise _not_found_resource()
            if request.subresource not in (None, "status", "scale") or (
                request.subresource == "status" and not spec.has_status
            ):
                raise _not_found_resource()
            if request.subresource == "scale" and spec.scale is None:
                raise _not_found_resource()
        return spec

    def _key(
        self, spec: _Spec, namespace: str | None, name: str
    ) -> tuple[kmock.resource, str | None, str]:
        return spec.storage, namespace if spec.namespaced else None, name

    def _current(self, spec: _Spec, namespace: str | None, name: str) -> JsonDict | None:
        key = self._key(spec, namespace, name)
        if key not in self._objects:
            return None
        stored = self._objects[key]
        return None if stored.deleted else stored.raw

    def _objects_of(
        self, spec: _Spec, namespace: str | None, matcher: Matcher
    ) -> Iterator[JsonDict]:
        found = [
            (ns or "", name, stored.raw)
            for (resource, ns, name), stored in self._objects.items()
            if resource == spec.storage and not stored.deleted
            if namespace is None or ns == namespace
        ]
        return (obj for _, _, obj in sorted(found, key=lambda t: t[:2]) if matcher(obj))

    def _generate_name(self, spec: _Spec, namespace: str | None, prefix: str) -> str:
        while True:
            name = prefix + "".join(random.choices(_NAME_SUFFIX_ALPHABET, k=5))
            if self._current(spec, namespace, name) is None:
                return name

    def _present(self, spec: _Spec, obj: JsonDict) -> JsonDict:
        """The stored object as served in the requested version."""
        if spec.resource == spec.storage:
            return obj
        if _is_event(spec):
            return events.convert(obj, spec.api_version)
        return {**obj, "apiVersion": spec.api_version}

    def _matcher(self, request: kmock.Request, spec: _Spec | None = None) -> Matcher:
        labels = _parse_label_selector(request.params.get("labelSelector", ""))
        allowed = _field_labels(spec)
        fields = _parse_field_selector(request.params.get("fieldSelector", ""), allowed)
        if request.name is not None:  # a watch of a single object
            fields.append(("metadata.name", "=", request.name))
        namespace = request.namespace

        def matches(obj: JsonDict) -> bool:
            meta = obj.get("metadata") or {}
            if namespace is not None and meta.get("namespace") != namespace:
                return False
            obj_labels = meta.get("labels") or {}
            if not all(requirement(obj_labels) for requirement in labels):
                return False
            if fields:
                selectable = _selectable_fields(spec, obj)
                for path, op, value in fields:
                    if (selectable.get(path, "") == value) != (op != "!="):
                        return False
            return True

        return matches

    def _watch_event(self, spec: _Spec, event: _Event, matcher: Matcher) -> JsonDict | None:
        now_matches = matcher(event.obj)
        kind = event.type
        if kind == "MODIFIED":
            was_matching = event.old is not None and matcher(event.old)
            if not was_matching and not now_matches:
                return None
            kind = "DELETED" if not now_matches else "MODIFIED" if was_matching else "ADDED"
        elif not now_matches:
            return None
        return {"type": kind, "object": self._present(spec, event.obj)}

    def _bookmark(self, spec: _Spec, rv: int) -> JsonDict:
        return {
            "type": "BOOKMARK",
            "object": {
                "apiVersion": spec.api_version,
                "kind": spec.kind,
                "metadata": {
                    "resourceVersion": str(rv),
                    "annotations": {INITIAL_EVENTS_END: "true"},
                },
            },
        }


def complete_rollouts(obj: JsonDict) -> JsonDict | None:
    """A reactor finishing Deployment/StatefulSet/DaemonSet rollouts as soon as they start.

    When ``metadata.generation`` differs from ``status.observedGeneration`` (and a
    Deployment is not paused), return the status of a completed rollout of
    ``spec.replicas`` (default 1) pods; DaemonSets run on one node.
    """
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    generation = meta.get("generation")
    if status.get("observedGeneration") == generation:
        return None
    replicas = spec.get("replicas", 1)
    kind = obj.get("kind")
    now = _now()
    if kind == "Deployment":
        if spec.get("paused") is True:
            return None
        return {
            "status": {
                "observedGeneration": generation,
                "replicas": replicas,
                "updatedReplicas": replicas,
                "readyReplicas": replicas,
                "availableReplicas": replicas,
                "unavailableReplicas": None,
                "conditions": [
                    _condition("Available", "MinimumReplicasAvailable", now),
                    _condition("Progressing", "NewReplicaSetAvailable", now),
                ],
            }
        }
    if kind == "StatefulSet":
        template = json.dumps(spec.get("template") or {}, sort_keys=True).encode()
        revision = f"{meta.get('name')}-{hashlib.sha256(template).hexdigest()[:10]}"
        return {
            "status": {
                "observedGeneration": generation,
                "replicas": replicas,
                "readyReplicas": replicas,
                "updatedReplicas": replicas,
                "currentReplicas": replicas,
                "availableReplicas": replicas,
                "updateRevision": revision,
                "currentRevision": revision,
            }
        }
    if kind == "DaemonSet":
        return {
            "status": {
                "observedGeneration": generation,
                "desiredNumberScheduled": 1,
                "currentNumberScheduled": 1,
                "updatedNumberScheduled": 1,
                "numberAvailable": 1,
                "numberReady": 1,
                "numberMisscheduled": 0,
            }
        }
    return None


def write_kubeconfig(
    path: str | pathlib.Path,
    server_url: str,
    namespace: str = "default",
    *,
    token: str | None = None,
    certificate_authority: str | pathlib.Path | None = None,
) -> pathlib.Path:
    """Write a kubeconfig for the server and a user without credentials (or with a bearer
    token, such as ``em.admin_token`` or ``em.service_account_token(ns, name)``; kubectl
    sends it only over https, with the server's ``certificate_authority``).
    """
    user: JsonDict = {} if token is None else {"token": token}
    cluster: JsonDict = {"server": server_url}
    if certificate_authority is not None:
        cluster["certificate-authority"] = str(certificate_authority)
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": cluster}],
        "users": [{"name": "emulator", "user": user}],
        "contexts": [
            {
                "name": "emulator",
                "context": {"cluster": "emulator", "user": "emulator", "namespace": namespace},
            }
        ],
        "current-context": "emulator",
        "preferences": {},
    }
    target = pathlib.Path(path)
    target.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return target


_CRDS = ("apiextensions.k8s.io/v1", "customresourcedefinitions")
_CRDS_GROUP_PLURAL = ("apiextensions.k8s.io", "customresourcedefinitions")


def _crd_status(crd: Mapping[str, Any]) -> JsonDict:
    """What the apiextensions controllers write on a CRD they accept: its names accepted,
    established, its storage version recorded."""
    spec = crd.get("spec") or {}
    now = _now()
    stored = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
    return {
        "acceptedNames": copy.deepcopy(spec.get("names") or {}),
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
             "message": "no conflicts found", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
             "message": "the initial names have been accepted", "lastTransitionTime": now},
        ],
        "storedVersions": stored,
    }  # fmt: skip


# (apiVersion, plural, kind, namespaced, status subresource, short names)
_BUILTINS: list[tuple[str, str, str, bool, bool, list[str]]] = [
    ("v1", "configmaps", "ConfigMap", True, False, ["cm"]),
    ("v1", "secrets", "Secret", True, False, []),
    ("v1", "pods", "Pod", True, True, ["po"]),
    ("v1", "services", "Service", True, True, ["svc"]),
    ("v1", "namespaces", "Namespace", False, True, ["ns"]),
    ("v1", "events", "Event", True, False, ["ev"]),
    ("events.k8s.io/v1", "events", "Event", True, False, ["ev"]),
    ("apps/v1", "deployments", "Deployment", True, True, ["deploy"]),
    ("apps/v1", "statefulsets", "StatefulSet", True, True, ["sts"]),
    ("apps/v1", "daemonsets", "DaemonSet", True, True, ["ds"]),
    ("apps/v1", "replicasets", "ReplicaSet", True, True, ["rs"]),
    # The operator's leader election: one Lease, read, created and replaced (PUT with its
    # resourceVersion, so that two candidates cannot both take it).
    ("coordination.k8s.io/v1", "leases", "Lease", True, False, []),
    # Served so that Kopf's resource observer can list and watch them (and RBAC decide);
    # register_crd still decides what is served, the stored objects are only listed.
    (
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        True,
        ["crd", "crds"],
    ),
    (
        "admissionregistration.k8s.io/v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        False,
        False,
        [],
    ),
    (
        "admissionregistration.k8s.io/v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        False,
        False,
        [],
    ),
]

# The built-in kinds in kube-apiserver's ``all`` category (``kubectl get all``).
_CATEGORY_ALL = frozenset(
    {"pods", "services", "deployments", "statefulsets", "daemonsets", "replicasets"}
)

_CREATE_ONLY = frozenset({"create"})
# Served with the built-ins and by enable_auth: (apiVersion, plural, kind, namespaced, verbs,
# short names). The reviews are only ever created (and answered), never stored.
_AUTH_KINDS: list[tuple[str, str, str, bool, frozenset[str], list[str]]] = [
    ("v1", "serviceaccounts", "ServiceAccount", True, VERBS, ["sa"]),
    (_RBAC, "clusterroles", "ClusterRole", False, VERBS, []),
    (_RBAC, "clusterrolebindings", "ClusterRoleBinding", False, VERBS, []),
    (_RBAC, "roles", "Role", True, VERBS, []),
    (_RBAC, "rolebindings", "RoleBinding", True, VERBS, []),
    (
        _AUTHORIZATION,
        "selfsubjectaccessreviews",
        "SelfSubjectAccessReview",
        False,
        _CREATE_ONLY,
        [],
    ),
    (_AUTHORIZATION, "selfsubjectrulesreviews", "SelfSubjectRulesReview", False, _CREATE_ONLY, []),
    (_AUTHORIZATION, "subjectaccessreviews", "SubjectAccessReview", False, _CREATE_ONLY, []),
    (
        _AUTHORIZATION,
        "localsubjectaccessreviews",
        "LocalSubjectAccessReview",
        True,
        _CREATE_ONLY,
        [],
    ),
    (_AUTHENTICATION, "selfsubjectreviews", "SelfSubjectReview", False, _CREATE_ONLY, []),
]

# CRDs of Argo CD, Kyverno and the policy reports (wgpolicyk8s.io, openreports.io), with
# schemas that prune nothing.
_THIRD_PARTY_CRDS: list[tuple[str, str, str, bool, bool, list[str]]] = [
    ("argoproj.io/v1alpha1", "applications", "Application", True, False, ["app", "apps"]),
    ("argoproj.io/v1alpha1", "appprojects", "AppProject", True, False, ["appproj", "appprojs"]),
    ("kyverno.io/v1", "clusterpolicies", "ClusterPolicy", False, True, ["cpol"]),
    ("kyverno.io/v1", "policies", "Policy", True, True, ["pol"]),
    ("kyverno.io/v2", "policyexceptions", "PolicyException", True, False, ["polex"]),
    ("wgpolicyk8s.io/v1alpha2", "policyreports", "PolicyReport", True, False, ["polr"]),
    (
        "wgpolicyk8s.io/v1alpha2",
        "clusterpolicyreports",
        "ClusterPolicyReport",
        False,
        False,
        ["cpolr"],
    ),
    # Kyverno 1.17+: the CEL validating policies, and reports in openreports.io.
    ("policies.kyverno.io/v1", "validatingpolicies", "ValidatingPolicy", False, True, ["vpol"]),
    (
        "policies.kyverno.io/v1",
        "namespacedvalidatingpolicies",
        "NamespacedValidatingPolicy",
        True,
        True,
        ["nvpol"],
    ),
    (
        "policies.kyverno.io/v1",
        "imagevalidatingpolicies",
        "ImageValidatingPolicy",
        False,
        True,
        ["ivpol"],
    ),
    (
        "policies.kyverno.io/v1",
        "namespacedimagevalidatingpolicies",
        "NamespacedImageValidatingPolicy",
        True,
        True,
        ["nivpol"],
    ),
    # ... and the other CEL policy kinds, which the refusal layer lists for the ConfigMaps
    # they read (kube.policy_inputs), with their short names as Kyverno's CRDs give them.
    *(
        (
            "policies.kyverno.io/v1",
            f"{prefix}{plural}",
            f"{kind_prefix}{kind}",
            bool(prefix),
            True,
            [f"{short_prefix}{short}"],
        )
        for plural, kind, short in (
            ("mutatingpolicies", "MutatingPolicy", "mpol"),
            ("generatingpolicies", "GeneratingPolicy", "gpol"),
            ("deletingpolicies", "DeletingPolicy", "dpol"),
        )
        for prefix, kind_prefix, short_prefix in (("", "", ""), ("namespaced", "Namespaced", "n"))
    ),
    ("openreports.io/v1alpha1", "reports", "Report", True, False, ["reps"]),
    ("openreports.io/v1alpha1", "clusterreports", "ClusterReport", False, False, ["creps"]),
]


def _crd(
    api_version: str, plural: str, kind: str, namespaced: bool, status: bool, shortnames: list[str]
) -> JsonDict:
    group, version = api_version.split("/")
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "scope": "Namespaced" if namespaced else "Cluster",
            "names": {"plural": plural, "kind": kind, "shortNames": shortnames},
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}} if status else {},
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


# --- small pure helpers -------------------------------------------------------------------


_KUBE_VERSION = re.compile(r"v(\d+)(?:(alpha|beta)(\d+))?")


def _version_priority(version: str) -> tuple[int, int, int, str]:
    """The sort key of kube-apiserver's version priority: GA before beta before alpha, a
    higher number first, then anything else by name.
    """
    match = _KUBE_VERSION.fullmatch(version)
    if match is None:
        return (3, 0, 0, version)
    major, level, minor = match.groups()
    rank = {None: 0, "beta": 1, "alpha": 2}[level]
    return (rank, -int(major), -int(minor or 0), version)


_AGGREGATED = "APIGroupDiscoveryList"
_DISCOVERY_GROUP = "apidiscovery.k8s.io"


def _aggregated_version(accept: str) -> str | None:
    """The aggregated discovery version (``v2``, ``v2beta1``) an ``Accept`` asks for first,
    or None when it asks for the plain documents first (kubectl 1.32 asks for v2, then
    v2beta1, then plain JSON)."""
    for media_range in accept.split(","):
        kind, *params = (part.strip() for part in media_range.split(";"))
        if kind not in ("application/json", "*/*", "application/*"):
            continue
        values = dict(p.split("=", 1) for p in params if "=" in p)
        if values.get("g") == _DISCOVERY_GROUP and values.get("as") == _AGGREGATED:
            if values.get("v") in ("v2", "v2beta1"):
                return values["v"]
            continue
        if "as" not in values:
            return None
    return None


def _aggregated(
    version: str,
    groups: list[tuple[str, list[str]]],
    entries_of: Callable[[str, str], list[JsonDict] | None],
) -> Response:
    """An ``APIGroupDiscoveryList`` (aggregated discovery): every group, its versions (the
    preferred first) and their resources with their subresources, in one answer."""
    items: list[JsonDict] = []
    for group, versions in groups:
        found: list[JsonDict] = []
        for gv in versions:
            resources: list[JsonDict] = []
            for entry in entries_of(group, gv) or []:
                name = str(entry["name"])
                response_kind = {
                    "group": entry.get("group", group),
                    "version": entry.get("version", gv),
                    "kind": entry["kind"],
                }
                if "/" in name:
                    parent, subresource = name.split("/", 1)
                    for resource in resources:
                        if resource["resource"] == parent:
                            resource.setdefault("subresources", []).append(
                                {
                                    "subresource": subresource,
                                    "responseKind": response_kind,
                                    "verbs": entry["verbs"],
                                }
                            )
                    continue
                resource = {
                    "resource": name,
                    "responseKind": response_kind,
                    "scope": "Namespaced" if entry["namespaced"] else "Cluster",
                    "singularResource": entry["singularName"],
                    "verbs": entry["verbs"],
                }
                for key in ("shortNames", "categories"):
                    if entry.get(key):
                        resource[key] = entry[key]
                resources.append(resource)
            found.append({"version": gv, "resources": resources, "freshness": "Current"})
        items.append({"metadata": {"name": group, "creationTimestamp": None}, "versions": found})
    body = {
        "kind": _AGGREGATED,
        "apiVersion": f"{_DISCOVERY_GROUP}/{version}",
        "metadata": {},
        "items": items,
    }
    content_type = f"application/json;g={_DISCOVERY_GROUP};v={version};as={_AGGREGATED}"
    return Response(payload=body, headers={"Content-Type": content_type})


def _api_group(group: str, versions: list[str]) -> JsonDict:
    listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": listed, "preferredVersion": listed[0]}


def _api_version(resource: kmock.resource) -> str:
    return f"{resource.group}/{resource.version}" if resource.group else str(resource.version)


def _typed(spec: _Spec, obj: JsonDict) -> JsonDict:
    """The object with the stored ``apiVersion`` and ``kind`` (first, as kubectl shows them)."""
    rest = {key: value for key, value in obj.items() if key not in ("apiVersion", "kind")}
    return {"apiVersion": _api_version(spec.storage), "kind": spec.kind, **rest}


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(kind: str, reason: str, now: str) -> JsonDict:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "lastUpdateTime": now,
        "lastTransitionTime": now,
    }


def _match_all(obj: JsonDict) -> bool:
    return True


def _content(spec: _Spec, obj: JsonDict) -> JsonDict:
    """Everything a change of which bumps ``metadata.generation``."""
    skipped = ("metadata", "status") if spec.has_status else ("metadata",)
    return {key: value for key, value in obj.items() if key not in skipped}


def _tidy_meta(meta: JsonDict) -> None:
    for key in _OMIT_EMPTY_META:
        if key in meta and not meta[key]:
            del meta[key]


def _details(spec: _Spec, name: str) -> JsonDict:
    """``StatusDetails`` of an object (Go's omitempty drops the core group and no name)."""
    details: JsonDict = {"name": name, "group": spec.resource.group, "kind": spec.resource.plural}
    return {key: value for key, value in details.items() if value}


def _not_found_resource() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def _not_found(spec: _Spec, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{spec.qualified} "{name}" not found', _details(spec, name))


def _conflict(spec: _Spec, name: str, message: str) -> ApiError:
    return ApiError(409, "Conflict", message, _details(spec, name))


def _stale_message(spec: _Spec, name: str) -> str:
    return (
        f'Operation cannot be fulfilled on {spec.qualified} "{name}": the object has been'
        " modified; please apply your changes to the latest version and try again"
    )


def _invalid(spec: _Spec, name: str, message: str) -> ApiError:
    group = spec.resource.group or ""
    qualified = f"{spec.kind}.{group}" if group else spec.kind
    details = {key: value for key, value in (("name", name), ("group", group)) if value}
    details["kind"] = spec.kind
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {message}', details)


def _bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def _unsupported_media_type(accepted: Iterable[str]) -> ApiError:
    return ApiError(
        415,
        "UnsupportedMediaType",
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(accepted),
    )


def _invalid_options(kind: str, field_name: str, detail: str) -> ApiError:
    """422 for bad request options (``PatchOptions.meta.k8s.io "" is invalid: ...``)."""
    reason = {"Required": "FieldValueRequired", "Unsupported": "FieldValueNotSupported"}.get(
        detail.split(" ", 1)[0], "FieldValueForbidden"
    )
    return ApiError(
        422,
        "Invalid",
        f'{kind}.meta.k8s.io "" is invalid: {field_name}: {detail}',
        {
            "group": "meta.k8s.io",
            "kind": kind,
            "causes": [{"reason": reason, "message": detail, "field": field_name}],
        },
    )


def _method_not_allowed() -> ApiError:
    return ApiError(
        405,
        "MethodNotAllowed",
        "the server does not allow this method on the requested resource",
        {},
    )


def _forbidden(status: JsonDict) -> aiohttp.web.StreamResponse:
    return aiohttp.web.json_response(
        status, status=403, headers={"X-Content-Type-Options": "nosniff"}
    )


def _gone(cursor: int, expired_rv: int) -> JsonDict:
    status = ApiError(
        410, "Expired", f"too old resource version: {cursor} ({expired_rv})", {"causes": []}
    )
    return {"type": "ERROR", "object": status.status()}


def _header(request: kmock.Request, name: str) -> str:
    for key, value in request.headers.items():
        if key.lower() == name.lower():
            return value
    return ""


def _content_type(request: kmock.Request) -> str:
    return _header(request, "Content-Type").split(";")[0].strip().lower()


async def _from_protobuf(raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.BaseRequest:
    """A protobuf request as the JSON one it stands for (KMock reads bodies as text); one
    the emulator cannot read keeps its content type and loses its body, and is 415.
    """
    headers = {k: v for k, v in raw_request.headers.items() if k.lower() != "content-type"}
    as_json = raw_request.clone(headers={**headers, "Content-Type": JSON})
    as_is = raw_request.clone()  # aiohttp clones a request only before its body is read
    decoded = protobuf.decode(await raw_request.read())
    # aiohttp keeps a body once read: the clone's is set to the decoded JSON (or nothing).
    if decoded is None:
        as_is._read_bytes = b""
        return as_is
    as_json._read_bytes = json.dumps(decoded).encode()
    return as_json


def _writer_of(request: kmock.Request) -> _Writer | None:
    """The field manager a write request records (``None`` for reads)."""
    if request.method.value not in ("POST", "PUT", "PATCH"):
        return None
    if _content_type(request) == APPLY_PATCH:
        manager, operation = request.params.get("fieldManager", ""), ssa.APPLY
    else:
        manager = ssa.manager_of(request.params.get("fieldManager"), _header(request, "User-Agent"))
        operation = ssa.UPDATE
    return _Writer(manager, operation, request.subresource or "")


def _object_body(request: kmock.Request, spec: _Spec) -> Any:
    """The object of a create or update: JSON or YAML (a protobuf body was turned into JSON
    before, see ``_from_protobuf``); anything else is 415.
    """
    content_type = _content_type(request) or JSON
    if content_type == YAML:
        return _yaml_body(request)
    if content_type != JSON:
        raise _unsupported_media_type([JSON, YAML])
    return _json_body(request)


def _yaml_body(request: kmock.Request) -> Any:
    if not request.body.strip():
        return None
    try:
        return yaml.safe_load(request.body)
    except yaml.YAMLError as exc:
        raise _bad_request(f"the request body is not valid YAML: {exc}") from None


def _json_body(request: kmock.Request) -> Any:
    # KMock's own ``request.data`` falls back to form parsing; decode the raw body instead.
    if not request.body.strip():
        return None
    try:
        return json.loads(request.body)
    except ValueError as exc:
        raise _bad_request(f"the request body is not valid JSON: {exc}") from None


def _order_key(obj: JsonDict) -> tuple[str, str]:
    meta = obj["metadata"]
    return (str(meta.get("namespace") or ""), str(meta["name"]))


def _write_continue(resource_version: str, last: JsonDict) -> str:
    raw = json.dumps([resource_version, *_order_key(last)]).encode()
    return base64.urlsafe_b64encode(raw).decode()


def _read_continue(token: str) -> tuple[str, tuple[str, str]]:
    try:
        rv, namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))
        return str(rv), (str(namespace), str(name))
    except (ValueError, TypeError) as exc:
        raise _bad_request(f"invalid continue token: {token!r}") from exc


def _int_param(request: kmock.Request, name: str) -> int:
    try:
        return int(request.params[name])
    except ValueError:
        raise _bad_request(f"invalid {name}: {request.params[name]!r}") from None


_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})


def _bool_param(request: kmock.Request, name: str) -> bool:
    """A boolean query parameter as the real server reads it (Go's ``strconv.ParseBool``;
    anything that is not true counts as false).
    """
    return request.params.get(name, "") in _GO_TRUE


def _float_param(request: kmock.Request, name: str) -> float | None:
    if not request.params.get(name):
        return None
    try:
        return float(request.params[name])
    except ValueError:
        raise _bad_request(f"invalid {name}: {request.params[name]!r}") from None


# --- selectors ----------------------------------------------------------------------------


def _split_selector(selector: str) -> list[str]:
    """Split on the commas outside of parentheses: ``a in (x,y),b`` -> two requirements."""
    parts: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(selector):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append(selector[start:index])
            start = index + 1
    parts.append(selector[start:])
    return [part for part in parts if part.strip()]


@dataclass(frozen=True)
class _LabelRequirement:
    key: str
    op: Literal["exists", "absent", "in", "notin"]
    values: frozenset[str] = frozenset()

    def __call__(self, labels: Mapping[str, str]) -> bool:
        match self.op:
            case "exists":
                return self.key in labels
            case "absent":
                return self.key not in labels
            case "in":
                return labels.get(self.key) in self.values
            case "notin":  # also true when the label is absent, as ``!=`` is
                return labels.get(self.key) not in self.values


def _parse_label_selector(selector: str) -> list[_LabelRequirement]:
    requirements: list[_LabelRequirement] = []
    for part in _split_selector(selector):
        match = _LABEL_REQUIREMENT.fullmatch(part)
        if match is None:
            raise _bad_request(f"unable to parse requirement: {part!r}")
        if match["absent"]:
            requirements.append(_LabelRequirement(match["absent"], "absent"))
        elif match["op"]:
            op: Literal["in", "notin"] = "notin" if match["op"] == "!=" else "in"
            requirements.append(_LabelRequirement(match["key"], op, frozenset([match["value"]])))
        elif match["setop"]:
            op = "notin" if match["setop"] == "notin" else "in"
            values = frozenset(v.strip() for v in match["values"].split(",") if v.strip())
            requirements.append(_LabelRequirement(match["key"], op, values))
        else:
            requirements.append(_LabelRequirement(match["key"], "exists"))
    return requirements


def _is_event(spec: _Spec) -> bool:
    return events.is_event(spec.api_version, str(spec.resource.plural))


def _field_labels(spec: _Spec | None) -> frozenset[str]:
    """The field labels a resource can be selected by (the real ``GetAttrs``, fields.py)."""
    if spec is None:
        return _SELECTABLE_FIELDS
    return fields.labels(spec.api_version, str(spec.resource.plural), spec.selectable)


def _selectable_fields(spec: _Spec | None, obj: JsonDict) -> dict[str, str]:
    if spec is None:
        return fields.values("v1", "", obj)
    shown = events.convert(obj, spec.api_version) if _is_event(spec) else obj
    return fields.values(spec.api_version, str(spec.resource.plural), shown, spec.selectable)


def _parse_field_selector(
    selector: str, allowed: frozenset[str] = frozenset()
) -> list[tuple[str, str, str]]:
    requirements: list[tuple[str, str, str]] = []
    for part in _split_selector(selector):
        match = _FIELD_REQUIREMENT.fullmatch(part)
        if match is None:
            raise _bad_request(f"invalid field selector: {part!r}")
        if match["field"] not in (allowed or _SELECTABLE_FIELDS):
            raise _bad_request(f"field label not supported: {match['field']}")
        op = "!=" if match["op"] == "!=" else "="
        requirements.append((match["field"], op, match["value"]))
    return requirements


# --- structural schemas -------------------------------------------------------------------


def _normalize(obj: JsonDict, structural: JsonDict | None) -> JsonDict:
    """Prune unknown fields, then apply defaults, as a CRD's structural schema says."""
    return schema.normalize(obj, structural)[0]


def _write_of(request: kmock.Request) -> _Write | None:
    """The write an HTTP request makes, with its ``fieldValidation`` (422 when not one of
    the values the real server knows).
    """
    verbs: dict[str, Literal["create", "update", "patch"]] = {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
    }
    verb = verbs.get(request.method.value)
    if verb is None or request.resource is None:
        return None
    value = request.params.get("fieldValidation", "")
    refused = schema.field_validation_error(f"{verb.capitalize()}Options", value)
    if refused is not None:
        raise ApiError(refused["code"], refused["reason"], refused["message"], refused["details"])
    if _content_type(request) == APPLY_PATCH:
        return _Write(verb, "Ignore")  # see the module docstring: no unknown-field errors
    return _Write(verb, value or "Warn")


def _dry_run_of(request: kmock.Request) -> bool:
    """Whether a write asks for ``dryRun=All`` (any other value is the real 422)."""
    if request.method.value not in ("POST", "PUT", "PATCH", "DELETE"):
        return False
    values = request.params.getall("dryRun", []) if hasattr(request.params, "getall") else []
    if not values and "dryRun" in request.params:
        values = [request.params["dryRun"]]
    if not values and request.method.value == "DELETE":
        # kubectl sends a deletion's options as a DeleteOptions body.
        with contextlib.suppress(ApiError):
            options = _json_body(request)
            if isinstance(options, dict) and isinstance(options.get("dryRun"), list):
                values = [str(value) for value in options["dryRun"]]
    if not values:
        return False
    bad = [value for value in values if value != "All"]
    if bad:
        options = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}
        kind = options.get(request.method.value, "DeleteOptions")
        listed = "[]string{" + ", ".join(authz.go_quote(v) for v in bad) + "}"
        raise _invalid_options(
            kind, "dryRun", f'Unsupported value: {listed}: supported values: "All"'
        )
    return True


def _warning(write: _Write | None) -> str | None:
    """The ``Warning`` header of a write's answer (``None``: none)."""
    return schema.warning_header(write.warnings) if write and write.warnings else None


def _unknown_fields(spec: _Spec, proposed: JsonDict) -> None:
    """Answer the unknown fields of a client's object as its ``fieldValidation`` says:
    ``Strict`` refuses the write, ``Warn`` (the default) warns, ``Ignore`` says nothing.
    """
    write = _WRITE.get()
    if write is None or spec.schema is None or write.field_validation == "Ignore":
        return
    unknown = schema.normalize(proposed, spec.schema)[1]
    if not unknown:
        return
    if write.field_validation == "Warn":
        write.warnings.extend(schema.unknown_messages(unknown))
        return
    error = schema.strict_decoding_error(unknown)
    if write.verb != "patch":
        version = spec.resource.version
        raise _bad_request(
            f'{spec.kind} in version "{version}" cannot be handled as a {spec.kind}: {error}'
        )
    invalid = [schema.FieldError(schema.INVALID, "patch", schema.go_json(proposed), error)]
    body = schema.invalid_status("", "", "", invalid)
    raise ApiError(422, "Invalid", body["message"], body["details"])


def _validate(spec: _Spec, name: str, obj: JsonDict, old: JsonDict | None, scope: Scope) -> None:
    """422 Invalid when ``obj`` breaks its CRD's structural schema (see ``schema.py``)."""
    if spec.schema is None:
        return
    errors: list[schema.FieldError] = []
    if scope == "status":
        status_schema = (spec.schema.get("properties") or {}).get("status")
        if "status" in obj and isinstance(status_schema, dict):
            # Ratcheted by the stored status, as statusStrategy does.
            errors = schema.validate(
                obj["status"], status_schema, (old or {}).get("status"), prefix="status"
            )
    elif old is None:
        errors = schema.validate(obj, spec.schema)
    else:
        errors = schema.validate(obj, spec.schema, old)
    # The CEL rules judge the whole object, on a /status write too (cel.py: ratcheted).
    errors += cel.errors(obj, spec.schema) if old is None else cel.errors(obj, spec.schema, old)
    if errors:
        body = schema.invalid_status(spec.resource.group or "", spec.kind, name, errors)
        raise ApiError(422, "Invalid", body["message"], body["details"])


# --- patches ------------------------------------------------------------------------------


def _merge_patch(target: Any, patch: Any, *, strategic: bool = False) -> Any:
    """RFC 7386 JSON merge patch; ``strategic`` adds merging of name-keyed lists."""
    if strategic and _is_named_list(patch) and _is_named_list(target):
        return _merge_named_lists(target, patch)
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if strategic and key.startswith("$"):
            continue  # directives such as $setElementOrder/..., $retainKeys
        if value is None:
            result.pop(key, None)
        else:
            result[key] = _merge_patch(result.get(key), value, strategic=strategic)
    return result


def _is_named_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(item, dict) and isinstance(item.get("name"), str) for item in value
    )


def _merge_named_lists(target: list[JsonDict], patch: list[JsonDict]) -> list[JsonDict]:
    result = [dict(item) for item in target]
    for item in patch:
        index = next((i for i, old in enumerate(result) if old["name"] == item["name"]), None)
        if item.get("$patch") == "delete":
            if index is not None:
                del result[index]
        elif index is None:
            result.append(_merge_patch({}, item, strategic=True))
        else:
            result[index] = _merge_patch(result[index], item, strategic=True)
    return result


class _PatchFailed(Exception):
    pass


def _json_patch(doc: JsonDict, ops: list[Any]) -> Any:
    """RFC 6902 JSON patch; every failure to apply is 422 Invalid, as on a real server."""
    result: Any = doc
    try:
        for op in ops:
            if not isinstance(op, dict) or not isinstance(op.get("path"), str):
                raise _PatchFailed(f"malformed operation: {op!r}")
            path = _pointer(op["path"])
            match op.get("op"):
                case "add":
                    result = _pointer_add(result, path, copy.deepcopy(_op_value(op)))
                case "remove":
                    result = _pointer_remove(result, path)[0]
                case "replace":
                    _pointer_get(result, path)
                    result = _pointer_remove(result, path)[0] if path else None
                    result = _pointer_add(result, path, copy.deepcopy(_op_value(op)))
                case "move":
                    source = _pointer(str(op.get("from")))
                    if path[: len(source)] == source and len(path) > len(source):
                        raise _PatchFailed(f"cannot move {op['from']} into its own child")
                    result, moved = _pointer_remove(result, source)
                    result = _pointer_add(result, path, moved)
                case "copy":
                    copied = copy.deepcopy(_pointer_get(result, _pointer(str(op.get("from")))))
                    result = _pointer_add(result, path, copied)
                case "test":
                    if not _json_equal(_pointer_get(result, path), _op_value(op)):
                        raise _PatchFailed(f"testing value {op['path']} failed")
                case other:
                    raise _PatchFailed(f"unknown operation {other!r}")
    except _PatchFailed as exc:
        raise ApiError(422, "Invalid", f"the JSON patch cannot be applied: {exc}") from None
    return result


def _op_value(op: JsonDict) -> Any:
    if "value" not in op:
        raise _PatchFailed(f"operation {op.get('op')!r} on {op['path']} has no value")
    return op["value"]


def _pointer(text: str) -> list[str]:
    if text == "":
        return []
    if not text.startswith("/"):
        raise _PatchFailed(f"a JSON pointer must start with '/': {text!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in text[1:].split("/")]


def _index(container: list[Any], token: str, *, extend: bool = False) -> int:
    if not re.fullmatch(r"0|[1-9][0-9]*", token):
        raise _PatchFailed(f"invalid array index {token!r}")
    index = int(token)
    if index > len(container) or (index == len(container) and not extend):
        raise _PatchFailed(f"array index {index} is out of bounds")
    return index


def _pointer_get(doc: Any, path: list[str]) -> Any:
    for token in path:
        if isinstance(doc, dict):
            if token not in doc:
                raise _PatchFailed(f"missing key {token!r}")
            doc = doc[token]
        elif isinstance(doc, list):
            doc = doc[_index(doc, token)]
        else:
            raise _PatchFailed(f"cannot look up {token!r} in a scalar")
    return doc


def _pointer_add(doc: Any, path: list[str], value: Any) -> Any:
    if not path:
        return value
    parent = _pointer_get(doc, path[:-1])
    token = path[-1]
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(len(parent) if token == "-" else _index(parent, token, extend=True), value)
    else:
        raise _PatchFailed(f"cannot add {token!r} to a scalar")
    return doc


def _pointer_remove(doc: Any, path: list[str]) -> tuple[Any, Any]:
    if not path:
        raise _PatchFailed("cannot remove the whole document")
    parent = _pointer_get(doc, path[:-1])
    token = path[-1]
    if isinstance(parent, dict):
        if token not in parent:
            raise _PatchFailed(f"missing key {token!r}")
        return doc, parent.pop(token)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, token))
    raise _PatchFailed(f"cannot remove {token!r} from a scalar")


def _json_equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike Python's, ``true`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)
