"""Authentication, impersonation and RBAC as kube-apiserver does them, as pure functions.

``ApiServerEmulator`` (``emulator.py``) wires these into its request handling once
``enable_auth()`` is called; nothing here touches HTTP or the emulator's state. The behaviour
follows the Kubernetes sources it is named after:

* ``request_attributes``: ``RequestInfoFactory.NewRequestInfo`` (k8s.io/apiserver
  ``endpoints/request/requestinfo.go``): which requests are resource requests, their verb
  (get/list/watch/create/update/patch/delete/deletecollection), namespace, name and
  subresource; a list or watch whose ``fieldSelector`` pins ``metadata.name`` carries that name.
* ``rule_allows`` and the matchers: ``RuleAllows`` and the helpers of
  ``pkg/apis/rbac/v1/evaluation_helpers.go``: ``*`` matches every resource and subresource,
  ``*/status`` any resource's ``status``, ``resourceNames`` only requests that carry one of the
  names (so never a create, nor a list or watch without a name), nonResourceURLs match
  exactly or by a trailing ``*``.
* ``visit_rules``/``authorize``: ``DefaultRuleResolver.VisitRulesFor`` and the RBAC
  authorizer: ClusterRoleBindings everywhere, then the RoleBindings of the request's
  namespace (a ClusterRole bound by a RoleBinding applies in that namespace only); the reason
  names the binding that allowed (``RBAC: allowed by ...``) or the bindings whose role is
  missing. Members of ``system:masters`` are allowed everything first, as the privileged-groups
  authorizer does.
* ``impersonation_requests``/``impersonated_user``: ``filters/impersonation.go``.
* ``forbidden_status`` and friends: ``handlers/responsewriters/errors.go`` and
  ``apierrors.NewForbidden``, word for word.
* ``aggregated_rules``: the ClusterRole aggregation controller.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import kmock

JsonDict = dict[str, Any]

ANONYMOUS = "system:anonymous"
AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
MASTERS = "system:masters"
SERVICE_ACCOUNTS = "system:serviceaccounts"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"

RBAC_GROUP = "rbac.authorization.k8s.io"
AUTHORIZATION_GROUP = "authorization.k8s.io"
AUTHENTICATION_GROUP = "authentication.k8s.io"

IMPERSONATE_USER = "Impersonate-User"
IMPERSONATE_GROUP = "Impersonate-Group"
IMPERSONATE_UID = "Impersonate-Uid"
IMPERSONATE_EXTRA_PREFIX = "Impersonate-Extra-"

_SPECIAL_VERBS = frozenset({"proxy", "watch"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_FIELD_NAME_TERM = re.compile(r"\s*metadata\.name\s*(==|=)\s*(?P<name>[^,]*?)\s*")
# responsewriters' sanitizer: messages never look like HTML.
_HTML = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


# --- identities and request attributes ----------------------------------------------------


@dataclass(frozen=True)
class UserInfo:
    """An authenticated (or impersonated) identity, as ``user.Info``."""

    username: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict, hash=False)

    def as_json(self) -> JsonDict:
        """The ``userInfo`` of a SelfSubjectReview or TokenReview (empty fields omitted)."""
        info: JsonDict = {"username": self.username}
        if self.uid:
            info["uid"] = self.uid
        if self.groups:
            info["groups"] = list(self.groups)
        if self.extra:
            info["extra"] = {key: list(values) for key, values in self.extra.items()}
        return info


def anonymous_user() -> UserInfo:
    return UserInfo(ANONYMOUS, (UNAUTHENTICATED,))


def with_authenticated_group(user: UserInfo) -> UserInfo:
    """Add ``system:authenticated``, as the authenticators' group adder does."""
    if AUTHENTICATED in user.groups:
        return user
    return UserInfo(user.username, (*user.groups, AUTHENTICATED), user.uid, user.extra)


