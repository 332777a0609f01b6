"""Server-side apply and ``metadata.managedFields``, as kube-apiserver 1.32 keeps them.

Every write that names a field manager (``?fieldManager=``, else the User-Agent up to its
first ``/``, as the real server derives it) records which fields that manager set, in
``metadata.managedFields`` entries of ``fieldsType: FieldsV1``: ``f:<field>`` for a field of
a map, ``k:{"name":"web"}`` for an item of a list keyed by fields, ``v:"x"`` for an item of a
set, and ``.`` for a node that is itself owned besides its children.

* An ``Update`` (create, update, patch) adds the paths it added or changed to its manager's
  ``Update`` entry and takes them away from every other manager.
* An ``Apply`` (``PATCH`` with ``application/apply-patch+yaml``) sets its manager's ``Apply``
  entry to exactly the applied paths; the fields the manager applied before and no longer
  applies, and that nobody else owns, are removed from the object. The applied values are
  merged in: maps field by field, lists atomically except lists keyed by fields
  (``x-kubernetes-list-type: map`` in a CRD schema; for the built-in kinds the merge keys
  of their Go types: containers, volumes, env... by ``name``, container ports by
  ``containerPort``, service ports by ``port``, conditions by ``type``, ownerReferences by
  ``uid``) and sets (``x-kubernetes-list-type: set``, ``metadata.finalizers``). Applying a
  field another manager owns with a different value is 409 Conflict (the real message and
  ``FieldManagerConflict`` causes), unless ``force``: then the applier takes it over.
* Paths that no longer exist in the object leave every entry; an entry left with no path
  goes; entries whose paths did not change keep their ``time``, so a write that changes
  nothing stays a no-op. Entries are ordered as the real server orders them (operation,
  time, manager, apiVersion, subresource).

Simplified: the field sets are taken from the JSON, without the types' schemas, so a map
field that is a plain struct in Go (``spec``, ``template``, ``metadata``...) is told apart
from a pointer only by a short list of names (it decides where an ``Update`` records ``.``);
``null`` in an applied object removes the field; list keys take the key fields an item has
(no defaulted ``protocol: TCP`` in port keys); an applied object's items keep the live
order, new ones appended; managed fields are not converted between API versions (an entry of
another version than the request's is left as it is, and takes no part in conflicts), and a
client-sent ``managedFields`` is ignored (never a way to reset them).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

JsonDict = dict[str, Any]
Path = tuple[str, ...]  # FieldsV1 keys: "f:data", 'k:{"name":"web"}', 'v:"x"'
ListKind = tuple[str, ...] | Literal["set"] | None  # key fields, a set, or atomic
ListKeys = Callable[[tuple[str, ...]], ListKind]

APPLY = "Apply"
UPDATE = "Update"

# Top-level fields and metadata fields the real server leaves out of every field set.
_STRIPPED_TOP = frozenset({"apiVersion", "kind"})
_STRIPPED_META = frozenset(
    {
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    }
)
# Go struct fields that are values, not pointers: never "added" on their own.
_STRUCT_FIELDS = frozenset({"metadata", "spec", "status", "template"})


class ApplyInvalid(ValueError):
    """An applied object the server cannot merge (an item of a keyed list without its key
    fields): 422, as the real server refuses it."""


class ApplyConflict(Exception):
    """Fields another manager owns with other values: a 409 with these causes."""

    def __init__(self, message: str, causes: list[JsonDict]):
        super().__init__(message)
        self.message = message
        self.causes = causes


@dataclasses.dataclass
class Entry:
    manager: str
    operation: str
    api_version: str
    time: str
    fields: set[Path]
    subresource: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return self.manager, self.operation, self.subresource

    def as_json(self) -> JsonDict:
        entry: JsonDict = {
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(self.fields),
        }
        if self.subresource:
            entry["subresource"] = self.subresource
        return entry


def manager_of(field_manager: str | None, user_agent: str) -> str:
    """The manager of a non-apply write: ``fieldManager``, else the User-Agent's prefix."""
    if field_manager:
        return field_manager
    return user_agent.split("/", 1)[0][:128]


# --- list semantics -----------------------------------------------------------------------

