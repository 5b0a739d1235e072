"""When a node serves as a relay supernode: the promotion / demotion state machine.

A pure table (STYLE 4), no I/O and no clock: the p2pnode layer feeds it events
(reachability verdicts from the NAT layer, operator opt-out/in, load crossing
the water marks, "no allocations left", drain timeout) and executes the
actions it returns (start/stop the STUN + TURN roles, accept/refuse new
allocations, publish/withdraw the relay advert).

    OPTED_OUT <--(drained)-- RETIRING <--(opt-out)-- any serving role
    CLIENT --public--> CANDIDATE --public x N--> SUPERNODE <--load--> SHEDDING
       ^                  |                        |  (not public x M)  |
       |              not public                   v                    v
       +-------(drained / drain timeout)------- DRAINING <--------------+

Invariants (the tests walk every (role, event) pair and random event walks):
- the table is total: every (role, event) pair has exactly one rule;
- roles stop only after draining (DRAINING/RETIRING on DRAINED or
  DRAIN_TIMEOUT): a supernode under load refuses new allocations and keeps
  the existing ones, it never crash-stops (Skype's 2010 outage);
- hysteresis: promotion needs ``promote_after`` consecutive public verdicts,
  demotion ``demote_after`` consecutive non-public ones; any opposite verdict
  restarts the count, so a flapping verdict never flips the role;
- actions are exactly the differences: START/STOP_ROLES iff ``runs_roles``
  changes, ACCEPT/REFUSE_ALLOCATIONS iff ``accepts_allocations`` changes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from nat.reachability import Reachability

__all__ = [
    "TABLE",
    "Action",
    "Event",
    "Hysteresis",
    "Role",
    "RoleCore",
    "Rule",
    "SupernodeState",
    "Transition",
    "accepts_allocations",
    "load_event",
    "runs_roles",
    "step",
]


class Role(enum.Enum):
    OPTED_OUT = "opted out"  # the operator said no: nothing runs, verdicts are ignored
    CLIENT = "client"  # not (yet) known to be publicly reachable
    CANDIDATE = "candidate"  # seen public, waiting for the verdict to hold
    SUPERNODE = "supernode"  # serving, accepting new allocations
    SHEDDING = "shedding"  # serving above capacity: existing allocations only
    DRAINING = "draining"  # no longer public: existing allocations until drained
    RETIRING = "retiring"  # opted out while serving: drain, then OPTED_OUT


class Event(enum.Enum):
    VERDICT_PUBLIC = "reachability verdict: public"
    VERDICT_NOT_PUBLIC = "reachability verdict: not public"
    OPT_OUT = "operator opted out"
    OPT_IN = "operator opted in"
    LOAD_HIGH = "load reached capacity"
    LOAD_NORMAL = "load fell below the low-water mark"
    DRAINED = "no allocations left"
    DRAIN_TIMEOUT = "drain time limit reached"


class Action(enum.Enum):
    START_ROLES = "start STUN + TURN"
    STOP_ROLES = "stop STUN + TURN"
    ACCEPT_ALLOCATIONS = "accept new allocations"
    REFUSE_ALLOCATIONS = "refuse new allocations (508)"
    PUBLISH_ADVERT = "publish the relay advert"
    WITHDRAW_ADVERT = "withdraw the relay advert"


class Counted(enum.Enum):
    """Which hysteresis threshold a rule waits for."""

    PROMOTE = "promote"
    DEMOTE = "demote"


_RUNNING = frozenset({Role.SUPERNODE, Role.SHEDDING, Role.DRAINING, Role.RETIRING})
_ACCEPTING = frozenset({Role.SUPERNODE})
_VERDICTS = frozenset({Event.VERDICT_PUBLIC, Event.VERDICT_NOT_PUBLIC})


def runs_roles(role: Role) -> bool:
    """True while the STUN + TURN roles must be running."""
    return role in _RUNNING


def accepts_allocations(role: Role) -> bool:
    """True while new allocations are welcome (else the TURN server answers 508)."""
    return role in _ACCEPTING


@dataclass(frozen=True)
class Hysteresis:
    """Consecutive verdicts needed to change role; load water marks as fractions of capacity."""

    promote_after: int = 3
    demote_after: int = 3
    load_high: float = 1.0
    load_low: float = 0.8

    def __post_init__(self) -> None:
        # CANDIDATE is the state between the first public verdict and promotion.
        if self.promote_after < 2 or self.demote_after < 1:
            raise ValueError("promote_after must be at least 2, demote_after at least 1")
        if not 0 < self.load_low < self.load_high:
            raise ValueError("need 0 < load_low < load_high")


@dataclass(frozen=True)
class SupernodeState:
    role: Role = Role.CLIENT
    streak: int = 0  # consecutive verdicts counted towards the pending change


@dataclass(frozen=True)
class Rule:
    target: Role
    actions: tuple[Action, ...] = ()
    counted: Counted | None = None  # wait for this many consecutive events first
    starts_streak: bool = False  # this event is the first of a counted run


@dataclass(frozen=True)
class Transition:
    state: SupernodeState
    actions: tuple[Action, ...]
    reason: str  # for "p2pnode run shows the role it took and why"


_PROMOTE = (Action.START_ROLES, Action.ACCEPT_ALLOCATIONS, Action.PUBLISH_ADVERT)
_STAY_OUT = (Role.OPTED_OUT, Role.CLIENT, Role.CANDIDATE)


def _table() -> dict[tuple[Role, Event], Rule]:
    table: dict[tuple[Role, Event], Rule] = {}

    def rule(role: Role, event: Event, result: Rule) -> None:
        assert (role, event) not in table, (role, event)
        table[(role, event)] = result

    # Not serving: load and drain events mean nothing; opt-out always wins.
    for role in _STAY_OUT:
        for event in (Event.LOAD_HIGH, Event.LOAD_NORMAL, Event.DRAINED, Event.DRAIN_TIMEOUT):
            rule(role, event, Rule(role))
    rule(Role.OPTED_OUT, Event.VERDICT_PUBLIC, Rule(Role.OPTED_OUT))
    rule(Role.OPTED_OUT, Event.VERDICT_NOT_PUBLIC, Rule(Role.OPTED_OUT))
    rule(Role.OPTED_OUT, Event.OPT_OUT, Rule(Role.OPTED_OUT))
    rule(Role.OPTED_OUT, Event.OPT_IN, Rule(Role.CLIENT))

    rule(Role.CLIENT, Event.VERDICT_PUBLIC, Rule(Role.CANDIDATE, starts_streak=True))
    rule(Role.CLIENT, Event.VERDICT_NOT_PUBLIC, Rule(Role.CLIENT))
    rule(Role.CLIENT, Event.OPT_OUT, Rule(Role.OPTED_OUT))
    rule(Role.CLIENT, Event.OPT_IN, Rule(Role.CLIENT))

    rule(
        Role.CANDIDATE,
        Event.VERDICT_PUBLIC,
        Rule(Role.SUPERNODE, _PROMOTE, counted=Counted.PROMOTE),
    )
    rule(Role.CANDIDATE, Event.VERDICT_NOT_PUBLIC, Rule(Role.CLIENT))
    rule(Role.CANDIDATE, Event.OPT_OUT, Rule(Role.OPTED_OUT))
    rule(Role.CANDIDATE, Event.OPT_IN, Rule(Role.CANDIDATE))

    # Serving and accepting.
    rule(Role.SUPERNODE, Event.VERDICT_PUBLIC, Rule(Role.SUPERNODE))
    rule(
        Role.SUPERNODE,
        Event.VERDICT_NOT_PUBLIC,
        Rule(
            Role.DRAINING,
            (Action.REFUSE_ALLOCATIONS, Action.WITHDRAW_ADVERT),
            counted=Counted.DEMOTE,
        ),
    )
    rule(
        Role.SUPERNODE,
        Event.OPT_OUT,
        Rule(Role.RETIRING, (Action.REFUSE_ALLOCATIONS, Action.WITHDRAW_ADVERT)),
    )
    rule(Role.SUPERNODE, Event.OPT_IN, Rule(Role.SUPERNODE))
    # Load shedding: refuse new allocations, keep the existing ones, advertise the load.
    rule(
        Role.SUPERNODE,
        Event.LOAD_HIGH,
        Rule(Role.SHEDDING, (Action.REFUSE_ALLOCATIONS, Action.PUBLISH_ADVERT)),
    )
    rule(Role.SUPERNODE, Event.LOAD_NORMAL, Rule(Role.SUPERNODE))
    rule(Role.SUPERNODE, Event.DRAINED, Rule(Role.SUPERNODE))
    rule(Role.SUPERNODE, Event.DRAIN_TIMEOUT, Rule(Role.SUPERNODE))

    # Serving above capacity.
    rule(Role.SHEDDING, Event.VERDICT_PUBLIC, Rule(Role.SHEDDING))
    rule(
        Role.SHEDDING,
        Event.VERDICT_NOT_PUBLIC,
        Rule(Role.DRAINING, (Action.WITHDRAW_ADVERT,), counted=Counted.DEMOTE),
    )
    rule(Role.SHEDDING, Event.OPT_OUT, Rule(Role.RETIRING, (Action.WITHDRAW_ADVERT,)))
    rule(Role.SHEDDING, Event.OPT_IN, Rule(Role.SHEDDING))
    rule(Role.SHEDDING, Event.LOAD_HIGH, Rule(Role.SHEDDING))
    rule(
        Role.SHEDDING,
        Event.LOAD_NORMAL,
        Rule(Role.SUPERNODE, (Action.ACCEPT_ALLOCATIONS, Action.PUBLISH_ADVERT)),
    )
    rule(Role.SHEDDING, Event.DRAINED, Rule(Role.SHEDDING))
    rule(Role.SHEDDING, Event.DRAIN_TIMEOUT, Rule(Role.SHEDDING))

    # No longer public: finish what runs, then stop.
    rule(
        Role.DRAINING,
        Event.VERDICT_PUBLIC,
        Rule(
            Role.SUPERNODE,
            (Action.ACCEPT_ALLOCATIONS, Action.PUBLISH_ADVERT),
            counted=Counted.PROMOTE,
        ),
    )
    rule(Role.DRAINING, Event.VERDICT_NOT_PUBLIC, Rule(Role.DRAINING))
    rule(Role.DRAINING, Event.OPT_OUT, Rule(Role.RETIRING))
    rule(Role.DRAINING, Event.OPT_IN, Rule(Role.DRAINING))
    rule(Role.DRAINING, Event.LOAD_HIGH, Rule(Role.DRAINING))
    rule(Role.DRAINING, Event.LOAD_NORMAL, Rule(Role.DRAINING))
    rule(Role.DRAINING, Event.DRAINED, Rule(Role.CLIENT, (Action.STOP_ROLES,)))
    rule(Role.DRAINING, Event.DRAIN_TIMEOUT, Rule(Role.CLIENT, (Action.STOP_ROLES,)))

    # Opted out while serving: drain, then nothing.
    for event in (Event.VERDICT_PUBLIC, Event.VERDICT_NOT_PUBLIC, Event.OPT_OUT):
        rule(Role.RETIRING, event, Rule(Role.RETIRING))
    rule(Role.RETIRING, Event.OPT_IN, Rule(Role.DRAINING))
    rule(Role.RETIRING, Event.LOAD_HIGH, Rule(Role.RETIRING))
    rule(Role.RETIRING, Event.LOAD_NORMAL, Rule(Role.RETIRING))
    rule(Role.RETIRING, Event.DRAINED, Rule(Role.OPTED_OUT, (Action.STOP_ROLES,)))
    rule(Role.RETIRING, Event.DRAIN_TIMEOUT, Rule(Role.OPTED_OUT, (Action.STOP_ROLES,)))
    return table


TABLE: dict[tuple[Role, Event], Rule] = _table()


def step(state: SupernodeState, event: Event, hysteresis: Hysteresis) -> Transition:
    """The one transition function: look the pair up, apply hysteresis, return actions."""
    rule = TABLE[(state.role, event)]
    if rule.counted is not None:
        needed = (
            hysteresis.promote_after if rule.counted is Counted.PROMOTE else hysteresis.demote_after
        )
        streak = state.streak + 1
        if streak < needed:
            reason = f"{event.value} ({streak} of {needed} needed)"
            return Transition(SupernodeState(state.role, streak), (), reason)
        return Transition(
            SupernodeState(rule.target, 0), rule.actions, f"{event.value} ({needed} in a row)"
        )
    if rule.starts_streak:
        streak = 1
    elif event in _VERDICTS or rule.target is not state.role:
        streak = 0  # an opposite verdict (or a role change) restarts the count
    else:
        streak = state.streak
    if rule.target is state.role:
        return Transition(SupernodeState(state.role, streak), rule.actions, "no change")
    return Transition(SupernodeState(rule.target, streak), rule.actions, event.value)


def load_event(load: int, capacity: int, role: Role, hysteresis: Hysteresis) -> Event | None:
    """Turn a load figure into LOAD_HIGH / LOAD_NORMAL with water marks, or None.

    SUPERNODE sheds at ``load_high * capacity``; SHEDDING accepts again only
    below ``load_low * capacity``, so load hovering at the limit does not flap.
    """
    if role is Role.SUPERNODE and load >= hysteresis.load_high * capacity:
        return Event.LOAD_HIGH
    if role is Role.SHEDDING and load < hysteresis.load_low * capacity:
        return Event.LOAD_NORMAL
    return None


class RoleCore:
    """The table driven with its inputs: verdicts, load and drain progress in (with
    ``now``), the machine's actions out, and the reason for the role kept for people.
    Sans-IO; the controller (``p2pnode.connectivity.supernode``) executes the actions."""

    def __init__(self, hysteresis: Hysteresis, capacity: int, drain_limit: float, now: float):
        self.hysteresis = hysteresis
        self.capacity = capacity
        self.drain_limit = drain_limit
        self.state = SupernodeState()
        self.reason = "starting: no reachability verdict yet"
        self.since = now
        self.reachability = Reachability.UNKNOWN
        self._drain_started: float | None = None

    @property
    def role(self) -> Role:
        return self.state.role

    def feed(self, event: Event, now: float, why: str = "") -> tuple[Action, ...]:
        transition = step(self.state, event, self.hysteresis)
        changed = transition.state.role is not self.state.role
        self.state = transition.state
        if changed:
            self.since = now
            self.reason = transition.reason + (f": {why}" if why else "")
            if self.state.role in (Role.DRAINING, Role.RETIRING):
                if self._drain_started is None:
                    self._drain_started = now
            else:
                self._drain_started = None
        elif transition.reason != "no change":  # a streak is building: say so
            self.reason = transition.reason + (f": {why}" if why else "")
        return transition.actions

    def verdict(self, status: Reachability, detail: str, now: float) -> tuple[Action, ...]:
        """Only PUBLIC counts as public: UNKNOWN must never promote (nor keep) a relay."""
        self.reachability = status
        event = Event.VERDICT_PUBLIC if status is Reachability.PUBLIC else Event.VERDICT_NOT_PUBLIC
        actions = self.feed(event, now, detail)
        if self.role is Role.CANDIDATE and self.state.streak == 1:
            needed = self.hysteresis.promote_after
            self.reason = f"{event.value} (1 of {needed} needed)" + (
                f": {detail}" if detail else ""
            )
        if self.role is Role.CLIENT and not actions and self.state.streak == 0:
            self.reason = f"reachability {status.value}" + (f": {detail}" if detail else "")
        return actions

    def load(self, allocations: int, now: float) -> tuple[Action, ...]:
        event = load_event(allocations, self.capacity, self.role, self.hysteresis)
        if event is None:
            return ()
        return self.feed(event, now, f"{allocations} of {self.capacity} allocations")

    def drain(self, allocations: int, now: float) -> tuple[Action, ...]:
        """DRAINED when nothing is left, DRAIN_TIMEOUT after ``drain_limit``; else nothing."""
        if self.role not in (Role.DRAINING, Role.RETIRING) or self._drain_started is None:
            return ()
        if allocations == 0:
            return self.feed(Event.DRAINED, now)
        if now - self._drain_started >= self.drain_limit:
            return self.feed(Event.DRAIN_TIMEOUT, now, f"{allocations} allocations cut")
        return ()
