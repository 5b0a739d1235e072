"""One-time prekey figures: takes/s at a mailbox, a top-up's cost, a session's extra cost.

Each figure has its anchor measured in the same run:
- ``TAKE_PREKEY`` handled per second by one ``MailboxCore`` (SQLite WAL, NORMAL;
  signature check, select + delete in one transaction), vs single-envelope
  ``DEPOSIT`` requests per second on the same core (one signed request, one
  insert transaction each): requests pre-signed, only ``handle`` is timed;
- a top-up of ``OPK_BATCH`` keys: the owner's step (make, commit to its
  ``synchronous=FULL`` store, sign) plus the mailbox's upload (verify 100 signatures,
  insert), in ms;
- opening a session (initiate + respond) with an OPK vs without (ms each): the
  fourth Diffie-Hellman and the responder's key lookup.

    flock /tmp/bench.lock .venv/bin/python benchmarks/one_time_prekeys.py [--quick]

Figures are indicative on a shared 2-core machine. LAST line: one JSON object.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import print_final_json, print_table, ratio
from p2pnode.identity import Identity
from p2pnode.sessions.chat import ChatCore
from p2pnode.sessions.chat_message import Envelope, encode_envelope
from p2pnode.sessions.crypto import KeyAgreement, RatchetHeader, RatchetSession
from p2pnode.sessions.mailbox import MailboxCore
from p2pnode.sessions.mailbox_list import MailboxEntry, mailbox_list_record
from p2pnode.sessions.mailbox_wire import (
    RegisterRequest,
    Request,
    sign_deposit,
    sign_take_prekey,
    sign_upload_prekeys,
)
from p2pnode.sessions.one_time_prekeys import (
    OPK_BATCH,
    OPK_MAX_PER_OWNER,
    TakeLimits,
    sign_one_time_prekey,
)
from p2pnode.sessions.store import ChatStore

MAILBOX = Identity.generate(bytes([9]) * 32)
GENEROUS = TakeLimits(per_pair=(10**9, 3600), per_requester=(10**9, 3600), per_owner=(10**9, 3600))


def _register(core: MailboxCore, who: Identity, now: float) -> None:
    record = mailbox_list_record(
        who, (MailboxEntry(MAILBOX.public_key, "127.0.0.1", 1),), seq=1, now=now
    )
    core.handle(RegisterRequest(1, record.encoded), now)


def _rate(core: MailboxCore, requests: list[Request], now: float) -> float:
    start = time.perf_counter()
    for request in requests:
        core.handle(request, now)
    return len(requests) / (time.perf_counter() - start)


def takes_and_deposits(count: int, directory: Path) -> tuple[float, float]:
    now = time.time()
    core = MailboxCore(MAILBOX.public_key, directory / "mail.db", take_limits=GENEROUS)
    owners = [Identity.generate(os.urandom(32)) for _ in range(-(-count // OPK_MAX_PER_OWNER))]
    taker = Identity.generate(os.urandom(32))
    takes: list[Request] = []
    for owner in owners:
        _register(core, owner, now)
        keys = tuple(sign_one_time_prekey(owner, os.urandom(32)) for _ in range(OPK_MAX_PER_OWNER))
        core.handle(sign_upload_prekeys(owner, MAILBOX.public_key, 1, int(now), keys), now)
        takes += [
            sign_take_prekey(taker, MAILBOX.public_key, i, owner.public_key, int(now))
            for i in range(OPK_MAX_PER_OWNER)
        ]
    take_rate = _rate(core, takes[:count], now)
    recipient = owners[0]
    header = RatchetHeader(os.urandom(32), 0, 0)
    deposits: list[Request] = [
        sign_deposit(
            taker,
            MAILBOX.public_key,
            i,
            recipient.public_key,
            (
                encode_envelope(
                    Envelope(taker.public_key, recipient.public_key, None, header, os.urandom(160))
                ),
            ),
            int(now),
        )
        for i in range(min(count, 4000))
    ]
    deposit_rate = _rate(core, deposits, now)
    core.close()
    return take_rate, deposit_rate


def top_up_ms(rounds: int, directory: Path) -> float:
    now = time.time()
    owner_seed = os.urandom(32)
    owner = Identity.generate(owner_seed)
    chat = ChatCore(owner, owner_seed, ChatStore(directory / "owner.db"), random.Random(1))
    core = MailboxCore(MAILBOX.public_key, directory / "topup.db")
    _register(core, owner, now)
    elapsed = 0.0
    for index in range(rounds):
        start = time.perf_counter()
        keys = chat.new_one_time_prekeys(MAILBOX.public_key, OPK_BATCH, now)
        core.handle(sign_upload_prekeys(owner, MAILBOX.public_key, index, int(now), keys), now)
        elapsed += time.perf_counter() - start
        chat.one_time_prekeys_held(MAILBOX.public_key, set(), now)  # taken: room for the next
        core.expire(now + 400 * 86400)  # empty the mailbox (the grant lapses)
        _register(core, owner, now)
    return elapsed / rounds * 1000


def session_ms(count: int) -> tuple[float, float]:
    results = []
    for with_opk in (True, False):
        elapsed = 0.0
        for _ in range(count):
            alice, bob = KeyAgreement.create(os.urandom(32)), KeyAgreement.create(os.urandom(32))
            bob.add_one_time_prekeys(OPK_BATCH)
            bundle = bob.bundle()
            opk = bundle.one_time_prekeys[0] if with_opk else None
            start = time.perf_counter()
            _, init, header, ciphertext = RatchetSession.initiate(alice, bundle, b"x" * 160, opk)
            RatchetSession.respond(bob, init, header, ciphertext)
            elapsed += time.perf_counter() - start
        results.append(elapsed / count * 1000)
    return results[0], results[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (smoke run)")
    arguments = parser.parse_args()
    count = 400 if arguments.quick else 4000
    rounds = 3 if arguments.quick else 20
    sessions = 10 if arguments.quick else 100
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        takes, deposits = takes_and_deposits(count, directory)
        top_up = top_up_ms(rounds, directory)
    with_opk, without = session_ms(sessions)
    print_table(
        ["figure", "ours", "anchor", "ratio"],
        [
            ["TAKE_PREKEY /s (vs 1-envelope DEPOSIT /s)", takes, deposits, ratio(takes, deposits)],
            [f"top-up of {OPK_BATCH} keys (ms)", top_up, None, None],
            ["session open with OPK (ms) vs without", with_opk, without, ratio(with_opk, without)],
        ],
    )
    print_final_json(
        {
            "takes_per_s": takes,
            "deposits_per_s": deposits,
            "takes_vs_deposits": ratio(takes, deposits),
            "top_up_100_ms": top_up,
            "session_with_opk_ms": with_opk,
            "session_without_opk_ms": without,
            "session_opk_ratio": ratio(with_opk, without),
        }
    )


if __name__ == "__main__":
    main()
