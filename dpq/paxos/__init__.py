"""dpq's replicated log: Multi-Paxos as a pure state machine, plus its storage and simulator.

``core.Replica`` does no I/O (the shape of etcd-io/raft): ticks, messages and
proposals go in; a ``Ready`` comes out saying what to persist, what to send and
what is committed. ``wal`` persists, a transport sends, ``sim`` replays both
deterministically to try to break it.

Message flow (L leader, F followers; ``*`` = answered only after the state it
vouches for is durable)::

    election (phase 1, once per leadership, covers every slot >= from):
      L ── Prepare(b, from) ──────────────────▶ F   promise b unless promised higher
      L ◀─ Promise*(b, commit, entries>=from, [snapshot]) ── F
           or Nack(promised) ── F                   L steps down, later campaigns higher
      on a quorum: per slot, adopt the highest-ballot value reported, no-op in gaps,
      and re-propose every slot past the commit index at b

    replication (phase 2, pipelined: many slots in flight, window max_inflight_slots):
      L ── Accept(b, first, [v1..vk], commit) ─▶ F  one message carries a range of slots
      L ◀─ Accepted*(b, match, last) ──────── F    match: F holds chosen or b-values up to it
      commit = the highest slot a quorum's match (the leader's own, once durable) covers

    commit index and liveness:
      L ── Accept(b, -, [], commit) ──────────▶ F   heartbeat every heartbeat_ticks; commit
                                                    also rides on every Accept; F learns a
                                                    slot only if it holds it at b
      L ── Commit(b, commit) ─────────────────▶ F   as soon as commit advances, to each F no
                                                    Accept goes to then; not answered
      F hears no leader >= its promise for a random [E, 2E) ticks: it campaigns
      leader stickiness: a leader, and a follower that heard its leader within E
      ticks, ignore a higher Prepare (no promise), so one rogue cannot depose it

    catch-up (throttled: max_entries_per_message; probing after a hole or a silence):
      F replies match < last (a hole) ──▶ L resends from match + 1
      match + 1 below L's compaction point:
      L ── InstallSnapshot(b, snapshot, commit) ─▶ F ── Accepted*(b, match >= snapshot.slot)
      then Accepts for the log after the snapshot
      F answers a match below what L recorded (it lost its disk) ──▶ L rewinds to it

    a replica that lost its disk rejoins as a learner (Paxos Made Live §5.1):
      X ignores Prepare, answers Accepted*(b, match, last, learner, rejoin): caught up,
      never counted; L: target = its last slot; once X holds it and it is committed,
      L proposes "X votes again" (VOTER_CLIENT_ID); X votes when handed that entry

Driver contract (details in :mod:`dpq.paxos.core`)::

    rd = replica.ready()
    1. persist rd.snapshot, rd.entries, rd.hard_state   (fsync if rd.must_sync)
    2. send    rd.messages                              (never before 1 is durable)
    3. apply   rd.snapshot, then rd.committed in slot order
    4. replica.advance(rd)

Restart: ``Replica(config, rng, recovered=wal.recovered, applied=slot the
application already reflects)``; after losing the disk: ``Replica(config, rng,
learner=True)`` (see "A replica that lost its disk" in :mod:`dpq.paxos.core`).
"""

from dpq.paxos.core import (
    Config,
    Follower,
    InvalidProposal,
    Notice,
    NotLeader,
    Overloaded,
    ProposalRefused,
    Ready,
    RecoveredState,
    Replica,
    Role,
    Status,
)
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
from dpq.paxos.sessions import Sessions
from dpq.paxos.types import (
    NOOP,
    VOTER_CLIENT_ID,
    ZERO_BALLOT,
    Ballot,
    Entry,
    HardState,
    Proposal,
    Snapshot,
    is_config,
)

__all__ = [
    "NOOP",
    "VOTER_CLIENT_ID",
    "ZERO_BALLOT",
    "Accept",
    "Accepted",
    "Ballot",
    "Commit",
    "Config",
    "Entry",
    "Follower",
    "HardState",
    "InstallSnapshot",
    "InvalidProposal",
    "Message",
    "Nack",
    "NotLeader",
    "Notice",
    "Overloaded",
    "Prepare",
    "Promise",
    "Proposal",
    "ProposalRefused",
    "Ready",
    "RecoveredState",
    "Replica",
    "Role",
    "Sessions",
    "Snapshot",
    "Status",
    "is_config",
]
