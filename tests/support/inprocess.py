"""Several nodes in one event loop, on a fake network and fake clocks.

Each :class:`InProcessNode` is built from the real parts the way
``dpq.node.node.Node`` wires them — a Replica and its ReplicaDriver over a real
WriteAheadLog (in a temporary folder), QueueState, OwnedJobs, Applier,
Snapshotter, a Proposer over a LeaderRouter, Dispatcher, WorkStealer,
NodeOperations, LeaderDuties — with three things replaced:

* the peer transport: :class:`FakeNet` hands each batch of Paxos messages to the
  destination's ``driver.deliver`` one loop turn later, and can cut a node off
  (:meth:`FakeNet.cut`, :meth:`FakeNet.heal`) or drop chosen messages
  (:meth:`FakeNet.drop_if`);
* the leader's ProposeStream and Propose RPCs: a follower's LeaderRouter gets a
  stand-in channel (:class:`FakeChannel`) that calls the leader's real
  ``ReplicationServicer`` methods in process (requests and responses still go
  through their protobuf bytes; an abort becomes the ``grpc.aio.AioRpcError`` a
  real call would raise);
* time: one :class:`~support.clock.FakeClock` (monotonic seconds) and one
  :class:`FakeWallClock` (job times, the leader's stamp) shared by every node.
  Paxos ticks come only from :meth:`InProcessCluster.tick` (the drivers' own
  tickers are set to an hour); ticking does not move either clock, and moving
  the clocks (:meth:`InProcessCluster.advance`) does not tick.

Nothing runs on its own timer: lease expiry (``dispatcher.expire_due()``),
stealing (``stealer.check()``) and dead-node reassignment
(``duties.reassign_dead()``) run when the test calls them, and PostgreSQL is
absent (LeaderDuties' writer never runs). What still takes real time: the
WAL's fsyncs (in the driver's thread), the proposer's cadence gap (≤ 2 ms) and its
retry back-off (20 ms, doubling) — so tests wait for outcomes with
:meth:`InProcessCluster.until`, never with fixed sleeps.

    async with InProcessCluster(tmp_path) as cluster:
        leader = await cluster.elect()
        [job_id] = await cluster.nodes[2].ops.enqueue([queue_pb2.NewJob(queue="q")])
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Self

import grpc
from support.clock import FakeClock

from dpq.node.applier import Applier
from dpq.node.config import QueuePolicy
from dpq.node.dispatcher import Dispatcher
from dpq.node.driver import ReplicaDriver
from dpq.node.leader import LeaderDuties
from dpq.node.operations import NodeOperations
from dpq.node.router import LeaderRouter
from dpq.node.snapshotter import Snapshotter
from dpq.node.stealer import WorkStealer
from dpq.paxos.core import Config, NotLeader, Replica
from dpq.paxos.messages import Message
from dpq.paxos.types import Entry, Snapshot
from dpq.paxos.wal import WriteAheadLog
from dpq.proposing.proposer import Proposer
from dpq.proposing.results import enqueued
from dpq.queue import snapshot as snapshots
from dpq.queue.owned import OwnedJobs
from dpq.queue.state import QueueState
from dpq.services.replication import ReplicationServicer
from dpq.v1 import log_pb2, queue_pb2

#: Where the fake wall clock starts: a plausible epoch time (2023-11), in microseconds.
WALL_START_US = 1_700_000_000_000_000
CLUSTER_ID = "in-process-cluster-id"
#: The drivers' own tickers wait this long: in effect never (the test ticks).
NO_TICKER_S = 3600.0


class FakeWallClock:
    """Wall-clock microseconds (``dpq.clock.WallClock``) that move only when the test says."""

    def __init__(self, start_us: int = WALL_START_US) -> None:
        self.now_us = start_us

    def __call__(self) -> int:
        return self.now_us

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"the fake wall clock does not go back ({seconds} s)")
        self.now_us += round(seconds * 1_000_000)


class FakeNet:
    """The peer network: batches delivered one loop turn after they are sent."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.drivers: dict[int, ReplicaDriver] = {}
        self._cut: set[int] = set()
        self._filters: list[Callable[[Message], bool]] = []
        self._heard: dict[tuple[int, int], float] = {}  # (receiver, sender) -> clock()
        self._tasks: set[asyncio.Task] = set()
        self.delivered = 0
        self.dropped = 0

    # ----------------------------------------------------------- partitions

    def cut(self, node_id: int) -> None:
        """Cut ``node_id`` off: nothing reaches it or leaves it (messages and Propose)."""
        self._cut.add(node_id)

    def heal(self, node_id: int) -> None:
        self._cut.discard(node_id)

    def connected(self, a: int, b: int) -> bool:
        return a == b or (a not in self._cut and b not in self._cut)

    def drop_if(self, predicate: Callable[[Message], bool]) -> Callable[[], None]:
        """Drop every Paxos message ``predicate`` picks (one-way loss); returns the undo."""
        self._filters.append(predicate)
        return lambda: self._filters.remove(predicate)

    def last_heard(self, receiver: int, sender: int) -> float:
        """When ``receiver`` last got a message from ``sender`` (the fake clock; 0: never)."""
        return self._heard.get((receiver, sender), 0.0)

    # -------------------------------------------------------------- traffic

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def sender(self, src: int) -> Callable[[list[Message]], None]:
        """The ``send`` of node ``src``'s driver."""
        return lambda messages: self.send(src, messages)

    def send(self, src: int, messages: Iterable[Message]) -> None:
        by_dst: dict[int, list[Message]] = {}
        for message in messages:
            if not self.connected(src, message.dst) or any(f(message) for f in self._filters):
                self.dropped += 1
                continue
            by_dst.setdefault(message.dst, []).append(message)
        for dst, batch in by_dst.items():
            task = asyncio.get_running_loop().create_task(self._deliver(src, dst, batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _deliver(self, src: int, dst: int, batch: list[Message]) -> None:
        await asyncio.sleep(0)
        driver = self.drivers.get(dst)
        if driver is None or not self.connected(src, dst):  # cut while on the way
            self.dropped += len(batch)
            return
        self._heard[(dst, src)] = self._clock()
        self.delivered += len(batch)
        driver.deliver(batch)


class _Context:
    """The little of ``grpc.aio.ServicerContext`` that ``Propose`` and ``ProposeStream`` use."""

    def __init__(self, caller: int) -> None:
        self._caller = caller

    def peer(self) -> str:
        return f"ipv4:127.0.0.1:{10_000 + self._caller}"

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        raise grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)

    async def send_initial_metadata(self, metadata) -> None:
        pass


class FakeChannel:
    """A channel from node ``caller`` to node ``callee``'s peer port, in process.

    Unary-unary (Propose) and stream-stream (ProposeStream) methods are served:
    each call runs the callee's real servicer method. A call across a cut fails
    as UNAVAILABLE, and so does one whose answer would cross a cut made while it
    ran (the answer is lost); a stream fails as a whole, as a broken connection.
    """

    def __init__(self, cluster: InProcessCluster, caller: int, callee: int) -> None:
        self._cluster, self._caller, self._callee = cluster, caller, callee

    def unary_unary(self, method: str, request_serializer, response_deserializer, **_):
        name = method.rsplit("/", 1)[-1]

        async def call(request, timeout: float | None = None, **_):
            net = self._cluster.net
            if not net.connected(self._caller, self._callee):
                raise _unavailable(f"node {self._callee} is cut off from node {self._caller}")
            servicer = self._cluster.nodes[self._callee].servicer
            decoded = type(request).FromString(request_serializer(request))
            handler = getattr(servicer, name)(decoded, _Context(self._caller))
            try:
                response = await asyncio.wait_for(handler, timeout)
            except TimeoutError:
                raise grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(),
                                           grpc.aio.Metadata(), "Deadline Exceeded") from None
            if not net.connected(self._caller, self._callee):
                raise _unavailable(f"the answer of node {self._callee} was lost")
            return response_deserializer(response.SerializeToString())

        return call

    def unary_stream(self, method: str, *args, **kwargs):
        return self._not_served(method)

    def stream_unary(self, method: str, *args, **kwargs):
        return self._not_served(method)

    def stream_stream(self, method: str, request_serializer, response_deserializer, **_):
        name = method.rsplit("/", 1)[-1]

        def call(request_iterator, **_):
            return _FakeStreamCall(self._cluster, self._caller, self._callee, name,
                                   request_iterator, request_serializer, response_deserializer)

        return call

    @staticmethod
    def _not_served(method: str):
        def call(*args, **kwargs):
            raise NotImplementedError(f"{method} is not served in process (Paxos goes by FakeNet)")
        return call


