"""Replicas 1..n of the pure Paxos core and a hand-cranked network, for the core's
unit tests: every message in flight is a list item the test delivers, drops or
inspects, and each node's "driver" follows the contract (persist, send, apply,
advance) with an in-memory :class:`~support.paxos_disk.Disk`."""

from __future__ import annotations

import random
from collections.abc import Callable

from support.paxos_disk import Disk

from dpq.paxos import Config, Entry, Notice, Proposal, Ready, Replica, Role, Snapshot, is_config
from dpq.paxos.messages import Message


def prop(n: int, client: str = "c") -> Proposal:
    return Proposal(client, n, f"{client}{n}".encode())


def keep_all(message: Message) -> bool:
    return False


class Cluster:
    """Replicas 1..n, the network between them, and what each applied and noticed."""

    def __init__(self, n: int = 3, **config) -> None:
        self.ids = list(range(1, n + 1))
        self.config = {"election_ticks": 10, "heartbeat_ticks": 2, **config}
        self.disks = {i: Disk() for i in self.ids}
        self.nodes = {i: self._new(i) for i in self.ids}
        self.applied: dict[int, list[Entry]] = {i: [] for i in self.ids}
        self.snapshots: dict[int, list[Snapshot]] = {i: [] for i in self.ids}
        self.notices: dict[int, list[Notice]] = {i: [] for i in self.ids}
        self.net: list[Message] = []
        self.sent: list[Message] = []  # everything ever sent, for inspection
        #: Called after every step of a delivery (to check an invariant all along).
        self.watch: Callable[[], None] = lambda: None

    def _new(self, i: int, **kw) -> Replica:
        return Replica(Config(i, tuple(self.ids), **self.config), random.Random(i), **kw)

    # ------------------------------------------------------------------ driving

    def drive(self, i: int) -> list[Ready]:
        """Run node i's driver loop until it has nothing to do."""
        node, readies = self.nodes[i], []
        while node.has_ready():
            rd = node.ready()
            self.notices[i].extend(node.take_notices())
            self.disks[i].persist(rd)
            self.net.extend(rd.messages)
            self.sent.extend(rd.messages)
            if rd.snapshot is not None:
                self.snapshots[i].append(rd.snapshot)
            self.applied[i].extend(rd.committed)
            node.advance(rd)
            readies.append(rd)
        self.notices[i].extend(node.take_notices())
        return readies

    def drive_all(self) -> None:
        for i in self.ids:
            self.drive(i)

    def deliver(self, drop: Callable[[Message], bool] = keep_all, rounds: int = 200) -> None:
        """Deliver everything in flight (and what it provokes) until the network is quiet."""
        self.drive_all()
        for _ in range(rounds):
            if not self.net:
                return
            batch, self.net = self.net, []
            for m in batch:
                if not drop(m):
                    self.nodes[m.dst].step(m)
                    self.drive(m.dst)
                    self.watch()
        raise AssertionError("network did not quiesce")

    def tick(self, i: int, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[i].tick()
        self.drive(i)

    def heartbeats(self, leader: int, times: int = 20,
                   drop: Callable[[Message], bool] = keep_all) -> None:
        for _ in range(times):
            self.tick(leader, self.config["heartbeat_ticks"])
            self.deliver(drop)

    # ---------------------------------------------------------------- elections

    def campaign(self, i: int) -> None:
        """Tick node i until it starts phase 1 (its randomised timeout, in [E, 2E))."""
        node = self.nodes[i]
        for _ in range(2 * self.config["election_ticks"]):
            node.tick()
            if node.role is Role.CANDIDATE:
                break
        assert node.role is Role.CANDIDATE
        self.drive(i)

    def elect(self, i: int, attempts: int = 3, drop: Callable[[Message], bool] = keep_all) -> None:
        """Campaign until elected (a Nack teaches the candidate a higher round)."""
        for _ in range(attempts):
            if not self.nodes[i].is_leader:
                self.campaign(i)
            self.deliver(drop)
            if self.nodes[i].is_leader:
                return
        raise AssertionError(f"node {i} was not elected")

    def silence(self, i: int) -> None:
        """Node i hears nothing for an election timeout: it no longer counts its
        leader as live (leader stickiness), and (its timeout drawn above that) has
        not campaigned yet."""
        for _ in range(self.config["election_ticks"]):
            self.nodes[i].tick()
        assert self.nodes[i].role is Role.FOLLOWER, f"node {i} campaigned: pick another node"
        self.drive(i)

    def depose(self, i: int) -> None:
        """Leader i hears no quorum for two check-quorum windows and steps down
        (what it sends meanwhile is lost)."""
        for _ in range(2 * self.config["election_ticks"]):
            self.nodes[i].tick()
        assert not self.nodes[i].is_leader
        self.drive(i)
        self.net = [m for m in self.net if m.src != i]

    # --------------------------------------------------------------- failures

    def restart(self, i: int, applied: int | None = None) -> None:
        self.nodes[i] = self._new(i, recovered=self.disks[i].recovered(), applied=applied)
        self.applied[i] = []
        self.net = [m for m in self.net if m.dst != i and m.src != i]

    def lose_disk(self, i: int) -> None:
        """Node i loses all its persistent state and restarts as a learner."""
        self.disks[i] = Disk()
        self.nodes[i] = self._new(i, learner=True)
        self.applied[i] = []
        self.snapshots[i] = []
        self.net = [m for m in self.net if m.dst != i and m.src != i]

    # ------------------------------------------------------------- inspection

    def values(self, i: int) -> list[Proposal]:
        """What node i applied, config entries (the core's own) left out."""
        return [e.proposal for e in self.applied[i] if not is_config(e.proposal)]

    def kinds(self, i: int, kind: str) -> list[Notice]:
        return [n for n in self.notices[i] if n.kind == kind]

    def sent_of(self, kind: type, src: int | None = None, dst: int | None = None) -> list:
        return [m for m in self.sent if type(m) is kind
                and (src is None or m.src == src) and (dst is None or m.dst == dst)]
