"""CLI conventions: exit statuses stated in --help, -v after the subcommand, --json answers,
and the negative-answer / network-failure exit codes."""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from p2pnode.cli import COMMAND_MODULES, COMMANDS, build_parser, main


def test_help_states_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0 ok, 1 a negative answer (not found, refused), 2 usage error, 3 network failure" in (
        text
    )


def test_verbose_is_accepted_after_the_subcommand_too() -> None:
    parser = build_parser()
    args = parser.parse_args(["-v", "record", "get", "--kind", "presence", "--subject", "x", "-v"])
    assert args.verbose == 1 and args.sub_verbose == 1
    assert parser.parse_args(["config", "check", "-vv"]).sub_verbose == 2


def test_id_answers_as_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["init", "--home", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["id", "--home", str(tmp_path), "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert set(answer) == {"peer_id", "fingerprint", "node_id", "public_key"}
    assert len(answer["node_id"]) == 40


def test_status_without_a_running_node_is_a_network_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--home", str(tmp_path)]) == 3
    assert "no node is running" in capsys.readouterr().err


def test_the_command_table_names_the_module_of_every_command() -> None:
    registered: dict[str, str] = {}
    for name in COMMAND_MODULES:
        subparsers = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(name).register(subparsers)
        registered.update(dict.fromkeys(subparsers.choices, name))
    assert registered == COMMANDS


def test_a_command_imports_its_module_alone() -> None:
    """`p2pnode status` must not pay for aiortc and the demo (seconds per CLI call)."""
    probe = (
        "import sys\n"
        "from p2pnode.cli import main\n"
        "try:\n"
        "    main(['status', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('aiortc', 'p2pnode.demo.walkthrough', 'p2pnode.cli.peer')"
        " if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
