"""RFC 3261 §12 dialogs: identity, route set, remote target, CSeq, early/confirmed.

A :class:`Dialog` is a frozen value; every change (a response confirming it,
a target refresh, a sent or received request) returns a new one, so the layer
above can keep, compare and drop dialogs without aliasing bugs. The state
moves along a table; a pair the table lacks raises :class:`DialogError` for
local misuse, and a request that breaks the dialog's rules (an old CSeq) is
reported as the status to answer (§12.2.2: 500).

Randomness stays outside: the caller passes branch and tag tokens.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from p2pnode.gateways.sip.headers import NameAddress, Param, SipUri, Uri
from p2pnode.gateways.sip.message import Header, SipRequest, SipResponse
from p2pnode.gateways.sip.transaction import MAGIC_COOKIE

__all__ = [
    "MAX_DIALOGS",
    "Dialog",
    "DialogError",
    "DialogId",
    "DialogState",
    "DialogTable",
]

MAX_DIALOGS = 8192
_TARGET_REFRESH = frozenset({"INVITE", "UPDATE"})  # RFC 3261 §12.2, RFC 3311 §5


class DialogError(RuntimeError):
    """Local misuse of a dialog (a transition its state does not allow)."""


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class _Event(enum.Enum):
    PROVISIONAL = "1xx with tag"
    SUCCESS = "2xx"
    FAILURE = "3xx-6xx"
    BYE = "bye"


_TRANSITIONS: dict[tuple[DialogState, _Event], DialogState] = {
    (DialogState.EARLY, _Event.PROVISIONAL): DialogState.EARLY,
    (DialogState.EARLY, _Event.SUCCESS): DialogState.CONFIRMED,
    (DialogState.EARLY, _Event.FAILURE): DialogState.TERMINATED,
    (DialogState.EARLY, _Event.BYE): DialogState.TERMINATED,
    (DialogState.CONFIRMED, _Event.SUCCESS): DialogState.CONFIRMED,  # re-INVITE, 2xx retransmit
    (DialogState.CONFIRMED, _Event.PROVISIONAL): DialogState.CONFIRMED,  # re-INVITE 1xx
    (DialogState.CONFIRMED, _Event.FAILURE): DialogState.CONFIRMED,  # failed re-INVITE
    (DialogState.CONFIRMED, _Event.BYE): DialogState.TERMINATED,
}


@dataclass(frozen=True, slots=True)
class DialogId:
    """§12: Call-ID, local tag and remote tag."""

    call_id: str
    local_tag: str
    remote_tag: str


def _contact_target(contacts: tuple[NameAddress, ...]) -> Uri | None:
    return contacts[0].uri if contacts else None


@dataclass(frozen=True, slots=True)
class Dialog:
    id: DialogId
    state: DialogState
    local_uri: NameAddress  # our From (UAC) / To (UAS), with our tag
    remote_uri: NameAddress
    remote_target: Uri
    route_set: tuple[NameAddress, ...]
    local_seq: int | None
    remote_seq: int | None
    secure: bool = False

    # -- creation ------------------------------------------------------------------
    @staticmethod
    def from_uac(request: SipRequest, response: SipResponse) -> Dialog:
        """§12.1.2: a UAC dialog from a 1xx (with To tag) or 2xx to ``request``."""
        remote_tag = response.to.tag
        local_tag = request.from_.tag
        target = _contact_target(response.contacts)
        if remote_tag is None or local_tag is None or target is None:
            raise DialogError("a dialog needs both tags and a Contact")
        return Dialog(
            id=DialogId(request.call_id, local_tag, remote_tag),
            state=DialogState.CONFIRMED if 200 <= response.status < 300 else DialogState.EARLY,
            local_uri=request.from_,
            remote_uri=response.to,
            remote_target=target,
            route_set=tuple(reversed(response.record_routes)),
            local_seq=request.cseq.number,
            remote_seq=None,
            secure=isinstance(request.uri, SipUri) and request.uri.scheme == "sips",
        )

    @staticmethod
    def from_uas(request: SipRequest, local_tag: str, *, confirmed: bool) -> Dialog:
        """§12.1.1: a UAS dialog for ``request`` answered with To tag ``local_tag``."""
        remote_tag = request.from_.tag
        target = _contact_target(request.contacts)
        if remote_tag is None or target is None:
            raise DialogError("a dialog needs the From tag and a Contact")
        to = request.to
        return Dialog(
            id=DialogId(request.call_id, local_tag, remote_tag),
            state=DialogState.CONFIRMED if confirmed else DialogState.EARLY,
            local_uri=NameAddress(to.uri, to.display_name, (*to.params, Param("tag", local_tag))),
            remote_uri=request.from_,
            remote_target=target,
            route_set=request.record_routes,
            local_seq=None,
            remote_seq=request.cseq.number,
            secure=isinstance(request.uri, SipUri) and request.uri.scheme == "sips",
        )

    # -- transitions ---------------------------------------------------------------
    def _move(self, event: _Event) -> DialogState:
        state = _TRANSITIONS.get((self.state, event))
        if state is None:
            raise DialogError(f"{event.value} in a {self.state.value} dialog")
        return state

    def on_response(self, request: SipRequest, response: SipResponse) -> Dialog:
        """A response within the dialog (UAC side): state and target refresh (§12.2.1.2)."""
        if response.status >= 300:
            event = _Event.FAILURE
        elif response.status >= 200:
            event = _Event.SUCCESS
        else:
            event = _Event.PROVISIONAL
        state = self._move(event)
        if request.method != "INVITE" and self.state is DialogState.EARLY:
            state = self.state  # only the INVITE's own responses confirm or end it
        target = self.remote_target
        if request.method in _TARGET_REFRESH and 200 <= response.status < 300:
            target = _contact_target(response.contacts) or target
        return replace(self, state=state, remote_target=target)

    def on_request(self, request: SipRequest) -> tuple[Dialog, int | None]:
        """A request within the dialog (UAS side): the new dialog and a status to refuse with.

        §12.2.2: a CSeq lower than the last one is answered 500; ACK and CANCEL
        carry the CSeq of their INVITE and do not move it.
        """
        number = request.cseq.number
        dialog = self
        if request.method not in ("ACK", "CANCEL"):
            if self.remote_seq is not None and number <= self.remote_seq:
                return self, 500
            dialog = replace(dialog, remote_seq=number)
        if request.method in _TARGET_REFRESH:
            target = _contact_target(request.contacts) or self.remote_target
            dialog = replace(dialog, remote_target=target)
        if request.method == "BYE":
            dialog = replace(dialog, state=self._move(_Event.BYE))
        return dialog, None

    def terminated_by_bye(self) -> Dialog:
        return replace(self, state=self._move(_Event.BYE))

    # -- requests within the dialog -----------------------------------------------------
    def create_request(
        self,
        method: str,
        *,
        via: str,
        branch_id: str,
        extra: tuple[Header, ...] = (),
        body: bytes = b"",
        cseq: int | None = None,
    ) -> tuple[Dialog, SipRequest]:
        """§12.2.1.1: a request within the dialog, routed by the route set.

        ``via`` is ``"SIP/2.0/UDP host:port"``; the branch is the magic cookie
        plus ``branch_id``. ACK and CANCEL reuse the INVITE's CSeq (pass it).
        """
        if self.state is DialogState.TERMINATED and method != "ACK":
            raise DialogError("the dialog is terminated")
        dialog = self
        if cseq is None:
            cseq = (self.local_seq or 0) + 1
            dialog = replace(self, local_seq=cseq)
        routes = self.route_set
        uri: Uri = self.remote_target
        route_values = [str(route) for route in routes]
        first = routes[0].uri if routes else None
        if isinstance(first, SipUri) and first.param("lr") is None:
            # §12.2.1.1 strict routing: the first route becomes the Request-URI.
            uri = first
            route_values = [*route_values[1:], f"<{self.remote_target}>"]
        headers = [
            Header("Via", f"{via};branch={MAGIC_COOKIE}{branch_id}"),
            Header("Max-Forwards", "70"),
            Header("From", str(self.local_uri)),
            Header("To", str(self.remote_uri)),
            Header("Call-ID", self.id.call_id),
            Header("CSeq", f"{cseq} {method}"),
            *(Header("Route", value) for value in route_values),
            *extra,
            Header("Content-Length", str(len(body))),
        ]
        return dialog, SipRequest.build(method, uri, tuple(headers), body)


class DialogTable:
    """The dialogs of one endpoint, bounded by ``max_dialogs`` (refuse new ones beyond)."""

    def __init__(self, max_dialogs: int = MAX_DIALOGS) -> None:
        self.max_dialogs = max_dialogs
        self._dialogs: dict[DialogId, Dialog] = {}

    def __len__(self) -> int:
        return len(self._dialogs)

    def get(self, dialog_id: DialogId) -> Dialog | None:
        return self._dialogs.get(dialog_id)

    def find_for_request(self, request: SipRequest) -> Dialog | None:
        """The dialog a mid-dialog request belongs to (UAS view: To tag is ours)."""
        local, remote = request.to.tag, request.from_.tag
        if local is None or remote is None:
            return None
        return self._dialogs.get(DialogId(request.call_id, local, remote))

    def find_for_response(self, response: SipResponse) -> Dialog | None:
        """The dialog a response belongs to (UAC view: From tag is ours)."""
        local, remote = response.from_.tag, response.to.tag
        if local is None or remote is None:
            return None
        return self._dialogs.get(DialogId(response.call_id, local, remote))

    def put(self, dialog: Dialog) -> bool:
        """Store or replace ``dialog``; False when it is new and the table is full."""
        if dialog.state is DialogState.TERMINATED:
            self._dialogs.pop(dialog.id, None)
            return True
        if dialog.id not in self._dialogs and len(self._dialogs) >= self.max_dialogs:
            return False
        self._dialogs[dialog.id] = dialog
        return True
