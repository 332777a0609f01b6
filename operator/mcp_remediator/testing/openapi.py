"""OpenAPI documents of the emulated API server: ``/openapi/v2`` and ``/openapi/v3``.

kubectl reads them: ``kubectl explain`` walks the OpenAPI v3 schema of a group-version,
``kubectl apply`` (and create, replace) looks in the v3 document for a PATCH operation of the
kind with a ``fieldValidation`` parameter to decide that the server validates fields itself
(then it sends ``fieldValidation=Strict`` and validates nothing client-side).

* ``/openapi/v3`` is the index: one ``serverRelativeURL`` per group-version, with the hash
  of its document (``?hash=``, SHA-512 as kube-apiserver's), under ``api/v1`` and
  ``apis/<group>/<version>``;
* ``/openapi/v3/apis/<group>/<version>`` (and ``/openapi/v3/api/v1``) is an OpenAPI 3.0
  document: the kinds' paths with their operations (``x-kubernetes-action``,
  ``x-kubernetes-group-version-kind``, the query parameters including ``fieldValidation``)
  and ``components.schemas``: each kind and its List with ``x-kubernetes-group-version-kind``,
  ``ObjectMeta``, ``ListMeta`` and the rest of the closure;
* ``/openapi/v2`` is the Swagger 2.0 document of everything, as JSON.

A custom resource's schema is its CRD version's structural schema (``metadata`` replaced by
a reference to ObjectMeta, ``apiVersion`` and ``kind`` described), as apiextensions-apiserver
publishes it. A built-in kind's schema is generated from the installed ``kubernetes``
client's models (their fields, JSON names, required fields and descriptions): a good-enough
schema, not kube-apiserver's own (type formats are coarse, ``int-or-string`` fields accept
anything, definitions a kind shares with another group may be named after the first group
that reached them, and there are no ``x-kubernetes-patch-*`` merge keys). Without the models
a built-in kind is an object that keeps unknown fields.

Simplified or left out: the documents are JSON only, so the protobuf v2 that kubectl asks for
(``application/com.github.proto-openapi.spec.v2@v1.0+protobuf``, its only Accept) is 406 Not
Acceptable, and kubectl goes on without it (apply computes strategic merge patches from its
compiled-in types); the PATCH operations of built-in kinds list JSON and merge patch but not
strategic merge patch, so that kubectl takes those compiled-in types (whose merge keys are
exact) instead of the generated schemas; no ``ETag``. The operations list the real API's
query parameters: what the emulator honours is the write path's business.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

JsonDict = dict[str, Any]

KUBE_VERSION = "v1.32.0"
PROTOBUF_V2 = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
OBJECT_META = f"{_META}.ObjectMeta"
LIST_META = f"{_META}.ListMeta"
_REF = "#/components/schemas/"
GVK = "x-kubernetes-group-version-kind"

_METADATA_DESCRIPTION = (
    "Standard object's metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
)
_LIST_METADATA_DESCRIPTION = (
    "Standard list metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)
_API_VERSION_DESCRIPTION = (
    "APIVersion defines the versioned schema of this representation of an object. Servers "
    "should convert recognized schemas to the latest internal value, and may reject "
    "unrecognized values. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources"
)
_KIND_DESCRIPTION = (
    "Kind is a string value representing the REST resource this object represents. Servers "
    "may infer this from the endpoint the client submits requests to. Cannot be updated. In "
    "CamelCase. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
)


@dataclass(frozen=True)
class Kind:
    """One served resource, as the documents need it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    has_status: bool
    custom: bool
    verbs: frozenset[str]
    schema: JsonDict | None = None  # a CRD version's openAPIV3Schema

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    @property
    def gvk(self) -> JsonDict:
        return {"group": self.group, "kind": self.kind, "version": self.version}

    @property
    def definition(self) -> str:
        """The definition's name, as kube-apiserver names it (reversed group for CRDs)."""
        if self.custom:
            return ".".join([*reversed(self.group.split(".")), self.version, self.kind])
        return f"{_package(self.group)}.{self.version}.{self.kind}"


def _package(group: str) -> str:
    if group == "apiextensions.k8s.io":
        return "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions"
    return f"io.k8s.api.{group.split('.')[0] if group else 'core'}"


