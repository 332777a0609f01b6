"""``mcp-remediator demo`` as a user runs it: a subprocess with real redis-server,
redis_exporter, Prometheus and Alertmanager, the emulated cluster and the operator.

The whole run must end with every incident of the guide at its verified end (the Kyverno
case at its documented refusal, pointing to Git, its evidence naming both the ClusterPolicy
and the CEL ValidatingPolicy that block the deploy; the silence of redis-high-memory's alert
active in the real Alertmanager while its run works and expired at its end; a timeout change
that does not help reverted, the ConfigMap back as before) and exit 0; every daemon it
started must be gone afterwards, also when it is interrupted. Also: the demo loads the catalogue the
package ships, at the demo's pace and otherwise unchanged.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from mcp_remediator.demo import director as demo
from mcp_remediator.demo.incidents import INCIDENTS

ROOT = Path(__file__).parents[2]
PID = re.compile(r"\b(redis-server|prometheus|redis_exporter|alertmanager) pid (\d+)")


def demo_process(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_")}
    return subprocess.Popen(
        [sys.executable, "-m", "mcp_remediator", "demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env=env,
        # A background test runner may ignore SIGINT; the demo must see it as a user's Ctrl-C.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def flat(text: str) -> str:
    """The output with the timeline's line wrapping undone."""
    return " ".join(text.split())


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie would still answer; the demo reaps what it starts, so /proc tells the truth.
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def started_pids(output: str) -> list[int]:
    pids = [int(pid) for _, pid in PID.findall(output)]
    assert len(pids) >= 4, output
    return pids


LOGS = re.compile(r"logs in (\S+)")


def finish(process: subprocess.Popen[str], timeout: float) -> str:
    """The demo's whole output. A demo still running at ``timeout`` is interrupted (its
    daemons stopped, not left to later tests) and the test fails with what it printed."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
        raise AssertionError(f"the demo still ran after {timeout:g}s:\n{output}") from None
    return output


def diagnosis(output: str) -> str:
    """The output, and the end of the operator's log that a failed demo keeps."""
    found = LOGS.search(output)
    log = Path(found.group(1)) / "operator.log" if found else None
    if log is None or not log.exists():
        return output
    tail = log.read_text(errors="replace").splitlines()[-200:]
    return output + f"\n--- the end of {log}:\n" + "\n".join(tail)


