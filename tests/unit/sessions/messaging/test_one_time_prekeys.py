"""One-time prekeys: the wire RPC (total decoder, every refusal), the mailbox's
hand-out-once store (restart included), the take rate rule, and the owner's side."""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pnode.identity import Identity
from p2pnode.sessions.chat import MAX_OWN_ONE_TIME_PREKEYS, ChatCore
from p2pnode.sessions.chat_message import decode_envelope
from p2pnode.sessions.crypto import SessionFailure
from p2pnode.sessions.mailbox import MailboxCore
from p2pnode.sessions.mailbox_list import MailboxEntry, mailbox_list_record
from p2pnode.sessions.mailbox_wire import (
    MAX_UPLOAD_PREKEYS,
    MailboxDecodeError,
    MailboxResponse,
    RegisterRequest,
    RequestKind,
    Status,
    TakePrekeyRequest,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    sign_take_prekey,
    sign_upload_prekeys,
    signature_valid,
)
from p2pnode.sessions.one_time_prekeys import (
    OPK_MAX_PER_OWNER,
    OPK_TAKEN_KEPT,
    OneTimePrekey,
    TakeLimits,
    TakeRateLimiter,
    TakeVerdict,
    one_time_prekey_valid,
    sign_one_time_prekey,
)
from p2pnode.sessions.prekeys import bundle_from_record
from p2pnode.sessions.store import ChatStore

NOW = 1_800_000_000.0
HOUR = 3600
MAILBOX = Identity.generate(bytes([9]) * 32)
BOB = Identity.generate(bytes([2]) * 32)
GENEROUS = TakeLimits(per_pair=(10, HOUR), per_requester=(1000, HOUR), per_owner=(1000, HOUR))


def requester(index: int) -> Identity:
    return Identity.generate(index.to_bytes(2, "big") + bytes([7]) * 30)


def prekeys(owner: Identity, count: int) -> tuple[OneTimePrekey, ...]:
    return tuple(sign_one_time_prekey(owner, os.urandom(32)) for _ in range(count))


def register(core: MailboxCore, who: Identity, now: float = NOW) -> None:
    entries = (MailboxEntry(MAILBOX.public_key, "127.0.0.1", 1),)
    record = mailbox_list_record(who, entries, seq=1, now=now)
    assert core.handle(RegisterRequest(1, record.encoded), now).status is Status.OK


def upload(
    core: MailboxCore, keys: tuple[OneTimePrekey, ...], now: float = NOW, owner: Identity = BOB
) -> MailboxResponse:
    return core.handle(sign_upload_prekeys(owner, MAILBOX.public_key, 1, int(now), keys), now)


def take(core: MailboxCore, who: Identity, now: float = NOW) -> MailboxResponse:
    request = sign_take_prekey(who, MAILBOX.public_key, 2, BOB.public_key, int(now))
    return core.handle(request, now)


@pytest.fixture
def core(tmp_path: Path) -> MailboxCore:
    mailbox = MailboxCore(MAILBOX.public_key, tmp_path / "mail.db", take_limits=GENEROUS)
    register(mailbox, BOB)
    return mailbox


# --- wire ------------------------------------------------------------------------------


def test_requests_and_responses_round_trip_and_bind_the_mailbox() -> None:
    keys = prekeys(BOB, 3)
    alice = requester(1)
    requests = (
        sign_upload_prekeys(BOB, MAILBOX.public_key, 5, 1000, keys),
        sign_upload_prekeys(BOB, MAILBOX.public_key, 6, 1000, (), (os.urandom(32),)),
        sign_take_prekey(alice, MAILBOX.public_key, 7, BOB.public_key, 1000),
    )
    for request in requests:
        assert decode_request(encode_request(request)) == request
        assert signature_valid(MAILBOX.public_key, request)
        assert not signature_valid(os.urandom(32), request)  # signed for another mailbox
    forged = TakePrekeyRequest(7, alice.public_key, os.urandom(32), 1000, requests[2].signature)
    assert not signature_valid(MAILBOX.public_key, forged)  # another owner: not what was signed
    for kind in (RequestKind.UPLOAD_PREKEYS, RequestKind.TAKE_PREKEY):
        response = MailboxResponse(kind, 3, Status.OK, statuses=(Status.OK,), prekeys=keys)
        assert decode_response(encode_response(response)) == response
    # a prekey answer without its prekey list (an old six-field frame) is refused
    six = msgpack.packb([int(RequestKind.TAKE_PREKEY), 3, 0, [], [], False])
    with pytest.raises(MailboxDecodeError):
        decode_response(six)
    # refusal codes are stable numbers on the wire
    assert (Status.NO_PREKEYS, Status.RATE_LIMITED, Status.PREKEYS_FULL) == (21, 22, 23)


