"""`p2pnode sip ...`: SIP accounts, a standalone gateway, status and a test call.

``sip account add LOGIN`` prints the three settings a desk phone needs
(login, password, server); the password is generated unless given and is
shown once: only its digest hashes are stored (``<home>/sip-accounts.sqlite``).
``sip serve`` runs the gateway on its own (the node runtime hosts it as a
service later); ``sip try-call`` is our own user agent placing or answering a
call with a test tone and reporting the tone it heard, so an operator can try
a gateway without any phone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from p2pnode.app.api_sip import SipStatusAnswer
from p2pnode.cli.common import (
    CliError,
    NegativeAnswerError,
    NetworkFailureError,
    add_home_argument,
    parse_hostport,
)
from p2pnode.cli.control_client import running_node
from p2pnode.cli.sip_account import add_limits_parser
from p2pnode.gateways.sip.accounts import AccountError, AccountStore
from p2pnode.gateways.sip.digest import Algorithm
from p2pnode.gateways.sip.gateway import GatewayConfig, SipGateway
from p2pnode.gateways.sip.headers import SipUri
from p2pnode.gateways.sip.hosted import identity_of
from p2pnode.gateways.sip.message import Header, SipRequest
from p2pnode.gateways.sip.transaction import MAGIC_COOKIE, Effect, ResponseReceived, TimedOut
from p2pnode.gateways.sip.transport import SipStack
from p2pnode.gateways.sip.useragent import SipUserAgent, UaError
from p2pnode.identity import default_home

if TYPE_CHECKING:
    from p2pnode.app.api_sip_bridge import SipBridgeAnswer

__all__ = ["bridge_lines", "register"]

ACCOUNTS_FILE = "sip-accounts.sqlite"
MAX_TRY_SECONDS = 30.0


def _store(args: argparse.Namespace) -> AccountStore:
    home: Path = args.home or default_home()
    home.mkdir(parents=True, exist_ok=True)
    try:
        return AccountStore.open(home / ACCOUNTS_FILE, getattr(args, "domain", None))
    except AccountError as error:
        raise CliError(str(error)) from None


def _account_add(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        account, password = store.add(
            args.login,
            args.password,
            randbytes=os.urandom,
            allow_e164=args.allow_e164,
            max_calls=args.max_calls,
        )
    except AccountError as error:
        raise CliError(str(error)) from None
    finally:
        store.close()
    settings = {"login": account.login, "password": password, "server": account.realm}
    peer_id = identity_of(account).peer_id
    if args.json:
        print(json.dumps({**settings, "peer_id": peer_id}))
    else:
        print("Settings for the phone (the password is shown only now):")
        for key, value in settings.items():
            print(f"  {key + ':':<10}{value}")
        print(f"P2P identity hosted for {account.login}: {peer_id}")
    return 0


def _account_list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        accounts = [store.get(login) for login in store.logins()]
    finally:
        store.close()
    rows = [
        {"login": a.login, "domain": a.realm, "e164": a.allow_e164, "max_calls": a.max_calls}
        for a in accounts
        if a is not None
    ]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(
                f"{row['login']}@{row['domain']}  e164={row['e164']}  max_calls={row['max_calls']}"
            )
    return 0


def _account_remove(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        removed = store.remove(args.login)
    finally:
        store.close()
    if not removed:
        raise NegativeAnswerError(f"no SIP account {args.login}")
    print(f"removed {args.login}")
    return 0


def _status(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        status: dict[str, Any] = {"domain": store.realm, "accounts": store.count()}
    finally:
        store.close()
    node = running_node(args.home or default_home())
    if node is not None:  # the node running in this home hosts the gateway ([sip])
        try:
            status.update(node.request("GET", "/api/sip", SipStatusAnswer).model_dump())
        except CliError as error:
            status["running_node"] = str(error)
    if args.server:
        status["server"] = args.server
        status["options_rtt_ms"] = asyncio.run(_options_ping(parse_hostport(args.server)))
    if args.json:
        print(json.dumps(status))
    else:
        for key, value in status.items():
            print(f"{key}: {value}")
    return 0


def _bridge(args: argparse.Namespace) -> int:
    """The running node's SIP <-> P2P bridge: totals, bridges, the newest calls."""
    from p2pnode.app.api_sip_bridge import SipBridgeAnswer  # noqa: PLC0415 (aiortc: only when asked)

    node = running_node(args.home or default_home())
    if node is None:
        raise NetworkFailureError("no node is running in this home (p2pnode run with [sip])")
    answer = node.request("GET", "/api/sip/bridge", SipBridgeAnswer)
    if args.json:
        print(answer.model_dump_json())
        return 0
    print("\n".join(bridge_lines(answer)))
    return 0


