"""The Multi-Paxos replica: a pure state machine.

A :class:`Replica` is one node's proposer, acceptor and learner at once. It does
no I/O: it never reads a clock, a socket, a file or a random source of its own.
Its inputs are :meth:`Replica.tick`, :meth:`Replica.step` (an inbound message),
:meth:`Replica.propose` and :meth:`Replica.compact`; its single output is a
:class:`Ready`, handed over by :meth:`Replica.ready` and acknowledged with
:meth:`Replica.advance` (the shape of etcd-io/raft's ``RawNode``).

The driver contract
-------------------
A driver owns one replica, a write-ahead log, a transport and the application,
and loops::

    replica.tick()                      # every tick of its clock
    replica.step(msg)                   # for every message received
    replica.propose(p)                  # on the leader, for client batches
    if replica.has_ready():
        rd = replica.ready()
        1. persist   rd.snapshot (if any), rd.entries, rd.hard_state (if any);
                     fsync once if rd.must_sync
        2. send      rd.messages                      (only after 1 is durable)
        3. apply     rd.snapshot (application loads it), then rd.committed in order
        4. replica.advance(rd)

* Step 1 before 2 is what makes the acceptor safe: a :class:`~.messages.Promise`
  or :class:`~.messages.Accepted` vouches for state that must survive a crash
  (Paxos Made Simple §2.5: "An acceptor records its intended response in stable
  storage before actually sending the response"). ``must_sync`` is False only
  when nothing in the Ready needs durability (then no fsync is needed).
* Order within step 1 does not matter: :attr:`HardState.commit` is a recovery
  hint that only names slots persisted by *earlier* Readys, so any prefix of a
  torn write recovers consistently. (A Ready that only moves that hint has
  ``must_sync`` False: write it, no fsync needed.)
* Step 3 needs step 1 done (a slot can arrive and be committed in one Ready),
  not step 2.
* The leader counts its own acceptance of the Ready's entries (and a candidate
  its own promise) only in :meth:`Replica.advance`, i.e. once they are durable.
* Only one Ready is outstanding: call :meth:`Replica.advance` before the next
  :meth:`Replica.ready`. ``tick``/``step``/``propose`` may be called in between;
  what they produce goes into the next Ready.
* A crash may happen anywhere; the driver restarts with
  ``Replica(config, rng, recovered=wal.recovered, applied=...)`` (and
  ``learner=True`` while it is rejoining after a lost disk: see below).

``rd.committed`` hands every committed slot to the application exactly once per
replica lifetime, in slot order, with no gaps (after a ``rd.snapshot``, the
first committed slot is ``snapshot.slot + 1``). No-ops are included (the
application skips them; :class:`~dpq.paxos.sessions.Sessions` does).

Proposals are accepted only by the leader; anywhere else :meth:`Replica.propose`
raises :class:`NotLeader` with a hint of who leads. A proposal is not durable
until committed: a leader that loses its leadership drops the proposals it had
not yet assigned to a slot, and may or may not get the ones in flight chosen.
Clients retry; :class:`~dpq.paxos.sessions.Sessions` applies a retried
``(client_id, seq)`` once.

A replica that lost its disk
----------------------------
A replica whose persistent state is gone (an emptied data folder, a new disk)
must not vote from amnesia: before the loss it may have accepted a value that
counted towards a choice, and a quorum of it and a lagging replica, neither of
which holds that value, could then choose another in the same slot. Paxos Made
Live §5.1 ("disk corruption"): such a replica rejoins as a non-voting member and
votes again only once that is safe. Here:

* **Progress that notices.** :attr:`Accepted.match <dpq.paxos.messages.Accepted>`
  is what a follower really holds (0 for an empty replica, even when it answers an
  Accept far ahead). A leader that hears, at its own ballot, a match below what it
  recorded rewinds that follower (match = what it reported, probe from there),
  catches it up from its log or with InstallSnapshot when the log was compacted
  past it, and says so: ``Notice("follower_behind", node, had, has)``.
* **Learners.** ``Replica(config, rng, learner=True)`` never campaigns, ignores
  Prepare (no Promise, no Nack), takes Accepts and snapshots as any follower
  (persisted before it answers) and answers ``Accepted(..., learner=True,
  rejoin=<its rejoin id>)``. A leader uses those answers to catch it up and never
  counts them: not towards a commit (:meth:`Replica._maybe_commit` counts voters
  only; a quorum is still a majority of all members) nor towards keeping its
  leadership (CheckQuorum).
* **Membership in the log.** The leader that first hears a learner X (or a new
  rejoin id of X) sets X's *target* to its own last slot at that moment. Once X
  holds every slot up to the target and the target is committed, it proposes the
  config entry "X votes again": a :class:`~dpq.paxos.types.Proposal` with
  ``client_id`` :data:`~dpq.paxos.types.VOTER_CLIENT_ID`, ``data`` X's node id in
  ASCII and ``seq`` X's rejoin id, which commits with a quorum that does not
  count X. X becomes a voter when it is handed that entry, naming itself and its
  current rejoin id, in ``Ready.committed``: ``Notice("now_voter", X, slot)``. The
  leader counts X again once the entry is committed (``"voter_again"``). A new
  leader sets its own target when X answers it as a learner. The rejoin id (drawn
  from ``rng``; new on every start as a learner and on every snapshot a learner
  installs) keeps X from taking an entry written for an earlier rejoin of its own,
  or one that a snapshot skipped over, as its admission.

Why X may vote again once handed its entry. Let v be chosen in slot s with X's
vote from before the loss: a quorum Q ∋ X accepted v at ballot b'. Let L, at
ballot b, be the leader that wrote X's entry, at a slot past its target T, and M
the quorum whose acceptance committed it (at b, or at the ballot of a later leader
that adopted it in its phase 1). X ∉ M: X answers as a learner until it is handed
the entry, and no leader counts a learner.

1. s ≤ T, and L's value for s is v. If b' < b: L's phase 1 put v in its log at s
   (Paxos Made Simple §2.2, P2c), so s ≤ L's last slot ≤ T. If b' = b: L proposed
   v at s before X lost its disk, before X's first learner answer reached L, so
   s ≤ T. b' > b is impossible: the leader of b' finished its phase 1 before X
   accepted v, so before the loss, so before X's entry existed; its promise quorum
   and M share a node other than X, which promised b' before accepting the entry
   at b < b'.
2. A leader's commit index is a prefix: every member of M holds, durably, its
   leader's value for every slot up to the entry, s among them; for s that is v
   (by 1, and P2c again for a later leader). So v is
   on a majority without X; X's forgotten vote is no longer needed for any quorum
   to meet v.
3. After the loss X voted for nothing: its answers were never counted and it
   promised nothing. When it votes again it holds every slot up to its entry.

Not covered: X also forgot the ballots it promised. A candidate holding X's
promise from before the loss, whose phase 1 completes only after X votes again
(one campaign spanning X's restart, catch-up and admission), could see X accept
below that ballot. A candidate keeps promises only for the campaign it runs
(less than 2·``election_ticks``, then it starts over at a higher ballot and needs
new ones), and a rejoin takes a restart and a catch-up: far longer in practice,
but a timing argument; closing it without one is future work.

For the driver: start with ``learner=True`` when the data folder is new for an
existing cluster (``dpq-node --rejoin``) or still holds a "rejoining" marker;
drain :meth:`Replica.take_notices` after each :meth:`Replica.ready` and log each
notice (``follower_behind`` as an error naming the follower and the gap); on
``now_voter``, remove the marker (durably) before sending the next Ready's
messages (a crash before that restarts it as a learner, which is always safe).
:attr:`Status.learner` and :attr:`Status.followers` (match, behind, learner,
target per follower, on the leader) are for ClusterInfo and ``dpq status``.
Config entries arrive in ``Ready.committed`` like no-ops: the application skips
them (:func:`~dpq.paxos.types.is_config`); :meth:`Replica.propose` refuses any
client id starting with ``paxos:``.

References: Lamport, *Paxos Made Simple* (2001) §2–§3; van Renesse & Altinbuken,
*Paxos Made Moderately Complex* (2015); Chandra et al., *Paxos Made Live* (2007).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from dpq.paxos.messages import (
    Accept,
    Accepted,
    Commit,
    InstallSnapshot,
    Message,
    Nack,
    Prepare,
    Promise,
)
from dpq.paxos.types import (
    MAX_CLIENT_ID_BYTES,
    MAX_NODE_ID,
    MAX_PROPOSAL_BYTES,
    MAX_PROPOSALS_PER_MESSAGE,
    MAX_ROUND,
    MAX_SEQ,
    MAX_SLOT,
    NOOP,
    RESERVED_CLIENT_PREFIX,
    VOTER_CLIENT_ID,
    ZERO_BALLOT,
    Ballot,
    Entry,
    HardState,
    Proposal,
    Snapshot,
    is_config,
    proposal_problem,
    voter_of,
    voter_proposal,
)

__all__ = [
    "VOTER_CLIENT_ID",
    "Config",
    "Follower",
    "InvalidProposal",
    "NotLeader",
    "Notice",
    "Overloaded",
    "ProposalRefused",
    "Ready",
    "RecoveredState",
    "Replica",
    "Rng",
    "Role",
    "Status",
    "is_config",
]


# --------------------------------------------------------------------------- API types


class Rng(Protocol):
    """The randomness a replica needs: e.g. a ``random.Random`` seeded by the caller."""

    def randrange(self, start: int, stop: int) -> int: ...


class RecoveredState(Protocol):
    """What a restarted replica is built from (``dpq.paxos.wal.Recovered`` fits)."""

    @property
    def hard_state(self) -> HardState: ...

    @property
    def entries(self) -> Iterable[Entry]: ...

    @property
    def snapshot(self) -> Snapshot | None: ...


class Role(enum.Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"  # running phase 1
    LEADER = "leader"  # phase 1 done: proposes and runs phase 2


class ProposalRefused(Exception):
    """:meth:`Replica.propose` could not take the proposal; the client should retry."""


class NotLeader(ProposalRefused):
    """This replica is not the leader. ``leader_hint`` is the node id it believes
    leads, or ``None`` when it does not know (an election is running)."""

    def __init__(self, leader_hint: int | None) -> None:
        self.leader_hint = leader_hint
        where = f"node {leader_hint} leads" if leader_hint is not None else "no known leader"
        super().__init__(f"not the leader ({where}); retry there")


class Overloaded(ProposalRefused):
    """The leader's queue of proposals waiting for a slot is full; retry later."""


