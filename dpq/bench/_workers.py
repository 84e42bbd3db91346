"""The benchmark's producer and consumer processes, on the project's client library.

Each worker is a fresh interpreter (multiprocessing's ``spawn`` context: no
state inherited from the driver) running one asyncio loop with one client:

1. build the client, check that the target answers, report ``ready``;
2. wait for the shared start event, so that every worker of a phase starts at once;
3. do its share of the phase, copying its running count into its slot of the
   shared progress array every 50 ms and watching the stop event (the
   driver's "that is all", also sent on Ctrl-C, errors and timeouts);
4. report, in one message, what it measured: the CPU seconds of the whole
   process (every thread) from start to end, and per job or per call the
   clock readings the driver turns into rates and latencies.

Every timestamp is ``time.monotonic_ns()``: CLOCK_MONOTONIC is one clock for
all the processes of a machine, so a producer's reading and a consumer's can be
subtracted. The first 16 bytes of each payload are the job's send time (for a
paced producer: its scheduled time) and its sequence number; the rest is
filler from the worker's seeded generator.

Work kinds:

- :class:`Fill`: enqueue a fixed number of jobs as fast as possible, with
  ``enqueue_many`` calls of ``batch`` jobs, ``inflight`` calls at a time.
- :class:`Paced`: enqueue at a fixed rate for a fixed time, one ``submit``
  per job on a batching producer (the library gathers the jobs that arrive
  while earlier batches are in flight). Open loop: a job's latency counts from
  its scheduled time, so a producer that falls behind shows it in the
  latency instead of hiding it (no coordinated omission).
- :class:`Drain`: consume and ack until stopped, with ``run(handler,
  concurrency=...)``; the handler notes the delivery and acks the job itself,
  so the time of the last ack answered is known exactly.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import struct
import time
import traceback
from array import array
from dataclasses import dataclass
from typing import Any

from dpq import runtime

HEAD = struct.Struct(">qq")  # send (or scheduled) time in ns, sequence number
READY, DONE, ERROR = "ready", "done", "error"
PUBLISH_S = 0.05


@dataclass(frozen=True, slots=True)
class Fill:
    jobs: int
    batch: int
    inflight: int


@dataclass(frozen=True, slots=True)
class Paced:
    rate: float  # jobs/s of this producer
    seconds: float
    batch_size: int  # the batching producer's largest batch


@dataclass(frozen=True, slots=True)
class Drain:
    max_jobs: int  # per long-poll
    concurrency: int  # handlers at once (jobs held)
    wait_s: float  # long-poll wait


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    index: int  # slot in the progress array
    target: str  # the gateway's HOST:PORT
    queue: str
    seed: int
    payload_bytes: int
    work: Fill | Paced | Drain
    timeout_s: float  # the whole phase, at most

    @property
    def kind(self) -> str:
        return "consumer" if isinstance(self.work, Drain) else "producer"


def worker_main(spec: WorkerSpec, start, stop, progress, results) -> None:
    """The process's entry point: runs the work and puts ``(DONE|ERROR, index, ...)`` on
    ``results``."""
    # Ctrl-C reaches the whole process group: the driver alone handles it, and
    # tells the workers through the stop event, so they finish cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        out = runtime.run(_main(spec, start, stop, progress, results))
        results.put((DONE, spec.index, out))
    except KeyboardInterrupt:
        results.put((ERROR, spec.index, "interrupted"))
    except BaseException:  # noqa: BLE001 - the driver prints it and stops the phase
        results.put((ERROR, spec.index, traceback.format_exc()))


def _cpu_s() -> float:
    return time.process_time()  # every thread, in ns (os.times() counts 10-ms ticks)


class _Shared:
    """This worker's count, published to the progress array; the stop event, polled."""

    def __init__(self, spec: WorkerSpec, stop, progress) -> None:
        self.count = 0
        self.stopped = False
        self._index = spec.index
        self._stop = stop
        self._progress = progress
        self.on_stop = lambda: None

    async def publish(self) -> None:
        while True:
            self._progress[self._index] = self.count
            if not self.stopped and self._stop.is_set():
                self.stopped = True
                self.on_stop()
            await asyncio.sleep(PUBLISH_S)


async def _check_target(target: str) -> None:
    import grpc

    from dpq.v1 import queue_pb2, queue_pb2_grpc

    async with grpc.aio.insecure_channel(target) as channel:
        await queue_pb2_grpc.QueueStub(channel).ClusterInfo(queue_pb2.ClusterInfoRequest(),
                                                            timeout=10)


async def _main(spec: WorkerSpec, start, stop, progress, results) -> dict[str, Any]:
    from dpq.client import AsyncConsumer, AsyncProducer

    rng = random.Random(spec.seed)
    filler = rng.randbytes(spec.payload_bytes - HEAD.size)
    shared = _Shared(spec, stop, progress)
    work = spec.work
    if isinstance(work, Drain):
        client: Any = AsyncConsumer(spec.target, queue=spec.queue, wait=work.wait_s,
                                    max_jobs=work.max_jobs, lease=30.0)
        shared.on_stop = client.stop
        count = 0
    else:
        client = AsyncProducer(spec.target, batching=isinstance(work, Paced),
                               batch_size=work.batch_size if isinstance(work, Paced) else 500)
        count = work.jobs if isinstance(work, Fill) else round(work.rate * work.seconds)
    # Priorities drawn before the start, so the job stream is the seed's whatever the timing.
    priorities = bytes(rng.randint(1, 5) for _ in range(count))
    await _check_target(spec.target)
    results.put((READY, spec.index, os.getpid()))
    if not await asyncio.to_thread(start.wait, spec.timeout_s):
        raise TimeoutError(f"no start within {spec.timeout_s}s")
    publisher = asyncio.create_task(shared.publish())
    cpu0, t0 = _cpu_s(), time.monotonic_ns()
    try:
        if isinstance(work, Fill):
            out = await _fill(client, work, shared, priorities, filler, spec.queue)
        elif isinstance(work, Paced):
            out = await _paced(client, work, shared, priorities, filler, spec.queue, t0,
                               spec.timeout_s)
        else:
            out = await _drain(client, work, shared)
        cpu1, t1 = _cpu_s(), time.monotonic_ns()
    finally:
        publisher.cancel()
        await client.close()
    progress[spec.index] = shared.count
    if spec.kind == "producer":  # requests sent (retries included): messages per job
        out["requests"] = client.stats.requests
    out.update(kind=spec.kind, index=spec.index, pid=os.getpid(), cpu_s=cpu1 - cpu0,
               started_ns=t0, ended_ns=t1, stopped_early=shared.stopped and spec.kind != "consumer")
    return out