def bridge_lines(answer: SipBridgeAnswer) -> list[str]:
    """``p2pnode sip bridge``'s text: totals, bridges, live legs and ended calls by call id."""
    out: list[str] = []
    out.append(f"bridge account: {answer.account}   active calls: {answer.active_calls}")
    for bridge in answer.bridges:
        out.append(
            f"  {bridge.login}: takes {bridge.callers}, peer {bridge.peer_id[:16]}..., "
            f"{bridge.homes} home(s), {bridge.active_calls} active"
        )
    ended = ", ".join(f"{c.direction} {c.mode} {c.calls}" for c in answer.calls) or "none"
    out.append(f"ended calls: {ended}")
    refused = ", ".join(f"{k} {v}" for k, v in sorted(answer.refusals.items())) or "none"
    out.append(f"refused: {refused}")
    out.append(
        f"frames passthrough {answer.passthrough_frames}, transcoded {answer.transcoded_frames}; "
        f"RTP from phones {answer.packets_from_phone} (lost {answer.lost}), "
        f"to phones {answer.packets_to_phone}; digits {answer.digits_from_phone} from phones, "
        f"{answer.digits_to_phone} to phones"
    )
    texts = ", ".join(f"{k} {v}" for k, v in answer.texts.items()) or "none"
    out.append(f"texts: {texts}; held {answer.texts_held}")
    out.append(f"RTCP reports: {answer.rtcp_sent} sent, {answer.rtcp_received} received")
    for live in answer.active:
        rtt = "-" if live.round_trip_ms is None else f"{live.round_trip_ms:.1f} ms"
        named = live.call_id or "(not connected yet)"
        out.append(
            f"  active {named} {live.bridge} {live.phone_codec} RTCP {live.rtcp}, round trip {rtt}"
        )
    for call in answer.recent:
        rtt = "" if call.round_trip_ms is None else f", round trip {call.round_trip_ms:.1f} ms"
        out.append(
            f"  {call.call_id} {call.direction:>10} {call.peer[:24]:<24} "
            f"{call.phone_codec}/{call.webrtc_codec} {call.mode} {call.seconds:.1f} s, "
            f"lost {call.lost}, jitter {call.jitter_ms:.1f} ms, frames untouched "
            f"{call.passthrough_frames} ({call.direct_frames} direct) / "
            f"{call.peer_passthrough_frames} to the phone" + rtt
        )
    return out


async def _options_ping(server: tuple[str, int]) -> float:
    done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

    def on_event(stack: SipStack, effect: Effect) -> None:
        if isinstance(effect, ResponseReceived | TimedOut) and not done.done():
            done.set_result(isinstance(effect, ResponseReceived))

    stack = SipStack(on_event)
    host, port = await stack.start("0.0.0.0")
    token = os.urandom(8).hex()
    headers = (
        Header("Via", f"SIP/2.0/UDP {host}:{port};rport;branch={MAGIC_COOKIE}{token}"),
        Header("Max-Forwards", "70"),
        Header("From", f"<sip:status@{host}>;tag={token[:8]}"),
        Header("To", f"<sip:{server[0]}>"),
        Header("Call-ID", token),
        Header("CSeq", "1 OPTIONS"),
        Header("Content-Length", "0"),
    )
    request = SipRequest.build(
        "OPTIONS", SipUri("sip", None, None, server[0], server[1]), headers, b""
    )
    start = time.monotonic()
    try:
        stack.send_request(request, server)
        answered = await asyncio.wait_for(done, 40)
    finally:
        await stack.close()
    if not answered:
        raise NetworkFailureError(f"no answer to OPTIONS from {server[0]}:{server[1]}")
    return round((time.monotonic() - start) * 1000, 1)