class InvalidProposal(ProposalRefused, ValueError):
    """The proposal itself is out of bounds (seq, client_id or data size): a retry
    cannot help. The text names the field, the value and the limit."""


@dataclass(frozen=True, slots=True)
class Config:
    """Static configuration of one replica. Times are in ticks of the driver's clock."""

    node_id: int
    #: Every member's node id, this one included. Fixed: no reconfiguration.
    peers: tuple[int, ...]
    #: A follower that hears no leader for a random time in [E, 2E) campaigns.
    election_ticks: int = 10
    #: The leader sends each follower at least one message this often.
    heartbeat_ticks: int = 2
    #: The window: at most this many slots past the commit index are in flight.
    max_inflight_slots: int = 256
    #: Catch-up is throttled: at most this many entries in one Accept.
    max_entries_per_message: int = 64
    #: Proposals waiting for the window to open; beyond it propose() raises Overloaded.
    max_queued_proposals: int = 4096
    #: A snapshot (large) is re-sent to an unresponsive follower at most this often.
    snapshot_retry_ticks: int = 0  # 0: election_ticks
    #: An acceptor keeps no value for a slot more than this far past its commit
    #: index, and a new leader adopts none from a promise: a leader never proposes
    #: past its commit index + max_inflight_slots, so only a broken or hostile peer
    #: goes further, and this bounds the no-ops a new leader must fill in below such
    #: a slot (and the memory it costs). Must be >= max_inflight_slots +
    #: max_entries_per_message.
    max_slots_ahead: int = 1 << 16

    def __post_init__(self) -> None:
        peers = tuple(self.peers)
        if len(set(peers)) != len(peers) or self.node_id not in peers:
            raise ValueError(f"peers {peers!r} must be distinct and include node {self.node_id}")
        if any(p < 0 or p > MAX_NODE_ID for p in peers):
            raise ValueError(f"node ids must be in 0..{MAX_NODE_ID}")
        if self.heartbeat_ticks < 1 or self.election_ticks <= self.heartbeat_ticks:
            raise ValueError("need 1 <= heartbeat_ticks < election_ticks")
        sizes = (self.max_inflight_slots, self.max_entries_per_message, self.max_queued_proposals)
        if min(sizes) < 1:
            raise ValueError("window, batch and queue sizes must be >= 1")
        if self.max_entries_per_message > MAX_PROPOSALS_PER_MESSAGE:
            raise ValueError(f"max_entries_per_message must be <= {MAX_PROPOSALS_PER_MESSAGE}, "
                             "what a peer accepts in one Accept")
        if self.max_slots_ahead < self.max_inflight_slots + self.max_entries_per_message:
            raise ValueError("max_slots_ahead must be >= max_inflight_slots + "
                             "max_entries_per_message")
        object.__setattr__(self, "peers", tuple(sorted(peers)))
        if self.snapshot_retry_ticks <= 0:
            object.__setattr__(self, "snapshot_retry_ticks", self.election_ticks)

    @property
    def quorum(self) -> int:
        return len(self.peers) // 2 + 1


@dataclass(frozen=True, slots=True)
class Ready:
    """Everything a replica wants done, in the order the driver must do it:
    persist (``snapshot``, ``entries``, ``hard_state``; fsync if ``must_sync``),
    then send ``messages``, then apply ``snapshot`` and ``committed``, then
    :meth:`Replica.advance`. See the module docstring for the contract."""

    #: The promise and commit hint to persist, or None if unchanged.
    hard_state: HardState | None = None
    #: Accepted entries to persist, in slot order (at most one per slot).
    entries: list[Entry] = field(default_factory=list)
    #: To send only **after** ``snapshot``, ``entries`` and ``hard_state`` are durable.
    messages: list[Message] = field(default_factory=list)
    #: Chosen entries to apply, in slot order, each exactly once (after ``snapshot``).
    committed: list[Entry] = field(default_factory=list)
    #: A snapshot from the leader: persist it, then the application loads it.
    snapshot: Snapshot | None = None
    #: Whether step 1 must fsync before step 2 (something sent depends on it).
    must_sync: bool = False


