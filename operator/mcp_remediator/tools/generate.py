"""Every file of the repository that is generated, and the one command that writes them.

``python -m mcp_remediator.tools.generate`` (``make generate``) rewrites every generated
file from its source; ``--check`` changes nothing and exits 1 listing the stale ones (a
test runs the same check). A name (``crds``, ``readme``, ``catalogue``, ``rbac``,
``demo-rbac``) limits either to one generator.

Each entry of ``GENERATORS`` renders, from the repository root, the expected text of the
files it owns (repository-relative path → text): the CRDs, the README's tables, the demo's
copy of the runbook catalogue, the tenants' step-actions ClusterRole and the demo's copy
of the operator's and the runner's RBAC. A generator whose ``folder`` is set owns
that folder outright: any other file in it is stale and removed. Adding a generator is one
line in ``GENERATORS``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mcp_remediator.tools import crdgen, docgen, rbacgen

CATALOGUE = "manifests/runbooks"
PACKAGED_CATALOGUE = "operator/mcp_remediator/demo/runbooks"
PACKAGED_RBAC = "operator/mcp_remediator/demo/rbac"
# The RBAC the demo applies to its emulated cluster, so that its operator runs with the
# identity and rights an installation gives it: (folder, prefix of the packaged copy).
RBAC_SOURCES = (("manifests/rbac", "operator-"), ("manifests/runner", "runner-"))
# The operator's own files (not the users' editor/viewer roles); the leader-election Role
# too, since the demo's operator takes the Lease as its ServiceAccount.
OPERATOR_RBAC_FILES = (
    "service_account.yaml",
    "role.yaml",
    "role_binding.yaml",
    "leader_election_role.yaml",
    "leader_election_role_binding.yaml",
)
README = "README.md"


def crd_files(root: Path) -> dict[str, str]:
    """The CRDs, rendered from the models and the action registry."""
    return {f"crds/{name}": text for name, text in crdgen.render_all().items()}


def readme_tables(root: Path) -> dict[str, str]:
    """The README with its action and settings tables rendered between their markers."""
    return {README: docgen.render(_read(root / README))}


def packaged_catalogue(root: Path) -> dict[str, str]:
    """The runbook catalogue the package ships for the demo: manifests/runbooks, verbatim."""
    return {
        f"{PACKAGED_CATALOGUE}/{source.name}": _read(source)
        for source in sorted((root / CATALOGUE).glob("*.yaml"))
    }


def packaged_rbac(root: Path) -> dict[str, str]:
    """The operator's and the runner's RBAC, verbatim, for the demo's emulated cluster."""
    out = {}
    for folder, prefix in RBAC_SOURCES:
        for source in sorted((root / folder).glob("*.yaml")):
            if source.name == "kustomization.yaml":
                continue
            if prefix == "operator-" and source.name not in OPERATOR_RBAC_FILES:
                continue
            out[f"{PACKAGED_RBAC}/{prefix}{source.name}"] = _read(source)
    return out


def rbac_role(root: Path) -> dict[str, str]:
    """The ClusterRole a team binds in its namespace: each action's declared access."""
    return {rbacgen.PATH: rbacgen.render()}


@dataclass(frozen=True)
class Generator:
    name: str
    render: Callable[[Path], dict[str, str]]
    folder: str | None = None  # a folder holding nothing but what ``render`` returns


GENERATORS = [
    Generator("crds", crd_files),
    Generator("readme", readme_tables),
    Generator("catalogue", packaged_catalogue, folder=PACKAGED_CATALOGUE),
    Generator("rbac", rbac_role),
    Generator("demo-rbac", packaged_rbac, folder=PACKAGED_RBAC),
]


@dataclass(frozen=True)
class Change:
    path: str
    text: str | None  # None: the file must not exist


def _read(path: Path) -> str:
    # Bytes, not read_text(): no newline translation, so a copy stays byte-identical.
    return path.read_bytes().decode()


def changes(root: Path, names: Sequence[str] = ()) -> list[Change]:
    """What must change for every generated file (of the named generators) to be current."""
    out = []
    for generator in GENERATORS:
        if names and generator.name not in names:
            continue
        expected = generator.render(root)
        for path, text in sorted(expected.items()):
            target = root / path
            if not target.is_file() or _read(target) != text:
                out.append(Change(path, text))
        folder = None if generator.folder is None else root / generator.folder
        if folder is not None and folder.is_dir():
            for extra in sorted(folder.iterdir()):
                path = extra.relative_to(root).as_posix()
                if extra.is_file() and path not in expected:
                    out.append(Change(path, None))
    return out


def check(root: Path, names: Sequence[str] = ()) -> list[str]:
    """The stale generated files: missing, different from what renders, or left over."""
    return [change.path for change in changes(root, names)]


def write(root: Path, names: Sequence[str] = ()) -> list[Change]:
    """Brings every generated file up to date; returns what was changed."""
    done = changes(root, names)
    for change in done:
        target = root / change.path
        if change.text is None:
            target.unlink()
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(change.text.encode())
    return done


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mcp_remediator.tools.generate",
        description="Write (or --check) every generated file of the repository.",
    )
    known = [generator.name for generator in GENERATORS]
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"only these of {', '.join(known)} (default: all)"
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    parser.add_argument("--root", type=Path, default=Path(), help="repository root (default: .)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(known))
    if unknown:
        parser.error(f"unknown generator(s) {', '.join(unknown)}; known: {', '.join(known)}")
    root: Path = args.root
    if not (root / CATALOGUE).is_dir() or not (root / README).is_file():
        print(f"{root.resolve()} is not the repository root (no {CATALOGUE})", file=sys.stderr)
        return 2
    if args.check:
        stale = check(root, args.names)
        for path in stale:
            print(f"stale: {path}")
        if stale:
            print(f"{len(stale)} generated file(s) stale: run `make generate`")
            return 1
        print("generated files are current")
        return 0
    done = write(root, args.names)
    for change in done:
        print(f"{'removed' if change.text is None else 'wrote'} {change.path}")
    if not done:
        print("generated files are current")
    return 0


if __name__ == "__main__":
    sys.exit(main())