def _serve(args: argparse.Namespace) -> int:
    host, port = parse_hostport(args.listen)
    store = _store(args)
    try:
        algorithms = tuple(Algorithm(name.strip().upper()) for name in args.digest.split(","))
    except ValueError:
        raise CliError("--digest takes MD5 and/or SHA-256, comma-separated") from None
    config = GatewayConfig(
        store.realm,
        host=host,
        port=port,
        media_host=args.media_host,
        digest_algorithms=algorithms,
        tls_port=args.tls_port,
        tls_certificate=args.tls_cert,
        tls_key=args.tls_key,
    )
    tls_given = {args.tls_port is not None, args.tls_cert is not None, args.tls_key is not None}
    if len(tls_given) > 1:
        raise CliError("--tls-port, --tls-cert and --tls-key go together")

    async def run() -> None:
        gateway = SipGateway(config, store)
        await gateway.start()
        assert gateway.address is not None
        print(
            f"sip gateway for {store.realm} on {gateway.address[0]}:{gateway.address[1]}",
            flush=True,
        )
        if gateway.tls_address is not None:
            host, port = gateway.tls_address
            print(f"sip over TLS on {host}:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await gateway.stop()
            store.close()

    asyncio.run(run())
    return 0


def _dominant_hz(samples: np.ndarray) -> float | None:
    if samples.size < 1600:
        return None
    audio = samples[800:].astype(np.float64)
    power = np.abs(np.fft.rfft(audio * np.hanning(audio.size))) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / 8000)
    power[freqs < 60] = 0
    return round(float(freqs[int(np.argmax(power))]), 1)