_BUILTIN_KEYS: dict[str, ListKind] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "ownerReferences": ("uid",),
    "conditions": ("type",),
    "hostAliases": ("ip",),
    "resourceClaims": ("name",),
    "finalizers": "set",
}
_CONTAINER_LISTS = frozenset({"containers", "initContainers", "ephemeralContainers"})


def builtin_list_keys(kind: str) -> ListKeys:
    """The list semantics of a built-in kind's fields (its Go types' merge keys)."""

    def keys(names: tuple[str, ...]) -> ListKind:
        if not names:
            return None
        last = names[-1]
        if last == "ports":
            if len(names) >= 2 and names[-2] in _CONTAINER_LISTS:
                return ("containerPort",)
            if kind == "Service" and names == ("spec", "ports"):
                return ("port",)
            return None
        return _BUILTIN_KEYS.get(last)

    return keys


def schema_list_keys(schema: JsonDict | None) -> ListKeys:
    """The list semantics a CRD's structural schema declares (lists are atomic by default)."""

    def keys(names: tuple[str, ...]) -> ListKind:
        if names == ("metadata", "finalizers"):
            return "set"
        node: Any = schema
        for name in names:
            if not isinstance(node, dict):
                return None
            while node.get("type") == "array" and isinstance(node.get("items"), dict):
                node = node["items"]
            properties = node.get("properties") or {}
            additional = node.get("additionalProperties")
            node = properties.get(name, additional if isinstance(additional, dict) else None)
        if not isinstance(node, dict):
            return None
        list_type = node.get("x-kubernetes-list-type")
        if list_type == "set":
            return "set"
        if list_type == "map":
            return tuple(node.get("x-kubernetes-list-map-keys") or ())
        return None

    return keys


_NO_KEY = "k:{}"


def _item_key(item: Any, keys: tuple[str, ...]) -> str:
    if not isinstance(item, dict):
        return _NO_KEY
    present = {key: item[key] for key in sorted(keys) if key in item}
    return "k:" + json.dumps(present, separators=(",", ":"), sort_keys=True)


def _set_key(item: Any) -> str:
    return "v:" + json.dumps(item, separators=(",", ":"), sort_keys=True)


# --- field sets ---------------------------------------------------------------------------


def stripped(obj: Mapping[str, Any], drop: Iterable[str] = ()) -> JsonDict:
    """The part of an object field ownership is about (no apiVersion, kind, server meta)."""
    dropped = _STRIPPED_TOP | set(drop)
    # Shallow: the result is only read.
    result: JsonDict = {k: v for k, v in obj.items() if k not in dropped}
    meta = result.get("metadata")
    if isinstance(meta, dict):
        meta = {k: v for k, v in meta.items() if k not in _STRIPPED_META}
        if meta:
            result["metadata"] = meta
        else:
            del result["metadata"]
    return result


def index(value: Any, list_keys: ListKeys) -> tuple[dict[Path, Any], set[Path]]:
    """Every path of a value with the value there, and its field set: the leaf paths, and
    the items of keyed lists and sets.
    """
    nodes: dict[Path, Any] = {}
    leaves: set[Path] = set()

    def walk(node: Any, path: Path, names: tuple[str, ...]) -> None:
        if path:
            nodes[path] = node
        if isinstance(node, dict):
            if not node and path:
                leaves.add(path)
            for key, child in node.items():
                walk(child, (*path, f"f:{key}"), (*names, key))
            return
        if isinstance(node, list):
            kind = list_keys(names)
            if kind is None or not node:
                leaves.add(path)
            elif kind == "set":
                for item in node:
                    item_path = (*path, _set_key(item))
                    nodes[item_path] = item
                    leaves.add(item_path)
            else:
                for item in node:
                    item_path = (*path, _item_key(item, kind))
                    nodes[item_path] = item
                    leaves.add(item_path)
                    if isinstance(item, dict):
                        for key, child in item.items():
                            walk(child, (*item_path, f"f:{key}"), (*names, key))
            return
        leaves.add(path)

    walk(value, (), ())
    return nodes, leaves


