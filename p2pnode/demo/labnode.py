"""One `p2pnode run` process in a lab host, driven as a person would: CLI and control API.

Why apart from the scenario (``natlab``): starting a node from a TOML config,
reading what it prints, running the CLI in its namespace and asking its control
API (on that namespace's loopback) is the same for every node of the demo.

Invariant: every wait is bounded (``LIMIT``); a failure is a ``NatDemoError``
that names the node and what did not happen.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pnode.app.homefiles import CONTROL_FILE, TOKEN_FILE
from p2pnode.identity import Identity
from p2pnode.lab.hosts import Host, LabError, read_line

__all__ = ["LIMIT", "POLL", "LabNode", "NatDemoError", "toml_text"]

LIMIT = 40.0  # s any one wait may take (a node start, a CLI command, a receipt)
POLL = 0.2  # s between polls of the control API

# Run in a node's namespace: one control API request, the JSON answer on stdout.
API_SNIPPET = """
import json, sys, urllib.request
from pathlib import Path
home, method, path, body = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
url = json.loads((home / sys.argv[5]).read_text())["url"]
token = (home / sys.argv[6]).read_text().strip()
request = urllib.request.Request(url + path, method=method, data=body.encode() or None,
    headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
with urllib.request.urlopen(request, timeout=10) as response:
    sys.stdout.write(response.read().decode())
"""


class NatDemoError(RuntimeError):
    """A lab step did not happen (a node did not start, a command failed): says which."""


def toml_text(sections: dict[str, dict[str, object]]) -> str:
    """A p2pnode.toml from plain sections (strings, numbers, booleans, lists of strings)."""

    def value(item: object) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, (int, float)):
            return repr(item)
        if isinstance(item, str):
            return json.dumps(item)  # a JSON string is a TOML basic string
        if isinstance(item, (list, tuple)):
            return "[" + ", ".join(value(x) for x in item) + "]"
        raise TypeError(f"no TOML for {type(item).__name__}")

    lines = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {value(item)}" for key, item in keys.items())
        lines.append("")
    return "\n".join(lines)


@dataclass
class LabNode:
    """One ``p2pnode run`` process in a lab host, its home and what it printed."""

    name: str
    host: Host
    home: Path
    sections: dict[str, dict[str, object]]
    process: subprocess.Popen[str] | None = None
    printed: list[str] = field(default_factory=list)
    # Puzzle bits its identity is ground to (``p2pnode.dht.puzzle``): a DHT server at a lab
    # address needs the network's difficulty, as `p2pnode init` would grind; a peer that
    # only attaches (a DHT client) needs none.
    id_bits: int = 0

    def identity(self) -> Identity:
        """Its identity, created (ground to ``id_bits``) on first use, as `p2pnode init`."""
        self.home.mkdir(parents=True, exist_ok=True)
        return Identity.load_or_create(self.home, bits=self.id_bits)

    @property
    def peer_id(self) -> str:
        return self.identity().peer_id

    def start(self) -> None:
        self.identity()  # `p2pnode run` wants one (`p2pnode init`)
        config = self.home / "p2pnode.toml"
        config.write_text(toml_text(self.sections))
        log = (self.home / "stderr.log").open("a")
        with log:
            self.process = self.host.popen(
                self.host.python(
                    "-m", "p2pnode", "run", "--home", str(self.home), "--config", str(config)
                ),
                stderr=log,
            )

    def log_tail(self, lines: int = 3) -> list[str]:
        """The last lines its node logged (said when a step fails: the lab is gone after)."""
        try:
            text = (self.home / "stderr.log").read_text(errors="replace")
        except OSError:
            return []
        return [line[:300] for line in text.strip().splitlines()[-lines:]]

    def wait_for(self, pattern: str, limit: float = LIMIT) -> re.Match[str]:
        """The first new line of its stdout matching ``pattern`` (within ``limit`` s)."""
        if self.process is None:
            raise NatDemoError(f"{self.name}'s node is not running")
        deadline = time.monotonic() + limit
        while True:
            try:
                line = read_line(self.process, timeout=max(0.1, deadline - time.monotonic()))
            except LabError:
                raise NatDemoError(
                    f"{self.name}'s node printed no line like {pattern!r} within {limit:.0f} s "
                    f"(see {self.home / 'stderr.log'})"
                ) from None
            self.printed.append(line)
            found = re.search(pattern, line)
            if found is not None:
                return found

    def stop(self) -> None:
        """SIGTERM (the node drains and exits 0), bounded."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(LIMIT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(LIMIT)
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()
        self.process = None

    def cli_start(self, *args: str) -> subprocess.Popen[str]:
        """``p2pnode ARGS --home HOME`` started in this node's namespace."""
        argv = self.host.python("-m", "p2pnode", *args, "--home", str(self.home))
        return self.host.popen(argv)

    def cli_finish(self, process: subprocess.Popen[str]) -> str:
        """Its stdout once it exited 0 (else the error it printed last)."""
        try:
            out, err = process.communicate(timeout=LIMIT * 2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
            raise NatDemoError(f"{self.name}: {process.args!r} did not finish") from None
        if process.returncode != 0:
            said = (err.strip().splitlines() or ["(nothing on stderr)"])[-1]
            raise NatDemoError(f"{self.name}: p2pnode exited {process.returncode}: {said}")
        return out

    def cli(self, *args: str) -> str:
        """``p2pnode ARGS --home HOME`` in this node's namespace; its stdout."""
        return self.cli_finish(self.cli_start(*args))

    def api(self, method: str, path: str, body: dict[str, object] | None = None) -> Any:
        """One control API request made inside the namespace (the API is on its loopback)."""
        argv = self.host.python(
            "-c", API_SNIPPET, str(self.home), method, path,
            json.dumps(body) if body is not None else "", CONTROL_FILE, TOKEN_FILE,
        )  # fmt: skip
        result = self.host.run(argv, timeout=LIMIT)
        if result.returncode != 0:
            said = (result.stderr.strip().splitlines() or ["?"])[-1]
            raise NatDemoError(f"{self.name}: {method} {path} failed: {said}")
        return json.loads(result.stdout)

    def until(self, what: str, check: Callable[[], bool], limit: float = LIMIT) -> None:
        deadline = time.monotonic() + limit
        while not check():
            if time.monotonic() > deadline:
                raise NatDemoError(f"{self.name}: {what} did not happen within {limit:.0f} s")
            time.sleep(POLL)