def _ref(name: str, description: str = "") -> JsonDict:
    if description:
        return {"allOf": [{"$ref": _REF + name}], "description": description}
    return {"$ref": _REF + name}


# --- schemas of built-in kinds, from the kubernetes client's models ----------------------

_META_MODELS = {
    "ObjectMeta",
    "ListMeta",
    "OwnerReference",
    "ManagedFieldsEntry",
    "LabelSelector",
    "LabelSelectorRequirement",
    "Condition",
    "Status",
    "StatusDetails",
    "StatusCause",
    "DeleteOptions",
    "Preconditions",
}
_VERSION_PREFIX = re.compile(r"(?:[A-Z][a-z]+)?V\d+(?:alpha\d+|beta\d+)?")
# The client names a few models after their group to tell same-named kinds apart
# (CoreV1Event, EventsV1Event, RbacV1Subject); the API's definitions do not.
_MODEL_OF: dict[tuple[str, str], str] = {("", "Event"): "CoreV1Event",
                                         ("events.k8s.io", "Event"): "EventsV1Event"}  # fmt: skip


def _models() -> Any:
    try:
        from kubernetes.client import models  # noqa: PLC0415 - optional, and slow to import
    except ImportError:  # pragma: no cover - the package is a dependency
        return None
    return models


def _model_name(cls: type, package: str) -> str:
    """A model class's definition name: ``V1ObjectMeta`` is the meta package's, any other
    is named in ``package`` (the package of the kind that reached it first).
    """
    match = _VERSION_PREFIX.match(cls.__name__)
    version = re.sub(r"^[A-Z][a-z]+", "", match.group(0)).lower() if match else "v1"
    bare = cls.__name__[match.end() :] if match else cls.__name__
    if bare in _META_MODELS:
        return f"{_META}.{bare}"
    return f"{package}.{version}.{bare}"


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and hasattr(annotation, "model_fields")


def _unwrap(annotation: Any) -> Any:
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(args) != 1:
                return Any
            annotation = args[0]
        else:
            return annotation


class _ModelSchemas:
    """Definitions generated from pydantic models, named once each."""

    def __init__(self) -> None:
        self.names: dict[type, str] = {}
        self.schemas: dict[str, JsonDict] = {}

    def add(self, cls: type, package: str) -> str:
        if cls in self.names:
            return self.names[cls]
        name = _model_name(cls, package)
        self.names[cls] = name
        self.schemas[name] = {}  # recursion guard (JSONSchemaProps refers to itself)
        properties: JsonDict = {}
        required: list[str] = []
        for field_name, info in cls.model_fields.items():  # type: ignore[attr-defined]
            json_name = info.serialization_alias or info.alias or field_name
            typed = self._type(info.annotation, package)
            description = (info.description or "").strip()
            if description:
                if "$ref" in typed:
                    typed = {"allOf": [typed], "description": description}
                else:
                    typed = {"description": description, **typed}
            properties[json_name] = typed
            if info.is_required():
                required.append(json_name)
        # The generator's class docstring: the description, then "Attributes:" or "NOTE".
        doc = re.split(r"\n\s*(?:Attributes:|NOTE:|Do not edit)", cls.__doc__ or "")[0]
        doc = " ".join(doc.split())
        schema: JsonDict = {"type": "object", "properties": properties}
        if doc and not doc.startswith(cls.__name__):
            schema["description"] = doc
        if required:
            schema["required"] = required
        self.schemas[name] = schema
        return name

    def _type(self, annotation: Any, package: str) -> JsonDict:
        annotation = _unwrap(annotation)
        origin = typing.get_origin(annotation)
        args = typing.get_args(annotation)
        if origin in (list, typing.List):  # noqa: UP006
            return {"type": "array", "items": self._type(args[0] if args else Any, package)}
        if origin in (dict, typing.Dict):  # noqa: UP006
            value = args[1] if len(args) == 2 else Any
            return {"type": "object", "additionalProperties": self._type(value, package)}
        if _is_model(annotation):
            return {"$ref": _REF + self.add(annotation, package)}
        simple = {
            str: {"type": "string"},
            bool: {"type": "boolean"},
            int: {"type": "integer", "format": "int64"},
            float: {"type": "number", "format": "double"},
            bytes: {"type": "string", "format": "byte"},
            bytearray: {"type": "string", "format": "byte"},
        }
        if annotation in simple:
            return dict(simple[annotation])
        name = getattr(annotation, "__name__", "")
        if name == "datetime":
            return {"type": "string", "format": "date-time"}
        if name == "date":
            return {"type": "string", "format": "date"}
        return {"x-kubernetes-preserve-unknown-fields": True}