def _check_keys(value: Any, list_keys: ListKeys) -> None:
    """Refuse an applied item of a keyed list that has none of its key fields, as the real
    server refuses it (it could stand for no item, or for any)."""

    def walk(node: Any, names: tuple[str, ...], where: str) -> None:
        if isinstance(node, dict):
            for key, child in node.items():
                walk(child, (*names, key), f"{where}.{key}")
        elif isinstance(node, list):
            kind = list_keys(names)
            if kind is None or kind == "set":
                return
            for position, item in enumerate(node):
                if _item_key(item, kind) == _NO_KEY:
                    raise ApplyInvalid(
                        f"{where}: element {position}: associative list with keys has an "
                        f'element that omits key field "{kind[0]}" (and doesn\'t have '
                        "default value)"
                    )
                walk(item, names, f"{where}[{position}]")

    walk(value, (), "")


def to_fields_v1(paths: Iterable[Path]) -> JsonDict:
    """A set of paths as a FieldsV1 tree."""
    members = set(paths)
    tree: JsonDict = {}
    for path in sorted(members):
        node = tree
        for element in path:
            node = node.setdefault(element, {})
    for path in members:
        node = tree
        for element in path:
            node = node[element]
        if node and "." not in node:
            node["."] = {}
    return _sorted_tree(tree)


def _sorted_tree(tree: JsonDict) -> JsonDict:
    return {key: _sorted_tree(tree[key]) for key in sorted(tree)}


def from_fields_v1(tree: Mapping[str, Any], prefix: Path = ()) -> set[Path]:
    """A FieldsV1 tree as a set of paths."""
    paths: set[Path] = set()
    for key, sub in tree.items():
        if key == ".":
            if prefix:
                paths.add(prefix)
            continue
        path = (*prefix, key)
        if isinstance(sub, Mapping) and sub:
            paths |= from_fields_v1(sub, path)
        else:
            paths.add(path)
    return paths


_MISSING = object()


def _find_item(items: list[Any], element: str) -> int | None:
    kind, _, raw = element.partition(":")
    wanted = json.loads(raw)
    for index, item in enumerate(items):
        if kind == "v" and item == wanted:
            return index
        if kind == "k" and wanted and isinstance(item, dict):
            if all(item.get(key) == value for key, value in wanted.items()):
                return index
    return None  # an item without its key fields stands for no other


def value_at(obj: Any, path: Path) -> Any:
    """The value a path points at, or ``_MISSING``."""
    node = obj
    for element in path:
        if element.startswith("f:") and isinstance(node, dict):
            node = node.get(element[2:], _MISSING)
        elif element[:2] in ("k:", "v:") and isinstance(node, list):
            index = _find_item(node, element)
            node = _MISSING if index is None else node[index]
        else:
            return _MISSING
        if node is _MISSING:
            return _MISSING
    return node


def _remove_at(obj: Any, path: Path) -> None:
    parent = value_at(obj, path[:-1])
    element = path[-1]
    if element.startswith("f:") and isinstance(parent, dict):
        parent.pop(element[2:], None)
    elif isinstance(parent, list):
        index = _find_item(parent, element)
        if index is not None:
            del parent[index]


def _is_leaf_value(value: Any) -> bool:
    return not isinstance(value, dict) or not value


def path_text(path: Path) -> str:
    """A path as the real server prints it: ``.spec.containers[name="web"].image``."""
    text = ""
    for element in path:
        kind, _, raw = element.partition(":")
        if kind == "f":
            text += f".{raw}"
        elif kind == "k":
            fields = json.loads(raw)
            text += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in fields.items()) + "]"
        else:
            text += f"[={raw}]"
    return text


# --- managed field entries ----------------------------------------------------------------


def entries_of(obj: Mapping[str, Any] | None) -> list[Entry]:
    """The managed field entries an object carries."""
    if not obj:
        return []
    raw = (obj.get("metadata") or {}).get("managedFields") or []
    entries: list[Entry] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        entries.append(
            Entry(
                manager=str(item.get("manager") or ""),
                operation=str(item.get("operation") or UPDATE),
                api_version=str(item.get("apiVersion") or ""),
                time=str(item.get("time") or ""),
                fields=from_fields_v1(item.get("fieldsV1") or {}),
                subresource=str(item.get("subresource") or ""),
            )
        )
    return entries


def _copies(entries: list[Entry]) -> list[Entry]:
    return [dataclasses.replace(entry, fields=set(entry.fields)) for entry in entries]


