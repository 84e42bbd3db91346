"""The messages Paxos replicas exchange.

Plain, immutable data: every message is a :class:`~typing.NamedTuple` (no
``__dict__``, cheap to build, hashable when its fields are) that names its
sender ``src`` and its receiver ``dst`` (node ids) and carries the ballot it is
about. The transport encodes them as they are; nothing here knows about gRPC.

Flow (see :mod:`dpq.paxos` for the diagram)::

    Prepare ──▶ Promise | Nack          phase 1, once per leadership
    Accept  ──▶ Accepted | Nack         phase 2, pipelined; an empty Accept is the heartbeat
    InstallSnapshot ──▶ Accepted | Nack catch-up of a follower behind the leader's snapshot

Only :class:`Promise` and :class:`Accepted` depend on the sender's durable state:
the core emits them in the same :class:`~dpq.paxos.core.Ready` as the hard
state / entries they vouch for, and the driver sends them only after persisting.
"""

from __future__ import annotations

from typing import NamedTuple

from dpq.paxos.types import Ballot, Entry, Proposal, Snapshot


class Prepare(NamedTuple):
    """Phase 1a: "promise to ignore ballots below ``ballot``, and tell me what you
    accepted in every slot from ``from_slot`` on" (Paxos Made Simple §2.2;
    Multi-Paxos runs it once for all slots ≥ ``from_slot``, §3).

    ``from_slot`` is the first slot the candidate does not know to be committed.
    """

    src: int
    dst: int
    ballot: Ballot
    from_slot: int


class Promise(NamedTuple):
    """Phase 1b: the acceptor promised ``ballot``; sent only once that is durable.

    ``entries`` are the acceptor's accepted entries (each with the ballot it was
    accepted at) for every slot ≥ the prepare's ``from_slot`` it still holds, in
    slot order. ``commit`` is the acceptor's commit index: its entries up to
    ``commit`` are the chosen values. ``snapshot`` is set when the acceptor has
    compacted slots ≥ ``from_slot`` away (their values then live only in it).
    """

    src: int
    dst: int
    ballot: Ballot
    commit: int
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None


class Accept(NamedTuple):
    """Phase 2a for the contiguous slots ``first_slot .. first_slot+len(proposals)-1``.

    Each proposal is the leader's value for its slot at ``ballot``; the leader
    never gives a slot two values at one ballot. ``commit`` is the leader's commit
    index (piggybacked). With no proposals this is the leader's heartbeat.
    """

    src: int
    dst: int
    ballot: Ballot
    first_slot: int
    proposals: tuple[Proposal, ...]
    commit: int

    @property
    def last_slot(self) -> int:
        """The highest slot carried, or 0 for a heartbeat."""
        return self.first_slot + len(self.proposals) - 1 if self.proposals else 0


class Accepted(NamedTuple):
    """Phase 2b: the reply to an :class:`Accept` or :class:`InstallSnapshot` at ``ballot``.

    Sent only once the accepted entries are durable. ``match`` is the highest slot
    ``m`` such that the follower durably holds, for every slot ≤ ``m``, either the
    value it knows is chosen or the leader's value at ``ballot``: the leader counts
    this follower towards every slot ≤ ``match``. ``last`` is the highest slot of
    the message answered (0 for a heartbeat): ``last > match`` means the follower
    has a hole below what it just accepted, and the leader resends from
    ``match + 1``. ``match`` is what the follower really holds, even far below
    what it answered before (a replica that lost its disk answers 0): the leader
    then rewinds its progress for it.

    ``learner`` marks the answer of a replica that lost its disk and has not been
    admitted back (see :mod:`dpq.paxos.core`): the leader uses it to catch the
    learner up but never counts it towards a commit. ``rejoin`` is the learner's
    rejoin id (random, new on every start and snapshot install, 0 for a voter):
    the "votes again" entry the leader proposes names it, so a learner never takes
    an entry written for an earlier rejoin of its own as its admission.
    """

    src: int
    dst: int
    ballot: Ballot
    match: int
    last: int
    learner: bool = False
    rejoin: int = 0


class InstallSnapshot(NamedTuple):
    """Catch-up for a follower that needs slots the leader has compacted away.

    ``snapshot`` is the application's state up to ``snapshot.slot`` (all chosen);
    ``commit`` is the leader's commit index, as in :class:`Accept`.
    """

    src: int
    dst: int
    ballot: Ballot
    snapshot: Snapshot
    commit: int


class Nack(NamedTuple):
    """A refusal: the sender has promised ``ballot``, higher than ``rejected``.

    A proposer holding ``rejected`` steps down on it and later campaigns above
    ``ballot`` (Paxos Made Moderately Complex §3, "preempted").
    """

    src: int
    dst: int
    ballot: Ballot
    rejected: Ballot


class Commit(NamedTuple):
    """The leader's commit index, sent as soon as it advances when no Accept
    goes to the follower to carry it: a follower applies (and serves) a slot only
    once it knows the slot is chosen, and waiting for the next heartbeat would
    add up to a heartbeat period to every job's way through a follower.

    Not answered: heartbeats tell the leader its followers are alive, and an
    answer here would double the messages of a lightly loaded cluster.
    """

    src: int
    dst: int
    ballot: Ballot
    commit: int


Message = Prepare | Promise | Accept | Accepted | InstallSnapshot | Nack | Commit

MESSAGE_TYPES: tuple[type, ...] = (Prepare, Promise, Accept, Accepted, InstallSnapshot, Nack,
                                   Commit)


def describe(message: Message) -> str:
    """A one-line human summary (traces, logs): long payloads are elided."""
    kind = type(message).__name__
    head = f"{kind} {message.src}->{message.dst} b={message.ballot}"
    if isinstance(message, Prepare):
        return f"{head} from={message.from_slot}"
    if isinstance(message, Promise):
        slots = f"{message.entries[0].slot}..{message.entries[-1].slot}" if message.entries else "-"
        snap = f" snap@{message.snapshot.slot}" if message.snapshot else ""
        return f"{head} commit={message.commit} entries={slots}{snap}"
    if isinstance(message, Accept):
        if not message.proposals:
            return f"{head} heartbeat commit={message.commit}"
        return f"{head} slots={message.first_slot}..{message.last_slot} commit={message.commit}"
    if isinstance(message, Accepted):
        learner = f" learner rejoin={message.rejoin}" if message.learner else ""
        return f"{head} match={message.match} last={message.last}{learner}"
    if isinstance(message, InstallSnapshot):
        return f"{head} snap@{message.snapshot.slot} commit={message.commit}"
    if isinstance(message, Commit):
        return f"{head} commit={message.commit}"
    return f"{head} rejected={message.rejected}"