class Notice(NamedTuple):
    """Something the driver should tell an operator (one log line each); drained by
    :meth:`Replica.take_notices`. ``kind`` is one of:

    * ``"follower_behind"`` (leader): follower ``node`` answered that it holds every
      slot only up to ``has``, below the ``had`` the leader had recorded (it lost
      its disk, or restarted with an older commit index): the leader rewound its
      progress and catches it up from ``has + 1`` (by log, or by snapshot when the
      log was compacted past it). Log it as an error naming the follower and the gap.
      A learner's is reported at once; a voter's once its next answer confirms it
      (a late copy of an older answer, or a gap one resend closes, is not news).
    * ``"learner"`` (leader): ``node`` answered as a learner (a replica that lost
      its disk and rejoined); it votes again once it holds every slot up to the
      target ``had`` and the target is committed. ``has``: its match now.
    * ``"voter_proposed"`` (leader): the entry "``node`` votes again" was given slot ``had``.
    * ``"voter_again"`` (leader): that entry (or another leader's for the same
      rejoin) is committed at slot ``had``: ``node`` counts towards commits again.
    * ``"now_voter"`` (the learner itself, ``node`` = its own id): this replica was
      handed its own "votes again" entry (slot ``had``) in the Ready just returned:
      it is a voter from now on. The driver persists that (e.g. removes its
      "rejoining" marker) before it sends the next Ready's messages; a crash before
      that restarts it as a learner, which is always safe.
    """

    kind: str
    node: int
    had: int = 0
    has: int = 0


class Follower(NamedTuple):
    """What a leader knows of one follower (:attr:`Status.followers`)."""

    match: int  # it holds every slot up to here (chosen or at the leader's ballot)
    behind: int  # commit - match when positive: how far it lags what is committed
    learner: bool  # it answers as a learner: caught up, never counted towards a commit
    target: int  # learner: the slot it must hold (and be committed) to vote again; else 0


class Status(NamedTuple):
    """A read-only view of a replica, for tests, metrics and debugging."""

    node_id: int
    role: Role
    promised: Ballot
    leader_hint: int | None
    commit: int
    applied: int  # highest slot handed out in Ready.committed (or snapshot)
    first_slot: int  # lowest slot still held in memory
    last_slot: int  # highest slot held
    #: Leader only: follower id -> (match, next, probing).
    progress: dict[int, tuple[int, int, bool]]
    #: This replica is a learner (lost its disk; does not vote yet).
    learner: bool
    #: Leader only: follower id -> its lag and learner state (for ClusterInfo).
    followers: dict[int, Follower]


# --------------------------------------------------------------------------- internals

_MAX_NOTICES = 256  # kept for take_notices(); older ones are dropped


class _Progress:
    """What the leader knows of one follower (cf. etcd-io/raft's ``tracker.Progress``).

    ``match``: the follower holds chosen-or-current-ballot values for every slot
    ≤ match (learned from its replies). ``next``: the next slot to send.
    In *replicate* mode the leader pipelines up to ``max_inflight_slots`` beyond
    ``match``; in *probe* mode (the follower's state is unknown or it has a hole)
    it sends one batch and waits for a reply or the next heartbeat.
    """

    __slots__ = ("match", "next", "probe", "probe_sent", "heartbeat_due", "commit_due",
                 "match_at_heartbeat", "snapshot_due", "learner", "rejoin", "target",
                 "voter_slot", "released", "dipped")

    def __init__(self, match: int, next_slot: int, probe: bool) -> None:
        self.match = match
        self.next = next_slot
        self.probe = probe
        self.probe_sent = False
        self.heartbeat_due = True
        self.commit_due = False
        self.match_at_heartbeat = match
        self.snapshot_due = 0
        # A learner (see "A replica that lost its disk" in the module docstring).
        self.learner = False  # its answers say learner: not counted towards commits
        self.rejoin = 0  # the rejoin id of that learner phase
        self.target = 0  # it votes again once it holds this slot and it is committed
        self.voter_slot = 0  # where this leader proposed "it votes again" (0: not yet)
        self.released = 0  # the rejoin id whose "votes again" entry this leader saw commit
        self.dipped: tuple[int, int] | None = None  # a voter's unconfirmed (had, has)

    def become_probe(self, next_slot: int) -> None:
        self.probe = True
        self.probe_sent = False
        self.next = next_slot


class _Unadvanced(NamedTuple):
    """The Ready handed out and not yet advanced, with what its durability proves."""

    ready: Ready
    promised: Ballot  # durable once ``ready`` is persisted
    role: Role
    ballot: Ballot
    last: int  # every slot up to it is durable once ``ready`` is persisted