def test_an_upload_over_the_bound_does_not_decode() -> None:
    keys = prekeys(BOB, 1) * (MAX_UPLOAD_PREKEYS + 1)
    encoded = encode_request(sign_upload_prekeys(BOB, MAILBOX.public_key, 1, 1000, keys))
    with pytest.raises(MailboxDecodeError):
        decode_request(encoded)


_VALID_FRAMES = (
    encode_request(sign_upload_prekeys(BOB, MAILBOX.public_key, 5, 1000, prekeys(BOB, 2))),
    encode_request(sign_take_prekey(requester(1), MAILBOX.public_key, 7, BOB.public_key, 1000)),
    encode_response(
        MailboxResponse(RequestKind.TAKE_PREKEY, 3, Status.OK, prekeys=prekeys(BOB, 1))
    ),
)


@given(st.binary(max_size=400))
def test_decoders_are_total_on_random_bytes(data: bytes) -> None:
    for decoder in (decode_request, decode_response):
        with contextlib.suppress(MailboxDecodeError):
            decoder(data)


@given(st.sampled_from(_VALID_FRAMES), st.data())
@settings(max_examples=300)
def test_decoders_are_total_on_mutated_frames(frame: bytes, data: st.DataObject) -> None:
    """Truncated, flipped or extended prekey frames: a value or the one decode error."""
    mutated = bytearray(frame)
    position = data.draw(st.integers(0, len(frame) - 1))
    action = data.draw(st.sampled_from(("flip", "cut", "insert")))
    if action == "flip":
        mutated[position] ^= data.draw(st.integers(1, 255))
    elif action == "cut":
        del mutated[position:]
    else:
        mutated[position:position] = data.draw(st.binary(min_size=1, max_size=8))
    for decoder in (decode_request, decode_response):
        with contextlib.suppress(MailboxDecodeError):
            decoder(bytes(mutated))


@given(
    st.lists(
        st.tuples(st.binary(min_size=32, max_size=32), st.binary(min_size=64, max_size=64)),
        max_size=20,
    )
)
def test_any_prekey_list_round_trips(pairs: list[tuple[bytes, bytes]]) -> None:
    keys = tuple(OneTimePrekey(p, s) for p, s in pairs)
    response = MailboxResponse(RequestKind.UPLOAD_PREKEYS, 1, Status.OK, prekeys=keys)
    assert decode_response(encode_response(response)).prekeys == keys


# --- the mailbox's store: every refusal ------------------------------------------------


def test_every_refusal_has_its_code(core: MailboxCore, tmp_path: Path) -> None:
    stranger = requester(1)
    # owners the mailbox does not serve can neither upload nor be taken from
    other = MailboxCore(MAILBOX.public_key, tmp_path / "other.db")
    assert upload(other, prekeys(BOB, 1)).status is Status.NOT_MAILBOX
    assert take(other, stranger).status is Status.NOT_MAILBOX
    # stale and forged requests
    stale = sign_take_prekey(stranger, MAILBOX.public_key, 2, BOB.public_key, int(NOW) - 400)
    assert core.handle(stale, NOW).status is Status.STALE
    bad = sign_upload_prekeys(BOB, os.urandom(32), 1, int(NOW), prekeys(BOB, 1))
    assert core.handle(bad, NOW).status is Status.BAD_SIGNATURE
    # a key its owner did not sign is refused, the rest of the batch is judged alone
    mixed = (*prekeys(BOB, 1), *prekeys(stranger, 1))
    response = upload(core, mixed)
    assert response.statuses == (Status.OK, Status.BAD_SIGNATURE)
    assert response.status is Status.BAD_SIGNATURE
    again = upload(core, mixed[:1])
    assert again.statuses == (Status.DUPLICATE,)
    assert again.prekeys == mixed[:1]  # the answer lists every key still held
    # the owner cannot take its own
    own = sign_take_prekey(BOB, MAILBOX.public_key, 2, BOB.public_key, int(NOW))
    assert core.handle(own, NOW).status is Status.MALFORMED
    # empty: NO_PREKEYS
    assert take(core, stranger).prekeys == mixed[:1]
    assert take(core, requester(2)).status is Status.NO_PREKEYS
    refused = core.statistics().refused
    assert refused >= 5


def test_retired_keys_are_deleted_before_new_ones_are_stored(core: MailboxCore) -> None:
    old = prekeys(BOB, 3)
    upload(core, old)
    new = prekeys(BOB, 2)
    request = sign_upload_prekeys(
        BOB, MAILBOX.public_key, 1, int(NOW), new, (old[0].public, old[2].public)
    )
    response = core.handle(request, NOW)
    assert response.statuses == (Status.OK, Status.OK)
    assert set(response.prekeys) == {old[1], *new}
    assert set(core.prekeys.held(BOB.public_key)) == {old[1], *new}


