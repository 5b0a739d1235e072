"""Calls in the running node: the sessions layer's ``CallService`` on the "call" channel.

``[calls] enabled`` (with ``[presence]``): call signals travel as sealed
envelopes on the signalling's "call" channel; media paths come from the peer
app's link plan (our best relay's TURN, else host candidates only: never a
public STUN server). Every ``CallUpdate`` goes to the node's event stream (the
control API's WebSocket) and is kept as the call's last state, bounded to the
``MAX_KEPT_CALLS`` newest calls, for ``GET /api/calls``.

Why the node keeps the media choice: the CLI process that asked for a call
(``p2pnode call --tone 440 --record a.wav``) only holds the control API's
answer; the tone source and the recorder live in the node, which also answers
incoming calls (``auto_answer``, ``answer_tone``, ``record``) when unattended.
The app page may instead be the media endpoint of a call (``browser_calls``): it
dials or answers with its own SDP, and an incoming call waiting for a human is
announced as a ``CallOffer`` event carrying the remote offer for it, and so is a
peer's re-offer the service holds for a page's call (``REOFFER_HELD``).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from p2pnode.app.browser_calls import BrowserCallService, CallOffer
from p2pnode.app.peer_config import CallsSection
from p2pnode.connectivity.signalling import SignalChannel, SignallingService
from p2pnode.sessions.call import CallDirection, CallState
from p2pnode.sessions.call_config import (
    CallConfig,
    CallMedia,
    CallUpdate,
    MediaPath,
    NonContactPolicy,
)
from p2pnode.sessions.call_sdp import REOFFER_HELD
from p2pnode.sessions.media import AudioSource, SilenceSource, ToneSource, WavSource

if TYPE_CHECKING:
    from p2pnode.app.peer_services import PeerApp

__all__ = [
    "CALLS_DIR",
    "MAX_KEPT_CALLS",
    "MAX_KEPT_DIGITS",
    "CallNotes",
    "CallsNodeService",
    "CallsNodeStatistics",
    "media_for",
    "note_update",
]

CALLS_DIR = "calls"  # recordings of answered calls, in the home
MAX_KEPT_CALLS = 64
RELAY_WAIT_INTERVAL = 1.0  # s between looks for a relay when the service started without one
MAX_KEPT_DIGITS = 64  # the newest DTMF digits kept per call (a peer may key forever)


def media_for(
    tone: float | None, play: Path | None, record: Path | None, video: bool = False
) -> CallMedia:
    """What we send (a tone, a WAV file, else silence) and where we record."""
    source: AudioSource
    if play is not None:
        source = WavSource(play)
    elif tone is not None:
        source = ToneSource(tone)
    else:
        source = SilenceSource()
    return CallMedia(source=source, record_to=record, video=video)


@dataclass(frozen=True)
class CallNotes:
    """What one call's updates said beyond its state, kept for the app's call view.

    ``CallUpdate.dtmf`` carries one digit per update and the next update forgets
    it; the view shows every digit the peer keyed (the newest ``MAX_KEPT_DIGITS``).
    ``relayed_caller`` is the SIP caller a gateway relayed (``None``: the peer
    itself called), ``caller_verified`` whether the gateway vouched for it."""

    digits: str = ""
    relayed_caller: str | None = None
    caller_verified: bool = False


def note_update(notes: CallNotes, update: CallUpdate) -> CallNotes:
    """``notes`` with what ``update`` adds: its digit, the caller it first reports."""
    digits = notes.digits
    if update.dtmf is not None:
        digits = (digits + update.dtmf)[-MAX_KEPT_DIGITS:]
    caller, verified = notes.relayed_caller, notes.caller_verified
    if update.relayed_caller is not None and update.relayed_caller != caller:
        # the update that first reports the caller says "verified by the gateway" or not
        caller, verified = update.relayed_caller, update.detail.startswith("verified")
    return CallNotes(digits, caller, verified)


@dataclass(frozen=True)
class CallsNodeStatistics:
    calls: int
    live: int


class CallsNodeService:
    """The node's call service (see the module docstring)."""

    name = "calls"

    def __init__(
        self,
        home: Path,
        signalling: SignallingService,
        peer: PeerApp,
        section: CallsSection,
        *,
        emit: Callable[[object], None],
    ) -> None:
        self.home = home
        self.signalling = signalling
        self.peer = peer
        self.section = section
        self.emit = emit
        self.calls: BrowserCallService | None = None
        self.last: collections.OrderedDict[bytes, CallUpdate] = collections.OrderedDict()
        self.notes: dict[bytes, CallNotes] = {}  # the calls of ``last`` only
        self._channel: SignalChannel | None = None
        self._numbers = itertools.count(1)
        self.blocked_dropped = 0  # call signals from declined peers

    def _answer_media(self) -> CallMedia:
        record = None
        if self.section.record:
            directory = self.home / CALLS_DIR
            directory.mkdir(exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            record = directory / f"{stamp}-{next(self._numbers)}.wav"
        return media_for(self.section.answer_tone, None, record)

    async def start(self) -> None:
        if self._channel is None:  # a channel is opened once per signalling service
            self._channel = self.signalling.channel("call")
        link = await self.peer.link_config()
        config = CallConfig(
            paths=(MediaPath.from_plan(link.ice),),
            auto_answer=self.peer.auto_answer(self.section.auto_answer),
            non_contacts=self.peer.call_policy(NonContactPolicy(self.section.non_contacts)),
        )
        channel = self._channel
        self.calls = BrowserCallService(
            self.signalling.identity.peer_id,
            config,
            channel.send,
            is_contact=lambda peer: peer in self._contact_ids(),
            answer_media=self._answer_media,
        )
        await self.calls.__aenter__()

    def _contact_ids(self) -> set[str]:
        return {c.peer_id for c in self.peer.contacts()}

    async def run(self) -> None:
        calls, channel = self.calls, self._channel
        assert calls is not None and channel is not None
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._updates(calls))
            tasks.create_task(self._adopt_relay(calls))
            while True:
                delivery = await channel.receive()
                if self.peer.book.is_blocked(delivery.sender):  # declined: never rings
                    self.blocked_dropped += 1
                    continue
                await calls.handle_signal(delivery.sender, delivery.payload)

    async def _adopt_relay(self, calls: BrowserCallService) -> None:
        """The relay search usually chooses a relay after this service started: take its
        TURN path for the calls that start afterwards (a leg reads the paths when it starts).
        Without it, two peers whose NATs need a relay got answered calls with no media."""
        if self.peer.relays is None:
            return  # no relay search: the start's plan is all there is
        while calls.config.paths[0].name == "direct":
            await asyncio.sleep(RELAY_WAIT_INTERVAL)
            link = await self.peer.link_config()
            if link.ice.relay_id:
                calls.config = replace(calls.config, paths=(MediaPath.from_plan(link.ice),))

    async def _updates(self, calls: BrowserCallService) -> None:
        while True:
            update = await calls.wait_update()
            if update.direction is CallDirection.INCOMING and update.call_id not in self.last:
                self.peer.screen(update.peer, known=False, call=True)  # a stranger: a request
            self.last[update.call_id] = update
            self.last.move_to_end(update.call_id)
            self.notes[update.call_id] = note_update(
                self.notes.get(update.call_id, CallNotes()), update
            )
            while len(self.last) > MAX_KEPT_CALLS:
                dropped, _ = self.last.popitem(last=False)
                self.notes.pop(dropped, None)
            self.emit(update)
            if update.direction is CallDirection.INCOMING and update.state in _WAITING:
                sdp = calls.remote_sdp(update.call_id)
                if sdp is not None:  # a page may answer it with its own connection
                    self.emit(CallOffer(update.call_id.hex(), update.peer, sdp))
            elif update.detail == REOFFER_HELD:  # a page's call: its new connection answers
                held = calls.held_reoffer(update.call_id)
                if held is not None:
                    self.emit(held)

    async def stop(self) -> None:
        if self.calls is not None:
            calls, self.calls = self.calls, None
            await calls.__aexit__(None, None, None)

    def statistics(self) -> CallsNodeStatistics:
        live = sum(1 for u in self.last.values() if not _ended(u.state))
        return CallsNodeStatistics(len(self.last), live)

    def service(self) -> BrowserCallService:
        if self.calls is None:
            raise RuntimeError("the call service is not running")
        return self.calls


_WAITING = (CallState.RINGING_LOCAL, CallState.REQUESTED)


def _ended(state: CallState) -> bool:
    return state not in (
        CallState.NEW,
        CallState.DIALLING,
        CallState.RINGING_REMOTE,
        CallState.OFFERED,
        CallState.RINGING_LOCAL,
        CallState.REQUESTED,
        CallState.ANSWERED,
    )
