"""`p2pnode sip account limits` against a running gateway, on loopback.

The account is made by ``p2pnode sip account add`` in a home; the real gateway
serves that home's accounts file, two of our UAs register. Bob may take 4 calls:
two at once ring through. ``limits bob --calls 1`` and the running gateway
refuses the second concurrent call (486) without a restart; ``--no-numbers``
keeps the call limit; the JSON and human answers name what is stored; an unknown
login is a negative answer (1), a limit out of range a usage error (2).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from p2pnode.cli import main
from p2pnode.gateways.sip.accounts import AccountStore
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.useragent import SipUserAgent, UaError

DOMAIN = "gw.test"
WAIT = 10.0


def p2pnode(home: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--home", str(home)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_limits_change_what_the_running_gateway_allows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    passwords = {}
    for login in ("alice", "bob"):
        code, out, _ = p2pnode(tmp_path, capsys, "sip", "account", "add", login, "--domain",
                               DOMAIN, "--allow-e164", "--json")  # fmt: skip
        assert code == 0
        passwords[login] = json.loads(out)["password"]

    async def two_calls(alice: SipUserAgent, bob: SipUserAgent) -> int | None:
        """Two concurrent calls alice -> bob; the second's refusal status (None: answered)."""
        first = await asyncio.wait_for(alice.call("bob"), WAIT)
        await asyncio.wait_for(bob.incoming.get(), WAIT)
        status = None
        try:
            second = await asyncio.wait_for(alice.call("bob"), WAIT)
            await asyncio.wait_for(bob.incoming.get(), WAIT)
            await second.hangup()
        except UaError as error:
            status = error.status
        await first.hangup()
        return status

    async def scenario() -> None:
        store = AccountStore.open(tmp_path / "sip-accounts.sqlite", None)
        gateway = SipGateway(GatewayConfig(DOMAIN, host="127.0.0.1"), store)
        await gateway.start()
        assert gateway.address is not None
        phones = {
            login: SipUserAgent(login, password, DOMAIN, gateway.address)
            for login, password in passwords.items()
        }
        try:
            for phone in phones.values():
                await phone.start()
                await phone.register()
            assert await two_calls(phones["alice"], phones["bob"]) is None  # 4 allowed

            code, out, _ = p2pnode(tmp_path, capsys, "sip", "account", "limits", "bob",
                                   "--calls", "1")  # fmt: skip
            assert code == 0 and "at most 1 calls at once" in out, out
            await asyncio.sleep(0.1)  # the first call's slot is released on its BYE
            assert await two_calls(phones["alice"], phones["bob"]) == 486  # no restart
        finally:
            for phone in phones.values():
                await phone.close()
            await gateway.stop()
            store.close()

    asyncio.run(scenario())

    code, out, _ = p2pnode(tmp_path, capsys, "sip", "account", "limits", "bob", "--no-numbers")
    assert code == 0 and "may not call phone numbers" in out, out
    code, out, _ = p2pnode(tmp_path, capsys, "sip", "account", "limits", "bob", "--json")
    shown = json.loads(out)
    assert (shown["login"], shown["e164"], shown["max_calls"]) == ("bob", False, 1)
    code, out, _ = p2pnode(tmp_path, capsys, "sip", "account", "list", "--json")
    assert {r["login"]: (r["e164"], r["max_calls"]) for r in json.loads(out)} == {
        "alice": (True, 4),
        "bob": (False, 1),
    }
    code, _, err = p2pnode(tmp_path, capsys, "sip", "account", "limits", "carol", "--calls", "2")
    assert code == 1 and "no SIP account carol" in err
    code, _, err = p2pnode(tmp_path, capsys, "sip", "account", "limits", "bob", "--calls", "0")
    assert code == 2 and "--calls must be" in err
