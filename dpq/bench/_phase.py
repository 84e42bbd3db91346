"""One phase: start the worker processes, start them together, watch, stop, collect.

The driver spawns every worker (``spawn`` context), waits until each has its
client connected and says ``ready``, calls ``at_start`` (the snapshots of
counters and CPU), sets the start event, and then polls every 50 ms: the
progress array for the progress line, the results queue for finished workers,
the cluster for processes that died. The phase ends when every producer is
done and the consumers have acked everything enqueued (``consume_target``,
or the producers' total); then the stop event tells the consumers to finish.

Bounded everywhere: ``timeout_s`` for the whole phase, ``stall_s`` without any
progress, a fixed wait for the ready messages and for the processes to exit
(then terminate, then kill). The stop event is set and every process ended in
a ``finally``, so an error or Ctrl-C leaves nothing running.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_mod
import time
from collections.abc import Callable
from typing import Any

from dpq.bench._workers import DONE, ERROR, READY, WorkerSpec, worker_main

READY_TIMEOUT_S = 60.0
POLL_S = 0.05
EXIT_TIMEOUT_S = 15.0


class BenchError(RuntimeError):
    """The benchmark could not go on; the message says what happened."""


def run_phase(specs: list[WorkerSpec], *, consume_target: int | None, timeout_s: float,
              stall_s: float, at_start: Callable[[], None], check: Callable[[], None],
              on_progress: Callable[[int, int, int | None], None],
              ) -> tuple[int, dict[int, dict[str, Any]]]:
    """``(start time in monotonic ns, {worker index: its results})``.

    ``on_progress(enqueued, acked, target)`` is called on every poll; ``check``
    raises if the cluster is not well.
    """
    ctx = multiprocessing.get_context("spawn")
    start, stop = ctx.Event(), ctx.Event()
    progress = ctx.Array("q", len(specs), lock=False)
    results = ctx.Queue()
    procs = [ctx.Process(target=worker_main, args=(s, start, stop, progress, results),
                         name=f"dpq-bench-{s.kind}-{s.index}", daemon=True) for s in specs]
    producers = [s.index for s in specs if s.kind == "producer"]
    consumers = [s.index for s in specs if s.kind == "consumer"]
    done: dict[int, dict[str, Any]] = {}

    def receive(wait_s: float) -> tuple[str, int, Any] | None:
        try:
            kind, index, payload = results.get(timeout=wait_s)
        except queue_mod.Empty:
            return None
        if kind == ERROR:
            raise BenchError(f"{specs[index].kind} {index} failed:\n{payload}")
        if kind == DONE:
            done[index] = payload
        return kind, index, payload

    def dead() -> list[str]:
        return [f"{p.name} (exit code {p.exitcode})" for p, s in zip(procs, specs, strict=True)
                if p.exitcode is not None and s.index not in done]

    try:
        for p in procs:
            p.start()
        ready = 0
        deadline = time.monotonic() + READY_TIMEOUT_S
        while ready < len(specs):
            if time.monotonic() > deadline:
                raise BenchError(f"only {ready} of {len(specs)} workers ready after "
                                 f"{READY_TIMEOUT_S:.0f}s")
            msg = receive(0.2)
            if msg is not None and msg[0] == READY:
                ready += 1
            elif msg is None and dead():
                raise BenchError(f"worker(s) exited before starting: {', '.join(dead())}")
            check()
        at_start()
        t0 = time.monotonic_ns()
        start.set()
        deadline = time.monotonic() + timeout_s
        last_total, last_change = -1, time.monotonic()
        while len(done) < len(specs):
            receive(POLL_S)
            enq = sum(progress[i] for i in producers)
            acked = sum(progress[i] for i in consumers)
            producers_done = all(i in done for i in producers)
            target = consume_target
            if target is None and producers_done:
                target = sum(len(done[i]["ids"]) for i in producers)
            on_progress(enq, acked, target)
            if consumers and producers_done and target is not None and acked >= target:
                stop.set()
            now = time.monotonic()
            if enq + acked != last_total:
                last_total, last_change = enq + acked, now
            if now > deadline:
                raise BenchError(f"the phase did not end within {timeout_s:.0f}s "
                                 f"(enqueued {enq:,}, acked {acked:,} of {target or '?'})")
            if now - last_change > stall_s and not stop.is_set():
                raise BenchError(f"no progress for {stall_s:.0f}s "
                                 f"(enqueued {enq:,}, acked {acked:,} of {target or '?'})")
            if dead():
                raise BenchError(f"worker(s) died: {', '.join(dead())}")
            check()
        return t0, done
    finally:
        stop.set()
        start.set()  # workers still waiting for it see the stop at once
        end = time.monotonic() + EXIT_TIMEOUT_S
        for p in procs:
            if p.pid is None:
                continue
            while p.is_alive() and time.monotonic() < end:
                try:  # keep the queue drained, or a worker blocks on a big result
                    receive(0.05)
                except BenchError:
                    pass
            p.join(0)
            if p.is_alive():
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
        results.close()
        results.cancel_join_thread()
