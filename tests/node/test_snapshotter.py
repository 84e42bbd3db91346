"""A node takes its snapshots a step at a time, with the event loop turning
between steps and commands applying meanwhile, and saves exactly the state of
the slot it began at (issue 11: a snapshot used to be taken on the loop)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from support.commands import MEMBERS, ack, enqueue, lease
from support.commands import Log as CommandLog

from dpq.node.applier import Applier
from dpq.node.driver import ReplicaDriver
from dpq.node.snapshotter import STEP_JOBS, Snapshotter
from dpq.paxos import Ballot, Config, Replica, Snapshot
from dpq.paxos.messages import Accept, InstallSnapshot
from dpq.paxos.types import Proposal
from dpq.paxos.wal import WriteAheadLog
from dpq.queue import snapshot as snapshots
from dpq.queue.commands import batch_of, stamp
from dpq.queue.owned import OwnedJobs
from dpq.queue.state import QueueState

LEADER = Ballot(3, 2)
JOBS = 10 * STEP_JOBS


def big_snapshot(slot: int) -> Snapshot:
    log = CommandLog()
    for i in range(JOBS // 500):
        log.run(i, enqueue(*[(1 + n % 5, b"p%d" % n) for n in range(500)]))
    log.state.applied_slot = slot
    return Snapshot(slot, snapshots.dump(log.state))


class Follower:
    """Node 1 of (1, 2, 3) with a real WAL, driver, applier and snapshotter; no network."""

    def __init__(self, directory: Path) -> None:
        self.wal = WriteAheadLog.open(directory)
        self.state = QueueState(members=MEMBERS)
        self.owned = OwnedJobs(1, self.state, 200_000)
        self.state.observer = self.owned
        self.applier = Applier(self.state, self.owned)
        self.replica = Replica(Config(1, (1, 2, 3)), random.Random(0),
                               recovered=self.wal.recovered)
        self.failures: list[BaseException] = []
        self.driver = ReplicaDriver(self.replica, self.wal, lambda messages: None,
                                    self.applier.apply, self._install, self.applier.after_batch,
                                    tick_s=60.0, check_snapshot=snapshots.validate)
        self.snapshotter = Snapshotter(self.state, self.driver, self.applier,
                                       every_slots=10**9, log_bytes_limit=10**12, saved_slot=0,
                                       on_done=self._done)
        self.seq = 0

    def _install(self, snapshot: Snapshot, loaded: object = None) -> None:
        self.applier.install(snapshot, loaded)
        self.snapshotter.installed(snapshot.slot)

    def _done(self, task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.failures.append(task.exception())

    def accept(self, first: int, *commands, commit: int) -> None:
        proposals = []
        for i, command in enumerate(commands):
            self.seq += 1
            proposals.append(Proposal("leader", self.seq, stamp((first + i) * 1000,
                                                                batch_of(command))))
        self.driver.deliver([Accept(2, 1, LEADER, first, tuple(proposals), commit)])


async def until(predicate, timeout_s: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


def test_a_snapshot_is_taken_in_steps_and_saves_the_slot_it_began_at(tmp_path) -> None:
    async def main() -> None:
        node = Follower(tmp_path / "wal")
        driver = asyncio.create_task(node.driver.run())
        node.driver.deliver([InstallSnapshot(2, 1, LEADER, big_snapshot(40), 40)])
        node.accept(41, lease(1, 2, 3), commit=41)
        await until(lambda: node.state.applied_slot == 41)
        expected = snapshots.dump(node.state)

        turns = 0  # of the event loop while the state is frozen (the dump is being written)

        async def count_turns() -> None:
            nonlocal turns
            while True:
                turns += node.state.frozen
                await asyncio.sleep(0)

        counter = asyncio.create_task(count_turns())
        taking = asyncio.create_task(node.snapshotter.take())
        await asyncio.sleep(0)
        # Commands go on meanwhile: an ack, a new job. The snapshot must not see them.
        node.accept(42, ack((1, 1)), enqueue((1, b"later")), commit=43)
        assert await taking is True
        counter.cancel()
        assert turns >= JOBS // STEP_JOBS - 1, f"the loop turned {turns} times during the dump"
        assert not node.state.frozen
        assert node.state.applied_slot == 43 and 1 not in node.state.jobs

        saved = node.wal.snapshot
        assert saved is not None and saved.slot == 41 and saved.data == expected
        assert node.snapshotter.saved_slot == 41 and node.snapshotter.taken == 1
        assert node.replica.status().first_slot == 42  # the log it covers was dropped
        node.driver.stop()
        await driver
        node.driver.close()
        return expected

    expected = asyncio.run(main())
    again = WriteAheadLog.open(tmp_path / "wal")
    assert again.recovered.snapshot == Snapshot(41, expected)
    assert [e.slot for e in again.recovered.entries] == [42, 43]
    again.close()


def test_a_snapshot_from_the_leader_during_a_dump_abandons_it(tmp_path) -> None:
    async def main() -> None:
        node = Follower(tmp_path / "wal")
        driver = asyncio.create_task(node.driver.run())
        node.driver.deliver([InstallSnapshot(2, 1, LEADER, big_snapshot(40), 40)])
        await until(lambda: node.state.applied_slot == 40)
        node.accept(41, lease(1), commit=41)
        await until(lambda: node.state.applied_slot == 41)
        taking = asyncio.create_task(node.snapshotter.take())
        await asyncio.sleep(0)
        newer = big_snapshot(90)
        node.driver.deliver([InstallSnapshot(2, 1, LEADER, newer, 90)])
        assert await taking is False
        assert node.wal.snapshot == newer and node.snapshotter.saved_slot == 90
        assert node.snapshotter.taken == 0
        # The new state is not frozen: a snapshot of it can be taken.
        assert await node.snapshotter.take() is False  # nothing newer than slot 90 to save
        node.driver.stop()
        await driver
        node.driver.close()

    asyncio.run(main())
