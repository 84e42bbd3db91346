"""Values shared by the Paxos core, its storage and its drivers.

Nothing here does I/O. Every type is immutable so a value handed to the
driver (to persist or to send) cannot change under it.
"""

from __future__ import annotations

from typing import NamedTuple


class Ballot(NamedTuple):
    """A proposal number: ``(round, node_id)``, ordered as a tuple.

    Two leaders can never share a ballot because the node id breaks ties
    (Paxos Made Simple §2.5: "different proposers choose their numbers from
    disjoint sets").
    """

    round: int
    node: int

    def __str__(self) -> str:
        return f"{self.round}.{self.node}"


ZERO_BALLOT = Ballot(0, 0)


class Proposal(NamedTuple):
    """An opaque batch of commands from one client.

    ``(client_id, seq)`` identifies the proposal across retries and leader
    changes: the state machine applies a given pair at most once. ``seq``
    grows by one or more per new proposal of a client. A no-op (``data`` empty,
    ``client_id`` empty) fills gaps a new leader finds in the log.
    """

    client_id: str
    seq: int
    data: bytes

    @property
    def is_noop(self) -> bool:
        return not self.client_id


NOOP = Proposal("", 0, b"")


class Entry(NamedTuple):
    """The value an acceptor accepted for one slot, at one ballot."""

    slot: int
    ballot: Ballot
    proposal: Proposal


class HardState(NamedTuple):
    """What an acceptor must have durable before it answers anyone.

    ``promised`` is the highest ballot it promised (phase 1b). ``commit`` is the
    highest slot it knows committed; persisting it is an optimisation for
    recovery, not a safety requirement.
    """

    promised: Ballot
    commit: int


class Snapshot(NamedTuple):
    """The application's state after applying every slot up to ``slot``.

    ``data`` is opaque to Paxos: the queue state machine (with its table of
    applied client sequences) writes it and reads it back.
    """

    slot: int
    data: bytes
