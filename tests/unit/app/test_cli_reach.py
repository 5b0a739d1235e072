"""`p2pnode settings` and `contacts requests...` without a node: the request one `set`
makes, and the exit statuses decided before any request (usage 2, no node 3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pnode.app.api_contacts import SettingsAnswer
from p2pnode.cli import main
from p2pnode.cli.common import CliError
from p2pnode.cli.contacts import default_name
from p2pnode.cli.settings import updated
from p2pnode.identity import Identity

FROM_CONFIG = SettingsAnswer(
    presence_visibility="everyone",
    who_may_call="ring",
    who_may_call_from="config",
    auto_answer=False,
    auto_answer_from="config",
)
CHOSEN = SettingsAnswer(
    presence_visibility="nobody",
    who_may_call="refuse",
    who_may_call_from="settings",
    auto_answer=True,
    auto_answer_from="settings",
)


def test_set_changes_one_key_and_leaves_the_config_its_keys() -> None:
    body = updated(FROM_CONFIG, "presence", "contacts")
    assert (body.presence_visibility, body.who_may_call, body.auto_answer) == (
        "contacts",
        None,
        None,
    )
    body = updated(CHOSEN, "auto_answer", "off")
    assert (body.presence_visibility, body.who_may_call, body.auto_answer) == (
        "nobody",
        "refuse",
        False,
    )
    body = updated(CHOSEN, "who-may-call", "default")
    assert (body.who_may_call, body.auto_answer) == (None, True)
    with pytest.raises(CliError, match="unknown setting"):
        updated(CHOSEN, "colour", "blue")
    with pytest.raises(CliError, match="choose one of"):
        updated(CHOSEN, "auto-answer", "maybe")


def test_exit_statuses_before_any_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home = ["--home", str(tmp_path)]
    assert main(["settings", "set", "who-may-call", *home]) == 2  # no VALUE
    assert main(["settings", "show", "presence", *home]) == 2
    assert main(["contacts", "accept", "nobody", *home]) == 2  # not a peer id
    peer_id = Identity.generate(bytes(32)).peer_id
    assert main(["settings", *home]) == 3  # no node runs in the home
    assert main(["contacts", "decline", peer_id, *home]) == 3
    assert "no node is running" in capsys.readouterr().err
    assert default_name(peer_id) == "peer-" + peer_id[:8].lower()
