"""A deterministic simulation that tries to break the Multi-Paxos core.

One seed drives everything: a ``random.Random(seed)`` owned by the simulator
(never the global one) decides every message's fate, every fault and every
client action, and seeds each replica's own RNG. There is no real clock, socket
or file: the network, the disks and time are simulated, so a seed replays
exactly (nothing iterates a set or a str-keyed dict where order matters).

What it does to N replicas (3 or 5), for ``fault_ticks`` ticks:

* network: drops, duplicates, delays (reordering) messages, a few of them for
  long (stale messages of old ballots arriving late); partitions the nodes (a
  minority, a split where maybe nobody has a majority, the leader alone,
  one-way link failures, flapping on and off);
* disks: a crash loses whatever the driver had not fsynced (a random prefix of
  the unsynced records survives, as a torn WAL tail does), and a crash can hit
  a driver anywhere in its loop: before persisting a Ready, half-way through,
  after persisting but before sending, after sending but before applying;
  crashes are likelier around elections; sometimes every node crashes at once
  and restarts from its disk. Each Ready's records are written in a random
  order (the contract allows any);
* lost disks: a node loses all its persistent state (log, promise, snapshot,
  application) and restarts as a learner (``Replica(..., learner=True)``, as
  ``dpq-node --rejoin`` does), sometimes together with a crash of another node
  (the leader when it can: the one other copy of what the two held). Never more
  disks at once than leave a majority of voters, as an operator replaces one
  disk at a time. The learner keeps a durable "rejoining" marker until the core
  says it votes again (Notice ``now_voter``);
* a rogue (only with ``rogue_every``): every few ticks, a Prepare to every node
  at a ballot above every ballot any node has seen, claiming to come from a
  random member, never followed by anything (the "Prepare storm" of issue 10;
  leader stickiness must keep the leader in place while it runs);
* clients: a steady stream of proposals ``(client_id, seq)``, a few in flight
  per client, retried on a timeout at whoever seems to lead;
* the application on each node: a small state machine (count and hash chain of
  applied proposals, plus :class:`~dpq.paxos.sessions.Sessions`) that snapshots
  itself every few slots and compacts the replica, so snapshot transfer and
  compaction are exercised.

Checked at every step (a :class:`SimulationFailure` otherwise):

* agreement: a committed slot has one value on every replica, ever (an oracle
  map slot -> first value seen committed);
* the committed log reaches each application in order, each slot once;
* every replica's applied sequence is a prefix of the longest one (an oracle
  list, and a hash chain checked when a snapshot is loaded);
* each ``(client_id, seq)`` is applied at most once;
* nothing committed is lost: after the faults heal every live replica reaches
  the highest committed slot (a lost value would have shown as a disagreement);
* durability (``check_durability``): a restarted node still holds every promise
  and every slot it vouched for in a Promise or Accepted it sent (since its last
  lost disk).

Liveness at the end: faults heal with a clean network and every node up (or, in
some runs, all but a minority that stays down); within
``heal_ticks`` every pending client proposal is applied, every replica has
applied everything committed, every learner votes again, and one leader is
stable (all live replicas name it and its ballot has not changed for
``stable_ticks``).

Command line::

    python -m dpq.paxos.sim --seed 17 --nodes 5 --verbose
    python -m dpq.paxos.sim --seed 0 --count 500          # seeds 0..499, mixed 3 and 5 nodes
"""

from __future__ import annotations

import argparse
import hashlib
import heapq
import random
import struct
import sys
import zlib
from dataclasses import dataclass
from typing import NamedTuple

from dpq.paxos.core import Config, NotLeader, ProposalRefused, Ready, Replica
from dpq.paxos.messages import Accepted, Message, Prepare, Promise, describe
from dpq.paxos.sessions import Sessions
from dpq.paxos.types import ZERO_BALLOT, Ballot, Entry, HardState, Proposal, Snapshot

__all__ = ["SimConfig", "SimResult", "Simulation", "SimulationFailure", "nodes_for_seed",
           "replay_command", "run_seed"]


class SimulationFailure(AssertionError):
    """An invariant broke (or liveness failed) in a simulated run."""

    def __init__(self, seed: int, nodes: int, tick: int, problem: str, trace: list[str],
                 rogue_every: int = 0) -> None:
        self.seed, self.nodes, self.tick = seed, nodes, tick
        self.problem, self.trace = problem, trace
        super().__init__(f"seed {seed} ({nodes} nodes) at tick {tick}: {problem}\n"
                         f"replay: {replay_command(seed, nodes, rogue_every)}")