def test_at_most_max_per_owner_are_held(core: MailboxCore) -> None:
    first = upload(core, prekeys(BOB, OPK_MAX_PER_OWNER))
    assert first.status is Status.OK and len(first.prekeys) == OPK_MAX_PER_OWNER
    over = upload(core, prekeys(BOB, 3))
    assert over.statuses == (Status.PREKEYS_FULL,) * 3
    assert len(core.prekeys.held(BOB.public_key)) == OPK_MAX_PER_OWNER


def test_two_takers_never_get_the_same_key_and_a_restart_keeps_the_rest(
    core: MailboxCore, tmp_path: Path
) -> None:
    uploaded = prekeys(BOB, 30)
    upload(core, uploaded)
    taken: list[OneTimePrekey] = []
    for index in range(12):
        response = take(core, requester(index))
        assert response.status is Status.OK and len(response.prekeys) == 1
        assert one_time_prekey_valid(BOB.public_key, response.prekeys[0])
        taken.append(response.prekeys[0])
    assert len({k.public for k in taken}) == 12  # never the same key twice
    core.close()
    reopened = MailboxCore(MAILBOX.public_key, tmp_path / "mail.db", take_limits=GENEROUS)
    rest = reopened.prekeys.held(BOB.public_key)
    assert len(rest) == 18
    assert not {k.public for k in rest} & {k.public for k in taken}
    for index in range(12, 30):
        response = take(reopened, requester(index))
        taken.append(response.prekeys[0])
    assert {k.public for k in taken} == {k.public for k in uploaded}
    assert take(reopened, requester(31)).status is Status.NO_PREKEYS
    stats = reopened.statistics()
    assert (stats.prekeys, stats.prekeys_handed_out) == (0, 18)


def test_keys_of_an_owner_no_longer_served_expire(core: MailboxCore) -> None:
    upload(core, prekeys(BOB, 5))
    assert core.prekeys.count() == 5
    core.expire(NOW + 400 * 24 * HOUR)  # far past the grant's record expiry
    assert core.prekeys.count() == 0


# --- the take rate rule ----------------------------------------------------------------


def test_take_rate_rule_in_virtual_time(tmp_path: Path) -> None:
    limits = TakeLimits(per_pair=(2, 24 * HOUR), per_requester=(3, HOUR), per_owner=(5, HOUR))
    core = MailboxCore(MAILBOX.public_key, tmp_path / "rate.db", take_limits=limits)
    register(core, BOB)
    upload(core, prekeys(BOB, 40))
    alice, carol = requester(1), requester(2)
    # per (requester, owner): two a day
    assert [take(core, alice).status for _ in range(3)] == [
        Status.OK,
        Status.OK,
        Status.RATE_LIMITED,
    ]
    # per owner: five an hour whoever asks (made-up keys drain no faster)
    statuses = [take(core, requester(10 + i)).status for i in range(4)]
    assert statuses == [Status.OK, Status.OK, Status.OK, Status.RATE_LIMITED]
    assert core.prekeys.refused[TakeVerdict.OWNER_LIMITED] == 1
    # an hour later the owner window is open again, the pair window (a day) is not
    later = NOW + HOUR
    assert take(core, alice, later).status is Status.RATE_LIMITED
    assert take(core, carol, later).status is Status.OK
    # a refused take hands nothing out
    assert len(core.prekeys.held(BOB.public_key)) == 40 - 6


def test_the_limiter_holds_a_bounded_number_of_windows() -> None:
    limiter = TakeRateLimiter(TakeLimits(max_tracked=30))
    owner = os.urandom(32)
    verdicts = []
    for index in range(40):
        who = index.to_bytes(32, "big")
        verdict = limiter.check(who, owner, NOW)
        verdicts.append(verdict)
        if verdict is TakeVerdict.ALLOWED:
            limiter.record(who, owner, NOW)
        assert len(limiter) <= 30
    assert TakeVerdict.TOO_MANY_TRACKED in verdicts
    # once the windows pass they are pruned and new requesters are served again
    assert limiter.check(os.urandom(32), owner, NOW + 2 * 24 * HOUR) is TakeVerdict.ALLOWED


# --- the owner's side: private halves --------------------------------------------------


def peer(tmp_path: Path, seed: int, name: str) -> ChatCore:
    key_seed = bytes([seed]) * 32
    return ChatCore(
        Identity.generate(key_seed), key_seed, ChatStore(tmp_path / name), random.Random(seed)
    )