def _encode(
    entries: list[Entry], old: list[Entry], nodes: Mapping[Path, Any], api_version: str
) -> list[JsonDict]:
    previous = {entry.key: entry for entry in old}
    kept: list[Entry] = []
    for entry in entries:
        if entry.api_version == api_version:  # entries of other versions are left as they are
            entry.fields = {p for p in entry.fields if p in nodes}
        if not entry.fields:
            continue
        before = previous.get(entry.key)
        if (
            before is not None
            and before.fields == entry.fields
            and before.api_version == entry.api_version
        ):
            entry.time = before.time  # nothing changed hands: keep the old time
        kept.append(entry)
    kept.sort(key=lambda e: (e.operation, e.time, e.manager, e.api_version, e.subresource))
    return [entry.as_json() for entry in kept]


def _with_parents(paths: Iterable[Path]) -> set[Path]:
    result: set[Path] = set()
    for path in paths:
        for end in range(1, len(path) + 1):
            result.add(path[:end])
    return result


def _node_paths(nodes: Mapping[Path, Any], leaves: set[Path]) -> set[Path]:
    """Every path of an object: its leaves and keyed items, and the maps above them except
    Go value structs (a keyed list itself is no node of its own either).
    """
    found = set(leaves)
    for path in _with_parents(leaves) - leaves:
        value = nodes.get(path)
        if isinstance(value, list):
            continue
        if path[-1].startswith("f:") and path[-1][2:] in _STRUCT_FIELDS:
            continue
        found.add(path)
    return found


def record_update(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    *,
    manager: str,
    api_version: str,
    subresource: str,
    list_keys: ListKeys,
    now: str,
) -> list[JsonDict]:
    """The ``managedFields`` of ``new`` after an ``Update`` by ``manager`` turned ``old``
    (``None`` for a create) into it.
    """
    old_entries = entries_of(old)
    entries = _copies(old_entries)
    old_values, old_leaves = index(stripped(old or {}), list_keys)
    new_values, new_leaves = index(stripped(new), list_keys)
    old_nodes = _node_paths(old_values, old_leaves)
    new_nodes = _node_paths(new_values, new_leaves)
    changed = new_nodes - old_nodes
    for path in new_nodes & old_nodes:
        value = new_values[path]
        if _is_leaf_value(value) and value != old_values[path]:
            changed.add(path)
    if changed:
        for entry in entries:
            if entry.key != (manager, UPDATE, subresource) and entry.api_version == api_version:
                entry.fields -= changed
        mine = next((e for e in entries if e.key == (manager, UPDATE, subresource)), None)
        if mine is None:
            mine = Entry(manager, UPDATE, api_version, now, set(), subresource)
            entries.append(mine)
        mine.fields |= changed
        mine.api_version = api_version
        mine.time = now
    return _encode(entries, old_entries, new_values, api_version)


