"""Run two call agents (tests/integration/calls/agent.py) and carry their signals.

``start`` is how a process is launched: ``Host.popen`` in the lab, or plain
``subprocess.Popen`` on loopback. One thread per agent copies its signal lines
to the other agent and collects everything else; ``during`` runs while the
call is up (e.g. kill a relay once the callee has heard the first frame).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.harness.netns import read_line

Starter = Callable[..., subprocess.Popen[str]]


@dataclass
class AgentRun:
    name: str
    proc: subprocess.Popen[str]
    lines: list[dict[str, Any]] = field(default_factory=list)
    first_frame: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stderr: str = ""  # the agent's log (p2pnode at INFO), read once it exited

    def describe(self) -> str:
        """Its last output lines and log, for an assertion message."""
        return f"{self.name}: {self.lines[-6:]}\n{self.stderr[-2500:]}"

    def done(self) -> dict[str, Any]:
        for line in self.lines:
            if "done" in line:
                return line
        raise AssertionError(f"{self.name} never finished: {self.lines[-5:]}")

    def updates(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if "update" in line]


def _pump(source: AgentRun, target: AgentRun) -> None:
    assert source.proc.stdout is not None
    for raw in source.proc.stdout:
        try:
            message = json.loads(raw)
        except ValueError:
            continue
        if "signal" in message:
            assert target.proc.stdin is not None
            with target.lock:
                try:
                    target.proc.stdin.write(
                        json.dumps({"signal": message["signal"], "from": source.name}) + "\n"
                    )
                    target.proc.stdin.flush()
                except (BrokenPipeError, ValueError, OSError):
                    pass
            continue
        source.lines.append(message)
        if message.get("detail") == "first audio frame":
            source.first_frame.set()


def _wait_ready(run: AgentRun, timeout: float = 30.0) -> None:
    """Read the agent's first line: ``{"ready": ...}`` once its warm connection is gathered."""
    line = read_line(run.proc, timeout=timeout)
    if "ready" not in json.loads(line):
        raise AssertionError(f"{run.name}: expected ready, got {line[:200]}")


def run_call(
    start_caller: Starter,
    start_callee: Starter,
    caller: dict[str, Any],
    callee: dict[str, Any],
    *,
    during: Callable[[AgentRun, AgentRun], None] | None = None,
    limit: float = 60.0,
) -> tuple[AgentRun, AgentRun]:
    """Run one call to its end; returns both agents' output (updates and statistics)."""
    argv = [sys.executable, "-m", "tests.integration.calls.agent"]
    callee_run = AgentRun(
        callee["me"],
        start_callee([*argv, json.dumps(callee)], stdin=subprocess.PIPE),
    )
    if callee.get("warm"):  # the callee's connection is gathered before the dial
        _wait_ready(callee_run)
    caller_run = AgentRun(
        caller["me"],
        start_caller([*argv, json.dumps(caller)], stdin=subprocess.PIPE),
    )
    if caller.get("warm"):
        _wait_ready(caller_run)
    threads = [
        threading.Thread(target=_pump, args=(caller_run, callee_run), daemon=True),
        threading.Thread(target=_pump, args=(callee_run, caller_run), daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        if during is not None:
            during(caller_run, callee_run)
        deadline = time.monotonic() + limit
        for run in (caller_run, callee_run):
            try:
                run.proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                run.proc.kill()
                run.proc.wait(5)
    finally:
        for run in (caller_run, callee_run):
            if run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait(5)
            if run.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    run.proc.stdin.close()
    for thread in threads:
        thread.join(5)
    for run in (caller_run, callee_run):
        with contextlib.suppress(OSError, ValueError):
            run.stderr = run.proc.stderr.read() if run.proc.stderr else ""
        if run.proc.returncode != 0:
            raise AssertionError(f"{run.name} exited {run.proc.returncode}: {run.stderr[-3000:]}")
    return caller_run, callee_run
