"""Generated files: every one is current, and the generator finds and fixes stale ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mcp_remediator.tools import generate, rbacgen

ROOT = Path(__file__).parents[2]


def test_every_generated_file_is_current() -> None:
    stale = generate.check(ROOT)
    assert not stale, f"generated files are stale: {', '.join(stale)}; run `make generate`"


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The generated files and their sources, in a throwaway copy of the repository."""
    shutil.copy(ROOT / "README.md", tmp_path / "README.md")
    (tmp_path / "manifests" / "tenant").mkdir(parents=True)
    shutil.copy(ROOT / rbacgen.PATH, tmp_path / rbacgen.PATH)
    folders = ("crds", generate.CATALOGUE, generate.PACKAGED_CATALOGUE, generate.PACKAGED_RBAC)
    for folder, _ in generate.RBAC_SOURCES:
        shutil.copytree(ROOT / folder, tmp_path / folder, dirs_exist_ok=True)
    for folder in folders:
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


def test_check_lists_stale_files_and_write_fixes_them(
    checkout: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packaged = checkout / generate.PACKAGED_CATALOGUE
    crd = checkout / "crds" / "mcp.dese.ai_mcprunbooks.yaml"
    crd.write_text(crd.read_text().replace("mcprb", "mcprbx"))
    (packaged / "redis-down.yaml").unlink()
    (packaged / "renamed-long-ago.yaml").write_text("kind: McpRunbook\n")
    (checkout / generate.CATALOGUE / "notify-oncall.yaml").write_bytes(b"# edited\r\n")
    role = checkout / rbacgen.PATH
    role.write_text(rbacgen.HEADER)  # every action rule lost
    stale = [
        "crds/mcp.dese.ai_mcprunbooks.yaml",
        f"{generate.PACKAGED_CATALOGUE}/notify-oncall.yaml",
        f"{generate.PACKAGED_CATALOGUE}/redis-down.yaml",
        f"{generate.PACKAGED_CATALOGUE}/renamed-long-ago.yaml",
        rbacgen.PATH,
    ]

    assert generate.main(["--check", "--root", str(checkout)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        *(f"stale: {path}" for path in stale),
        "5 generated file(s) stale: run `make generate`",
    ]
    assert generate.check(checkout, ["readme"]) == []

    assert generate.main(["--root", str(checkout)]) == 0

    assert generate.check(checkout) == []
    assert not (packaged / "renamed-long-ago.yaml").exists()
    assert (packaged / "notify-oncall.yaml").read_bytes() == b"# edited\r\n"
    assert crd.read_text() == (ROOT / "crds" / crd.name).read_text()
    assert role.read_text() == (ROOT / rbacgen.PATH).read_text()
    assert sorted(p.name for p in packaged.iterdir()) == sorted(
        p.name for p in (checkout / generate.CATALOGUE).iterdir()
    )