def replay_command(seed: int, nodes: int, rogue_every: int = 0) -> str:
    rogue = f" --rogue-every {rogue_every}" if rogue_every else ""
    return f"python -m dpq.paxos.sim --seed {seed} --nodes {nodes}{rogue} --verbose"


def nodes_for_seed(seed: int) -> int:
    """The cluster size a seed runs with in the test suite: 3 and 5, alternating."""
    return 3 if seed % 2 == 0 else 5


@dataclass(frozen=True)
class SimConfig:
    nodes: int = 3
    fault_ticks: int = 220
    heal_ticks: int = 400  # liveness bound after healing
    stable_ticks: int = 25  # the leader's ballot unchanged this long = stable
    election_ticks: int = 10
    heartbeat_ticks: int = 2
    max_inflight_slots: int = 8  # small, so the window and catch-up throttling matter
    max_entries_per_message: int = 4
    max_slots_ahead: int = 1 << 16
    #: A rogue floods Prepares with rising ballots every this many ticks (0: none),
    #: through the faults and the healing.
    rogue_every: int = 0
    snapshot_every: int = 10  # the application snapshots after this many slots
    clients: int = 3
    client_window: int = 3  # proposals in flight per client (and a seq window, Sessions')
    retry_ticks: int = 20
    p_new_proposal: float = 0.25  # per client per tick
    all_crash_probability: float = 0.3  # of a run having one all-nodes crash
    heal_with_minority_down: float = 0.25  # of a run ending with a minority still down
    replica_class: type[Replica] = Replica
    sessions_class: type[Sessions] = Sessions
    #: Check on every restart that a node kept what it acknowledged (promises,
    #: accepted entries). Off, only the end-to-end invariants can catch a lost write.
    check_durability: bool = True
    #: Nodes lose their disks (at a rate drawn per seed) and rejoin.
    disk_loss: bool = True
    #: A node that lost its disk restarts as a learner; False plants the amnesia bug
    #: (it restarts as a voter with no memory of its promises and acceptances).
    rejoin_as_learner: bool = True


STAT_KEYS = ("messages", "dropped", "duplicated", "partitions", "crashes", "crashes_in_ready",
             "all_crashes", "leader_changes", "snapshots_taken", "snapshots_installed", "noops",
             "duplicates_skipped", "disk_losses", "disk_losses_with_crash", "rewinds",
             "voters_again")


class SimResult(NamedTuple):
    seed: int
    nodes: int
    ticks: int
    committed_slots: int
    applied_proposals: int
    stats: dict[str, int]  # what happened: messages, crashes, snapshots_installed, ...
    trace_hash: str  # sha256 of the trace (only with trace=True), else ""


# --------------------------------------------------------------------------- application


SESSION_WINDOW = 8  # seqs; clients respect it (see Sessions)


class App:
    """The deterministic state machine each node applies the log to."""

    __slots__ = ("slot", "count", "chain", "sessions")
    _HEAD = struct.Struct("<qqI")

    def __init__(self, sessions: Sessions, slot: int = 0, count: int = 0, chain: int = 0) -> None:
        self.slot = slot  # last slot applied
        self.count = count  # proposals applied (no-ops and duplicates skipped)
        self.chain = chain  # crc32 chain over the applied proposals
        self.sessions = sessions

    def to_snapshot(self) -> Snapshot:
        return Snapshot(self.slot, self._HEAD.pack(self.slot, self.count, self.chain)
                        + self.sessions.to_bytes())

    @classmethod
    def empty(cls, sessions_class: type[Sessions] = Sessions) -> App:
        return cls(sessions_class(max_clients=64, window=SESSION_WINDOW))

    @classmethod
    def from_snapshot(cls, snap: Snapshot, sessions_class: type[Sessions] = Sessions) -> App:
        slot, count, chain = cls._HEAD.unpack_from(snap.data, 0)
        if slot != snap.slot:
            raise ValueError(f"snapshot data says slot {slot}, snapshot says {snap.slot}")
        return cls(sessions_class.from_bytes(snap.data[cls._HEAD.size:]), slot, count, chain)


# --------------------------------------------------------------------------- disk


class Recovered(NamedTuple):
    hard_state: HardState
    entries: list[Entry]
    snapshot: Snapshot | None