async def _fill(producer, work: Fill, shared: _Shared, priorities: bytes, filler: bytes,
                queue: str) -> dict[str, Any]:
    from dpq.client import JobSpec

    ids, call_ns, returned_ns, sizes = array("q"), array("q"), array("q"), array("q")
    starts = list(range(0, work.jobs, work.batch))
    next_call = 0

    async def lane() -> None:
        nonlocal next_call
        pack = HEAD.pack
        while next_call < len(starts) and not shared.stopped:
            first = starts[next_call]
            next_call += 1
            n = min(work.batch, work.jobs - first)
            t0 = time.monotonic_ns()
            specs = [JobSpec(pack(t0, first + k) + filler, priorities[first + k], queue)
                     for k in range(n)]
            got = await producer.enqueue_many(specs)
            t1 = time.monotonic_ns()
            ids.extend(got)
            call_ns.append(t1 - t0)
            returned_ns.append(t1)
            sizes.append(n)
            shared.count += n

    await asyncio.gather(*(lane() for _ in range(work.inflight)))
    return {"ids": ids, "call_latency_ns": call_ns, "call_returned_ns": returned_ns,
            "call_jobs": sizes, "errors": 0}


async def _paced(producer, work: Paced, shared: _Shared, priorities: bytes, filler: bytes,
                 queue: str, t0: int, timeout_s: float) -> dict[str, Any]:
    total = len(priorities)
    interval = 1e9 / work.rate
    ids, latency_ns, returned_ns = array("q"), array("q"), array("q")
    prios = array("b")  # each answered job's priority, beside its id (the ordering figure)
    errors: list[str] = []
    pack = HEAD.pack
    # Stop offering at the end of the window and a little more (a producer
    # starved of CPU catches up in bursts, and its lateness shows in the latency).
    last_offer = t0 + int((work.seconds * 1.25 + 1) * 1e9)

    def answered(due: int, priority: int, future: asyncio.Future[int]) -> None:
        now = time.monotonic_ns()
        if future.cancelled():
            errors.append("cancelled")
        elif future.exception() is not None:
            errors.append(repr(future.exception()))
        else:
            ids.append(future.result())
            prios.append(priority)
            returned_ns.append(now)
            latency_ns.append(now - due)
            shared.count += 1

    k = 0
    while k < total and not shared.stopped:
        now = time.monotonic_ns()
        if now > last_offer:
            break
        while k < total and t0 + k * interval <= now:
            due = t0 + int(k * interval)
            future = producer.submit(pack(due, k) + filler, priorities[k], queue)
            future.add_done_callback(lambda f, due=due, p=priorities[k]: answered(due, p, f))
            k += 1
        if k < total:
            # At least a millisecond: uvloop's timers have that resolution, and a
            # shorter sleep would return at once and spin.
            await asyncio.sleep(max(0.001, (t0 + k * interval - time.monotonic_ns()) / 1e9))
    offered_ns = time.monotonic_ns()
    await asyncio.wait_for(producer.flush(), max(1.0, timeout_s - (offered_ns - t0) / 1e9))
    return {"ids": ids, "priorities": prios, "latency_ns": latency_ns,
            "returned_ns": returned_ns, "offered": k,
            "scheduled": total, "offered_until_ns": offered_ns, "errors": len(errors),
            "first_errors": errors[:5]}


async def _drain(consumer, work: Drain, shared: _Shared) -> dict[str, Any]:
    from dpq.client import DpqError

    ids, delivered_ns, sent_ns = array("q"), array("q"), array("q")
    state = {"ack_errors": 0, "redeliveries": 0, "last_ack_ns": 0, "first_errors": []}
    unpack = HEAD.unpack_from

    async def handle(job) -> None:
        ids.append(job.id)
        delivered_ns.append(time.monotonic_ns())
        sent_ns.append(unpack(job.payload)[0])
        if job.attempt > 1:
            state["redeliveries"] += 1
        try:
            await job.ack()
        except DpqError as exc:
            state["ack_errors"] += 1
            if len(state["first_errors"]) < 5:
                state["first_errors"].append(repr(exc))
            return
        state["last_ack_ns"] = time.monotonic_ns()
        shared.count += 1

    summary = await consumer.run(handle, concurrency=work.concurrency, handle_signals=False)
    return {"ids": ids, "delivered_ns": delivered_ns, "sent_ns": sent_ns, "acked": shared.count,
            "errors": state["ack_errors"], "first_errors": state["first_errors"],
            "redeliveries": state["redeliveries"], "last_ack_ns": state["last_ack_ns"],
            "run_summary": {"handled": summary.handled, "failed": summary.failed,
                            "refused": summary.refused, "given_back": summary.given_back}}
