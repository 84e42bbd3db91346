"""The asyncio loop that drives one Paxos replica.

It is the driver of the contract in ``dpq.paxos.core``: it feeds the replica
ticks, inbound messages and proposals, and for each ``Ready`` it

1. persists the snapshot, entries and hard state to the write-ahead log and
   fsyncs once if the Ready needs it,
2. sends the messages (only now: they vouch for what was just made durable),
3. hands the committed entries to the application, in slot order,
4. calls ``advance``.

Snapshots from peers (in a Promise or an InstallSnapshot) are checked with
``check_snapshot`` before the replica sees them: one that does not load is
dropped, so it is never saved (a saved junk snapshot would stop the node at
every restart).

After each Ready the driver drains the replica's notices and logs each (a
follower that is behind: one error line naming it and the gap). On
``now_voter`` (this node, rejoining after a lost disk, is a voter again) it runs
``on_voter`` (removes the "rejoining" marker, durably) before it sends anything
more: a crash before that restarts the node as a learner, which is safe.

Group commit falls out of the loop: while one fsync runs, messages and
proposals pile up in the inbox, and the next Ready carries all of them to the
disk in one fsync.

The fsync runs in a one-thread executor because asyncio has no asynchronous
file I/O and an fsync blocks for ~0.2 ms or more; that thread touches only the
WAL, and only while the loop awaits it, so the WAL still has one caller at a
time.

The node's own snapshots (:meth:`ReplicaDriver.compact`) are the exception the
WAL allows: the snapshot file is written in another thread while the log is in
use, and only the rename and the dropping of old segments wait for the
driver's turn.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

from dpq.buckets import Buckets
from dpq.paxos.core import Notice, Replica
from dpq.paxos.messages import InstallSnapshot, Message, Promise
from dpq.paxos.types import Entry, Proposal, Snapshot
from dpq.paxos.wal import StagedSnapshot, WriteAheadLog

log = logging.getLogger("dpq.paxos.driver")

#: (sender, slot) pairs of refused snapshots remembered so each is logged once.
_MAX_REMEMBERED = 1024
#: Histogram buckets (dpq.buckets) of the fsync time (s; it includes the hop to the
#: fsync thread) and of the entries one fsync made durable.
SYNC_SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                        0.1, 0.25, 0.5, 1.0)
SYNC_ENTRIES_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ReplicaDriver:
    """Owns a Replica and its WAL; talks to peers through ``send``."""

    def __init__(
        self,
        replica: Replica,
        wal: WriteAheadLog,
        send: Callable[[list[Message]], None],
        apply: Callable[[Entry], None],
        install: Callable[[Snapshot, object], None],
        after_apply: Callable[[], None],
        tick_s: float,
        check_snapshot: Callable[[bytes], object] | None = None,
        on_voter: Callable[[], None] | None = None,
    ) -> None:
        self.replica = replica
        self.wal = wal
        self._send = send
        self._apply = apply
        self._install = install
        self._after_apply = after_apply
        self._tick_s = tick_s
        #: Raises (ValueError) unless the bytes load as the application's snapshot;
        #: returns them loaded, handed to ``install`` with the snapshot.
        self._check_snapshot = check_snapshot
        #: The last peer snapshot checked, and what checking it loaded.
        self._loaded: tuple[Snapshot, object] | None = None
        #: Blocking (an fsync): run in the WAL's thread when this node votes again.
        self._on_voter = on_voter
        self._refused: set[tuple[int, int]] = set()
        self.refused_snapshots = 0
        self._inbox: deque[Message] = deque()
        #: Snapshots written to disk, waiting for the driver's turn to be kept.
        self._staged: deque[tuple[StagedSnapshot, asyncio.Future[bool]]] = deque()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dpq-fsync")
        self._stopping = False
        self.leader_changed = asyncio.Condition()
        self._last_leader: int | None = None
        # Observed batch sizes (for the benchmark): entries per fsync.
        self.synced_entries = 0
        self.syncs = 0
        #: For metrics: fsync durations (s), entries per fsync, leaders seen change.
        self.sync_seconds = Buckets(SYNC_SECONDS_BUCKETS)
        self.sync_entries = Buckets(SYNC_ENTRIES_BUCKETS)
        self.leader_changes = 0

    # ------------------------------------------------------------------ inputs

    def deliver(self, messages: Iterable[Message]) -> None:
        self._inbox.extend(messages)
        self._wake.set()

    def propose(self, proposal: Proposal) -> None:
        """Hand a proposal to the replica; raises NotLeader / Overloaded."""
        self.replica.propose(proposal)
        self._wake.set()

    async def compact(self, snapshot: Snapshot) -> bool:
        """Save the application's ``snapshot`` and drop the log it covers.

        The file is written and fsynced in a thread of its own: a big snapshot
        takes a while, and neither the event loop nor the log's fsyncs may wait
        behind it. Making it the saved snapshot (a rename) and dropping the log
        happen in the driver's turn, between two Readies, so they never meet an
        append. False when a newer snapshot (from the leader) was saved meanwhile.
        """
        staged = await asyncio.to_thread(self.wal.stage_snapshot, snapshot)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._staged.append((staged, done))
        self._wake.set()
        return await done

    async def _keep_staged(self) -> None:
        while self._staged:
            staged, done = self._staged.popleft()
            try:
                kept = await self._in_thread(self.wal.keep_snapshot, staged)
                if kept:
                    self.replica.compact(staged.snapshot)
                    await self._in_thread(self.wal.compact, staged.snapshot.slot)
            except Exception as exc:  # noqa: BLE001 - the caller decides (the node stops)
                if not done.done():
                    done.set_exception(exc)
            else:
                if not done.done():
                    done.set_result(kept)

    # ------------------------------------------------------------------- loops

    async def run(self) -> None:
        ticker = asyncio.create_task(self._tick_forever(), name="paxos-ticker")
        try:
            while not self._stopping:
                await self._wake.wait()
                # One turn of the loop first: proposals and messages that are
                # arriving right now join this Ready (and its one fsync).
                await asyncio.sleep(0)
                self._wake.clear()
                await self._process()
        finally:
            ticker.cancel()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self.wal.close()

    async def _tick_forever(self) -> None:
        while True:
            await asyncio.sleep(self._tick_s)
            self.replica.tick()
            self._wake.set()

    async def _process(self) -> None:
        replica, inbox = self.replica, self._inbox
        await self._keep_staged()
        while True:
            while inbox:
                message = inbox.popleft()
                if self._check_snapshot is None or await self._snapshot_loads(message):
                    replica.step(message)
            if not replica.has_ready():
                break
            rd = replica.ready()
            await self._notices()
            if rd.snapshot is not None:
                await self._in_thread(self.wal.save_snapshot, rd.snapshot)
            if rd.entries:
                self.wal.append_entries(rd.entries)
            if rd.hard_state is not None:
                self.wal.append_hard_state(rd.hard_state)
            if rd.must_sync:
                started = time.perf_counter()
                await self._in_thread(self.wal.sync)
                self.sync_seconds.observe(time.perf_counter() - started)
                self.syncs += 1
                self.synced_entries += len(rd.entries)
                self.sync_entries.observe(len(rd.entries))
            if rd.messages:
                self._send(rd.messages)
            if rd.snapshot is not None:
                checked, self._loaded = self._loaded, None
                loaded = checked[1] if checked and checked[0] is rd.snapshot else None
                self._install(rd.snapshot, loaded)
            for entry in rd.committed:
                self._apply(entry)
            replica.advance(rd)
            self._loaded = None  # a checked snapshot not installed by now never will be
            if rd.committed or rd.snapshot is not None:
                self._after_apply()
        await self._notices()
        await self._note_leader()

    async def _notices(self) -> None:
        for notice in self.replica.take_notices():
            log_notice(notice)
            if notice.kind == "now_voter" and self._on_voter is not None:
                await self._in_thread(self._on_voter)

    async def _snapshot_loads(self, message: Message) -> bool:
        """False (and one error line) for a message whose snapshot does not load.

        Loading a big snapshot takes seconds: it runs in a thread, so the event
        loop keeps serving (the thread and the loop share the GIL by turns)."""
        if not isinstance(message, (Promise, InstallSnapshot)) or message.snapshot is None:
            return True
        snap = message.snapshot
        if snap.slot <= self.replica.commit_index:
            return True  # the replica will not install it: no need to load it
        try:
            self._loaded = (snap, await asyncio.to_thread(self._check_snapshot, snap.data))
        except Exception as exc:  # noqa: BLE001 - whatever the check raises, it is unusable
            self.refused_snapshots += 1
            key = (message.src, snap.slot)
            if key not in self._refused:
                if len(self._refused) < _MAX_REMEMBERED:
                    self._refused.add(key)
                log.error("dropped a %s from node %d: its snapshot at slot %d does not load "
                          "(%d bytes): %s", type(message).__name__, message.src, snap.slot,
                          len(snap.data), exc)
            return False
        return True

    async def _in_thread(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _note_leader(self) -> None:
        leader = self.replica.leader_hint
        if leader != self._last_leader:
            self._last_leader = leader
            self.leader_changes += 1
            log.info("leader is now %s (ballot %s)", leader, self.replica.promised)
            async with self.leader_changed:
                self.leader_changed.notify_all()


def log_notice(notice: Notice) -> None:
    """One line per notice: what an operator must know about a replica's progress."""
    kind, node, had, has = notice
    if kind == "follower_behind":
        log.error("node %d is behind: it holds slot %d, the leader had recorded %d; "
                  "catching it up", node, has, had)
    elif kind == "learner":
        log.warning("node %d rejoins as a non-voting learner (holds slot %d); it votes again "
                    "once it holds slot %d", node, has, had)
    elif kind == "voter_proposed":
        log.info("node %d has caught up: proposed that it votes again (slot %d)", node, had)
    elif kind == "voter_again":
        log.warning("node %d votes again (slot %d)", node, had)
    elif kind == "now_voter":
        log.warning("this node (%d) has caught up after rejoining and votes again (slot %d)",
                    node, had)
    else:
        log.info("paxos notice %s: node %d (%d, %d)", kind, node, had, has)