def apply(
    live: Mapping[str, Any] | None,
    applied: Mapping[str, Any],
    *,
    manager: str,
    api_version: str,
    force: bool,
    list_keys: ListKeys,
    now: str,
    reset: Iterable[str] = (),
    subresource: str = "",
) -> JsonDict:
    """The object after ``manager`` applied ``applied`` to ``live`` (``None``: it is created),
    with its ``managedFields``; raise ``ApplyConflict`` on conflicts (unless ``force``).

    ``reset`` names the top-level fields this endpoint ignores (``status`` on the main
    resource of a kind with a status subresource).
    """
    reset = tuple(reset)
    old_entries = entries_of(live)
    entries = _copies(old_entries)
    live_obj: JsonDict = copy.deepcopy(dict(live)) if live else {}
    live_values = index(stripped(live_obj), list_keys)[0]
    for entry in entries:  # ownership of what no longer exists is void
        if entry.api_version == api_version:
            entry.fields = {p for p in entry.fields if p in live_values}
    _check_keys(stripped(applied, reset), list_keys)
    applied_values, applied_set = index(stripped(applied, reset), list_keys)

    key = (manager, APPLY, subresource)
    conflicts: list[tuple[Entry, Path]] = []
    for entry in entries:
        if entry.key == key or entry.api_version != api_version:
            continue
        for path in sorted(applied_set & entry.fields):
            value = applied_values[path]
            live_value = live_values.get(path, _MISSING)
            if value == {} and isinstance(live_value, dict):
                continue  # merging an empty map changes nothing
            if _is_leaf_value(value) and value != live_value:
                conflicts.append((entry, path))
    if conflicts and not force:
        raise _conflict_error(conflicts)
    for entry, path in conflicts:
        entry.fields.discard(path)

    merged: JsonDict = _merge(
        live_obj, {k: v for k, v in applied.items() if k not in reset}, (), list_keys
    )
    # What the manager applied before and no longer applies goes, unless others own it.
    mine = next((e for e in entries if e.key == key), None)
    others: set[Path] = set()
    for entry in entries:
        if entry is not mine and entry.api_version == api_version:
            others |= _with_parents(entry.fields)
    if mine is not None:
        removed: list[Path] = []
        gone: set[Path] = set()
        for path in sorted(mine.fields - applied_set, key=len):
            if path in others:  # others holds every owned path's parents too
                continue
            if any(path[:depth] in gone for depth in range(1, len(path))):
                continue  # inside what is gone already
            _remove_at(merged, path)
            removed.append(path)
            gone.add(path)
        for path in sorted(removed, key=len, reverse=True):
            _drop_emptied(merged, path[:-1], others | applied_set)
        entries.remove(mine)
    entries.append(Entry(manager, APPLY, api_version, now, applied_set, subresource))
    meta = merged.setdefault("metadata", {})
    merged_values = index(stripped(merged), list_keys)[0]
    meta["managedFields"] = _encode(entries, old_entries, merged_values, api_version)
    return merged


def _drop_emptied(obj: JsonDict, path: Path, owned: set[Path]) -> None:
    while path and path not in owned:
        value = value_at(obj, path)
        if value is _MISSING or value not in ({}, []):
            return
        _remove_at(obj, path)
        path = path[:-1]


def _merge(live: Any, applied: Any, names: tuple[str, ...], list_keys: ListKeys) -> Any:
    if isinstance(applied, dict):
        result = dict(live) if isinstance(live, dict) else {}
        for key, value in applied.items():
            if value is None:
                result.pop(key, None)
            else:
                result[key] = _merge(result.get(key), value, (*names, key), list_keys)
        return result
    if isinstance(applied, list) and isinstance(live, list):
        kind = list_keys(names)
        if kind == "set":
            return [*live, *(item for item in applied if item not in live)]
        if kind:
            result_items = [copy.deepcopy(item) for item in live]
            # One look-up table a list, not a scan an item: big lists stay linear.
            positions: dict[str, int] = {}
            for at, item in enumerate(result_items):
                positions.setdefault(_item_key(item, kind), at)
            for item in applied:
                key = _item_key(item, kind)
                found = positions.get(key) if key != _NO_KEY else None
                if found is None:
                    positions.setdefault(key, len(result_items))
                    result_items.append(copy.deepcopy(item))
                else:
                    result_items[found] = _merge(result_items[found], item, names, list_keys)
            return result_items
    return copy.deepcopy(applied)


def _manager_text(entry: Entry) -> str:
    text = json.dumps(entry.manager)
    if entry.subresource:
        text += f" with subresource {json.dumps(entry.subresource)}"
    if entry.operation == UPDATE:
        text += f" using {entry.api_version}"
        if entry.time:
            text += f" at {entry.time}"
    return text


def _conflict_error(conflicts: list[tuple[Entry, Path]]) -> ApplyConflict:
    causes = [
        {
            "type": "FieldManagerConflict",
            "message": f"conflict with {_manager_text(entry)}",
            "field": path_text(path),
        }
        for entry, path in conflicts
    ]
    if len(conflicts) == 1:
        entry, path = conflicts[0]
        message = (
            f"Apply failed with 1 conflict: conflict with {_manager_text(entry)}: {path_text(path)}"
        )
        return ApplyConflict(message, causes)
    by_manager: dict[str, list[Path]] = {}
    for entry, path in conflicts:
        by_manager.setdefault(_manager_text(entry), []).append(path)
    lines: list[str] = []
    for manager in sorted(by_manager):
        lines.append(f"conflicts with {manager}:")
        lines.extend(f"- {path_text(path)}" for path in by_manager[manager])
    message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApplyConflict(message, causes)
