"""One ``dpq-node``: a list of services started together and stopped together.

Nothing here decides anything about jobs; it builds the parts, wires their
callbacks, and watches the background tasks so a task that dies is logged and
takes the node down instead of leaving it half-alive.

    client port ─▶ QueueServicer ─▶ NodeOperations ─▶ Proposer ─▶ LeaderRouter ─▶ (leader) driver
                                              │                                        │
                                        Dispatcher ◀── OwnedJobs ◀── QueueState ◀── Applier ◀─┘
    peer port ─▶ ReplicationServicer ─▶ ReplicaDriver ─▶ Transport ─gRPC─▶ peers' peer ports

Two servers: the client port (``--listen``) serves Queue, health and
reflection; the peer port (``--peer-listen``) serves Replication alone
(``dpq.node.planes``). The node's cluster identity (``dpq.node.identity``) is
settled before it is built, and carried by everything it sends to peers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random

from dpq.node import metrics as node_metrics
from dpq.node.applier import Applier
from dpq.node.config import NodeConfig
from dpq.node.dispatcher import Dispatcher
from dpq.node.driver import ReplicaDriver
from dpq.node.health import HealthReporter, Progress
from dpq.node.identity import Identity, IdentityError, remove_rejoin_marker
from dpq.node.identity import verify as verify_identity
from dpq.node.leader import LeaderDuties
from dpq.node.loopwatch import LoopWatch
from dpq.node.operations import NodeOperations
from dpq.node.planes import Credentials
from dpq.node.readiness import Readiness
from dpq.node.router import LeaderRouter
from dpq.node.snapshotter import Snapshotter
from dpq.node.stealer import WorkStealer
from dpq.node.ticker import Ticker
from dpq.node.transport import Transport
from dpq.paxos.core import Config, NotLeader, Replica
from dpq.paxos.types import Snapshot
from dpq.paxos.wal import WalError, WriteAheadLog
from dpq.proposing.proposer import Proposer
from dpq.queue import snapshot as snapshots
from dpq.queue.owned import OwnedJobs
from dpq.queue.state import QueueState
from dpq.services.admission import AdmissionGate
from dpq.services.channels import peer_channel
from dpq.services.metrics import MetricsEndpoint
from dpq.services.queue import QueueServicer
from dpq.services.replication import ReplicationServicer
from dpq.services.server import Server
from dpq.v1 import queue_pb2, queue_pb2_grpc, replication_pb2, replication_pb2_grpc

log = logging.getLogger("dpq.node")

HEALTH_SAMPLE_S = 0.25
#: How often the gRPC health status is brought up to date (``dpq.node.readiness``).
READINESS_CHECK_S = 0.1
#: Back-off of the identity check of a node that started while PostgreSQL was down.
VERIFY_BACKOFF_S = (1.0, 30.0)

SERVICE_NAMES = (
    queue_pb2.DESCRIPTOR.services_by_name["Queue"].full_name,
    replication_pb2.DESCRIPTOR.services_by_name["Replication"].full_name,
)


class StartError(Exception):
    """The node cannot start from its data folder; the message says what to do."""


class Node:
    def __init__(self, config: NodeConfig, dsn: str, identity: Identity,
                 credentials: Credentials | None = None) -> None:
        self.config = config
        self.dsn = dsn
        self.identity = identity
        self.credentials = credentials or Credentials()
        os.makedirs(config.data_dir, exist_ok=True)

        wal_dir = os.path.join(config.data_dir, "wal")
        try:
            self.wal = WriteAheadLog.open(wal_dir)
        except WalError as exc:
            raise StartError(f"dpq-node {config.node_id}: cannot open {wal_dir}: {exc}") from None
        recovered = self.wal.recovered
        self.state = QueueState(members=frozenset(config.peers))
        applied = 0
        if recovered.snapshot is not None:
            try:
                snapshots.load(recovered.snapshot.data, self.state)
            except Exception as exc:  # noqa: BLE001 - no traceback, no crash loop: say what to do
                self.wal.close()
                raise StartError(
                    f"dpq-node {config.node_id}: the saved snapshot "
                    f"{os.path.join(wal_dir, 'snapshot')} (slot {recovered.snapshot.slot}) "
                    f"cannot be loaded: {exc}. Move {wal_dir} aside (or wipe the data folder) "
                    "and start the node again with --rejoin to catch up from its peers") from None
            applied = recovered.snapshot.slot
        self.owned = OwnedJobs(config.node_id, self.state, config.aging_step_ms * 1000)
        self.state.observer = self.owned
        self.owned.rebuild()

        paxos = Config(node_id=config.node_id, peers=tuple(config.peers),
                       election_ticks=config.election_ticks, heartbeat_ticks=config.heartbeat_ticks)
        # The only randomness in the node: election timeouts, seeded per process.
        # A node rejoining after a lost disk votes only once it has caught up.
        self.replica = Replica(paxos, random.Random(), recovered=recovered, applied=applied,
                               learner=identity.rejoining)
        # NOT_SERVING until the log known committed at start is applied, and more.
        self.readiness = Readiness(self.replica.commit_index)
        if identity.rejoining:
            log.warning("node %d rejoins cluster %s as a non-voting learner: it votes again "
                        "once it has caught up", config.node_id, identity.fingerprint)
        self.transport = Transport(
            config.node_id, config.peers, cluster_id=identity.cluster_id,
            client_address=config.listen,
            channel=lambda address: peer_channel(address, self.credentials.peer_channel))
        self.applier = Applier(self.state, self.owned)
        self.driver = ReplicaDriver(self.replica, self.wal, self.transport.send, self.applier.apply,
                                    self._install_snapshot, self._after_apply,
                                    tick_s=config.tick_ms / 1000,
                                    check_snapshot=snapshots.validate,
                                    on_voter=lambda: remove_rejoin_marker(config.data_dir))
        self.router = LeaderRouter(
            self.driver, self.applier, self.transport.client_addresses, self._channel_to,
            cluster_id=identity.cluster_id,
            election_timeout_s=config.election_ticks * config.tick_ms / 1000,
            last_heard=lambda n: self.transport.links[n].last_heard)
        self.proposer = Proposer(f"node-{config.node_id}", self.router)
        self.dispatcher = Dispatcher(config.node_id, self.state, self.owned, self.proposer,
                                     max_attempts=config.policy.max_attempts)
        self.ops = NodeOperations(config.node_id, list(config.peers), self.state, self.proposer,
                                  self.dispatcher, config.policy, self._reachable,
                                  self.applier.written, self.cluster_info,
                                  log_bytes=lambda: self.applier.log_bytes,
                                  applied=self.applier.applied)
        self.stealer = WorkStealer(config.node_id, self.state, self.owned, self.dispatcher,
                                   self.proposer)
        self.loopwatch = LoopWatch()
        self.health = HealthReporter(config.node_id, self.replica, self.owned, self.dispatcher,
                                     lambda: self.state.applied_slot, self.counters,
                                     progress=self.progress)
        self.leader_duties = LeaderDuties(
            config.node_id, list(config.peers), self.state, self.replica, self.proposer,
            self._reachable, dsn, writer_interval_s=config.writer_interval_ms / 1000,
            dead_after_s=config.dead_after_s,
            postgres_timeout_s=config.postgres_timeout_ms / 1000)
        #: Periodic jobs: the leader proposes each schedule's ticks (dpq.node.ticker).
        self.ticker = Ticker(config.node_id, list(config.peers), self.state, self.replica,
                             self.proposer, self._reachable)
        self.snapshotter = Snapshotter(
            self.state, self.driver, self.applier, every_slots=config.snapshot_every_slots,
            log_bytes_limit=self.ops.log_bytes_limit, saved_slot=applied,
            on_done=self._task_done)
        self._server: Server | None = None
        self._peer_server: Server | None = None
        #: GET /metrics on --metrics-listen (dpq.node.metrics), while serving.
        self.metrics: MetricsEndpoint | None = None
        self.replication: ReplicationServicer | None = None
        self._tasks: list[asyncio.Task] = []
        self.port = 0
        self.peer_port = 0
        self.stopped = asyncio.Event()
        self.failed: BaseException | None = None

    # ------------------------------------------------------------- life cycle

    async def start(self) -> None:
        queue = QueueServicer(self.ops, AdmissionGate(self.config.admission))
        self.replication = replication = ReplicationServicer(
            self.driver, self.transport, self.router, self.health, self.ops.admit_forwarded,
            cluster_id=self.identity.cluster_id, mutual_tls=self.credentials.mutual_tls)
        self._server = Server(self.config.listen, [
            (SERVICE_NAMES[0], lambda s: queue_pb2_grpc.add_QueueServicer_to_server(queue, s)),
        ], credentials=self.credentials.client_server,
            interceptors=self.credentials.client_interceptors, limits=self.config.server_limits)
        self.port = self._server.port
        if self.config.peer_listen:
            self._peer_server = Server(self.config.peer_listen, [
                (SERVICE_NAMES[1],
                 lambda s: replication_pb2_grpc.add_ReplicationServicer_to_server(replication, s)),
            ], extras=False, credentials=self.credentials.peer_server,
                interceptors=self.credentials.peer_interceptors, limits=self.config.server_limits)
            self.peer_port = self._peer_server.port
            await self._peer_server.start()
        await self._server.start(serving=False)  # until caught up: _watch_readiness
        if self.config.metrics_listen:
            self.metrics = node_metrics.endpoint(self)
            await self.metrics.start(self.config.metrics_listen)
        self.transport.start()
        self.proposer.start()
        tasks = [("paxos-driver", self.driver.run()),
                 ("lease-expiry", self.dispatcher.run_expiry()),
                 ("leader-duties", self.leader_duties.run()),
                 ("schedule-ticker", self.ticker.run()),
                 ("work-stealer", self.stealer.run()),
                 ("health-sampler", self._sample_health()),
                 ("leader-watch", self._watch_leader()),
                 ("readiness", self._watch_readiness()),
                 ("loop-watch", self.loopwatch.run())]
        if not self.identity.verified:
            tasks.append(("identity-check", self._verify_identity()))
        for name, coro in tasks:
            task = asyncio.create_task(coro, name=name)
            task.add_done_callback(self._task_done)
            self._tasks.append(task)
        log.info("node %d of cluster %s serving clients on %s, peers on %s (%s)",
                 self.config.node_id, self.identity.fingerprint, self.config.listen,
                 self.config.peer_listen or "(no peer port)",
                 "TLS" if self.credentials.client_server is not None else "plaintext")

    async def stop(self, grace_s: float = 1.0) -> None:
        if self.stopped.is_set():
            return
        for server in (self._server, self._peer_server):
            if server is not None:
                await server.stop(grace_s)
        if self.metrics is not None:
            await self.metrics.stop()
        await self.snapshotter.stop()
        self.driver.stop()
        await self.proposer.stop()
        self.router.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.leader_duties.close()
        await self.transport.stop()
        self.driver.close()
        self.stopped.set()

    def _task_done(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("background task %s died: %r; stopping the node", task.get_name(), exc,
                      exc_info=exc, extra={"route": f"dpq.node.{task.get_name()}"})
            self.failed = exc
            asyncio.get_running_loop().create_task(self.stop(grace_s=0))

    # ---------------------------------------------------------------- wiring

    def servers(self) -> list[Server]:
        """The node's gRPC servers that are serving (client port, peer port)."""
        return [s for s in (self._server, self._peer_server) if s is not None]

    def _channel_to(self, node_id: int):
        return self.transport.links[node_id].channel

    def _reachable(self, node_id: int) -> bool:
        return self.transport.reachable(node_id, within_s=self.config.dead_after_s)

    def _after_apply(self) -> None:
        self.applier.after_batch()
        self.dispatcher.wake(self.owned.take_woken())
        self.snapshotter.after_apply()
        self.ticker.after_apply()

    def _install_snapshot(self, snapshot: Snapshot, loaded: object) -> None:
        self.applier.install(snapshot, loaded)
        self.snapshotter.installed(snapshot.slot)

    async def _verify_identity(self) -> None:
        """PostgreSQL was down at start: check the database's cluster id once it answers."""
        backoff = VERIFY_BACKOFF_S[0]
        while True:
            try:
                await verify_identity(self.dsn, self.identity)
            except IdentityError:
                raise  # another cluster's database: the node stops
            except Exception as exc:  # noqa: BLE001 - unreachable yet: try again later
                log.debug("identity check: PostgreSQL still unreachable: %r", exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, VERIFY_BACKOFF_S[1])
                continue
            log.warning("PostgreSQL answers again: cluster %s confirmed",
                        self.identity.fingerprint)
            return

    async def _sample_health(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_SAMPLE_S)
            self.health.sample()

    async def _watch_leader(self) -> None:
        # Proposals waited on here may never be chosen once the leader changes:
        # fail them so their proposers retry at the new leader at once.
        async with self.driver.leader_changed:
            while True:
                await self.driver.leader_changed.wait()
                self.router.note_leader(self.replica.leader_hint)
                self.applier.fail_all(NotLeader(self.replica.leader_hint))

    async def _watch_readiness(self) -> None:
        """The gRPC health status of the client port follows ``dpq.node.readiness``."""
        assert self._server is not None
        serving, served = None, False
        while True:
            verdict = self.readiness.assess(
                applied=self.state.applied_slot, leader_commit=self.replica.leader_commit,
                in_lease=self.replica.in_lease, leader=self.replica.leader_hint)
            if verdict.serving != serving:
                serving = verdict.serving
                await self._server.set_serving(serving)
                # Coming up is routine (INFO); losing or regaining service later is not.
                log.log(logging.WARNING if served else logging.INFO, "node %d health: %s (%s)",
                        self.config.node_id, "SERVING" if serving else "NOT_SERVING",
                        verdict.reason)
                served = served or serving
            await asyncio.sleep(READINESS_CHECK_S)

    # ----------------------------------------------------------------- views

    def counters(self) -> dict[str, float]:
        """Running totals: how big the batches are at every hop."""
        return {
            "paxos.syncs": self.driver.syncs,
            "paxos.synced_entries": self.driver.synced_entries,
            "proposer.proposals": self.proposer.proposals,
            "proposer.commands": self.proposer.commands,
            **{f"proposer.{kind}": float(n) for kind, n in self.proposer.kinds.items()},
            "writer.transactions": self.leader_duties.transactions,
            "writer.rows": self.leader_duties.rows,
            "dispatcher.delivered": self.dispatcher.delivered,
            "proposer.streams_opened": self.router.streams_opened,
            "consume.opened": self.ops.consumers.opened,
            "consume.pushes": self.ops.consumers.pushes,
            "consume.pushed_jobs": self.ops.consumers.pushed_jobs,
            "stealer.stolen": self.stealer.stolen,
            "ticker.proposed": self.ticker.proposed,
            "ticker.fired": self.ticker.fired,
            "state.applied_slot": self.state.applied_slot,
            "state.jobs": len(self.state.jobs),
            "state.payload_bytes": self.state.payload_bytes,
            "peers.refused_batches": self.transport.refused_batches,
            "peers.dropped_messages": self.transport.dropped_messages,
            "peers.refused_proposals": (self.replication.refused_proposals
                                        if self.replication is not None else 0),
            "state.held_bytes": self.state.held_bytes,
            **(self._server.messages.totals() if self._server is not None else {}),
            **(self._peer_server.messages.totals() if self._peer_server is not None else {}),
        }

    def progress(self) -> Progress:
        snapshot = self.replica.snapshot
        return Progress(self.loopwatch.max_stall_ms, snapshot.slot if snapshot else 0,
                        self.applier.snapshots_installed, self.readiness.serving)

    def cluster_info(self) -> queue_pb2.ClusterInfoResponse:
        status = self.replica.status()
        leader = status.leader_hint
        nodes = []
        for node_id, address in sorted(self.config.peers.items()):
            behind = 0
            progress = Progress()  # known for this node only (a gateway adds the others')
            if node_id == self.config.node_id:
                role = status.role.value
                commit, applied = status.commit, self.state.applied_slot
                learner = status.learner
                progress = self.progress()
            else:
                role = "leader" if node_id == leader else "follower"
                match = status.progress.get(node_id, (0, 0, False))[0]
                commit = applied = match
                # Known on the leader only: how far the follower lags what is committed.
                follower = status.followers.get(node_id)
                learner = follower is not None and follower.learner
                behind = follower.behind if follower is not None else 0
            nodes.append(queue_pb2.NodeInfo(
                node_id=node_id, address=self.transport.client_addresses.get(node_id, ""),
                peer_address=address, role=role, commit_index=commit, applied_index=applied,
                reachable=self._reachable(node_id), ballot=str(status.promised),
                behind=behind, learner=learner, **progress._asdict()))
        # Never the cluster id itself: on the client port only its fingerprint.
        return queue_pb2.ClusterInfoResponse(leader_id=leader or 0, nodes=nodes,
                                             served_by=f"node {self.config.node_id}",
                                             cluster_fingerprint=self.identity.fingerprint,
                                             node_id=self.config.node_id)

