"""What a job really costs a node's memory, to set ``dpq.queue.jobs.JOB_OVERHEAD``.

Builds N jobs through the real path (``QueueState.apply`` of stamped Enqueue
batches, 1,000 jobs per slot, this node owning every job so each one also has
an entry in its ``OwnedJobs`` heap) and reads the process's RSS (psutil)
before and after. Prints the RSS growth per job beside what ``held_bytes``
counts for it. One scenario per process, so one cannot reuse another's freed
memory::

    PYTHONPATH=. python bench/bench_held_bytes.py plain          # queue "q", empty payload
    PYTHONPATH=. python bench/bench_held_bytes.py names-and-keys # 128-char queue, 256-char keys
    PYTHONPATH=. python bench/bench_held_bytes.py leased         # plain, then every job leased
    PYTHONPATH=. python bench/bench_held_bytes.py queues         # one job per queue, 100,000 queues
"""

from __future__ import annotations

import argparse
import gc
import os
import platform

import psutil

from dpq.paxos.types import Proposal
from dpq.queue.commands import batch_of, stamp
from dpq.queue.owned import OwnedJobs
from dpq.queue.state import QueueState
from dpq.v1 import log_pb2, queue_pb2

PER_SLOT = 1000
HOUR_US = 3600 * 10**6


def rss() -> int:
    gc.collect()
    return psutil.Process(os.getpid()).memory_info().rss


def enqueue(jobs: list[queue_pb2.NewJob], window_us: int) -> bytes:
    return batch_of(log_pb2.Command(enqueue=log_pb2.EnqueueCommand(
        jobs=jobs, owners=[1] * len(jobs), dedup_window_us=window_us)))


def run(scenario: str, n: int) -> None:
    state = QueueState(members=frozenset({1, 2, 3}))
    owned = OwnedJobs(1, state, 5_000_000)
    state.observer = owned
    slot = 0

    def apply(data: bytes) -> list:
        nonlocal slot
        slot += 1
        return state.apply(slot, Proposal("bench", slot, stamp(10**15 + slot, data)))

    window = HOUR_US if scenario == "names-and-keys" else 0
    queue = "q" * 128 if scenario == "names-and-keys" else "q"
    # Encode the batches first: they are the log's, not the state's.
    batches = []
    for start in range(0, n, PER_SLOT):
        jobs = [queue_pb2.NewJob(
            queue=f"queue-{i}" if scenario == "queues" else queue, priority=1 + i % 5,
            dedup_key=f"{i:0256d}" if window else "") for i in range(start,
                                                                     min(n, start + PER_SLOT))]
        batches.append(enqueue(jobs, window))
    before = rss()
    for data in batches:
        apply(data)
    if scenario == "leased":
        ids = list(state.jobs)
        for start in range(0, n, PER_SLOT):
            chunk = ids[start:start + PER_SLOT]
            apply(batch_of(log_pb2.Command(lease=log_pb2.LeaseCommand(
                node=1, job_ids=chunk, lease_ms=60_000, consumer_id="consumer-1",
                receipts=[(1 << 63) + i for i in chunk]))))
        assert all(j.receipt for j in state.jobs.values())
    batches.clear()
    grown = rss() - before
    print(f"{scenario}: {n:,} jobs on {platform.python_implementation()} "
          f"{platform.python_version()}, {platform.machine()}: RSS +{grown / 2**20:.0f} MiB, "
          f"{grown / n:.0f} B/job; held_bytes counts {state.held_bytes / n:.0f} B/job "
          f"({state.held_bytes / 2**20:.0f} MiB)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=["plain", "names-and-keys", "leased", "queues"])
    parser.add_argument("--jobs", type=int, default=None,
                        help="jobs to build (1,000,000; 100,000 for queues)")
    args = parser.parse_args()
    run(args.scenario, args.jobs or (100_000 if args.scenario == "queues" else 1_000_000))
