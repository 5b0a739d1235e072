"""A lab host and its processes: a namespace, commands run in it, processes it owns.

Why apart from ``netns``: the topology (switch, routers, state files) and what
runs on one host are two concerns; the demo and the tests use both.

Invariant: every process a Host starts runs in its own session inside the
namespace, and ``stop_processes`` ends each (SIGTERM, then SIGKILL after
``PROCESS_STOP_GRACE``); ``read_line`` never strands output in a buffer.
"""

# ruff: noqa: S603, S607 - argv lists of our own making; ip is found on PATH on purpose

from __future__ import annotations

import contextlib
import dataclasses
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from p2pnode.lab.nat import NatType

__all__ = ["PROCESS_STOP_GRACE", "REPO_ROOT", "Host", "LabError", "read_line"]

PROCESS_STOP_GRACE = 1.0  # s between SIGTERM and SIGKILL for Host.popen processes
# The directory holding the package (the repository in a checkout): lab programs run
# with it first on PYTHONPATH, so they import the same code as the process that built the lab.
REPO_ROOT = Path(__file__).resolve().parents[2]


class LabError(RuntimeError):
    """A lab command failed: carries the command and its stderr."""


def read_line(proc: subprocess.Popen[str], timeout: float = 10.0) -> str:
    """The next stdout line of ``proc`` within ``timeout`` s (a server announcing its port).

    Reads the pipe's file descriptor byte by byte, so nothing is left in a
    Python-side buffer: call it again for the next line, or use
    ``proc.communicate()`` afterwards.
    """
    if proc.stdout is None:
        raise LabError("process was not started with stdout=PIPE")
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    line = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise LabError(f"no line from {proc.args!r} within {timeout} s: {bytes(line)!r}")
            chunk = os.read(fd, 1)
            if not chunk:
                raise LabError(f"{proc.args!r} exited ({proc.poll()}) before printing a line")
            line += chunk
    return line.decode(errors="replace").rstrip("\n")


@dataclasses.dataclass
class Host:
    """One lab host: a namespace with an ``eth0`` on the public segment or on its LAN."""

    name: str
    namespace: str
    addresses: list[str]
    public_address: str  # router WAN address for NATed hosts, else addresses[0]
    nat: NatType = NatType.NONE
    router_namespace: str | None = None
    # Where the other end of eth0 lives (switch port or router LAN side): for impairments.
    peer_namespace: str = ""
    peer_device: str = ""
    _processes: list[subprocess.Popen[str]] = dataclasses.field(default_factory=list, repr=False)

    def _env(self, env: dict[str, str] | None) -> dict[str, str]:
        merged = dict(os.environ if env is None else env)
        path = merged.get("PYTHONPATH")
        merged["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
        return merged

    def run(
        self,
        argv: list[str],
        timeout: float = 30.0,
        *,
        check: bool = False,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside this host's namespace (repo root on PYTHONPATH), capture output."""
        return subprocess.run(
            ["ip", "netns", "exec", self.namespace, *argv],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            env=self._env(env),
        )

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``argv`` in this namespace; the Lab kills it (its whole session) on exit."""
        kwargs.setdefault("text", True)
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.PIPE)
        kwargs["env"] = self._env(kwargs.get("env"))
        kwargs["start_new_session"] = True
        # `ip netns exec` execs argv after setns: the pid is the program's own pid.
        proc: subprocess.Popen[str] = subprocess.Popen(
            ["ip", "netns", "exec", self.namespace, *argv], **kwargs
        )
        self._processes.append(proc)
        return proc

    def python(self, *args: str) -> list[str]:
        """Argv prefix for the real interpreter (not a pyenv shim: its pid is the program's)."""
        return [sys.executable, *args]

    def stop_processes(self) -> None:
        """SIGTERM every popen'd session, then SIGKILL what is left after a grace period."""
        live = [proc for proc in self._processes if proc.poll() is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + PROCESS_STOP_GRACE
        for proc in live:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        for proc in self._processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(PROCESS_STOP_GRACE)
            for stream in (proc.stdout, proc.stderr, proc.stdin):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self._processes.clear()