class _FakeStreamCall:
    """A bidirectional call from ``caller`` served by ``callee``'s real servicer method."""

    def __init__(self, cluster: InProcessCluster, caller: int, callee: int, name: str,
                 requests, serialize, deserialize) -> None:
        self._cluster, self._caller, self._callee = cluster, caller, callee
        self._name, self._requests = name, requests
        self._serialize, self._deserialize = serialize, deserialize

    def _check_connected(self, what: str) -> None:
        if not self._cluster.net.connected(self._caller, self._callee):
            raise _unavailable(f"{what} crossed the cut between nodes {self._caller} and "
                               f"{self._callee}")

    async def _decoded(self):
        async for request in self._requests:
            self._check_connected("a request")
            yield type(request).FromString(self._serialize(request))

    async def __aiter__(self):
        self._check_connected("the call")
        servicer = self._cluster.nodes[self._callee].servicer
        handler = getattr(servicer, self._name)(self._decoded(), _Context(self._caller))
        async for response in handler:
            self._check_connected("an answer")
            yield self._deserialize(response.SerializeToString())

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata()

    def done(self) -> bool:
        return False

    def cancel(self) -> bool:
        return True


def _unavailable(details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(),
                                grpc.aio.Metadata(), details)


class _Driver(ReplicaDriver):
    """The real driver, counting its turns so the harness can tell when it is idle."""

    busy = 0

    async def _process(self) -> None:
        self.busy += 1
        try:
            await super()._process()
        finally:
            self.busy -= 1

    @property
    def idle(self) -> bool:
        return not self.busy and not self._wake.is_set() and not self._inbox