class Replica:
    """One Multi-Paxos node (proposer + acceptor + learner). See the module docstring.

    ``recovered`` (from the write-ahead log) restores the acceptor after a
    restart: promised ballot, accepted entries, commit hint, snapshot.
    ``applied`` is the highest slot the application already reflects (e.g. the
    slot stored with its PostgreSQL state, or ``snapshot.slot`` if it loaded the
    snapshot); committed slots after it are re-delivered in ``Ready.committed``.
    It defaults to ``snapshot.slot`` (or 0). It must be ≥ ``snapshot.slot`` and
    the slots up to it must be in ``recovered`` (they were durable before the
    application saw them, so they are, unless the log was lost).

    ``learner=True`` starts a replica that lost its disk (or has not been admitted
    back since): it never campaigns, ignores Prepare, and its Accepted answers are
    marked non-voting, until it is handed its own "votes again" entry (see the
    module docstring); :meth:`take_notices` then says ``"now_voter"``.
    """

    def __init__(
        self,
        config: Config,
        rng: Rng,
        *,
        recovered: RecoveredState | None = None,
        applied: int | None = None,
        learner: bool = False,
    ) -> None:
        self.config = config
        self._id = config.node_id
        self._others = tuple(p for p in config.peers if p != config.node_id)
        self._quorum = config.quorum
        self._rng = rng

        # Acceptor state; the durable part is what the WAL gives back.
        self._promised = ZERO_BALLOT
        self._log: dict[int, Entry] = {}  # slot -> accepted entry; slots > snapshot slot
        self._first = 1  # lowest slot that can be in _log (snapshot.slot + 1)
        self._last = 0  # highest slot in _log, or _first - 1
        self._commit = 0  # every slot <= _commit holds its chosen value
        self._snapshot: Snapshot | None = None
        self._delivered = 0  # highest slot handed to the application
        self._heard_commit = 0  # highest commit index a leader announced (health: catch-up)

        if recovered is not None:
            self._restore(recovered, applied)
        elif applied:
            raise ValueError("applied given without recovered state")

        # Proposer state (volatile).
        self._role = Role.FOLLOWER
        self._ballot = ZERO_BALLOT  # own ballot while candidate or leader
        self._max_round = self._promised.round  # highest round seen anywhere
        self._leader_hint: int | None = None
        self._elapsed = 0  # ticks without hearing a leader (follower, candidate)
        self._timeout = self._random_timeout()
        self._ticks = 0
        #: Phase 1 runs this replica started (elections), and those it won: for metrics.
        self.campaigns = 0
        self.campaigns_won = 0

        # Follower: the contiguous run of slots held at the current leader's ballot.
        self._frontier = self._commit
        self._frontier_ballot = ZERO_BALLOT

        # Candidate.
        self._campaign_from = 0
        self._promises: dict[int, Promise] = {}  # from the others
        self._own_promise = False  # our own promise counts once it is durable
        self._prepare_elapsed = 0

        # Leader.
        self._progress: dict[int, _Progress] = {}
        self._self_match = 0
        self._queue: deque[Proposal] = deque()
        self._heartbeat_elapsed = 0
        self._quorum_elapsed = 0
        self._active: set[int] = set()

        # A learner: lost its disk, votes again once handed "votes again" for ``_rejoin``.
        self._learner = bool(learner)
        self._rejoin = self._new_rejoin() if self._learner else 0
        self._learning = 0  # leader: followers in learner mode (0: skip the bookkeeping)
        self._notices: deque[Notice] = deque(maxlen=_MAX_NOTICES)

        # Output, drained by ready().
        self._unstable: dict[int, Entry] = {}
        self._msgs: list[Message] = []
        self._pending_snapshot: Snapshot | None = None
        self._last_hard_state = HardState(self._promised, self._commit)
        self._hard_state_commit = self._commit  # commit whose entries are all persisted
        self._outstanding: _Unadvanced | None = None

        self._dispatch: dict[type, Callable[[Any], None]] = {
            Prepare: self._on_prepare,
            Promise: self._on_promise,
            Accept: self._on_accept,
            Accepted: self._on_accepted,
            InstallSnapshot: self._on_install_snapshot,
            Nack: self._on_nack,
            Commit: self._on_commit,
        }

    # ------------------------------------------------------------------ public API

    @property
    def node_id(self) -> int:
        return self._id

    @property
    def role(self) -> Role:
        return self._role

    @property
    def is_leader(self) -> bool:
        return self._role is Role.LEADER

    @property
    def leader_hint(self) -> int | None:
        """Who this replica believes leads (itself if leader), or None."""
        return self._id if self._role is Role.LEADER else self._leader_hint

    @property
    def promised(self) -> Ballot:
        return self._promised

    @property
    def commit_index(self) -> int:
        return self._commit

    @property
    def snapshot(self) -> Snapshot | None:
        """The newest snapshot this replica holds (from compact() or the leader)."""
        return self._snapshot

    @property
    def is_learner(self) -> bool:
        """Whether this replica is a learner: it lost its disk and does not vote yet."""
        return self._learner

    @property
    def rejoin_id(self) -> int:
        """A learner's rejoin id (new on every start and snapshot install); 0 for a voter."""
        return self._rejoin

    def take_notices(self) -> list[Notice]:
        """The :class:`Notice` s since the last call (at most the latest 256), oldest first."""
        notices = list(self._notices)
        self._notices.clear()
        return notices

    def status(self) -> Status:
        return Status(
            node_id=self._id,
            role=self._role,
            promised=self._promised,
            leader_hint=self.leader_hint,
            commit=self._commit,
            applied=self._delivered,
            first_slot=self._first,
            last_slot=self._last,
            progress={f: (p.match, p.next, p.probe) for f, p in sorted(self._progress.items())},
            learner=self._learner,
            followers={f: Follower(p.match, max(0, self._commit - p.match), p.learner,
                                   p.target if p.learner else 0)
                       for f, p in sorted(self._progress.items())},
        )

    def tick(self) -> None:
        """Advance the logical clock by one tick."""
        self._ticks += 1
        if self._role is Role.LEADER:
            self._heartbeat_elapsed += 1
            if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
                self._heartbeat_elapsed = 0
                self._heartbeat()
            self._quorum_elapsed += 1
            if self._quorum_elapsed >= self.config.election_ticks:
                self._check_quorum()
            return
        self._elapsed += 1
        if self._role is Role.CANDIDATE:
            self._prepare_elapsed += 1
            if self._prepare_elapsed >= self.config.heartbeat_ticks:
                self._prepare_elapsed = 0
                self._send_prepares(resend=True)
        if self._elapsed >= self._timeout and not self._learner:  # a learner never campaigns
            self._campaign()

    def step(self, message: Message) -> None:
        """Handle one inbound message. Never raises for a well-typed message, whatever
        its numbers: messages not addressed to this replica, from a node outside the
        configuration, with a number out of bounds (:mod:`dpq.paxos.types`) or a
        ballot that is not the sender's own where it must be are ignored, as a lost
        message would be (Paxos Made Simple §2.1: messages may be lost), and so is
        a promise that does not hold together (:meth:`_usable_promise`)."""
        handler = self._dispatch.get(type(message))
        if handler is None:
            raise TypeError(f"not a Paxos message: {message!r}")
        if message.dst == self._id and message.src in self._others and _plausible(message):
            handler(message)

    def propose(self, proposal: Proposal) -> None:
        """Queue a client proposal for the next free slot.

        Raises :class:`InvalidProposal` when its seq, client_id or data is out of
        bounds (:mod:`dpq.paxos.types`), :class:`NotLeader` unless this replica
        leads (a candidate is not yet a leader), and :class:`Overloaded` when
        ``max_queued_proposals`` wait already. Returning means the proposal is
        queued, not that it will commit.
        """
        if not isinstance(proposal, Proposal) or proposal.is_noop:
            raise ValueError(f"a client proposal needs a client_id: {proposal!r}")
        problem = proposal_problem(proposal.client_id, proposal.seq, len(proposal.data))
        if problem is not None:  # the WAL could not store it: refuse, never crash on it
            raise InvalidProposal(problem)
        if is_config(proposal):  # only the core writes membership into the log
            raise InvalidProposal(f"client_id: {proposal.client_id[:64]!r} is reserved (ids "
                                  f"starting with {RESERVED_CLIENT_PREFIX!r} belong to Paxos)")
        if self._role is not Role.LEADER:
            raise NotLeader(self._leader_hint)
        if len(self._queue) >= self.config.max_queued_proposals:
            raise Overloaded(f"{len(self._queue)} proposals already wait for a slot")
        self._queue.append(proposal)
        self._fill_window()

    def compact(self, snapshot: Snapshot) -> None:
        """The application holds ``snapshot`` (its state after every slot up to
        ``snapshot.slot``): drop the entries it covers from memory and send it to
        followers that need those slots. It must not be past what the application
        was handed (``Ready.committed``). The driver writes the snapshot to the WAL
        itself; nothing is emitted."""
        if snapshot.slot > self._delivered:
            raise ValueError(
                f"snapshot at slot {snapshot.slot} is past the applied slot {self._delivered}"
            )
        if snapshot.slot < self._first:
            return  # not newer than what we hold
        self._drop_through(snapshot.slot)
        self._snapshot = snapshot

    def has_ready(self) -> bool:
        """Whether :meth:`ready` has something to do (False while a Ready is outstanding)."""
        if self._outstanding is not None:
            return False
        if self._role is Role.LEADER:
            self._flush()
        return bool(
            self._msgs
            or self._unstable
            or self._pending_snapshot is not None
            or self._commit > self._delivered
            or self._promised != self._last_hard_state.promised
            or self._hard_state_commit != self._last_hard_state.commit
        )

    def ready(self) -> Ready:
        """Take what must be persisted, sent and applied now (see the contract)."""
        if self._outstanding is not None:
            raise RuntimeError("advance() the previous Ready before asking for the next")
        if self._role is Role.LEADER:
            self._flush()
        current = HardState(self._promised, self._hard_state_commit)
        must_sync = current.promised != self._last_hard_state.promised
        hard_state: HardState | None = None
        if current != self._last_hard_state:
            hard_state = self._last_hard_state = current
        entries = [self._unstable[s] for s in sorted(self._unstable)] if self._unstable else []
        self._unstable = {}
        committed: list[Entry] = []
        if self._commit > self._delivered:
            log = self._log
            committed = [log[s] for s in range(self._delivered + 1, self._commit + 1)]
            self._delivered = self._commit
            if self._learner:
                self._maybe_vote_again(committed)
        snapshot, self._pending_snapshot = self._pending_snapshot, None
        messages, self._msgs = self._msgs, []
        rd = Ready(
            hard_state=hard_state,
            entries=entries,
            messages=messages,
            committed=committed,
            snapshot=snapshot,
            must_sync=must_sync or bool(entries) or snapshot is not None,
        )
        # Everything held now is durable once rd is: the next Ready may name this commit.
        self._hard_state_commit = self._commit
        self._outstanding = _Unadvanced(rd, self._promised, self._role, self._ballot, self._last)
        return rd

    def advance(self, rd: Ready) -> None:
        """``rd`` is persisted, sent and applied: count what its durability enables."""
        done = self._outstanding
        if done is None or done.ready is not rd:
            raise RuntimeError("advance() must get the Ready last returned by ready()")
        self._outstanding = None
        if self._role is Role.CANDIDATE:
            if done.promised == self._ballot and not self._own_promise:
                self._own_promise = True
                self._maybe_win()
        elif (self._role is Role.LEADER and done.role is Role.LEADER
              and done.ballot == self._ballot and done.last > self._self_match):
            self._self_match = done.last
            self._maybe_commit()

    # ------------------------------------------------------------------ acceptor

    @property
    def in_lease(self) -> bool:
        """A live leader is known (see :meth:`_in_lease`): for health checks."""
        return self._in_lease()

    @property
    def leader_commit(self) -> int:
        """The highest commit index known here: this replica's own, or the highest a
        leader announced (a follower may hold less of the log than that)."""
        return max(self._commit, self._heard_commit)

    def _in_lease(self) -> bool:
        """Whether a live leader is known: this replica leads (and so heard from a
        quorum within the last election timeout, or _check_quorum would have made it
        step down), or it follows a leader it heard from within the (minimum)
        election timeout."""
        if self._role is Role.LEADER:
            return True
        return (self._role is Role.FOLLOWER and self._leader_hint is not None
                and self._elapsed < self.config.election_ticks)

    def _on_prepare(self, m: Prepare) -> None:
        if self._learner:
            # A learner promises nothing: it may have promised, before it lost its
            # disk, what it can no longer honour (Paxos Made Live §5.1). Ignored
            # like a lost message: no Promise, no Nack, nothing persisted.
            return
        if m.ballot > self._promised and self._in_lease():
            # Leader stickiness: while a live leader is known, a higher ballot from
            # anyone is ignored (no promise, nothing persisted, no answer), so one
            # node that cannot hear the leader, or a rogue sending ever higher
            # ballots, cannot depose a leader that a quorum still hears. Ignoring is
            # always safe (a lost message). When the leader dies, followers stop
            # being in lease after one election timeout, before the first of them
            # campaigns (its timeout is drawn from [E, 2E)), so failover is as fast
            # as before. Reference: Raft thesis §4.2.3 ("Disruptive servers");
            # etcd-io/raft raft.go, Step: `inLease := r.checkQuorum && r.lead !=
            # None && r.electionElapsed < r.electionTimeout` drops MsgVote.
            return
        # Paxos Made Simple §2.2 (P1a): promise unless a higher ballot was promised.
        if m.ballot < self._promised:
            self._send(Nack(self._id, m.src, self._promised, m.ballot))
            return
        if m.ballot > self._promised:
            self._raise_promise(m.ballot)
            self._leader_hint = None
            self._reset_election_timer()
        # (m.ballot == promised: a retransmission; answer again, nothing changes.)
        entries = self._entries_from(max(m.from_slot, self._first))
        snap = self._snapshot
        include = snap if snap is not None and m.from_slot <= snap.slot else None
        self._send(Promise(self._id, m.src, m.ballot, self._commit, entries, include))

    def _entries_from(self, start: int) -> tuple[Entry, ...]:
        """The log's entries at slots >= ``start``, in slot order (the log may have holes)."""
        log, last = self._log, self._last
        if last - start <= 2 * len(log):
            return tuple(log[s] for s in range(start, last + 1) if s in log)
        return tuple(log[s] for s in sorted(log) if s >= start)  # sparse: never walk the gap

    def _accept_from(self, src: int, ballot: Ballot) -> bool:
        """Common admission of a leader's Accept / Commit / InstallSnapshot at ``ballot``."""
        if ballot < self._promised:
            self._send(Nack(self._id, src, self._promised, ballot))
            return False
        if ballot > self._promised:
            self._raise_promise(ballot)  # accepting at b implies promising b
        self._leader_hint = src
        self._elapsed = 0
        if self._frontier_ballot != ballot:
            self._frontier_ballot = ballot
            self._frontier = self._commit
        return True

    def _on_accept(self, m: Accept) -> None:
        # Paxos Made Simple §2.2 (P1a/P2): accept unless a higher ballot was promised.
        if not self._accept_from(m.src, m.ballot):
            return
        slot = first = m.first_slot
        commit, log, unstable = self._commit, self._log, self._unstable
        # Nothing far past the commit index (see Config.max_slots_ahead): not
        # holding a value is always safe; the reply's match < last makes the leader
        # resend from the first slot missing.
        limit = commit + self.config.max_slots_ahead
        for proposal in m.proposals:
            if slot > limit:
                break
            if slot > commit:  # at or below commit we hold the chosen value already
                old = log.get(slot)
                if old is None or old.ballot != m.ballot:
                    entry = Entry(slot, m.ballot, proposal)
                    log[slot] = entry
                    unstable[slot] = entry
            slot += 1
        if slot > first and slot - 1 > self._last:
            self._last = slot - 1
        self._learn(m.commit)
        self._send(Accepted(self._id, m.src, m.ballot, self._frontier, m.last_slot,
                            self._learner, self._rejoin))

    def _on_commit(self, m: Commit) -> None:
        if self._accept_from(m.src, m.ballot):
            self._learn(m.commit)

    def _on_install_snapshot(self, m: InstallSnapshot) -> None:
        if not self._accept_from(m.src, m.ballot):
            return
        if m.snapshot.slot > self._commit:
            self._install_snapshot(m.snapshot)
            if self._learner:
                # Its "votes again" entry may be inside the snapshot, never handed
                # over: a new rejoin id makes the leader propose a new one.
                self._rejoin = self._new_rejoin()
        self._learn(m.commit)
        self._send(Accepted(self._id, m.src, m.ballot, self._frontier, m.snapshot.slot,
                            self._learner, self._rejoin))

    def _learn(self, leader_commit: int) -> None:
        """Advance the commit index over slots known to hold the chosen value.

        A slot accepted at the leader's current ballot holds the leader's value
        for it, which is the chosen one once the leader says the slot is committed.
        A value accepted at an older ballot may not be (it may have lost), so the
        frontier stops at the first slot not held at the current ballot, and the
        leader resends from there (its reply's ``match``).
        """
        self._heard_commit = max(self._heard_commit, leader_commit)
        log, ballot = self._log, self._frontier_ballot
        frontier = max(self._frontier, self._commit)
        while True:
            entry = log.get(frontier + 1)
            if entry is None or entry.ballot != ballot:
                break
            frontier += 1
        self._frontier = frontier
        commit = min(leader_commit, frontier)
        self._commit = max(self._commit, commit)

    def _install_snapshot(self, snap: Snapshot) -> None:
        """Jump to ``snap`` (all chosen): the application loads it from the Ready."""
        self._drop_through(snap.slot)
        unstable = self._unstable
        for s in [s for s in unstable if s <= snap.slot]:
            del unstable[s]
        self._snapshot = snap
        self._pending_snapshot = snap
        self._commit = snap.slot
        self._delivered = snap.slot  # the application loads it instead of slots <= snap.slot
        self._frontier = max(self._frontier, snap.slot)

    def _drop_through(self, slot: int) -> None:
        """Forget log entries up to ``slot`` (covered by a snapshot)."""
        log = self._log  # mutated in place: callers may hold a reference
        if slot - self._first < len(log):
            for s in range(self._first, slot + 1):
                log.pop(s, None)
        else:
            kept = {s: e for s, e in log.items() if s > slot}
            log.clear()
            log.update(kept)
        self._first = slot + 1
        self._last = max(self._last, slot)

    def _raise_promise(self, ballot: Ballot) -> None:
        self._promised = ballot
        self._max_round = max(self._max_round, ballot.round)
        if self._role is not Role.FOLLOWER:
            self._step_down()

    def _maybe_vote_again(self, committed: list[Entry]) -> None:
        """A learner handed its own "votes again" entry becomes a voter: every slot up
        to it is durable here once this Ready is (the entry's leader committed it
        only after the target, see the module docstring)."""
        me = (self._id, self._rejoin)
        for entry in committed:
            if voter_of(entry.proposal) == me:
                self._learner = False
                self._rejoin = 0
                self._notices.append(Notice("now_voter", self._id, entry.slot))
                return

    def _new_rejoin(self) -> int:
        return self._rng.randrange(1, MAX_SEQ + 1)

    # ------------------------------------------------------------------ proposer: phase 1

    def _campaign(self) -> None:
        """Start phase 1 with a ballot above every ballot seen (Paxos Made Simple §2.5)."""
        if self._role is Role.LEADER:
            self._step_down()
        self._ballot = Ballot(max(self._promised.round, self._max_round) + 1, self._id)
        self._max_round = self._ballot.round
        self._promised = self._ballot  # our own promise; counted once durable (advance)
        self._role = Role.CANDIDATE
        self.campaigns += 1
        self._leader_hint = None
        self._campaign_from = self._commit + 1
        self._promises = {}
        self._own_promise = False
        self._prepare_elapsed = 0
        self._reset_election_timer()
        self._send_prepares(resend=False)

    def _send_prepares(self, resend: bool) -> None:
        for peer in self._others:
            if not resend or peer not in self._promises:
                self._send(Prepare(self._id, peer, self._ballot, self._campaign_from))

    def _on_promise(self, m: Promise) -> None:
        if m.ballot != self._ballot:
            return  # an answer to an older campaign
        if self._role is Role.CANDIDATE:
            if self._usable_promise(m):
                self._promises[m.src] = m
                self._maybe_win()
        elif self._role is Role.LEADER:  # a late promise: it still tells us its commit
            self._active.add(m.src)
            progress = self._progress[m.src]
            if m.commit > progress.match and not progress.learner:
                progress.match = min(m.commit, self._last)
                self._maybe_commit()

    def _usable_promise(self, m: Promise) -> bool:
        """Whether a leadership can be built on ``m``; an honest acceptor's always can.

        Its entries come in increasing slot order, at ballots not above the promise,
        with proposals the WAL can store, none more than ``max_slots_ahead`` past
        the commit index (which bounds the no-ops the new leader fills in); its
        snapshot is not past its commit index, and it holds (in entries or the
        snapshot) every slot up to that index that this replica lacks. A promise
        that fails is ignored like a lost one: the candidate waits for others.
        """
        commit, snap, ballot = m.commit, m.snapshot, m.ballot
        if snap is not None and not 0 <= snap.slot <= commit:
            return False
        limit = max(commit, self._commit) + self.config.max_slots_ahead
        lo = max(self._commit, snap.slot if snap is not None else 0)
        prev, covered = 0, 0
        for entry in m.entries:
            slot, b, p = entry.slot, entry.ballot, entry.proposal
            if not prev < slot <= limit or b > ballot or b.round < 0 or b.node < 0:
                return False
            if not 0 <= p.seq <= MAX_SEQ or len(p.data) > MAX_PROPOSAL_BYTES \
                    or len(p.client_id) > MAX_CLIENT_ID_BYTES:
                return False
            if lo < slot <= commit:
                covered += 1
            prev = slot
        return commit <= lo or covered == commit - lo

    def _maybe_win(self) -> None:
        if len(self._promises) + self._own_promise >= self._quorum:
            self._become_leader()

    def _merge_reports(self, reports: Iterable[Entry]) -> dict[int, Entry]:
        """Per slot, the entry accepted at the highest ballot among ``reports``.

        Paxos Made Simple §2.2 (P2c): the new leader must propose, in every slot,
        the value of the highest-numbered proposal accepted by any acceptor of its
        promise quorum; any value chosen earlier is that one.
        """
        best: dict[int, Entry] = {}
        for entry in reports:
            held = best.get(entry.slot)
            if held is None or entry.ballot > held.ballot:
                best[entry.slot] = entry
        return best

    def _become_leader(self) -> None:
        """Phase 1 is complete: adopt the promise quorum's values, fill gaps with
        no-ops, and re-propose every slot past the commit index at our ballot
        (Paxos Made Moderately Complex §3, the leader's scout adopting pvalues)."""
        promises = [self._promises[src] for src in sorted(self._promises)]
        log, unstable = self._log, self._unstable

        # 1. Slots another acceptor knows committed: learn their chosen values.
        best = max(promises, key=lambda p: (p.commit, p.src), default=None)
        if best is not None and best.commit > self._commit:
            if best.snapshot is not None and best.snapshot.slot > self._commit:
                self._install_snapshot(best.snapshot)
            for entry in best.entries:
                if self._commit < entry.slot <= best.commit:
                    log[entry.slot] = entry
                    unstable[entry.slot] = entry
                    self._last = max(self._last, entry.slot)
            if any(s not in log for s in range(self._commit + 1, best.commit + 1)):
                # Unreachable: _usable_promise admitted only promises that cover it.
                raise AssertionError(f"promise from {best.src} misses committed slots")
            self._commit = best.commit
        commit = self._commit

        # 2. Later slots: the highest-ballot value reported (ours included), else a no-op.
        def reports() -> Iterable[Entry]:
            for promise in promises:
                for entry in promise.entries:
                    if entry.slot > commit:
                        yield entry
            for s in range(commit + 1, self._last + 1):
                own = log.get(s)
                if own is not None:
                    yield own

        adopted = self._merge_reports(reports())
        top = max(self._last, max(adopted, default=0))
        ballot = self._ballot
        for s in range(commit + 1, top + 1):
            held = adopted.get(s)
            entry = Entry(s, ballot, held.proposal if held is not None else NOOP)
            log[s] = entry
            unstable[s] = entry
        self._last = top

        # 3. Lead. Promisers' state is known: pipeline to them. Others: probe.
        self._role = Role.LEADER
        self.campaigns_won += 1
        self._leader_hint = self._id
        self._promises = {}
        self._own_promise = False
        self._self_match = commit  # our entries past it count once durable (advance)
        self._progress = {}
        self._learning = 0  # learners show themselves in their answers: targets are ours
        by_src = {p.src: p for p in promises}
        for peer in self._others:
            promise = by_src.get(peer)
            if promise is not None:
                self._progress[peer] = _Progress(promise.commit, promise.commit + 1, probe=False)
            else:
                self._progress[peer] = _Progress(0, commit + 1, probe=True)
        self._heartbeat_elapsed = 0
        self._quorum_elapsed = 0
        self._active = set(by_src)
        self._queue.clear()
        self._maybe_commit()  # a single-node cluster, or promisers already hold it all

    def _on_nack(self, m: Nack) -> None:
        self._max_round = max(self._max_round, m.ballot.round)
        # Only a refusal of our current ballot preempts us (a late one for an older
        # campaign says nothing about this one).
        preempted = m.rejected == self._ballot and m.ballot > self._ballot
        if self._role is not Role.FOLLOWER and preempted:
            # Preempted (Paxos Made Moderately Complex §3): step down; campaign
            # above m.ballot if no leader shows up within an election timeout.
            self._step_down()
            self._leader_hint = None

    def _step_down(self) -> None:
        self._role = Role.FOLLOWER
        self._promises = {}
        self._own_promise = False
        self._progress = {}
        self._learning = 0
        self._active = set()
        self._queue.clear()  # unassigned proposals are dropped; clients retry
        self._frontier_ballot = ZERO_BALLOT
        self._reset_election_timer()

    # ------------------------------------------------------------------ proposer: phase 2

    def _fill_window(self) -> None:
        """Give queued proposals slots while the window has room (PMMC §3, WINDOW)."""
        queue = self._queue
        if not queue:
            return
        limit = self._commit + self.config.max_inflight_slots
        ballot, log, unstable = self._ballot, self._log, self._unstable
        slot = self._last
        while queue and slot < limit:
            slot += 1
            entry = Entry(slot, ballot, queue.popleft())
            log[slot] = entry
            unstable[slot] = entry
        self._last = slot

    def _on_accepted(self, m: Accepted) -> None:
        if self._role is not Role.LEADER or m.ballot != self._ballot:
            return  # a reply to an older leadership
        progress = self._progress[m.src]
        if m.learner or progress.learner:
            self._track_learner(m, progress)
        if not progress.learner:
            self._active.add(m.src)  # only voters keep a leader in place (_check_quorum)
        match = min(m.match, self._last)
        dipped = progress.dipped
        if dipped is not None:
            progress.dipped = None
            if match < dipped[0]:  # confirmed: it really is behind
                self._notices.append(Notice("follower_behind", m.src, *dipped))
        if match < progress.match:
            # It holds less than it told us (it lost its disk, or restarted with an
            # older commit index): rewind and catch it up from what it has, from the
            # log or by snapshot (_send_batch). Also on a late copy of an older
            # answer: the resend that costs is harmless, and the next answer raises
            # match again. A learner's dip is news at once; a voter's only once its
            # next answer confirms it (not a reordered late copy, nor a gap closed
            # by one resend).
            if m.learner:
                self._notices.append(Notice("follower_behind", m.src, progress.match, match))
            elif dipped is None:
                progress.dipped = (progress.match, match)
            progress.match = progress.match_at_heartbeat = match
            progress.become_probe(match + 1)
            return
        if match > progress.match:
            progress.match = match
            if not progress.learner:
                self._maybe_commit()
        if progress.learner:
            self._maybe_admit()
        if m.last > m.match and progress.match < m.last:
            progress.become_probe(progress.match + 1)  # a hole below what it accepted
        elif progress.probe:
            if progress.match + 1 >= progress.next:
                progress.probe = False  # it has all we sent: pipeline again
                progress.next = progress.match + 1
            else:
                progress.become_probe(progress.match + 1)

    def _maybe_commit(self) -> None:
        """Commit = the highest slot a quorum holds (Paxos Made Simple §2.3: a value is
        chosen when a majority accepted it; here at one ballot, or already known chosen).
        A quorum is a majority of all members, counting no learner."""
        while True:
            matches = [p.match for p in self._progress.values() if not p.learner]
            matches.append(self._self_match)
            if len(matches) < self._quorum:
                return
            matches.sort(reverse=True)
            commit = matches[self._quorum - 1]
            if commit <= self._commit:
                return
            before, self._commit = self._commit, commit
            # Tell the followers now rather than at the next heartbeat (see
            # Commit); under load the next Accept carries the news for free.
            for progress in self._progress.values():
                progress.commit_due = True
            if not self._learning:
                self._fill_window()
                return
            released = self._release_learners(before)
            self._maybe_admit()
            self._fill_window()
            if not released:
                return  # else a learner's match counts now: maybe more is committed

    # ------------------------------------------------------------------ learners

    def _track_learner(self, m: Accepted, progress: _Progress) -> None:
        """Follow a follower's learner state from its answer.

        A learner answer with a new rejoin id starts a learner phase: the target is
        our last slot now (see the module docstring). A voter answer while we hold it
        for a learner is either from before it lost its disk (its match is then at
        most our last slot when it rejoined, the target) or from after it applied a
        "votes again" entry (ours, or an earlier leader's that we may never see
        commit): only a match past the target proves the latter. Either way the
        answer still drives its catch-up (never a commit): a late copy that claims
        too much is undone by its next answer (a rewind), and ignoring it could
        stall a voter whose entry we missed.
        """
        src = m.src
        if m.learner:
            if m.rejoin == progress.released:
                return  # admitted: it has not applied its entry yet (or a late copy)
            if not progress.learner or m.rejoin != progress.rejoin:
                if not progress.learner:
                    self._learning += 1
                progress.learner = True
                progress.rejoin = m.rejoin
                progress.target = self._last
                progress.voter_slot = 0
                self._notices.append(Notice("learner", src, progress.target, m.match))
        elif progress.learner and m.match > progress.target:
            self._release(src, progress, 0, m.match)

    def _release(self, src: int, progress: _Progress, slot: int, has: int) -> None:
        progress.learner = False
        progress.released = progress.rejoin
        progress.voter_slot = 0
        self._learning -= 1
        self._notices.append(Notice("voter_again", src, slot, has))

    def _release_learners(self, before: int) -> bool:
        """Learners whose "votes again" entry is committed in ``before+1 .. commit``
        (ours, or one a previous leader wrote for the same rejoin) count again."""
        waiting = {(peer, p.rejoin): p for peer, p in self._progress.items() if p.learner}
        released = False
        log = self._log
        for slot in range(max(before, self._first - 1) + 1, self._commit + 1):
            entry = log.get(slot)
            if entry is None or entry.proposal.client_id != VOTER_CLIENT_ID:
                continue
            who = voter_of(entry.proposal)
            progress = waiting.pop(who, None) if who is not None else None
            if progress is not None:
                self._release(who[0], progress, slot, progress.match)
                released = True
        return released

    def _maybe_admit(self) -> None:
        """Propose "X votes again" for each learner X that holds every slot up to its
        target, once the target is committed (by a quorum that does not count X)."""
        if not self._learning:
            return
        window_end = self._commit + self.config.max_inflight_slots
        for peer, progress in self._progress.items():
            if not progress.learner or progress.voter_slot:
                continue
            if progress.match < progress.target or self._commit < progress.target:
                continue
            if self._last >= window_end:
                return  # the window is full: retried when the commit index moves
            slot = self._last = self._last + 1
            entry = Entry(slot, self._ballot, voter_proposal(peer, progress.rejoin))
            self._log[slot] = entry
            self._unstable[slot] = entry
            progress.voter_slot = slot
            self._notices.append(Notice("voter_proposed", peer, slot, progress.match))

    def _heartbeat(self) -> None:
        for progress in self._progress.values():
            progress.heartbeat_due = True
            if progress.probe:
                progress.probe_sent = False  # no reply to the probe: send it again
            elif progress.match < self._last and progress.match == progress.match_at_heartbeat:
                progress.become_probe(progress.match + 1)  # stalled: something was lost
            progress.match_at_heartbeat = progress.match

    def _check_quorum(self) -> None:
        """A leader that heard from no quorum for an election timeout steps down, so
        its clients stop waiting on it (etcd-io/raft's CheckQuorum)."""
        self._quorum_elapsed = 0
        if len(self._active) + 1 < self._quorum:
            self._step_down()
            self._leader_hint = None
        self._active = set()

    def _flush(self) -> None:
        """Send each follower what it lacks, within the window and the batch size."""
        window = self.config.max_inflight_slots
        for peer in self._others:
            progress = self._progress[peer]
            sent = False
            if not progress.probe:
                limit = min(self._last, progress.match + window)
                while progress.next <= limit:
                    if progress.next < self._first:
                        progress.become_probe(progress.next)
                        break
                    sent = self._send_batch(peer, progress, limit)
            if progress.probe and not progress.probe_sent:
                progress.probe_sent = True
                sent = self._send_batch(peer, progress, self._last) or sent
            if progress.heartbeat_due:
                progress.heartbeat_due = False
                if not sent:
                    self._send(Accept(self._id, peer, self._ballot, 0, (), self._commit))
                    sent = True
            if progress.commit_due:
                progress.commit_due = False
                if not sent:
                    self._send(Commit(self._id, peer, self._ballot, self._commit))

    def _send_batch(self, peer: int, progress: _Progress, limit: int) -> bool:
        """Send the batch starting at ``progress.next`` (at most up to ``limit``)."""
        lo = progress.next
        if lo < self._first:  # compacted: the follower needs the snapshot
            assert self._snapshot is not None
            if self._ticks < progress.snapshot_due:
                return False
            progress.snapshot_due = self._ticks + self.config.snapshot_retry_ticks
            self._send(InstallSnapshot(self._id, peer, self._ballot, self._snapshot, self._commit))
            progress.next = self._snapshot.slot + 1
            return True
        hi = min(limit, lo + self.config.max_entries_per_message - 1)
        if hi < lo:
            return False
        log = self._log
        proposals = tuple(log[s].proposal for s in range(lo, hi + 1))
        self._send(Accept(self._id, peer, self._ballot, lo, proposals, self._commit))
        progress.next = hi + 1
        return True

    # ------------------------------------------------------------------ helpers

    def _send(self, message: Message) -> None:
        self._msgs.append(message)

    def _random_timeout(self) -> int:
        e = self.config.election_ticks
        return self._rng.randrange(e, 2 * e)

    def _reset_election_timer(self) -> None:
        self._elapsed = 0
        self._timeout = self._random_timeout()

    def _restore(self, recovered: RecoveredState, applied: int | None) -> None:
        snap = recovered.snapshot
        base = snap.slot if snap is not None else 0
        self._snapshot = snap
        self._first = base + 1
        self._promised = recovered.hard_state.promised
        for entry in recovered.entries:
            if entry.slot > base:
                self._log[entry.slot] = entry
        self._last = max(self._log, default=base)
        applied = base if applied is None else applied
        if applied < base:
            raise ValueError(f"applied slot {applied} is before the snapshot at {base}: "
                             "load the snapshot into the application first")
        commit = max(recovered.hard_state.commit, base, applied)
        missing = [s for s in range(base + 1, commit + 1) if s not in self._log]
        if missing:
            raise ValueError(f"recovered log lacks slots {missing[0]}..{missing[-1]} at or "
                             f"below the commit index {commit}: the WAL lost durable entries")
        self._commit = commit
        self._delivered = applied