def test_a_session_on_a_one_time_prekey_deletes_it_at_the_responder(tmp_path: Path) -> None:
    bob, alice, carol = (
        peer(tmp_path, 2, "b.db"),
        peer(tmp_path, 3, "a.db"),
        peer(tmp_path, 4, "c.db"),
    )
    bob_key = bob.identity.public_key
    mailbox = os.urandom(32)
    keys = bob.new_one_time_prekeys(mailbox, 5, NOW)
    assert len(keys) == 5 and all(one_time_prekey_valid(bob_key, k) for k in keys)
    assert bob.store.one_time_prekey_count() == 5
    bundle = bundle_from_record(bob.prekey_record(NOW))
    first = alice.compose(bob_key, "one", NOW, bundle, keys[0].public)
    second = alice.compose(bob_key, "two", NOW, bundle)
    assert decode_envelope(first.envelope).init is not None
    assert decode_envelope(first.envelope).init.one_time_prekey == keys[0].public  # type: ignore[union-attr]
    result = bob.receive([first.envelope, second.envelope], NOW)
    assert [m.text for m in result.shown] == ["one", "two"]
    assert keys[0].public not in bob.own_one_time_prekeys()
    assert bob.store.one_time_prekey_count() == 4
    # after a restart too: the deletion was committed with the session
    bob.store.close()
    bob = peer(tmp_path, 2, "b.db")
    assert keys[0].public not in bob.own_one_time_prekeys()
    assert keys[1].public in bob.own_one_time_prekeys()
    # the same key used again (a mailbox that handed it out twice) opens nothing
    replayed = carol.compose(bob_key, "again", NOW, bundle, keys[0].public)
    result = bob.receive([replayed.envelope], NOW)
    assert result.shown == () and result.refused == (SessionFailure.UNKNOWN_PREKEY.value,)


def test_gone_keys_are_forgotten_after_they_can_no_longer_be_used(tmp_path: Path) -> None:
    bob = peer(tmp_path, 2, "b.db")
    here, dropped = os.urandom(32), os.urandom(32)
    kept = bob.new_one_time_prekeys(here, 4, NOW)
    lost = bob.new_one_time_prekeys(dropped, 3, NOW)
    # the mailbox reports two of its four (the other two were taken) and one not ours
    stray = os.urandom(32)
    reported = {kept[0].public, kept[1].public, stray}
    assert bob.one_time_prekeys_held(here, reported, NOW) == (2, (stray,))
    assert bob.expire_one_time_prekeys({here}, NOW) == 0  # ``dropped`` is no longer named
    assert {k.public for k in kept + lost} <= bob.own_one_time_prekeys()  # still awaited
    assert bob.expire_one_time_prekeys({here}, NOW + OPK_TAKEN_KEPT + 1) == 5
    assert [k.public in bob.own_one_time_prekeys() for k in kept] == [True, True, False, False]
    assert any(k.public not in bob.own_one_time_prekeys() for k in lost)
    assert bob.store.one_time_prekey_count() == 2


def test_the_private_halves_are_bounded(tmp_path: Path) -> None:
    bob = peer(tmp_path, 2, "b.db")
    made = bob.new_one_time_prekeys(os.urandom(32), MAX_OWN_ONE_TIME_PREKEYS + 10, NOW)
    assert len(made) == MAX_OWN_ONE_TIME_PREKEYS
    assert bob.new_one_time_prekeys(os.urandom(32), 1, NOW) == ()


@given(st.lists(st.sampled_from(("upload", "take", "restart", "retire")), min_size=1, max_size=25))
@settings(max_examples=25, deadline=None)
def test_any_schedule_hands_each_key_out_at_most_once(steps: list[str]) -> None:
    """Uploads, takes by different requesters, retirements and restarts in any order:
    every handed-out key is distinct, and handed out + held + retired = uploaded."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "mail.db"
        core = MailboxCore(MAILBOX.public_key, path, take_limits=GENEROUS)
        register(core, BOB)
        uploaded: set[bytes] = set()
        handed: list[bytes] = []
        retired: set[bytes] = set()
        for index, step in enumerate(steps):
            if step == "upload":
                keys = prekeys(BOB, 3)
                upload(core, keys)
                uploaded |= {k.public for k in keys}
            elif step == "take":
                response = take(core, requester(index))
                if response.status is Status.OK:
                    handed.append(response.prekeys[0].public)
                else:
                    assert response.status is Status.NO_PREKEYS
            elif step == "retire":
                held = core.prekeys.held(BOB.public_key)
                if held:
                    request = sign_upload_prekeys(
                        BOB, MAILBOX.public_key, 1, int(NOW), (), (held[0].public,)
                    )
                    core.handle(request, NOW)
                    retired.add(held[0].public)
            else:
                core.close()
                core = MailboxCore(MAILBOX.public_key, path, take_limits=GENEROUS)
        held_now = {k.public for k in core.prekeys.held(BOB.public_key)}
        core.close()
    assert len(handed) == len(set(handed))
    assert set(handed) | held_now | retired == uploaded
    assert not set(handed) & held_now and not retired & (held_now | set(handed))
