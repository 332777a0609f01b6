"""The ``mcp-remediator`` command: run, demo, lint, simulate, mcp-server.

``run`` is the operator (Kopf plus the receiver) against the current kubeconfig or the
in-cluster config. ``lint`` checks McpRunbook/McpRemediation YAML offline for a GitOps
repo's CI. The others are documented in their own modules.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from mcp_remediator.settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except (SettingsError, OSError) as exc:
        # SettingsError names variables, never values; OSError names the unreadable file.
        raise SystemExit(f"mcp-remediator: invalid settings: {exc}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from mcp_remediator.kube.client import ConnectionConfig
    from mcp_remediator.runtime import run_operator

    settings = _settings()
    connection = ConnectionConfig.load(args.kubeconfig, args.context)
    logging.getLogger(__name__).info("API server %s", connection.server)
    asyncio.run(run_operator(settings, connection))
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    from mcp_remediator.tools.lint import lint_paths

    return lint_paths(args.paths, _settings(), out=sys.stdout, namespace=args.namespace)


def cmd_simulate(args: argparse.Namespace) -> int:
    from mcp_remediator.tools.simulate import simulate

    return simulate(args.alerts, args.runbooks, _settings(), sys.stdout, args.namespace)


def _missing_extra(
    exc: ModuleNotFoundError, command: str, package: str, what: str, extra: str
) -> int:
    """Exit 2 saying which extra a command needs, when ``exc`` is that package missing;
    any other missing module is a bug, raised again."""
    if (exc.name or "").partition(".")[0] != package:
        raise exc
    print(
        f"mcp-remediator {command}: needs {what}, which is not installed: "
        f"pip install 'mcp-remediator[{extra}]'",
        file=sys.stderr,
    )
    return 2


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from mcp_remediator.demo.director import run_demo
    except ModuleNotFoundError as exc:
        # kmock (the emulated API server) is the `demo` extra, not a dependency of the operator.
        return _missing_extra(exc, "demo", "kmock", "kmock", "demo")

    try:
        return asyncio.run(
            run_demo(sys.stdout, keep_running=args.keep_running, verbose=args.verbose)
        )
    except (KeyboardInterrupt, asyncio.CancelledError):
        # Ctrl-C (or SIGTERM) is how --keep-running ends; every daemon is stopped by then.
        print("\nstopped; every daemon the demo started has been stopped", file=sys.stderr)
        return 0 if args.keep_running else 130


def cmd_mcp_server(args: argparse.Namespace) -> int:
    try:
        from mcp_remediator.mcpserver import serve
    except ModuleNotFoundError as exc:
        # The official MCP SDK is the `mcp` extra, not a dependency of the operator.
        return _missing_extra(exc, "mcp-server", "mcp", "the MCP Python SDK", "mcp")
    from mcp_remediator.kube.client import ConnectionConfig, KubeApi

    token = None
    if args.http:
        if args.token_file:
            with open(args.token_file) as f:
                token = f.read().strip()
        else:
            token = os.environ.get("MCP_SERVER_TOKEN", "").strip()
        if not token:
            print(
                "mcp-remediator mcp-server --http: needs a bearer token: "
                "--token-file FILE or MCP_SERVER_TOKEN",
                file=sys.stderr,
            )
            return 2
    settings = _settings()
    # The caller's identity: Kubernetes RBAC decides what the agent may read and create.
    kube = KubeApi(ConnectionConfig.load(args.kubeconfig, args.context), settings)
    asyncio.run(serve(kube, settings, http=args.http, host=args.host, port=args.port, token=token))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-remediator",
        description="Self-healing operator for the MCP layer: alerts in, verified runbooks out.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the operator and the alert receiver")
    run.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster, $KUBECONFIG)")
    run.add_argument("--context", help="kubeconfig context")
    run.set_defaults(fn=cmd_run)

    demo = commands.add_parser(
        "demo", help="replay the operations guide's incidents on an embedded emulated cluster"
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the receiver and the emulated cluster up afterwards (Ctrl-C stops)",
    )
    demo.set_defaults(fn=cmd_demo)

    lint = commands.add_parser("lint", help="validate McpRunbook/McpRemediation YAML offline")
    lint.add_argument("paths", nargs="+", help="files or directories of YAML")
    lint.add_argument(
        "--namespace",
        default="default",
        help="namespace of documents whose metadata names none (their steps' target)",
    )
    lint.set_defaults(fn=cmd_lint)

    sim = commands.add_parser(
        "simulate", help="show which remediations an Alertmanager payload would create"
    )
    sim.add_argument("--alerts", required=True, help="webhook payload file (JSON or YAML)")
    sim.add_argument(
        "--runbooks", required=True, nargs="+", help="McpRunbook YAML files or directories"
    )
    sim.add_argument("--namespace", default="default", help="namespace of runbooks that name none")
    sim.set_defaults(fn=cmd_simulate)

    mcp = commands.add_parser(
        "mcp-server",
        help="serve AI agents over the Model Context Protocol (stdio, or HTTP with --http)",
    )
    mcp.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster, $KUBECONFIG)")
    mcp.add_argument("--context", help="kubeconfig context")
    mcp.add_argument(
        "--http",
        action="store_true",
        help="streamable HTTP instead of stdio, behind a bearer token "
        "(--token-file, else $MCP_SERVER_TOKEN)",
    )
    mcp.add_argument("--host", default="127.0.0.1", help="HTTP address (default 127.0.0.1)")
    mcp.add_argument("--port", type=int, default=8765, help="HTTP port (default 8765)")
    mcp.add_argument("--token-file", help="file holding the HTTP bearer token")
    mcp.set_defaults(fn=cmd_mcp_server)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # Kopf logs every handler call per object at INFO ("Handler … succeeded"): with a
        # watch-fed event handler that is a line per remediation event. Our own loggers
        # say what happened; Kopf's warnings and errors still show.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # httpx logs every request at INFO: a line per API call, nine per remediation.
        # Failures reach our own log lines; --verbose shows the requests.
        logging.getLogger("httpx").setLevel(logging.WARNING)
    result: int = args.fn(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