def service_account_username(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def service_account_groups(namespace: str) -> tuple[str, ...]:
    return SERVICE_ACCOUNTS, f"{SERVICE_ACCOUNTS}:{namespace}"


def split_service_account_username(username: str) -> tuple[str, str] | None:
    """``(namespace, name)`` of a service account's username, or ``None`` for other users."""
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    parts = username.removeprefix(SERVICE_ACCOUNT_PREFIX).split(":")
    if len(parts) != 2:
        return None
    namespace, name = parts
    if len(namespace) > 63 or not _DNS_LABEL.fullmatch(namespace):
        return None
    if len(name) > 253 or not _DNS_SUBDOMAIN.fullmatch(name):
        return None
    return namespace, name


@dataclass(frozen=True)
class Attributes:
    """What is being asked, by whom: ``authorizer.Attributes``."""

    user: UserInfo
    verb: str
    resource_request: bool
    path: str = ""
    api_group: str = ""
    api_version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""


def request_attributes(
    user: UserInfo, method: str, path: str, query: Mapping[str, str]
) -> Attributes:
    """The authorization attributes of an HTTP request, as kube-apiserver parses them."""
    non_resource = Attributes(user=user, verb=method.lower(), resource_request=False, path=path)
    parts = path.strip("/").split("/") if path.strip("/") else []
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource
    prefix, parts = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(parts) < 3:
            return non_resource
        group, parts = parts[0], parts[1:]
    version, parts = parts[0], parts[1:]

    if parts[0] in _SPECIAL_VERBS:
        if len(parts) < 2:
            # The real server refuses such a URL; authorize it as what it names.
            return Attributes(user, parts[0], True, path, group, version)
        verb, parts = parts[0], parts[1:]
    else:
        verb = _METHOD_VERBS.get(method.upper(), "")

    namespace = ""
    if parts[0] == "namespaces":
        if len(parts) > 1:
            namespace = parts[1]
            if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
                parts = parts[2:]
    resource = parts[0]
    name = parts[1] if len(parts) >= 2 else ""
    subresource = parts[2] if len(parts) >= 3 and verb != "proxy" else ""

    if not name and verb == "get":
        watch = query.get("watch")
        verb = "watch" if watch is not None and watch.lower() not in ("false", "0") else "list"
        pinned = _name_from_field_selector(query.get("fieldSelector", ""))
        if pinned is not None:
            name = pinned
    if not name and verb == "delete":
        verb = "deletecollection"
    return Attributes(
        user=user,
        verb=verb,
        resource_request=True,
        path=path,
        api_group=group,
        api_version=version,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
    )


def _name_from_field_selector(selector: str) -> str | None:
    for term in selector.split(","):
        match = _FIELD_NAME_TERM.fullmatch(term)
        if match is not None:
            name = match["name"]
            if name and name not in (".", "..") and "/" not in name and "%" not in name:
                return name
            return None
    return None


# --- rules --------------------------------------------------------------------------------


def _strings(rule: Mapping[str, Any], key: str) -> list[str]:
    values = rule.get(key) or []
    return [str(value) for value in values] if isinstance(values, list) else []


def verb_matches(rule: Mapping[str, Any], verb: str) -> bool:
    return any(item in ("*", verb) for item in _strings(rule, "verbs"))


def api_group_matches(rule: Mapping[str, Any], group: str) -> bool:
    return any(item in ("*", group) for item in _strings(rule, "apiGroups"))


def resource_matches(rule: Mapping[str, Any], combined: str, subresource: str) -> bool:
    """``combined`` is ``resource`` or ``resource/subresource``."""
    for item in _strings(rule, "resources"):
        if item in ("*", combined):
            return True
        if subresource and item == f"*/{subresource}":
            return True
    return False


def resource_name_matches(rule: Mapping[str, Any], name: str) -> bool:
    names = _strings(rule, "resourceNames")
    return not names or name in names


def non_resource_url_matches(rule: Mapping[str, Any], path: str) -> bool:
    for item in _strings(rule, "nonResourceURLs"):
        if item in ("*", path):
            return True
        if item.endswith("*") and path.startswith(item.rstrip("*")):
            return True
    return False


def rule_allows(attributes: Attributes, rule: Mapping[str, Any]) -> bool:
    if attributes.resource_request:
        combined = attributes.resource
        if attributes.subresource:
            combined = f"{attributes.resource}/{attributes.subresource}"
        return (
            verb_matches(rule, attributes.verb)
            and api_group_matches(rule, attributes.api_group)
            and resource_matches(rule, combined, attributes.subresource)
            and resource_name_matches(rule, attributes.name)
        )
    return verb_matches(rule, attributes.verb) and non_resource_url_matches(rule, attributes.path)


# --- the RBAC authorizer ------------------------------------------------------------------


@dataclass(frozen=True)
class RbacPolicy:
    """The stored RBAC objects an authorization decision reads (a snapshot)."""

    cluster_roles: Mapping[str, JsonDict] = field(default_factory=dict)
    roles: Mapping[tuple[str, str], JsonDict] = field(default_factory=dict)  # (ns, name)
    cluster_role_bindings: Sequence[JsonDict] = ()
    role_bindings: Mapping[str, Sequence[JsonDict]] = field(default_factory=dict)  # by ns

    @classmethod
    def of(
        cls,
        cluster_roles: Iterable[JsonDict],
        roles: Iterable[JsonDict],
        cluster_role_bindings: Iterable[JsonDict],
        role_bindings: Iterable[JsonDict],
    ) -> RbacPolicy:
        by_namespace: dict[str, list[JsonDict]] = {}
        for binding in role_bindings:
            by_namespace.setdefault(_meta(binding, "namespace"), []).append(binding)
        return cls(
            cluster_roles={_meta(role, "name"): role for role in cluster_roles},
            roles={(_meta(role, "namespace"), _meta(role, "name")): role for role in roles},
            cluster_role_bindings=list(cluster_role_bindings),
            role_bindings=by_namespace,
        )


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


@dataclass(frozen=True)
class RuleVisit:
    """One rule that applies to a user (with the binding that grants it), or an error."""

    source: str = ""
    rule: Mapping[str, Any] | None = None
    error: str = ""


def _meta(obj: Mapping[str, Any], key: str) -> str:
    return str((obj.get("metadata") or {}).get(key) or "")


def _subjects(binding: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    subjects = binding.get("subjects") or []
    return [s for s in subjects if isinstance(s, Mapping)] if isinstance(subjects, list) else []


def applies_to(user: UserInfo, subject: Mapping[str, Any], namespace: str) -> bool:
    """Whether a binding's subject names the user (``appliesToUser``)."""
    kind, name = subject.get("kind"), str(subject.get("name") or "")
    if kind == "User":
        return user.username == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        sa_namespace = str(subject.get("namespace") or "") or namespace
        return bool(sa_namespace) and user.username == service_account_username(sa_namespace, name)
    return False


def _describe_subject(subject: Mapping[str, Any], binding_namespace: str) -> str:
    kind, name = str(subject.get("kind") or ""), str(subject.get("name") or "")
    if kind == "ServiceAccount":
        namespace = str(subject.get("namespace") or "") or binding_namespace
        return f"{kind} {go_quote(name + '/' + namespace)}"
    return f"{kind} {go_quote(name)}"


def _role_rules(
    policy: RbacPolicy, role_ref: Mapping[str, Any], namespace: str
) -> tuple[list[Mapping[str, Any]], str]:
    kind, name = role_ref.get("kind"), str(role_ref.get("name") or "")
    role: JsonDict | None
    if kind == "Role":
        role = policy.roles.get((namespace, name))
        missing = f"role.{RBAC_GROUP} {go_quote(name)} not found"
    elif kind == "ClusterRole":
        role = policy.cluster_roles.get(name)
        missing = f"clusterrole.{RBAC_GROUP} {go_quote(name)} not found"
    else:
        return [], f"unsupported role reference kind: {go_quote(str(kind or ''))}"
    if role is None:
        return [], missing
    rules = role.get("rules") or []
    return [rule for rule in rules if isinstance(rule, Mapping)], ""


def visit_rules(policy: RbacPolicy, user: UserInfo, namespace: str) -> Iterator[RuleVisit]:
    """Every rule that applies to the user in the namespace ("" for cluster scope)."""
    for binding in policy.cluster_role_bindings:
        subject = next((s for s in _subjects(binding) if applies_to(user, s, "")), None)
        if subject is None:
            continue
        role_ref = binding.get("roleRef") or {}
        rules, error = _role_rules(policy, role_ref, "")
        if error:
            yield RuleVisit(error=error)
            continue
        source = (
            f"ClusterRoleBinding {go_quote(_meta(binding, 'name'))} of {role_ref.get('kind')}"
            f" {go_quote(str(role_ref.get('name') or ''))} to {_describe_subject(subject, '')}"
        )
        for rule in rules:
            yield RuleVisit(source=source, rule=rule)
    if not namespace:
        return
    for binding in policy.role_bindings.get(namespace, ()):
        subject = next((s for s in _subjects(binding) if applies_to(user, s, namespace)), None)
        if subject is None:
            continue
        role_ref = binding.get("roleRef") or {}
        rules, error = _role_rules(policy, role_ref, namespace)
        if error:
            yield RuleVisit(error=error)
            continue
        source = (
            f"RoleBinding {go_quote(_meta(binding, 'name') + '/' + namespace)} of"
            f" {role_ref.get('kind')} {go_quote(str(role_ref.get('name') or ''))} to"
            f" {_describe_subject(subject, namespace)}"
        )
        for rule in rules:
            yield RuleVisit(source=source, rule=rule)


def _aggregate_errors(errors: Sequence[str]) -> str:
    """``utilerrors.NewAggregate(errors).Error()``: deduplicated, bracketed when several."""
    unique = list(dict.fromkeys(errors))
    if len(unique) == 1:
        return unique[0]
    return "[" + ", ".join(unique) + "]"


def authorize(policy: RbacPolicy, attributes: Attributes) -> Decision:
    """The decision of kube-apiserver's authorizer chain (privileged groups, then RBAC).

    RBAC never denies explicitly: a request no rule allows gets no opinion, which the API
    server answers as forbidden (so ``Decision.allowed`` is all there is to it).
    """
    if MASTERS in attributes.user.groups:
        return Decision(True, "")
    errors: list[str] = []
    for visit in visit_rules(policy, attributes.user, attributes.namespace):
        if visit.rule is not None and rule_allows(attributes, visit.rule):
            return Decision(True, f"RBAC: allowed by {visit.source}")
        if visit.error:
            errors.append(visit.error)
    return Decision(False, f"RBAC: {_aggregate_errors(errors)}" if errors else "")


def rules_for(
    policy: RbacPolicy, user: UserInfo, namespace: str
) -> tuple[list[JsonDict], list[JsonDict], str]:
    """A SelfSubjectRulesReview's ``(resourceRules, nonResourceRules, evaluationError)``."""
    resource_rules: list[JsonDict] = []
    non_resource_rules: list[JsonDict] = []
    if MASTERS in user.groups:
        resource_rules.append({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]})
        non_resource_rules.append({"verbs": ["*"], "nonResourceURLs": ["*"]})
    errors: list[str] = []
    for visit in visit_rules(policy, user, namespace):
        if visit.error:
            errors.append(visit.error)
        if visit.rule is None:
            continue
        verbs = _strings(visit.rule, "verbs")
        if _strings(visit.rule, "resources"):
            resource_rule: JsonDict = {"verbs": verbs}
            for key in ("apiGroups", "resources", "resourceNames"):
                if _strings(visit.rule, key):
                    resource_rule[key] = _strings(visit.rule, key)
            resource_rules.append(resource_rule)
        if _strings(visit.rule, "nonResourceURLs"):
            urls = _strings(visit.rule, "nonResourceURLs")
            non_resource_rules.append({"verbs": verbs, "nonResourceURLs": urls})
    return resource_rules, non_resource_rules, _aggregate_errors(errors) if errors else ""


# --- impersonation ------------------------------------------------------------------------


ImpersonationKind = Literal["ServiceAccount", "User", "Group", "UserExtra", "UID"]


@dataclass(frozen=True)
class ImpersonationRequest:
    """One thing a request asks to act as (an ``ObjectReference`` in the real filter)."""

    kind: ImpersonationKind
    name: str
    namespace: str = ""
    api_version: str = ""
    field_path: str = ""  # the key of a UserExtra

    def go_string(self) -> str:
        """How Go's ``%v`` prints the ``v1.ObjectReference`` this stands for."""
        fields = (self.kind, self.namespace, self.name, "", self.api_version, "", self.field_path)
        return "{" + " ".join(fields) + "}"


class ImpersonationError(Exception):
    """Impersonation headers the API server cannot act on (it answers 500)."""


def impersonation_requests(headers: Iterable[tuple[str, str]]) -> list[ImpersonationRequest]:
    """Parse the ``Impersonate-*`` headers (in their order; header names are case-blind)."""
    pairs = list(headers)

    def values(name: str) -> list[str]:
        return [value for key, value in pairs if key.lower() == name.lower()]

    requests: list[ImpersonationRequest] = []
    users = values(IMPERSONATE_USER)
    user = users[0] if users else ""
    if user:
        account = split_service_account_username(user)
        if account is not None:
            requests.append(ImpersonationRequest("ServiceAccount", account[1], account[0]))
        else:
            requests.append(ImpersonationRequest("User", user))
    groups = values(IMPERSONATE_GROUP)
    requests.extend(ImpersonationRequest("Group", group) for group in groups)
    has_extra = False
    prefix = IMPERSONATE_EXTRA_PREFIX.lower()
    for key, value in pairs:
        if key.lower().startswith(prefix):
            has_extra = True
            extra_key = urllib.parse.unquote(key.lower()[len(prefix) :])
            requests.append(
                ImpersonationRequest(
                    "UserExtra",
                    value,
                    api_version=f"{AUTHENTICATION_GROUP}/v1",
                    field_path=extra_key,
                )
            )
    uids = values(IMPERSONATE_UID)
    uid = uids[0] if uids else ""
    if uid:
        requests.append(ImpersonationRequest("UID", uid, api_version=f"{AUTHENTICATION_GROUP}/v1"))
    if (groups or has_extra or uid) and not user:
        listed = " ".join(request.go_string() for request in requests)
        raise ImpersonationError(f"requested [{listed}] without impersonating a user")
    return requests


def impersonation_attributes(requestor: UserInfo, request: ImpersonationRequest) -> Attributes:
    """What the requestor must be allowed to do to act as ``request``: ``impersonate`` it."""
    resource, subresource, group = {
        "ServiceAccount": ("serviceaccounts", "", ""),
        "User": ("users", "", ""),
        "Group": ("groups", "", ""),
        "UserExtra": ("userextras", request.field_path, AUTHENTICATION_GROUP),
        "UID": ("uids", "", AUTHENTICATION_GROUP),
    }[request.kind]
    return Attributes(
        user=requestor,
        verb="impersonate",
        resource_request=True,
        api_group=group,
        api_version="v1" if group else "",
        resource=resource,
        subresource=subresource,
        namespace=request.namespace,
        name=request.name,
    )


def impersonated_user(requests: Sequence[ImpersonationRequest]) -> UserInfo:
    """The identity a request acts as once every impersonation request is allowed."""
    groups_specified = any(request.kind == "Group" for request in requests)
    username, uid = "", ""
    groups: list[str] = []
    extra: dict[str, tuple[str, ...]] = {}
    for request in requests:
        if request.kind == "ServiceAccount":
            username = service_account_username(request.namespace, request.name)
            if not groups_specified:
                groups = list(service_account_groups(request.namespace))
        elif request.kind == "User":
            username = request.name
        elif request.kind == "Group":
            groups.append(request.name)
        elif request.kind == "UserExtra":
            extra[request.field_path] = (*extra.get(request.field_path, ()), request.name)
        else:
            uid = request.name
    if username != ANONYMOUS:
        if AUTHENTICATED not in groups and UNAUTHENTICATED not in groups:
            groups.append(AUTHENTICATED)
    elif UNAUTHENTICATED not in groups:
        groups.append(UNAUTHENTICATED)
    return UserInfo(username, tuple(groups), uid, extra)


# --- answers ------------------------------------------------------------------------------


def go_quote(text: str) -> str:
    """Go's ``%q``: a double-quoted string with Go escapes."""
    escapes = {'"': '\\"', "\\": "\\\\", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n"}
    escapes.update({"\r": "\\r", "\t": "\\t", "\v": "\\v"})
    out = ['"']
    for char in text:
        if char in escapes:
            out.append(escapes[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def forbidden_message(attributes: Attributes) -> str:
    """``forbiddenMessage``: who cannot do what, where."""
    user = go_quote(attributes.user.username)
    verb = attributes.verb
    if not attributes.resource_request:
        return f"User {user} cannot {verb} path {go_quote(attributes.path)}"
    resource = attributes.resource
    if attributes.subresource:
        resource = f"{resource}/{attributes.subresource}"
    where = (
        f"in the namespace {go_quote(attributes.namespace)}"
        if attributes.namespace
        else "at the cluster scope"
    )
    return (
        f"User {user} cannot {verb} resource {go_quote(resource)}"
        f" in API group {go_quote(attributes.api_group)} {where}"
    )


def forbidden_status(attributes: Attributes, reason: str = "") -> JsonDict:
    """The ``Status`` body of a 403, as ``responsewriters.Forbidden`` writes it."""
    message = forbidden_message(attributes).translate(_HTML)
    if reason:
        message = f"{message}: {reason}"
    group, resource, name = attributes.api_group, attributes.resource, attributes.name
    qualified = f"{resource}.{group}" if group else resource
    if not group and not resource:
        full = f"forbidden: {message}"
    elif not name:
        full = f"{qualified} is forbidden: {message}"
    else:
        full = f"{qualified} {go_quote(name)} is forbidden: {message}"
    details = {key: value for key, value in (("name", name), ("group", group)) if value}
    if resource:
        details["kind"] = resource
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": full,
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    }


def unauthorized_status() -> JsonDict:
    """The ``Status`` body of a 401 (an unknown or malformed credential)."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }


def internal_error_text(request_uri: str, error: str) -> str:
    """The plain-text body of ``responsewriters.InternalError`` (``http.Error`` adds ``\\n``)."""
    return f"Internal Server Error: {go_quote(request_uri)}: {error}".translate(_HTML) + "\n"


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer`` header (``None`` for other schemes)."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


# --- ClusterRole aggregation --------------------------------------------------------------


def label_selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A ``metav1.LabelSelector`` (matchLabels and matchExpressions); ``{}`` matches all."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and key in labels and labels[key] in values:
            return False
        if operator == "Exists" and key not in labels:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
    return True


def normalized_rule(rule: Mapping[str, Any]) -> JsonDict:
    # Semantic equality: an empty list and an absent one are the same.
    return {key: value for key, value in rule.items() if value not in (None, [], "")}


def aggregated_rules(role: Mapping[str, Any], cluster_roles: Iterable[JsonDict]) -> list[JsonDict]:
    """The rules the aggregation controller gives a ClusterRole with an ``aggregationRule``:
    those of every other ClusterRole a selector matches, by name, without duplicates.
    """
    name = _meta(role, "name")
    ordered = sorted(cluster_roles, key=lambda other: _meta(other, "name"))
    rules: list[JsonDict] = []
    for selector in (role.get("aggregationRule") or {}).get("clusterRoleSelectors") or []:
        for other in ordered:
            labels = (other.get("metadata") or {}).get("labels") or {}
            if _meta(other, "name") == name or not label_selector_matches(selector, labels):
                continue
            for rule in other.get("rules") or []:
                normalized = normalized_rule(rule)
                if normalized not in rules:
                    rules.append(normalized)
    return rules


# --- audit --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    """What the emulator decided about one HTTP request while auth is enabled.

    ``user``/``groups``: the identity the request was authorized as (the impersonated one when
    impersonation succeeded; empty when authentication failed). ``impersonated_by``: the
    authenticated user who impersonated, or ``None``. ``impersonate_user``: the
    ``Impersonate-User`` header as sent, even when the impersonation was refused. ``code``:
    the status the emulator answered instead of serving the request (401, 403, or 500 for
    unusable impersonation headers), ``None`` when the request was passed on.
    """

    method: str
    path: str
    user: str
    groups: tuple[str, ...]
    impersonated_by: str | None
    impersonate_user: str | None
    verb: str
    api_group: str
    resource: str
    subresource: str
    namespace: str
    name: str
    allowed: bool
    code: int | None
    reason: str
    request: kmock.Request | None = field(default=None, compare=False, repr=False)

    @property
    def impersonated(self) -> bool:
        return self.impersonated_by is not None


# --- bootstrap policy ---------------------------------------------------------------------

_BOOTSTRAP_LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
_BOOTSTRAP_ANNOTATIONS = {"rbac.authorization.kubernetes.io/autoupdate": "true"}
_READ = ["get", "list", "watch"]
_WRITE = ["create", "delete", "deletecollection", "patch", "update"]
_AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def _cluster_role(
    name: str,
    rules: list[JsonDict] | None = None,
    *,
    aggregate_from: str | None = None,
    aggregate_to: tuple[str, ...] = (),
) -> JsonDict:
    labels = {**_BOOTSTRAP_LABELS, **{f"{_AGGREGATE}{target}": "true" for target in aggregate_to}}
    role: JsonDict = {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": labels, "annotations": dict(_BOOTSTRAP_ANNOTATIONS)},
        "rules": rules or [],
    }
    if aggregate_from is not None:
        selector = {"matchLabels": {f"{_AGGREGATE}{aggregate_from}": "true"}}
        role["aggregationRule"] = {"clusterRoleSelectors": [selector]}
    return role


def _cluster_role_binding(name: str, role: str, *groups: str) -> JsonDict:
    return {
        "apiVersion": f"{RBAC_GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": dict(_BOOTSTRAP_LABELS),
            "annotations": dict(_BOOTSTRAP_ANNOTATIONS),
        },
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "Group", "name": group} for group in groups],
    }


def bootstrap_policy() -> list[JsonDict]:
    """The default ClusterRoles and ClusterRoleBindings kube-apiserver creates that matter here.

    ``cluster-admin`` (bound to ``system:masters``), ``system:discovery``,
    ``system:basic-user`` and ``system:public-info-viewer`` as the real server has them; the
    user-facing ``admin``/``edit``/``view`` aggregate (with the real labels) from
    ``system:aggregate-to-*`` roles whose rules are cut down to the kinds the emulator serves.
    """
    public_info = ["/healthz", "/livez", "/readyz", "/version", "/version/"]
    discovery = ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", *public_info]
    workloads = ["daemonsets", "deployments", "replicasets", "statefulsets"]
    scales = ["deployments/scale", "replicasets/scale", "statefulsets/scale"]
    statuses = [f"{plural}/status" for plural in workloads]
    core_read = ["configmaps", "pods", "serviceaccounts", "services", "services/status"]
    core_status = ["namespaces/status", "pods/log", "pods/status"]
    return [
        _cluster_role(
            "cluster-admin",
            [
                {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                {"nonResourceURLs": ["*"], "verbs": ["*"]},
            ],
        ),
        _cluster_role(
            "system:discovery", [{"nonResourceURLs": sorted(discovery), "verbs": ["get"]}]
        ),
        _cluster_role(
            "system:public-info-viewer", [{"nonResourceURLs": public_info, "verbs": ["get"]}]
        ),
        _cluster_role(
            "system:basic-user",
            [
                {
                    "apiGroups": [AUTHORIZATION_GROUP],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"],
                },
                {
                    "apiGroups": [AUTHENTICATION_GROUP],
                    "resources": ["selfsubjectreviews"],
                    "verbs": ["create"],
                },
            ],
        ),
        _cluster_role("admin", aggregate_from="admin"),
        _cluster_role("edit", aggregate_from="edit", aggregate_to=("admin",)),
        _cluster_role("view", aggregate_from="view", aggregate_to=("edit",)),
        _cluster_role(
            "system:aggregate-to-admin",
            [
                {
                    "apiGroups": [AUTHORIZATION_GROUP],
                    "resources": ["localsubjectaccessreviews"],
                    "verbs": ["create"],
                },
                {
                    "apiGroups": [RBAC_GROUP],
                    "resources": ["rolebindings", "roles"],
                    "verbs": sorted([*_READ, *_WRITE]),
                },
            ],
            aggregate_to=("admin",),
        ),
        _cluster_role(
            "system:aggregate-to-edit",
            [
                {"apiGroups": [""], "resources": ["secrets"], "verbs": _READ},
                {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": _WRITE},
                {
                    "apiGroups": [""],
                    "resources": ["configmaps", "secrets", "serviceaccounts", "services"],
                    "verbs": _WRITE,
                },
                {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": _WRITE},
                {
                    "apiGroups": ["apps"],
                    "resources": sorted([*workloads, *scales]),
                    "verbs": _WRITE,
                },
            ],
            aggregate_to=("edit",),
        ),
        _cluster_role(
            "system:aggregate-to-view",
            [
                {"apiGroups": [""], "resources": core_read, "verbs": _READ},
                {"apiGroups": [""], "resources": core_status, "verbs": _READ},
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": _READ},
                {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": _READ},
                {
                    "apiGroups": ["apps"],
                    "resources": sorted([*workloads, *scales, *statuses]),
                    "verbs": _READ,
                },
            ],
            aggregate_to=("view",),
        ),
        _cluster_role_binding("cluster-admin", "cluster-admin", MASTERS),
        _cluster_role_binding("system:discovery", "system:discovery", AUTHENTICATED),
        _cluster_role_binding("system:basic-user", "system:basic-user", AUTHENTICATED),
        _cluster_role_binding(
            "system:public-info-viewer", "system:public-info-viewer", AUTHENTICATED, UNAUTHENTICATED
        ),
    ]