def read_until(process: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """The output up to and including the line holding ``marker`` (the whole output if the
    demo ends first). A demo still running without it at ``timeout`` is interrupted."""
    assert process.stdout is not None
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if marker in line:
                break
        seen.set()

    threading.Thread(target=read, daemon=True).start()
    if not seen.wait(timeout):
        process.send_signal(signal.SIGINT)
        rest = finish(process, timeout=30)
        raise AssertionError(f"no {marker!r} after {timeout:g}s:\n{''.join(lines)}{rest}")
    return "".join(lines)


KUBECONFIG = re.compile(r"kubectl --kubeconfig (\S+) -n mcp get mcpremediations")


def kubectl(kubeconfig: str, *args: str, timeout: float = 30) -> str:
    binary = shutil.which("kubectl")
    assert binary is not None, "kubectl is not installed (the machine image brings it)"
    done = subprocess.run(
        [binary, "--kubeconfig", kubeconfig, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
    failures = [line for line in done.stderr.splitlines() if line.lower().startswith("error")]
    assert not failures, f"kubectl {' '.join(args)}: {done.stderr}"
    return done.stdout


def kubectl_watch(kubeconfig: str, *args: str, seconds: float) -> str:
    """What ``kubectl … -w`` printed in ``seconds``, and nothing on its stderr."""
    binary = shutil.which("kubectl")
    assert binary is not None, "kubectl is not installed (the machine image brings it)"
    process = subprocess.Popen(
        [binary, "--kubeconfig", kubeconfig, *args, "-w"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = process.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.terminate()
        out, err = process.communicate()
    assert not err.strip(), err
    return out


def kubectl_tour(kubeconfig: str) -> None:
    """The kubectl commands a user of ``demo --keep-running`` is told to try (issue 14's
    list), on the world the incidents left behind."""
    pods = kubectl(kubeconfig, "get", "pods", "-A")
    assert "dese-api-" in pods and "NAMESPACE" in pods, pods
    table = kubectl(kubeconfig, "-n", "mcp", "get", "mcprem")
    assert table.split("\n")[0].split()[:4] == ["NAME", "RUNBOOK", "PHASE", "STEP"], table
    assert "Succeeded" in table, table
    watched = kubectl_watch(kubeconfig, "-n", "mcp", "get", "mcprem", seconds=3)
    assert "RUNBOOK" in watched and "Succeeded" in watched, watched
    explained = kubectl(kubeconfig, "explain", "mcprem.spec")
    assert "dryRun" in explained and "runbookRef" in explained, explained
    events = kubectl(kubeconfig, "-n", "mcp", "get", "events")
    assert "McpRemediation/" in events or "mcpremediation/" in events, events
    applied = kubectl(kubeconfig, "apply", "-k", "manifests/runbooks")
    assert "mcprunbook.mcp.dese.ai/redis-down" in applied, applied


def test_the_demo_brings_every_incident_to_its_verified_end() -> None:
    process = demo_process("--keep-running")
    # Well past the demo's own bounds (two minutes an incident): a stuck incident ends the
    # demo NOT VERIFIED, with its logs kept, and the failure shows them.
    head = read_until(process, "the operator's metrics:", timeout=240)
    found = KUBECONFIG.search(head)
    assert found is not None, diagnosis(head)
    try:
        kubectl_tour(found.group(1))
    finally:
        process.send_signal(signal.SIGINT)
        # The demo's own stop bounds: the operator 15 s, the daemons 10 s, the servers; a
        # slow stop prints where its time went ("stopping took ...").
        output = head + finish(process, timeout=60)

    assert process.returncode == 0, diagnosis(output)
    text = flat(output)
    for incident in INCIDENTS:
        kind = {
            "kyverno-policy-block": "REFUSED AS DOCUMENTED",
            "tenant-isolation": "REFUSED AS DOCUMENTED",
            "prometheus-timeout-reverted": "REVERTED AS DOCUMENTED",
        }.get(incident.key, "VERIFIED")
        assert f"=> {kind} {incident.key}:" in text, f"{incident.key} not verified:\n{output}"
    assert "NOT VERIFIED" not in text
    assert len(INCIDENTS) == 13
    assert f"{len(INCIDENTS)} of {len(INCIDENTS)} incidents reached their verified end" in text
    # The refusal points to Git, and the evidence to the policy's file there.
    assert (
        "relax-signed-images: Refused (ManualKyvernoOverrideRefused) step relax-policy: refused: "
        "writing kyverno.io/ClusterPolicy/require-signed-images in namespace mcp would override "
        "Kyverno by hand; Kyverno policy changes go through the platform-gitops repository"
    ) in text
    assert "platform-gitops/policies/kyverno/require-signed-images.yaml" in text
    # The CEL ValidatingPolicy (Kyverno 1.17+) that denies the same deploy, read with its
    # openreports.io result, and the deprecation of the ClusterPolicy.
    assert (
        "evidence [kyvernoPolicyCheck] 1 failing Kyverno result(s) for namespace mcp; blocking: "
        "ValidatingPolicy require-run-as-non-root (Deny) rule validations[0] on "
        "Deployment/mcp/dese-api: pods must run as non-root (securityContext.runAsNonRoot: "
        "true); change it in platform-gitops/policies/kyverno/require-run-as-non-root.yaml, "
        "never by hand"
    ) in text
    assert (
        "the evidence named ClusterPolicy require-signed-images "
        "(platform-gitops/policies/kyverno/require-signed-images.yaml; ClusterPolicy is "
        "deprecated since Kyverno 1.17, to be removed in 1.20: migrate to ValidatingPolicy) and "
        "ValidatingPolicy require-run-as-non-root (Deny, "
        "platform-gitops/policies/kyverno/require-run-as-non-root.yaml)"
    ) in text
    # The escalation chain of the blocked sync, and the approval of the config change.
    assert "runbook notify-oncall, escalated from argocd-sync-stuck-" in text
    assert "AwaitingApproval (ApprovalRequired)" in text
    # The silence of redis-high-memory's alert: active in the real Alertmanager while the
    # run works, expired as it ends, and the verdict says so.
    silence = re.search(
        r"silence Alertmanager: silence (\S+) active \(alertname=\"RedisHighMemoryUsage\", "
        r"namespace=\"mcp\", instance=\"[\d.:]+\"; endsAt \S+\) while "
        r"(redis-high-memory-\w+) is Running",
        text,
    )
    assert silence is not None, output
    silence_id, run = silence.groups()
    assert (
        f"silence Alertmanager: silence {silence_id} expired (endsAt " in text
        and f"as {run} ended Succeeded; status.silence: Expired" in text
    ), output
    assert re.search(
        r"VERIFIED redis-high-memory: memory back to \d+% of maxmemory; its alert was silenced "
        rf"in Alertmanager while the run worked \(silence {silence_id}\) and the silence "
        r"expired as the run ended",
        text,
    ), output
    # A timeout change that did not help: the verification failed, the run ended Failed, the
    # ConfigMap's change was reverted (onFailure.revert), on-call was notified.
    assert re.search(
        r"run (prometheus-timeout-\w+): Failed \(VerificationFailed\) step verify: .* did not "
        r"hold for 1s within \d+s",
        text,
    ), output
    assert "runbook notify-oncall, escalated from prometheus-timeout-" in text
    assert (
        "revert timeout [patchResource] Reverted: restored data.MCP_PROMETHEUS_TIMEOUT_MS of "
        "ConfigMap mcp-staging/dese-api-config"
    ) in text
    assert "revert condition Reverted=True (Reverted): restored timeout: " in text
    assert (
        "REVERTED AS DOCUMENTED prometheus-timeout-reverted: after approval "
        "MCP_PROMETHEUS_TIMEOUT_MS went to 8000 and mcp-staging/dese-api was restarted, but the "
        "rejections stayed: the verification failed, the run ended Failed with Reverted=True, "
        "ConfigMap mcp-staging/dese-api-config is back exactly as before "
        "(MCP_PROMETHEUS_TIMEOUT_MS=3000), and on-call was notified"
    ) in text
    # The AI ops agent over MCP: list, simulate (nothing written), propose; the proposal is
    # held for a human, carries its proposer and reason, and runs once approved.
    proposal = re.search(r"propose_remediation -> (websocket-events-not-published-proposal-\w+): "
                         r"AwaitingApproval", text)  # fmt: skip
    assert proposal is not None, output
    name = proposal.group(1)
    assert re.search(
        r"agent list_runbooks -> \d+ runbooks; for its finding: websocket-events-not-published",
        text,
    ), output
    assert "guardrails allowed; nothing was written" in text
    assert (
        f'review {name} is held AwaitingApproval, no step run; proposed-by "triage-agent 0.1-demo"'
    ) in text
    held, approved = text.index(f"review {name} is held"), text.index(f"patch mcprem {name}")
    started = text.index(f"run {name}: Running")
    assert held < approved < started, output
    assert f"run {name}: Succeeded (Completed)" in text
    # Every daemon it started is gone, the restarted redis-server too.
    restarted = re.search(r"redis-server again \(pid \d+ -> (\d+)\)", text)
    assert restarted is not None
    pids = [*started_pids(output), int(restarted.group(1))]
    assert [pid for pid in pids if alive(pid)] == []
    assert "Traceback" not in output


def test_an_interrupted_demo_stops_every_daemon_it_started() -> None:
    process = demo_process()
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + 60
    # Interrupt once the daemons run and the operator is up: mid-incident.
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        seen.append(line)
        if " operator " in line or not line:
            break
    process.send_signal(signal.SIGINT)
    output = "".join(seen) + finish(process, timeout=30)

    assert process.returncode == 130, output
    assert "every daemon the demo started has been stopped" in output
    assert [pid for pid in started_pids(output) if alive(pid)] == []
    assert "Traceback" not in output


def test_the_demo_runs_the_shipped_catalogue_at_its_own_pace_only() -> None:
    runbooks = {r["metadata"]["name"]: r for r in demo.load_catalogue()}
    catalogue = sorted(p.stem for p in (ROOT / "manifests" / "runbooks").glob("*.yaml"))
    assert sorted(runbooks) == [name for name in catalogue if name != "kustomization"]

    original = runbooks["promise-rejections"]
    fast = demo.at_demo_pace(original)
    steps = {s["name"]: s for s in fast["spec"]["steps"]}
    assert "[5m]" in original["spec"]["steps"][1]["params"]["query"]
    assert "[5m]" not in steps["find"]["params"]["query"]
    assert "[5s]" in steps["find"]["params"]["query"]
    assert steps["verify"]["params"]["forSeconds"] == demo.DEMO_HOLD_SECONDS
    assert steps["verify"]["timeoutSeconds"] <= demo.DEMO_STEP_SECONDS
    # Everything else is the catalogue's: triggers, guardrails, actions, templates.
    for key in ("triggers", "guardrails", "onFailure", "target"):
        assert fast["spec"][key] == original["spec"][key]
    assert [(s["name"], s["action"]) for s in fast["spec"]["steps"]] == [
        (s["name"], s["action"]) for s in original["spec"]["steps"]
    ]
