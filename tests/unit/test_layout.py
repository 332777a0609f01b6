"""The package layout keeps the demo's dependencies out of the operator.

kmock (the emulated API server) is the ``demo`` extra: the operator's image does not
install it, so nothing the operator imports may import it. Each check runs in a fresh
interpreter, since this test process has long imported kmock for other tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

OPERATOR = Path(__file__).parents[2] / "operator"


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join(p for p in (str(OPERATOR), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": path},
        timeout=60,
    )


def test_the_operator_does_not_import_kmock() -> None:
    result = run_python(
        "import mcp_remediator.engine, mcp_remediator.handlers, mcp_remediator.runtime, "
        "mcp_remediator.cli; import sys; assert 'kmock' not in sys.modules, 'kmock imported'"
    )
    assert result.returncode == 0, result.stderr


def test_demo_without_kmock_names_the_extra() -> None:
    # None in sys.modules makes `import kmock` fail as if it were not installed.
    result = run_python(
        "import sys; sys.modules['kmock'] = None; from mcp_remediator.cli import main; "
        "sys.exit(main(['demo']))"
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [
        "mcp-remediator demo: needs kmock, which is not installed: "
        "pip install 'mcp-remediator[demo]'"
    ]