class InProcessNode:
    """One node's parts, wired as ``dpq.node.node.Node`` wires them (no servers, no PostgreSQL)."""

    def __init__(self, cluster: InProcessCluster, node_id: int, data_dir: Path, *,
                 election_ticks: int, heartbeat_ticks: int, policy: QueuePolicy,
                 idle_s: float, dead_after_s: float, aging_step_ms: int) -> None:
        self.node_id = node_id
        peers = sorted(cluster.node_ids)
        clock, wall, net = cluster.clock, cluster.wall, cluster.net
        self.wal = WriteAheadLog.open(data_dir / "wal")
        self.state = QueueState(members=frozenset(peers))
        self.owned = OwnedJobs(node_id, self.state, aging_step_ms * 1000)
        self.state.observer = self.owned
        self.owned.rebuild()
        config = Config(node_id=node_id, peers=tuple(peers), election_ticks=election_ticks,
                        heartbeat_ticks=heartbeat_ticks)
        # Seeded: the same ticks elect the same leader on every run.
        self.replica = Replica(config, random.Random(node_id), recovered=self.wal.recovered)
        self.applier = Applier(self.state, self.owned)
        #: ``(slot, client_id, seq)`` of every entry applied here, in order (no-ops too).
        self.applied: list[tuple[int, str, int]] = []
        self.driver = _Driver(self.replica, self.wal, net.sender(node_id), self._apply,
                              self._install_snapshot, self._after_apply, tick_s=NO_TICKER_S,
                              check_snapshot=snapshots.validate)
        net.drivers[node_id] = self.driver
        addresses = {n: f"127.0.0.1:{10_000 + n}" for n in peers}
        self.router = LeaderRouter(
            self.driver, self.applier, addresses,
            lambda leader: FakeChannel(cluster, node_id, leader), cluster_id=CLUSTER_ID,
            election_timeout_s=election_ticks * 0.02,
            last_heard=lambda n: net.last_heard(node_id, n), clock=clock, wall_us=wall)
        self.proposer = Proposer(f"node-{node_id}", self.router, clock=clock)
        self.dispatcher = Dispatcher(node_id, self.state, self.owned, self.proposer,
                                     max_attempts=policy.max_attempts, clock=clock, wall_us=wall)
        reachable = lambda n: net.connected(node_id, n)
        self.ops = NodeOperations(node_id, peers, self.state, self.proposer, self.dispatcher,
                                  policy, reachable, self.applier.written,
                                  queue_pb2.ClusterInfoResponse,
                                  log_bytes=lambda: self.applier.log_bytes)
        self.stealer = WorkStealer(node_id, self.state, self.owned, self.dispatcher,
                                   self.proposer, idle_s=idle_s, clock=clock, wall_us=wall)
        # Its writer (PostgreSQL) never runs: only reassign_dead, when the test calls it.
        self.duties = LeaderDuties(node_id, peers, self.state, self.replica, self.proposer,
                                   reachable, "postgresql://127.0.0.1:1/unused",
                                   writer_interval_s=0.1, dead_after_s=dead_after_s, clock=clock)
        self.snapshotter = Snapshotter(self.state, self.driver, self.applier,
                                       every_slots=1 << 30, log_bytes_limit=1 << 40,
                                       saved_slot=0, on_done=self._task_done)
        self.servicer = ReplicationServicer(self.driver, None, self.router, None,
                                            self.ops.admit_forwarded, cluster_id=CLUSTER_ID)
        self.failed: BaseException | None = None
        self._tasks: list[asyncio.Task] = []

    def start(self) -> None:
        self.proposer.start()
        for name, coro in (("paxos-driver", self.driver.run()),
                           ("leader-watch", self._watch_leader())):
            task = asyncio.create_task(coro, name=f"node-{self.node_id}-{name}")
            task.add_done_callback(self._task_done)
            self._tasks.append(task)

    async def stop(self) -> None:
        await self.snapshotter.stop()
        self.driver.stop()
        await self.proposer.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.driver.close()

    # The node's callbacks, as in dpq.node.node.Node.

    def _apply(self, entry: Entry) -> None:
        self.applied.append((entry.slot, entry.proposal.client_id, entry.proposal.seq))
        self.applier.apply(entry)

    def _after_apply(self) -> None:
        self.applier.after_batch()
        self.dispatcher.wake(self.owned.take_woken())
        self.snapshotter.after_apply()

    def _install_snapshot(self, snapshot: Snapshot, loaded: object) -> None:
        self.applier.install(snapshot, loaded)
        self.snapshotter.installed(snapshot.slot)

    async def _watch_leader(self) -> None:
        async with self.driver.leader_changed:
            while True:
                await self.driver.leader_changed.wait()
                self.router.note_leader(self.replica.leader_hint)
                self.applier.fail_all(NotLeader(self.replica.leader_hint))

    def _task_done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.failed = task.exception()