class Disk:
    """One node's simulated storage: what survives a crash is what was fsynced,
    plus a random prefix of what was written after the last fsync."""

    __slots__ = ("hard_state", "entries", "snapshot", "unsynced", "rejoining")

    def __init__(self, rejoining: bool = False) -> None:
        self.hard_state = HardState(ZERO_BALLOT, 0)
        self.entries: dict[int, Entry] = {}
        self.snapshot: Snapshot | None = None
        self.unsynced: list[object] = []  # HardState | Entry | Snapshot, in write order
        #: The durable "rejoining" marker: start as a learner (set when the disk is new).
        self.rejoining = rejoining

    def write(self, records: list[object]) -> None:
        self.unsynced.extend(records)

    def sync(self) -> None:
        for record in self.unsynced:
            self._apply(record)
        self.unsynced.clear()

    def crash(self, rng: random.Random) -> None:
        keep = rng.randint(0, len(self.unsynced)) if self.unsynced else 0
        for record in self.unsynced[:keep]:
            self._apply(record)
        self.unsynced.clear()

    def save_snapshot(self, snap: Snapshot) -> None:
        """The application's own snapshot: durable at once (the WAL writes a temp file,
        fsyncs, renames, fsyncs the directory), then older entries are dropped. It
        does not sync the log records written before it."""
        self._apply(snap)

    def _apply(self, record: object) -> None:
        if isinstance(record, Entry):
            if self.snapshot is None or record.slot > self.snapshot.slot:
                self.entries[record.slot] = record
        elif isinstance(record, HardState):
            self.hard_state = record
        else:
            assert isinstance(record, Snapshot)
            if self.snapshot is None or record.slot > self.snapshot.slot:
                self.snapshot = record
                for slot in [s for s in self.entries if s <= record.slot]:
                    del self.entries[slot]

    def recover(self) -> Recovered:
        return Recovered(self.hard_state, [self.entries[s] for s in sorted(self.entries)],
                         self.snapshot)


# --------------------------------------------------------------------------- nodes, clients


class Node:
    __slots__ = ("id", "replica", "app", "disk", "up", "last_snapshot_slot")

    replica: Replica  # set by Simulation._start; the dead one stays while down
    app: App

    def __init__(self, node_id: int) -> None:
        self.id = node_id
        self.disk = Disk()
        self.up = False
        self.last_snapshot_slot = 0


class Client:
    __slots__ = ("id", "next_seq", "outstanding", "guess")

    def __init__(self, client_id: str) -> None:
        self.id = client_id
        self.next_seq = 1
        self.outstanding: dict[int, list] = {}  # seq -> [data, tick of the last try]
        self.guess: int | None = None


# Where a crash can hit a driver processing one Ready.
_BEFORE_PERSIST, _MID_PERSIST, _BEFORE_SEND, _BEFORE_APPLY, _BEFORE_ADVANCE = range(5)


@dataclass
class _Faults:
    """This run's fault intensities, drawn from the seed."""

    drop: float
    duplicate: float
    max_delay: int
    crash: float  # per tick: crash one node
    restart: float  # per tick per down node
    crash_in_ready: float  # per Ready processed
    partition: float  # per tick: start a partition
    heal: float  # per tick: heal it
    flapping: bool
    all_crash_at: int  # tick, or -1
    disk_loss: float  # per tick: a node loses its disk
    long_delay: float  # per message: delayed 10..60 ticks (stale messages from old ballots)
    cut: frozenset[tuple[int, int]] = frozenset()  # directed links (src, dst) that drop everything