def _try_call(args: argparse.Namespace) -> int:
    server = parse_hostport(args.server)
    seconds = min(args.seconds, MAX_TRY_SECONDS)

    async def run() -> dict[str, Any]:
        ua = SipUserAgent(args.login, args.password, args.domain, server, host=args.local_ip)
        await ua.start()
        try:
            if not args.no_register:
                await ua.register()
            if args.to:
                call = await asyncio.wait_for(ua.call(args.to), 60)
            else:
                print("registered; waiting for a call", flush=True)
                call = await asyncio.wait_for(ua.incoming.get(), args.wait)
            sent = await call.play_tone(args.tone, seconds)
            if args.to:
                await call.hangup()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(call.ended.wait(), 5)
            return {"sent_packets": sent, "heard_hz": _dominant_hz(call.recording())}
        except UaError as error:
            raise NegativeAnswerError(str(error)) from None
        except TimeoutError:
            raise NetworkFailureError("no answer in time") from None
        finally:
            await ua.close()

    result = asyncio.run(run())
    print(
        json.dumps(result)
        if args.json
        else f"sent {result['sent_packets']} packets, heard {result['heard_hz']} Hz"
    )
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Two accounts, their phone settings, two of our phones registering, a call with audio."""

    async def run() -> dict[str, Any]:
        with tempfile.TemporaryDirectory() as home:
            store = AccountStore(Path(home) / ACCOUNTS_FILE, "demo.p2pnode.test")
            gateway = SipGateway(GatewayConfig(store.realm, host="127.0.0.1"), store)
            await gateway.start()
            assert gateway.address is not None
            server = f"{gateway.address[0]}:{gateway.address[1]}"
            phones = []
            try:
                for login in ("alice", "bob"):
                    _, password = store.add(login, None, randbytes=os.urandom)
                    print(f"account {login}: login={login} password={password} server={server}")
                    phone = SipUserAgent(login, password, store.realm, gateway.address)
                    phones.append(phone)
                    await phone.start()
                    await phone.register()
                    print(f"  {login}'s phone registered")
                alice, bob = phones
                call = await asyncio.wait_for(alice.call("bob"), 10)
                answered = await asyncio.wait_for(bob.incoming.get(), 5)
                print("alice calls bob: answered; alice plays 440 Hz, bob 660 Hz for 2 s")
                await asyncio.gather(call.play_tone(440, 2.0), answered.play_tone(660, 2.0))
                await call.hangup()
                statistics = gateway.statistics()
                return {
                    "alice_heard_hz": _dominant_hz(call.recording()),
                    "bob_heard_hz": _dominant_hz(answered.recording()),
                    "rtp_relayed": statistics.rtp_forwarded,
                }
            finally:
                for phone in phones:
                    await phone.close()
                await gateway.stop()
                store.close()

    result = asyncio.run(run())
    print(json.dumps(result) if args.json else (
        f"alice heard {result['alice_heard_hz']} Hz, bob heard {result['bob_heard_hz']} Hz, "
        f"{result['rtp_relayed']} RTP packets relayed by the gateway"
    ))  # fmt: skip
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add ``p2pnode sip``."""
    parser = subparsers.add_parser("sip", help="SIP gateway: accounts, serve, status, try-call")
    commands = parser.add_subparsers(dest="sip_command", metavar="SUBCOMMAND", required=True)

    account = commands.add_parser("account", help="SIP accounts (login, password, server)")
    accounts = account.add_subparsers(dest="account_command", metavar="ACTION", required=True)
    add = accounts.add_parser("add", help="create an account and print its phone settings")
    add.add_argument("login")
    add.add_argument("--password", help="at least 12 characters (default: a generated one)")
    add.add_argument("--domain", help="the gateway's SIP domain (required the first time)")
    add.add_argument("--allow-e164", action="store_true", help="may call phone numbers")
    add.add_argument("--max-calls", type=int, default=4, help="concurrent calls (default 4)")
    add.add_argument("--json", action="store_true")
    add.set_defaults(func=_account_add)
    listing = accounts.add_parser("list", help="list the accounts")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_account_list)
    remove = accounts.add_parser("remove", help="delete an account")
    remove.add_argument("login")
    remove.set_defaults(func=_account_remove)
    limits = add_limits_parser(accounts)  # sip_account.py

    status = commands.add_parser("status", help="domain, accounts, and a gateway's OPTIONS RTT")
    status.add_argument("--server", metavar="HOST:PORT", help="send an OPTIONS to this gateway")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    bridge = commands.add_parser(
        "bridge", help="the running node's SIP <-> P2P bridge: bridges, counters, recent calls"
    )
    bridge.add_argument("--json", action="store_true")
    bridge.set_defaults(func=_bridge)

    serve = commands.add_parser("serve", help="run the gateway until SIGINT/SIGTERM")
    serve.add_argument("--listen", default="0.0.0.0:5060", metavar="HOST:PORT")
    serve.add_argument("--media-host", help="RTP relay address (default: the listen host)")
    serve.add_argument("--tls-port", type=int, help="also listen for SIP over TLS on this port")
    serve.add_argument("--tls-cert", help="PEM certificate chain for TLS")
    serve.add_argument("--tls-key", help="PEM private key for TLS")
    serve.add_argument(
        "--digest",
        default="MD5,SHA-256",
        help="digest challenges offered, in order (baresip 1.0 needs MD5 alone)",
    )
    serve.set_defaults(func=_serve)

    try_call = commands.add_parser(
        "try-call", help="our own SIP phone: register, call (or answer) with a test tone"
    )
    try_call.add_argument("--server", required=True, metavar="HOST:PORT")
    try_call.add_argument("--domain", required=True)
    try_call.add_argument("--login", required=True)
    try_call.add_argument("--password", required=True)
    try_call.add_argument("--to", help="login or SIP URI to call (default: wait for a call)")
    try_call.add_argument("--local-ip", default="0.0.0.0", help="address to bind and announce")
    try_call.add_argument("--tone", type=float, default=440.0, help="Hz (default 440)")
    try_call.add_argument("--seconds", type=float, default=3.0, help="tone length, at most 30")
    try_call.add_argument("--wait", type=float, default=60.0, help="seconds to wait for a call")
    try_call.add_argument(
        "--no-register", action="store_true", help="call without registering (another network)"
    )
    try_call.add_argument("--json", action="store_true")
    try_call.set_defaults(func=_try_call)

    demo = commands.add_parser(
        "demo", help="two accounts, two of our phones and a call with audio, on loopback"
    )
    demo.add_argument("--json", action="store_true")
    demo.set_defaults(func=_demo)
    for sub in (add, listing, remove, limits, status, bridge, serve):
        add_home_argument(sub)