class InProcessCluster:
    """``n`` nodes (ids 1..n) in this event loop; use as ``async with``."""

    def __init__(self, tmp_path: Path, n: int = 3, *, election_ticks: int = 10,
                 heartbeat_ticks: int = 2, policy: QueuePolicy | None = None,
                 idle_s: float = 0.5, dead_after_s: float = 1.5,
                 aging_step_ms: int = 5_000) -> None:
        self.node_ids = list(range(1, n + 1))
        self.clock = FakeClock()
        self.wall = FakeWallClock()
        self.net = FakeNet(self.clock)
        policy = policy or QueuePolicy()
        self.nodes = {
            i: InProcessNode(self, i, tmp_path / f"node{i}", election_ticks=election_ticks,
                             heartbeat_ticks=heartbeat_ticks, policy=policy, idle_s=idle_s,
                             dead_after_s=dead_after_s, aging_step_ms=aging_step_ms)
            for i in self.node_ids}

    async def __aenter__(self) -> Self:
        for node in self.nodes.values():
            node.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for node in self.nodes.values():
            await node.stop()
        for task in list(self.net._tasks):
            task.cancel()

    # ----------------------------------------------------------------- time

    def advance(self, seconds: float) -> None:
        """Move the monotonic and the wall clock together (no Paxos ticks)."""
        self.clock.advance(seconds)
        self.wall.advance(seconds)

    async def tick(self, times: int = 1, nodes: Sequence[int] | None = None) -> None:
        """Tick the replicas of ``nodes`` (default: all) ``times`` times, settling after each."""
        for _ in range(times):
            for node_id in nodes if nodes is not None else self.node_ids:
                node = self.nodes[node_id]
                node.replica.tick()
                node.driver.deliver(())  # wakes the driver for the Ready the tick made
            await self.settle()

    async def settle(self, timeout_s: float = 5.0) -> None:
        """Wait until no message is on the way and every driver is idle (twice in a row)."""
        deadline = time.monotonic() + timeout_s
        quiet = 0
        while quiet < 2:
            for _ in range(3):
                await asyncio.sleep(0)
            if self.net.in_flight == 0 and all(n.driver.idle for n in self.nodes.values()):
                quiet += 1
            else:
                quiet = 0
                if time.monotonic() > deadline:
                    raise AssertionError(f"the cluster did not settle within {timeout_s}s")
                await asyncio.sleep(0.0005)  # an fsync in a driver's thread
        self.check_failures()

    async def until(self, predicate: Callable[[], object], what: str,
                    timeout_s: float = 5.0) -> None:
        """Poll ``predicate`` (1 ms of real time apart) until it holds; fail naming ``what``."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            self.check_failures()
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout_s}s of real time: {what}")
            await asyncio.sleep(0.001)

    def check_failures(self) -> None:
        for node in self.nodes.values():
            if node.failed is not None:
                raise AssertionError(f"node {node.node_id}: a task died: {node.failed!r}")

    # ------------------------------------------------------------- leaders

    def leader(self, among: Iterable[int] | None = None) -> int | None:
        """The leader every node of ``among`` (default: those not cut off) agrees on."""
        among = [n for n in (among if among is not None else self.node_ids)
                 if n not in self.net._cut]
        hints = {self.nodes[n].replica.leader_hint for n in among}
        if len(hints) != 1:
            return None
        [leader] = hints
        if leader is None or leader not in among or not self.nodes[leader].replica.is_leader:
            return None
        return leader

    async def elect(self, max_ticks: int = 200) -> int:
        """Tick every node until the connected ones agree on a leader; its id."""
        for _ in range(max_ticks):
            leader = self.leader()
            if leader is not None:
                return leader
            await self.tick()
        raise AssertionError(f"no leader after {max_ticks} ticks")

    # ------------------------------------------------------------- helpers

    def followers(self) -> list[int]:
        leader = self.leader()
        return [n for n in self.node_ids if n != leader]

    async def enqueue_owned(self, via: int, owners: Sequence[int], queue: str = "q",
                            priorities: Sequence[int] | None = None) -> list[int]:
        """Enqueue one job per entry of ``owners`` (its owner), proposed by node ``via``."""
        priorities = priorities or [1] * len(owners)
        command = log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
            jobs=[queue_pb2.NewJob(queue=queue, priority=p, payload=f"job-{i}".encode())
                  for i, p in enumerate(priorities)],
            owners=list(owners)))
        return enqueued(await self.nodes[via].proposer.submit(command))

    async def dequeue(self, node_id: int, queue: str = "q", max_jobs: int = 1, wait_ms: int = 0,
                      lease_ms: int = 1000, consumer: str = "consumer") -> list[queue_pb2.Job]:
        """A consumer's long-poll on node ``node_id`` (through its NodeOperations)."""
        return await self.nodes[node_id].ops.dequeue(queue_pb2.DequeueRequest(
            queue=queue, max_jobs=max_jobs, wait_ms=wait_ms, lease_ms=lease_ms,
            consumer_id=consumer))

    def states(self) -> dict[int, QueueState]:
        return {i: node.state for i, node in self.nodes.items()}