class Simulation:
    """One seeded run. ``run()`` returns a :class:`SimResult` or raises
    :class:`SimulationFailure`."""

    def __init__(self, seed: int, config: SimConfig | None = None, *, trace: bool = False) -> None:
        self.seed = seed
        self.cfg = config or SimConfig()
        self.rng = random.Random(seed)
        self.trace: list[str] | None = [] if trace else None
        self.now = 0
        ids = list(range(1, self.cfg.nodes + 1))
        self.ids = ids
        self.nodes = {i: Node(i) for i in ids}
        self.clients = [Client(f"c{k}") for k in range(self.cfg.clients)]
        self.clients_by_id = {c.id: c for c in self.clients}
        self.inflight: list[tuple[int, int, Message]] = []  # heap of (due tick, counter, msg)
        self.counter = 0
        # Oracles.
        self.chosen: dict[int, Proposal] = {}
        self.applied: list[tuple[str, int]] = []  # the global applied order
        self.chains: list[int] = [0]  # chains[k]: hash chain after k applied proposals
        self.applied_set: set[tuple[str, int]] = set()
        # What each node vouched for in messages it sent: [highest ballot, highest match].
        self.acked: dict[int, list] = {i: [ZERO_BALLOT, 0] for i in ids}
        # Stats.
        self.stats = dict.fromkeys(STAT_KEYS, 0)
        self.last_leader: tuple[int, Ballot] | None = None
        rng = self.rng
        self.faults = _Faults(
            drop=rng.choice((0.0, 0.02, 0.05, 0.15)),
            duplicate=rng.choice((0.0, 0.02, 0.08)),
            max_delay=rng.choice((1, 2, 3, 6)),
            crash=rng.choice((0.0, 0.005, 0.015)),
            restart=rng.choice((0.03, 0.1)),
            crash_in_ready=rng.choice((0.0, 0.002, 0.006)),
            partition=rng.choice((0.0, 0.01, 0.03)),
            heal=rng.choice((0.03, 0.08)),
            flapping=rng.random() < 0.25,
            long_delay=rng.choice((0.0, 0.005, 0.02)),
            all_crash_at=(rng.randrange(20, self.cfg.fault_ticks - 20)
                          if rng.random() < self.cfg.all_crash_probability else -1),
            disk_loss=rng.choice((0.0, 0.004, 0.01)) if self.cfg.disk_loss else 0.0,
        )
        self.healing = False
        for i in ids:
            self._start(self.nodes[i])

    # ------------------------------------------------------------------ run

    def run(self) -> SimResult:
        try:
            return self._run()
        except SimulationFailure:
            raise
        except Exception as exc:  # a replica (or the harness) broke: report the seed
            self._log(f"EXCEPTION {type(exc).__name__}: {exc}")
            raise SimulationFailure(self.seed, self.cfg.nodes, self.now,
                                    f"EXCEPTION {type(exc).__name__}: {exc}",
                                    list(self.trace or ()), self.cfg.rogue_every) from exc

    def _run(self) -> SimResult:
        cfg = self.cfg
        self._log(f"seed={self.seed} nodes={cfg.nodes} faults={self.faults}")
        for _ in range(cfg.fault_ticks):
            self._tick(faults=True)
        self._heal()
        deadline = self.now + cfg.heal_ticks
        stable_since = 0  # since when `leader` has led, agreed on, at `stable_ballot`
        stable_ballot: Ballot | None = None
        while True:
            self._tick(faults=False)
            leader = self._agreed_leader()
            if leader is None:
                stable_ballot = None
            else:
                ballot = self.nodes[leader].replica.promised
                if ballot != stable_ballot:
                    stable_since, stable_ballot = self.now, ballot
                if self.now - stable_since >= cfg.stable_ticks and self._settled(leader):
                    break
            if self.now >= deadline:
                self._fail(self._liveness_report(leader))
        trace_hash = hashlib.sha256("\n".join(self.trace).encode()).hexdigest() if self.trace \
            is not None else ""
        return SimResult(self.seed, cfg.nodes, self.now, len(self.chosen), len(self.applied),
                         dict(self.stats), trace_hash)

    def _tick(self, faults: bool) -> None:
        self.now += 1
        if faults:
            self._inject_faults()
        if self.cfg.rogue_every and self.now % self.cfg.rogue_every == 0:
            self._rogue_prepares()
        rng = self.rng
        for i in self.ids:
            node = self.nodes[i]
            if node.up:
                node.replica.tick()
        # Deliver what is due; a driver handles its Ready right away or at the end of the tick.
        inflight = self.inflight
        while inflight and inflight[0][0] <= self.now:
            _, _, msg = heapq.heappop(inflight)
            node = self.nodes[msg.dst]
            if not node.up or (msg.src, msg.dst) in self.faults.cut:
                continue
            if self.trace is not None:
                self._log(f"deliver {describe(msg)}")
            node.replica.step(msg)
            if rng.random() < 0.5:
                self._drive(node)
        self._clients_act(new=faults)
        for i in self.ids:
            node = self.nodes[i]
            if node.up:
                self._drive(node)
        self._watch_leader()

    # ------------------------------------------------------------------ driver

    def _drive(self, node: Node) -> None:
        """The driver contract: persist, send, apply, advance (with crash points)."""
        rng = self.rng
        for _ in range(8):
            replica = node.replica
            if not replica.has_ready():
                return
            rd = replica.ready()
            now_voter = self._notices(node, replica)
            crash_at = -1
            p_crash = self.faults.crash_in_ready
            hard_state = rd.hard_state
            if hard_state is not None and hard_state.promised != node.disk.hard_state.promised \
                    or any(type(m) is Promise for m in rd.messages):
                p_crash *= 10  # crash around elections more often: they are where bugs hide
            if p_crash and not self.healing and rng.random() < p_crash:
                crash_at = rng.randrange(5)
            if crash_at >= 0:
                self.stats["crashes_in_ready"] += 1
            if crash_at == _BEFORE_PERSIST:
                return self._crash(node, "before persisting a Ready")
            records: list[object] = []
            if rd.snapshot is not None:
                records.append(rd.snapshot)
            records.extend(rd.entries)
            if rd.hard_state is not None:
                records.append(rd.hard_state)
            rng.shuffle(records)  # the contract allows any order within a Ready
            node.disk.write(records)
            if crash_at == _MID_PERSIST:
                return self._crash(node, "while persisting a Ready")
            if rd.must_sync:
                node.disk.sync()
            if now_voter:
                node.disk.rejoining = False  # durable before this Ready is sent
            if crash_at == _BEFORE_SEND:
                return self._crash(node, "after persisting, before sending")
            self._send_all(rd)
            if crash_at == _BEFORE_APPLY:
                return self._crash(node, "after sending, before applying")
            self._apply(node, rd)
            if crash_at == _BEFORE_ADVANCE:
                return self._crash(node, "after applying, before advance")
            replica.advance(rd)
            if node.app.slot - node.last_snapshot_slot >= self.cfg.snapshot_every:
                snap = node.app.to_snapshot()
                node.disk.save_snapshot(snap)
                replica.compact(snap)
                node.last_snapshot_slot = snap.slot
                self.stats["snapshots_taken"] += 1
                self._log(f"n{node.id} snapshot@{snap.slot}")

    def _notices(self, node: Node, replica: Replica) -> bool:
        """Log the replica's notices (a node logs them); True if it votes again now."""
        now_voter = False
        for notice in replica.take_notices():
            if notice.kind == "follower_behind":
                self.stats["rewinds"] += 1
            elif notice.kind == "now_voter":
                self.stats["voters_again"] += 1
                now_voter = True
            self._log(f"n{node.id} notice {notice.kind} n{notice.node} "
                      f"had={notice.had} has={notice.has}")
        return now_voter

    def _send_all(self, rd: Ready) -> None:
        rng, faults = self.rng, self.faults
        healing = self.healing
        for msg in rd.messages:
            self.stats["messages"] += 1
            if isinstance(msg, (Promise, Accepted)):  # vouches for durable state: remember it
                acked = self.acked[msg.src]
                acked[0] = max(acked[0], msg.ballot)
                if isinstance(msg, Accepted) and msg.match > acked[1]:
                    acked[1] = msg.match
            copies = 1
            if not healing:
                if faults.drop and rng.random() < faults.drop:
                    self.stats["dropped"] += 1
                    continue
                if faults.duplicate and rng.random() < faults.duplicate:
                    self.stats["duplicated"] += 1
                    copies = 2
            for _ in range(copies):
                if healing:
                    delay = rng.randint(1, 2)
                elif faults.long_delay and rng.random() < faults.long_delay:
                    delay = rng.randint(10, 60)
                else:
                    delay = rng.randint(1, faults.max_delay)
                self.counter += 1
                heapq.heappush(self.inflight, (self.now + delay, self.counter, msg))

    def _apply(self, node: Node, rd: Ready) -> None:
        app = node.app
        if rd.snapshot is not None:
            snap = rd.snapshot
            if snap.slot <= app.slot:
                self._fail(f"n{node.id} got snapshot@{snap.slot} but applied {app.slot} already")
            loaded = App.from_snapshot(snap, self.cfg.sessions_class)
            if loaded.count >= len(self.chains) or self.chains[loaded.count] != loaded.chain:
                self._fail(f"n{node.id} loaded snapshot@{snap.slot} whose applied sequence "
                           f"({loaded.count} proposals) is not a prefix of the oracle's")
            node.app = app = loaded
            node.last_snapshot_slot = snap.slot
            self.stats["snapshots_installed"] += 1
            self._log(f"n{node.id} installs snapshot@{snap.slot}")
        for entry in rd.committed:
            self._apply_entry(node, app, entry)

    def _apply_entry(self, node: Node, app: App, entry: Entry) -> None:
        slot, proposal = entry.slot, entry.proposal
        if slot != app.slot + 1:
            self._fail(f"n{node.id} was handed slot {slot} after slot {app.slot}")
        chosen = self.chosen.get(slot)
        if chosen is None:
            self.chosen[slot] = proposal
            self._log(f"n{node.id} commits slot {slot} = {_fmt(proposal)} (first)")
        elif chosen != proposal:
            self._fail(f"AGREEMENT: n{node.id} committed slot {slot} = {_fmt(proposal)}, "
                       f"but {_fmt(chosen)} was committed there before")
        app.slot = slot
        if not app.sessions.should_apply(proposal.client_id, proposal.seq):
            self.stats["noops" if proposal.is_noop else "duplicates_skipped"] += 1
            return
        key = (proposal.client_id, proposal.seq)
        chain = zlib.crc32(proposal.data, app.chain)
        index = app.count
        if index < len(self.applied):
            if self.applied[index] != key or self.chains[index + 1] != chain:
                self._fail(f"PREFIX: n{node.id} applied {key} as proposal #{index + 1}, "
                           f"the oracle has {self.applied[index]}")
        else:
            if key in self.applied_set:
                self._fail(f"DUPLICATE: {key} applied twice (again by n{node.id} at slot {slot})")
            self.applied.append(key)
            self.applied_set.add(key)
            self.chains.append(chain)
        app.count = index + 1
        app.chain = chain
        client = self.clients_by_id.get(proposal.client_id)
        if client is not None and client.outstanding.pop(proposal.seq, None) is not None:
            self._log(f"client {client.id} seq {proposal.seq} done (slot {slot})")

    # ------------------------------------------------------------------ clients

    def _clients_act(self, new: bool) -> None:
        rng, cfg = self.rng, self.cfg
        for client in self.clients:
            oldest = min(client.outstanding, default=client.next_seq)
            if new and len(client.outstanding) < cfg.client_window \
                    and client.next_seq - oldest < SESSION_WINDOW \
                    and rng.random() < cfg.p_new_proposal:
                seq = client.next_seq
                client.next_seq += rng.choice((1, 1, 1, 2))  # seqs grow by one or more
                client.outstanding[seq] = [f"{client.id}:{seq}".encode(), -cfg.retry_ticks]
            for seq in sorted(client.outstanding):
                pending = client.outstanding[seq]
                if self.now - pending[1] >= cfg.retry_ticks:
                    pending[1] = self.now
                    self._submit(client, Proposal(client.id, seq, pending[0]))

    def _submit(self, client: Client, proposal: Proposal) -> None:
        for _ in range(2):  # one redirect on NotLeader
            target = client.guess if client.guess is not None else self.rng.choice(self.ids)
            node = self.nodes[target]
            if not node.up:
                client.guess = None
                return
            try:
                node.replica.propose(proposal)
            except NotLeader as exc:
                client.guess = exc.leader_hint
                continue
            except ProposalRefused:
                return
            client.guess = target
            self._log(f"client {client.id} proposes seq {proposal.seq} at n{target}")
            return

    # ------------------------------------------------------------------ faults

    def _inject_faults(self) -> None:
        rng, f, now = self.rng, self.faults, self.now
        if now == f.all_crash_at:
            self.stats["all_crashes"] += 1
            for i in self.ids:
                if self.nodes[i].up:
                    self._crash(self.nodes[i], "all nodes crash")
        if f.crash and rng.random() < f.crash:
            up = [i for i in self.ids if self.nodes[i].up]
            if up:
                self._crash(self.nodes[rng.choice(up)], "random crash")
        if f.disk_loss and rng.random() < f.disk_loss:
            self._lose_disk()
        for i in self.ids:
            node = self.nodes[i]
            if not node.up and rng.random() < f.restart:
                self._start(node)
        if f.cut:
            if rng.random() < (0.3 if f.flapping else f.heal):
                f.cut = frozenset()
                self._log("partition healed")
        elif f.partition and rng.random() < (0.3 if f.flapping else f.partition):
            self._partition()

    def _rogue_prepares(self) -> None:
        """A Prepare to every other node at a round above all seen, as if from ``src``."""
        top = max(node.replica.promised.round for node in self.nodes.values())
        src = self.rng.choice(self.ids)
        ballot = Ballot(top + 1, src)
        self.stats["rogue_prepares"] = self.stats.get("rogue_prepares", 0) + 1
        self._log(f"rogue prepares at {ballot} as n{src}")
        for dst in self.ids:
            if dst != src:
                self.counter += 1
                prepare = Prepare(src, dst, ballot, 1)
                heapq.heappush(self.inflight, (self.now + 1, self.counter, prepare))

    def _partition(self) -> None:
        rng, ids = self.rng, self.ids
        kind = rng.randrange(4)
        if kind == 3:  # one-way link failures
            cut = {(a, b) for a in ids for b in ids if a != b and rng.random() < 0.3}
        else:
            if kind == 0:  # a minority cut off
                side = rng.sample(ids, rng.randint(1, (len(ids) - 1) // 2))
            elif kind == 1:  # the leader alone
                leaders = [i for i in ids if self.nodes[i].up and self.nodes[i].replica.is_leader]
                side = [leaders[0] if leaders else rng.choice(ids)]
            else:  # two or three groups: maybe nobody has a majority
                side = rng.sample(ids, rng.randint(1, len(ids) - 1))
            group = {i: 0 for i in ids}
            for i in side:
                group[i] = 1 if kind < 2 or rng.random() < 0.5 else 2
            cut = {(a, b) for a in ids for b in ids if group[a] != group[b]}
        self.faults.cut = frozenset(cut)
        self.stats["partitions"] += 1
        self._log(f"partition: links cut {sorted(cut)}")

    def _voters(self) -> list[int]:
        """Nodes that vote (or will, on restart): not rejoining after a lost disk."""
        return [i for i in self.ids if not self.nodes[i].disk.rejoining]

    def _lose_disk(self) -> None:
        """A node loses all its persistent state; it restarts (later) as a learner.
        One disk at a time: never fewer voters left than a majority."""
        rng = self.rng
        voters = self._voters()
        if len(voters) - 1 < len(self.ids) // 2 + 1:
            return
        node = self.nodes[rng.choice(voters)]
        if node.up:
            self._crash(node, "its disk is lost")
        node.disk = Disk(rejoining=True)
        self.acked[node.id] = [ZERO_BALLOT, 0]  # it vouches for nothing any more
        self.stats["disk_losses"] += 1
        self._log(f"n{node.id} LOSES ITS DISK")
        if rng.random() < 0.5:  # with another crash: the leader's, when it can be
            others = [i for i in self.ids if i != node.id and self.nodes[i].up]
            leaders = [i for i in others if self.nodes[i].replica.is_leader]
            if others:
                self.stats["disk_losses_with_crash"] += 1
                other = leaders[0] if leaders else rng.choice(others)
                self._crash(self.nodes[other], "with another node's lost disk")

    def _crash(self, node: Node, why: str) -> None:
        self.stats["crashes"] += 1
        node.up = False
        node.disk.crash(self.rng)
        self._log(f"n{node.id} CRASH ({why})")

    def _start(self, node: Node) -> None:
        """(Re)start a node from its disk, the application from its snapshot."""
        recovered = node.disk.recover()
        snap = recovered.snapshot
        if self.cfg.check_durability:
            self._check_durable(node, recovered)
        sessions_class = self.cfg.sessions_class
        node.app = App.from_snapshot(snap, sessions_class) if snap is not None \
            else App.empty(sessions_class)
        node.last_snapshot_slot = node.app.slot
        config = Config(node.id, tuple(self.ids), election_ticks=self.cfg.election_ticks,
                        heartbeat_ticks=self.cfg.heartbeat_ticks,
                        max_inflight_slots=self.cfg.max_inflight_slots,
                        max_entries_per_message=self.cfg.max_entries_per_message,
                        max_slots_ahead=self.cfg.max_slots_ahead)
        rng = random.Random(self.rng.getrandbits(64))
        learner = node.disk.rejoining
        if learner and not self.cfg.rejoin_as_learner:
            learner = node.disk.rejoining = False  # the planted amnesia bug
        node.replica = self.cfg.replica_class(config, rng, recovered=recovered,
                                              applied=node.app.slot, learner=learner)
        node.up = True
        if self.now:
            self._log(f"n{node.id} restart{' as a learner' if learner else ''}: "
                      f"promised={recovered.hard_state.promised} "
                      f"commit={node.replica.commit_index} snapshot@{node.app.slot}")

    def _check_durable(self, node: Node, recovered: Recovered) -> None:
        """An acceptor never forgets what it vouched for (Paxos Made Simple §2.5)."""
        promised, match = self.acked[node.id]
        if recovered.hard_state.promised < promised:
            self._fail(f"DURABILITY: n{node.id} restarted with promise "
                       f"{recovered.hard_state.promised}, but had answered at {promised}")
        base = recovered.snapshot.slot if recovered.snapshot is not None else 0
        held = {e.slot for e in recovered.entries}
        lost = [s for s in range(base + 1, match + 1) if s not in held]
        if lost:
            self._fail(f"DURABILITY: n{node.id} restarted without slots {lost[0]}..{lost[-1]}, "
                       f"but had acknowledged holding every slot up to {match}")

    def _heal(self) -> None:
        """End the faults: a clean network, and every node up, or (in some runs) all
        but a minority that stays down: a majority must be enough to make progress."""
        rng = self.rng
        self.healing = True
        self.faults.cut = frozenset()
        down: list[int] = []
        if rng.random() < self.cfg.heal_with_minority_down:
            down = rng.sample(self.ids, rng.randint(1, (len(self.ids) - 1) // 2))
            # A learner needs a majority of voters up to be admitted back.
            if len([i for i in self._voters() if i not in down]) < len(self.ids) // 2 + 1:
                down = []
        for i in self.ids:
            node = self.nodes[i]
            if i in down and node.up:
                self._crash(node, "stays down after healing")
            elif i not in down and not node.up:
                self._start(node)
        self._log(f"HEAL: network clean, nodes down: {sorted(down)}")

    # ------------------------------------------------------------------ checks

    def _watch_leader(self) -> None:
        leaders = [(i, self.nodes[i].replica.promised) for i in self.ids
                   if self.nodes[i].up and self.nodes[i].replica.is_leader]
        for leader in leaders:
            if leader != self.last_leader and leader[1] > (self.last_leader or (0, ZERO_BALLOT))[1]:
                self.last_leader = leader
                self.stats["leader_changes"] += 1
                self._log(f"n{leader[0]} LEADS at ballot {leader[1]}")

    def _live(self) -> list[Node]:
        return [self.nodes[i] for i in self.ids if self.nodes[i].up]

    def _agreed_leader(self) -> int | None:
        hints = {node.replica.leader_hint for node in self._live()}
        if len(hints) != 1:
            return None
        leader = hints.pop()
        if leader is None or not self.nodes[leader].up or not self.nodes[leader].replica.is_leader:
            return None
        return leader

    def _settled(self, leader: int) -> bool:
        if any(c.outstanding for c in self.clients):
            return False
        commit = self.nodes[leader].replica.commit_index
        top = max(self.chosen, default=0)
        return commit >= top and all(node.app.slot >= commit and not node.replica.is_learner
                                     for node in self._live())

    def _liveness_report(self, leader: int | None) -> str:
        parts = [(f"LIVENESS: not settled {self.cfg.heal_ticks} ticks after healing; "
                  f"agreed leader={leader}; highest committed slot={max(self.chosen, default=0)}")]
        for node in self._live():
            parts.append(f"  n{node.id}: {node.replica.status()} app.slot={node.app.slot}")
        for c in self.clients:
            if c.outstanding:
                parts.append(f"  client {c.id} pending seqs {sorted(c.outstanding)}")
        return "\n".join(parts)

    def _fail(self, problem: str) -> None:
        raise SimulationFailure(self.seed, self.cfg.nodes, self.now, problem,
                                list(self.trace or ()), self.cfg.rogue_every)

    def _log(self, line: str) -> None:
        if self.trace is not None:
            self.trace.append(f"t={self.now} {line}")


def _fmt(p: Proposal) -> str:
    return "NOOP" if p.is_noop else f"{p.client_id}#{p.seq}"


def run_seed(seed: int, nodes: int | None = None, *, trace: bool = False,
             replica_class: type[Replica] = Replica, **overrides) -> SimResult:
    """Run one seed (3 or 5 nodes by :func:`nodes_for_seed` unless given)."""
    config = SimConfig(nodes=nodes if nodes is not None else nodes_for_seed(seed),
                       replica_class=replica_class, **overrides)
    return Simulation(seed, config, trace=trace).run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dpq.paxos.sim",
        description="Run the deterministic Multi-Paxos simulation for one seed (or a range).")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--nodes", type=int, choices=(3, 5), default=None,
                        help="cluster size (default: 3 for even seeds, 5 for odd, as in the tests)")
    parser.add_argument("--count", type=int, default=1, help="run seeds seed .. seed+count-1")
    parser.add_argument("--rogue-every", type=int, default=0,
                        help="a rogue floods Prepares with rising ballots every N ticks (0: none)")
    parser.add_argument("--verbose", action="store_true",
                        help="print the whole trace, not only a failure's")
    args = parser.parse_args(argv)
    failures = 0
    for seed in range(args.seed, args.seed + args.count):
        nodes = args.nodes or nodes_for_seed(seed)
        config = SimConfig(nodes=nodes, rogue_every=args.rogue_every)
        sim = Simulation(seed, config, trace=args.verbose or args.count == 1)
        try:
            result = sim.run()
        except SimulationFailure as failure:
            failures += 1
            if failure.trace:
                print("\n".join(failure.trace))
            print(f"FAIL {failure}", flush=True)
            continue
        if args.verbose and sim.trace:
            print("\n".join(sim.trace))
        if args.count == 1:
            print(f"ok {result}")
    if args.count > 1:
        print(f"{args.count - failures}/{args.count} seeds passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