# --------------------------------------------------------------------------- bounds


def _slot_ok(slot: int) -> bool:
    return 0 <= slot <= MAX_SLOT


def _ballot_ok(ballot: Ballot) -> bool:
    return 0 <= ballot.round <= MAX_ROUND and 0 <= ballot.node <= MAX_NODE_ID


def _plausible(m: Message) -> bool:
    """Whether every number of ``m`` is in bounds (:mod:`dpq.paxos.types`) and its
    ballot fits its kind: a proposer sends Prepare, Accept, Commit and
    InstallSnapshot at its own ballot (the node id in a ballot names its proposer,
    Paxos Made Simple §2.5), so another's ballot there is a forgery or a bug.
    Cheap: the edge (dpq.node.wire) has checked counts and proposals already;
    the proposals of an Accept are checked here again because the WAL stores them.
    A Promise's entries are checked by Replica._usable_promise."""
    ballot = m.ballot
    if not _ballot_ok(ballot):
        return False
    kind = type(m)
    if kind is Accept:
        first, count = m.first_slot, len(m.proposals)
        if ballot.node != m.src or not _slot_ok(m.commit) or not _slot_ok(first):
            return False
        if not count:
            return True
        return first >= 1 and first + count - 1 <= MAX_SLOT and all(
            0 <= p.seq <= MAX_SEQ and len(p.data) <= MAX_PROPOSAL_BYTES
            and len(p.client_id) <= MAX_CLIENT_ID_BYTES for p in m.proposals)
    if kind is Accepted:
        return _slot_ok(m.match) and _slot_ok(m.last) and 0 <= m.rejoin <= MAX_SEQ
    if kind is Commit:
        return ballot.node == m.src and _slot_ok(m.commit)
    if kind is Prepare:
        return ballot.node == m.src and _slot_ok(m.from_slot)
    if kind is Promise:
        return _slot_ok(m.commit)
    if kind is InstallSnapshot:
        slot = m.snapshot.slot
        return ballot.node == m.src and _slot_ok(m.commit) and 0 <= slot <= m.commit
    return _ballot_ok(m.rejected)  # Nack