@functools.cache
def _builtin_schemas() -> tuple[dict[tuple[str, str, str], str], dict[str, JsonDict]]:
    """Every built-in kind the client has a model of: ``(group, version, kind)`` to its
    definition's name, and all the definitions (generated once; the models do not change).
    """
    models = _models()
    generated = _ModelSchemas()
    kinds: dict[tuple[str, str, str], str] = {}
    if models is None:
        return kinds, generated.schemas
    for meta in ("V1ObjectMeta", "V1ListMeta", "V1Status", "V1DeleteOptions"):
        if hasattr(models, meta):
            generated.add(getattr(models, meta), _META)
    for group, version, kind in _BUILTIN_MODELS:
        name = _MODEL_OF.get((group, kind), f"{version.capitalize()}{kind}")
        cls: Any = getattr(models, name, None)
        if _is_model(cls):
            kinds[group, version, kind] = generated.add(cls, _package(group))
    return kinds, generated.schemas


# The built-in kinds whose models are looked for (the emulator decides what is served).
_BUILTIN_MODELS = [
    ("", "v1", kind)
    for kind in ("ConfigMap", "Secret", "Pod", "Service", "Namespace", "Event", "ServiceAccount")
] + [
    ("events.k8s.io", "v1", "Event"),
    *(("apps", "v1", kind) for kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")),
    ("coordination.k8s.io", "v1", "Lease"),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
    *(
        ("rbac.authorization.k8s.io", "v1", kind)
        for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    ),
    *(
        ("authorization.k8s.io", "v1", kind)
        for kind in (
            "SelfSubjectAccessReview",
            "SelfSubjectRulesReview",
            "SubjectAccessReview",
            "LocalSubjectAccessReview",
        )
    ),
    ("authentication.k8s.io", "v1", "SelfSubjectReview"),
]


def _references(schema: Any) -> Iterable[str]:
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith(_REF):
            yield ref.removeprefix(_REF)
        for value in schema.values():
            yield from _references(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _references(value)


def _closure(roots: Iterable[str], schemas: dict[str, JsonDict]) -> dict[str, JsonDict]:
    found: dict[str, JsonDict] = {}
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in found or name not in schemas:
            continue
        found[name] = schemas[name]
        pending.extend(_references(schemas[name]))
    return found


def _minimal_meta() -> dict[str, JsonDict]:
    loose = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {OBJECT_META: dict(loose), LIST_META: dict(loose)}


def _crd_schema(kind: Kind) -> JsonDict:
    schema: JsonDict = json.loads(json.dumps(kind.schema or {"type": "object"}))
    properties = schema.setdefault("properties", {})
    properties["apiVersion"] = {
        "description": _API_VERSION_DESCRIPTION,
        **(properties.get("apiVersion") or {"type": "string"}),
    }
    properties["kind"] = {
        "description": _KIND_DESCRIPTION,
        **(properties.get("kind") or {"type": "string"}),
    }
    properties["metadata"] = _ref(OBJECT_META, _METADATA_DESCRIPTION)
    schema.setdefault("type", "object")
    return schema


def kind_schemas(kinds: Iterable[Kind]) -> dict[str, JsonDict]:
    """The definitions of ``kinds`` and of their Lists, with everything they refer to."""
    builtin_names, builtin_schemas = _builtin_schemas()
    schemas: dict[str, JsonDict] = {}
    roots: list[str] = [OBJECT_META, LIST_META]
    for kind in kinds:
        name = kind.definition
        if kind.custom:
            schema = _crd_schema(kind)
        elif (kind.group, kind.version, kind.kind) in builtin_names:
            name = builtin_names[kind.group, kind.version, kind.kind]
            schema = dict(builtin_schemas[name])
        else:
            schema = {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {"metadata": _ref(OBJECT_META, _METADATA_DESCRIPTION)},
            }
        schemas[name] = {**schema, GVK: [kind.gvk]}
        schemas[f"{name}List"] = {
            "description": f"{kind.kind}List is a list of {kind.kind}",
            "type": "object",
            "required": ["items"],
            "properties": {
                "apiVersion": {"description": _API_VERSION_DESCRIPTION, "type": "string"},
                "items": {
                    "description": f"List of {kind.plural}.",
                    "type": "array",
                    "items": _ref(name),
                },
                "kind": {"description": _KIND_DESCRIPTION, "type": "string"},
                "metadata": _ref(LIST_META, _LIST_METADATA_DESCRIPTION),
            },
            GVK: [{**kind.gvk, "kind": f"{kind.kind}List"}],
        }
        roots.extend(_references(schema))
    library = {**_minimal_meta(), **builtin_schemas}
    for name, schema in _closure(roots, library).items():
        schemas.setdefault(name, schema)
    schemas.setdefault(
        f"{_META}.Patch",
        {
            "description": "Patch is provided to give a concrete name and type to the Kubernetes "
            "PATCH request body.",
            "type": "object",
        },
    )
    schemas.setdefault(
        f"{_META}.Status", {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    )
    return schemas


# --- paths --------------------------------------------------------------------------------


def _query(name: str, description: str, schema_type: str = "string") -> JsonDict:
    return {
        "name": name,
        "in": "query",
        "description": description,
        "schema": {"type": schema_type, "uniqueItems": True},
    }


_PRETTY = _query("pretty", "If 'true', then the output is pretty printed.")
_DRY_RUN = _query("dryRun", "When present, indicates that modifications should not be persisted.")
_FIELD_MANAGER = _query(
    "fieldManager",
    "fieldManager is a name associated with the actor or entity that is making these changes.",
)
_FIELD_VALIDATION = _query(
    "fieldValidation",
    "fieldValidation instructs the server on how to handle objects in the request "
    "(POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: "
    "This will ignore any unknown fields that are silently dropped from the object, and will "
    "ignore all but the last duplicate field that the decoder encounters. - Warn: This will "
    "send a warning via the standard warning response header for each unknown field that is "
    "dropped from the object, and for each duplicate field that is encountered. - Strict: "
    "This will fail the request with a BadRequest error if any unknown fields would be "
    "dropped from the object, or if any duplicate fields are present.",
)
_LIST_PARAMETERS = [
    _query(
        "allowWatchBookmarks",
        'allowWatchBookmarks requests watch events with type "BOOKMARK".',
        "boolean",
    ),
    _query(
        "continue",
        "The continue option should be set when retrieving more results from the server.",
    ),
    _query("fieldSelector", "A selector to restrict the list of returned objects by their fields."),
    _query("labelSelector", "A selector to restrict the list of returned objects by their labels."),
    _query("limit", "limit is a maximum number of responses to return for a list call.", "integer"),
    _query(
        "resourceVersion",
        "resourceVersion sets a constraint on what resource versions a request may be served from.",
    ),
    _query(
        "resourceVersionMatch",
        "resourceVersionMatch determines how resourceVersion is applied to list calls.",
    ),
    _query(
        "sendInitialEvents",
        "`sendInitialEvents=true` may be set together with `watch=true`.",
        "boolean",
    ),
    _query("timeoutSeconds", "Timeout for the list/watch call.", "integer"),
    _query(
        "watch",
        "Watch for changes to the described resources and return them as a stream of add, "
        "update, and remove notifications.",
        "boolean",
    ),
]
_WRITE_MEDIA = ("application/json", "application/yaml")


def _path_parameter(name: str, description: str) -> JsonDict:
    return {
        "name": name,
        "in": "path",
        "description": description,
        "required": True,
        "schema": {"type": "string", "uniqueItems": True},
    }


def _content(ref: str) -> JsonDict:
    return {media: {"schema": _ref(ref)} for media in _WRITE_MEDIA}


def _operation(
    kind: Kind, action: str, verb: str, summary: str, parameters: list[JsonDict], response: str
) -> JsonDict:
    namespaced = "Namespaced" if kind.namespaced and action != "list-all" else ""
    everywhere = "ForAllNamespaces" if action == "list-all" else ""
    base = re.sub(r"[^A-Za-z0-9]", "", kind.group.title()) + kind.version.capitalize()
    operation: JsonDict = {
        "tags": [base[:1].lower() + base[1:] if base else "coreV1"],
        "description": summary,
        "operationId": f"{verb}{namespaced}{kind.kind}{everywhere}",
        "parameters": parameters,
        "responses": {
            "200": {"description": "OK", "content": _content(response)},
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": action.removesuffix("-all"),
        GVK: kind.gvk,
    }
    return operation


def kind_paths(kind: Kind) -> JsonDict:
    """The paths (and operations) of one served kind."""
    name, list_name = kind.definition, f"{kind.definition}List"
    builtin_names, _ = _builtin_schemas()
    name = builtin_names.get((kind.group, kind.version, kind.kind), name)
    list_name = f"{name}List"
    scope = f"{kind.prefix}/namespaces/{{namespace}}" if kind.namespaced else kind.prefix
    collection, item = f"{scope}/{kind.plural}", f"{scope}/{kind.plural}/{{name}}"
    shared = [_PRETTY]
    if kind.namespaced:
        shared = [
            _path_parameter(
                "namespace", "object name and auth scope, such as for teams and projects"
            ),
            _PRETTY,
        ]
    named = [_path_parameter("name", f"name of the {kind.kind}"), *shared]
    writes = [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION]
    # No strategic merge patch (see the module docstring); server-side apply's apply-patch.
    patch_media = [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/apply-patch+yaml",
    ]
    patch_body = {
        "content": {media: {"schema": _ref(f"{_META}.Patch")} for media in patch_media},
        "required": True,
    }
    paths: JsonDict = {}
    verbs = kind.verbs
    collection_ops: JsonDict = {"parameters": shared}
    if "list" in verbs:
        collection_ops["get"] = _operation(
            kind,
            "list",
            "list",
            f"list or watch objects of kind {kind.kind}",
            _LIST_PARAMETERS,
            list_name,
        )
    if "create" in verbs:
        create = _operation(kind, "post", "create", f"create a {kind.kind}", writes, name)
        create["requestBody"] = {"content": _content(name), "required": True}
        collection_ops["post"] = create
    paths[collection] = collection_ops
    if {"get", "update", "patch", "delete"} & verbs:
        item_ops: JsonDict = {"parameters": named}
        if "get" in verbs:
            item_ops["get"] = _operation(
                kind, "get", "read", f"read the specified {kind.kind}", [], name
            )
        if "update" in verbs:
            put = _operation(
                kind, "put", "replace", f"replace the specified {kind.kind}", writes, name
            )
            put["requestBody"] = {"content": _content(name), "required": True}
            item_ops["put"] = put
        if "patch" in verbs:
            patch = _operation(
                kind,
                "patch",
                "patch",
                f"partially update the specified {kind.kind}",
                [*writes, _query("force", 'Force is going to "force" Apply requests.', "boolean")],
                name,
            )
            patch["requestBody"] = patch_body
            item_ops["patch"] = patch
        if "delete" in verbs:
            item_ops["delete"] = _operation(
                kind,
                "delete",
                "delete",
                f"delete a {kind.kind}",
                [
                    _DRY_RUN,
                    _query(
                        "gracePeriodSeconds",
                        "The duration in seconds before the object should be deleted.",
                        "integer",
                    ),
                    _query(
                        "propagationPolicy", "Whether and how garbage collection will be performed."
                    ),
                ],
                f"{_META}.Status",
            )
        paths[item] = item_ops
    if kind.has_status:
        status_ops: JsonDict = {"parameters": named}
        status_ops["get"] = _operation(
            kind, "get", "read", f"read status of the specified {kind.kind}", [], name
        )
        status_put = _operation(
            kind, "put", "replace", f"replace status of the specified {kind.kind}", writes, name
        )
        status_put["requestBody"] = {"content": _content(name), "required": True}
        status_ops["put"] = status_put
        status_patch = _operation(
            kind,
            "patch",
            "patch",
            f"partially update status of the specified {kind.kind}",
            writes,
            name,
        )
        status_patch["requestBody"] = patch_body
        status_ops["patch"] = status_patch
        for method in ("get", "put", "patch"):
            status_ops[method]["operationId"] += "Status"
        paths[f"{item}/status"] = status_ops
    if kind.namespaced and "list" in verbs:
        paths[f"{kind.prefix}/{kind.plural}"] = {
            "parameters": [_PRETTY],
            "get": _operation(
                kind,
                "list-all",
                "list",
                f"list or watch objects of kind {kind.kind}",
                _LIST_PARAMETERS,
                list_name,
            ),
        }
    return paths


# --- documents ----------------------------------------------------------------------------


def v3_document(kinds: Iterable[Kind]) -> JsonDict:
    """The OpenAPI v3 document of one group-version's kinds."""
    served = sorted(kinds, key=lambda k: k.plural)
    paths: JsonDict = {}
    for kind in served:
        paths.update(kind_paths(kind))
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBE_VERSION},
        "paths": dict(sorted(paths.items())),
        "components": {"schemas": dict(sorted(kind_schemas(served).items()))},
    }


def document_path(group_version: str) -> str:
    """The index key of a group-version: ``api/v1`` or ``apis/<group>/<version>``."""
    return f"apis/{group_version}" if "/" in group_version else f"api/{group_version}"


def encode(document: JsonDict) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def v3_index(documents: dict[str, bytes]) -> JsonDict:
    """The ``/openapi/v3`` index of encoded group-version documents (keyed by path)."""
    return {
        "paths": {
            path: {
                "serverRelativeURL": (
                    f"/openapi/v3/{path}?hash={hashlib.sha512(body).hexdigest().upper()}"
                )
            }
            for path, body in sorted(documents.items())
        }
    }


def _to_v2(value: Any) -> Any:
    """A v3 schema as a v2 (Swagger) one: definitions referred to as ``#/definitions/``,
    a described reference as ``$ref`` with its description beside it.
    """
    if isinstance(value, list):
        return [_to_v2(item) for item in value]
    if not isinstance(value, dict):
        return value
    all_of = value.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and "$ref" in all_of[0]:
        rest = {k: v for k, v in value.items() if k != "allOf"}
        value = {**rest, "$ref": all_of[0]["$ref"]}
    converted = {key: _to_v2(item) for key, item in value.items()}
    ref = converted.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF):
        converted["$ref"] = "#/definitions/" + ref.removeprefix(_REF)
    return converted


def v2_document(kinds: Iterable[Kind]) -> JsonDict:
    """The Swagger 2.0 document of every served kind."""
    served = sorted(kinds, key=lambda k: (k.group, k.version, k.plural))
    paths: JsonDict = {}
    for kind in served:
        for path, item in kind_paths(kind).items():
            converted: JsonDict = {}
            for method, operation in item.items():
                if method == "parameters":
                    converted[method] = [_parameter_v2(p) for p in operation]
                    continue
                v2 = {
                    k: v
                    for k, v in operation.items()
                    if k not in ("requestBody", "responses", "parameters")
                }
                parameters = [_parameter_v2(p) for p in operation["parameters"]]
                body = operation.get("requestBody")
                if body is not None:
                    media = list(body["content"])
                    v2["consumes"] = media
                    schema = next(iter(body["content"].values()))["schema"]
                    parameters.insert(
                        0, {"name": "body", "in": "body", "required": True, "schema": schema}
                    )
                v2["parameters"] = parameters
                v2["produces"] = ["application/json", "application/yaml"]
                v2["schemes"] = ["https"]
                response = operation["responses"]["200"]["content"]["application/json"]
                v2["responses"] = {
                    "200": {"description": "OK", "schema": response["schema"]},
                    "401": {"description": "Unauthorized"},
                }
                converted[method] = v2
            paths[path] = converted
    document: JsonDict = _to_v2(
        {
            "swagger": "2.0",
            "info": {"title": "Kubernetes", "version": KUBE_VERSION},
            "paths": dict(sorted(paths.items())),
            "definitions": dict(sorted(kind_schemas(served).items())),
        }
    )
    return document


def _parameter_v2(parameter: JsonDict) -> JsonDict:
    schema = parameter.get("schema") or {}
    converted = {k: v for k, v in parameter.items() if k != "schema"}
    return {**converted, **schema}


def accepts_json(accept: str) -> bool:
    """Whether an Accept header takes JSON (kubectl's v2 request takes protobuf only)."""
    if not accept.strip():
        return True
    for media_range in accept.split(","):
        media = media_range.split(";")[0].strip().lower()
        if media in ("application/json", "application/*", "*/*"):
            return True
    return False
