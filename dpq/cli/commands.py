"""The bodies of ``dpq enqueue``, ``dpq consume``, ``dpq stats``, ``dpq status`` and
``dpq certs init`` (``dpq job …`` and ``dpq queue …``: ``manage.py``).

Each takes parsed arguments and an output stream and returns an exit code; a
failure the user can act on is one line on stderr (``CommandError``).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Iterable
from typing import TextIO

import grpc

from dpq.cli.progress import Progress
from dpq.security.errors import TlsError
from dpq.v1 import queue_pb2, queue_pb2_grpc


class CommandError(Exception):
    """One line for the user; the command exits non-zero."""


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def duration(text: str) -> float:
    """``"250ms"``, ``"5s"``, ``"2m"``, ``"1h"``, ``"1d"`` or plain seconds → seconds."""
    match = _DURATION.match(text)
    if not match:
        # argparse shows this message as it is (a ValueError it would replace)
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration like 250ms, 5s, 2m, 1h or 1d")
    return float(match.group(1)) * _UNIT_S[match.group(2)]


def span(seconds: float) -> str:
    """A length of time in its largest whole unit: ``45s``, ``10m``, ``2h``, ``3d``."""
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


#: Where ``dpq up --tls`` keeps the material, relative to where it was started.
UP_TLS_DIR = os.path.join("dpq-data", "tls")
#: Written beside that folder by a ``dpq up`` without ``--tls`` (a plaintext
#: cluster): the folder is then not looked for.
TLS_OFF_FILE = "tls-off"


def tls_dir_for(flag: str | None) -> str | None:
    """The TLS folder a client command uses: ``--tls-dir``, else ``$DPQ_TLS_DIR`` (empty:
    none), else ``./dpq-data/tls`` if ``dpq up --tls`` made it here (and no later
    plaintext ``dpq up`` left ``./dpq-data/tls-off``); None: plaintext."""
    if flag:
        return flag
    if "DPQ_TLS_DIR" in os.environ:
        return os.environ["DPQ_TLS_DIR"] or None
    off = os.path.join(os.path.dirname(UP_TLS_DIR), TLS_OFF_FILE)
    return UP_TLS_DIR if os.path.isdir(UP_TLS_DIR) and not os.path.exists(off) else None


def _rpc_error(exc: grpc.RpcError, target: str, tls_dir: str | None = None) -> CommandError:
    code = exc.code()
    if code == grpc.StatusCode.UNAVAILABLE:
        how = (f"with TLS from {tls_dir}" if tls_dir else "in plaintext") + \
            "; is `dpq up` running, is --target / DPQ_ADDR right, does the cluster use TLS?"
        return CommandError(f"{target} is not answering ({exc.details()}) {how}")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return CommandError(f"{target} refused the call ({exc.details()}): give the cluster's "
                            "TLS folder with --tls-dir or DPQ_TLS_DIR")
    return CommandError(f"{code.name}: {exc.details()}")


def _stub(target: str, tls_dir: str | None) -> tuple[grpc.Channel, queue_pb2_grpc.QueueStub]:
    from dpq.client._endpoints import security

    try:
        credentials = security(tls_dir) if tls_dir else None
    except TlsError as exc:
        raise CommandError(str(exc)) from None
    channel = (grpc.secure_channel(target, credentials) if credentials is not None
               else grpc.insecure_channel(target))
    return channel, queue_pb2_grpc.QueueStub(channel)


# ------------------------------------------------------------------ enqueue

#: ``dpq enqueue`` sends this many jobs per ``enqueue_many`` (ids printed after each).
ENQUEUE_PART = 5_000

def enqueue(target: str, payloads: Iterable[str], *, queue: str, priority: int,
            delay_s: float | None, dedup_key: str | None, out: TextIO,
            tls_dir: str | None = None) -> int:
    from dpq.client import DpqError, JobSpec, Producer

    specs = [JobSpec(payload=p, priority=priority, queue=queue, delay=delay_s,
                     dedup_key=dedup_key) for p in payloads]
    if not specs:
        raise CommandError("nothing to enqueue: give payloads as arguments or lines on stdin")
    done = 0
    # Big inputs go in parts, each part's ids printed as it is enqueued, with a count on a
    # terminal's stderr meanwhile.
    big = len(specs) > ENQUEUE_PART
    with Progress(f"enqueuing {len(specs)} jobs", enabled=None if big else False) as progress:
        try:
            with Producer(target, tls_dir=tls_dir) as producer:
                for start in range(0, len(specs), ENQUEUE_PART):
                    ids = producer.enqueue_many(specs[start:start + ENQUEUE_PART])
                    progress.clear()
                    for job_id in ids:
                        print(job_id, file=out)
                    done += len(ids)
                    progress.update(f"enqueued {done} of {len(specs)} jobs")
        except (DpqError, TlsError) as exc:
            if done:
                raise CommandError(f"{exc} (the first {done} of {len(specs)} jobs were "
                                   "enqueued: their ids are printed)") from exc
            raise CommandError(str(exc)) from exc
    return 0


# ------------------------------------------------------------------ consume

#: How long ``dpq consume`` waits at most for every node's first answer.
GATHER_S = 5.0
#: ``dpq consume`` says what it waits for after this long without a job (on a terminal).
CONSUME_QUIET_S = 2.0


def consume(target: str, *, queue: str, count: int | None, ack: bool, wait_s: float,
            lease_s: float, out: TextIO, tls_dir: str | None = None) -> int:
    from dpq.client import Consumer, DpqError

    seen = 0
    want = f" of {count}" if count is not None else "; Ctrl-C stops"
    # On a terminal's stderr, after a while without a job: what it waits for.
    waiting = Progress(f"waiting for jobs on queue {queue!r} (0{want})", delay_s=CONSUME_QUIET_S)
    try:
        with waiting, Consumer(target, queue=queue, wait=min(wait_s, 30.0), lease=lease_s,
                               max_jobs=min(count or 10, 100), tls_dir=tls_dir) as consumer:
            # Every node's ready jobs first, so the first line is the cluster's most urgent.
            consumer._gather(min(wait_s, GATHER_S))
            for job in consumer:
                waiting.clear()
                print(f"{job.id}\tp{job.priority}\tattempt {job.attempt}\t{job.queue}\t"
                      f"{job.payload.decode('utf-8', 'backslashreplace')}", file=out, flush=True)
                if ack:
                    job.ack()
                else:
                    job.nack()
                seen += 1
                if count is not None and seen >= count:
                    break
                waiting.update(f"waiting for jobs on queue {queue!r} ({seen}{want})")
    except KeyboardInterrupt:
        return 130
    except (DpqError, TlsError) as exc:
        raise CommandError(str(exc)) from exc
    return 0


# -------------------------------------------------------------------- stats

def stats(target: str, *, queue: str, out: TextIO, tls_dir: str | None = None) -> int:
    channel, stub = _stub(target, tls_dir)
    with channel:
        try:
            queues = stub.Stats(queue_pb2.StatsRequest(queue=queue), timeout=10).queues
        except grpc.RpcError as exc:
            raise _rpc_error(exc, target, tls_dir) from exc
    rows = [["queue", "p1", "p2", "p3", "p4", "p5", "ready", "delayed", "leased", "dead",
             "cancelled", "paused", "limits"]]
    now_us = time.time_ns() // 1000
    for q in queues:
        ready = list(q.ready_by_priority) + [0] * (5 - len(q.ready_by_priority))
        rows.append([q.queue, *map(str, ready), str(sum(ready)), str(q.delayed), str(q.leased),
                     str(q.dead), str(q.cancelled), _paused(q, now_us), limits(q.config)])
    if len(rows) == 1:
        print("no jobs in any queue" if not queue else f"queue {queue!r} holds no jobs", file=out)
        return 0
    _table(rows, out)
    return 0


def limits(config: queue_pb2.QueueConfig) -> str:
    """A queue's settings in a few words ("-": none): ``in-flight<=50 200/s weights:2``."""
    parts = []
    if config.max_in_flight:
        parts.append(f"in-flight<={config.max_in_flight}")
    if config.max_rate_per_s:
        parts.append(f"{config.max_rate_per_s:g}/s")
    if config.fairness_weights:
        parts.append(f"weights:{len(config.fairness_weights)}")
    if config.max_attempts:
        parts.append(f"attempts:{config.max_attempts}")
    return " ".join(parts) or "-"


def _paused(q: queue_pb2.QueueStats, now_us: int) -> str:
    if not q.paused:
        return "no"
    if not q.paused_until_us:
        return "until resumed"
    return f"for {span(max(0, q.paused_until_us - now_us) / 1e6)}"


# ------------------------------------------------------------------- status

def status(target: str, *, out: TextIO, tls_dir: str | None = None) -> int:
    channel, stub = _stub(target, tls_dir)
    with channel:
        try:
            info = stub.ClusterInfo(queue_pb2.ClusterInfoRequest(), timeout=10)
        except grpc.RpcError as exc:
            raise _rpc_error(exc, target, tls_dir) from exc
    leader = next((n for n in info.nodes if n.node_id == info.leader_id), None)
    head = leader.commit_index if leader else 0
    print(f"leader: node {info.leader_id}" if info.leader_id else "leader: none elected",
          f"(ballot {leader.ballot})" if leader and leader.ballot else "",
          f"- answered by {info.served_by or target}", file=out)
    gateway = info.served_by == "gateway"
    header = ["node", "address", "role", "reachable", "health", "stall", "snapshot", "installed",
              "commit", "applied", "lag", "behind"]
    if gateway:
        header += ["cpu", "ready", "jobs/s", "waiting", "weight", "assigned"]
    rows = [header]
    for n in info.nodes:
        # A learner lost its disk and rejoined: it catches up and does not vote yet;
        # "behind" is the leader's count of committed slots it lacks.
        role = f"{n.role} (learner)" if n.learner else n.role
        # The longest event-loop stall, the last snapshot's slot and the snapshots installed
        # from a leader: a node knows its own; a gateway has every node's from its reports.
        known = gateway or n.node_id == info.node_id
        progress = ([f"{n.max_loop_stall_ms:.0f}ms", str(n.snapshot_slot),
                     str(n.snapshots_installed)] if known else ["-", "-", "-"])
        # SERVING on its gRPC health service: replayed, knows a live leader, caught up
        health = ("serving" if n.serving else "NOT serving") if known else "-"
        row = [str(n.node_id), n.address, role, "yes" if n.reachable else "NO", health, *progress,
               str(n.commit_index), str(n.applied_index), str(max(0, head - n.applied_index)),
               str(n.behind)]
        if gateway:
            row += [f"{n.cpu_percent:.0f}%", str(n.ready_depth), f"{n.consume_rate:.0f}",
                    str(n.waiting_consumers), str(n.balancer_weight), str(n.assigned_jobs)]
        rows.append(row)
    _table(rows, out)
    return 0


# -------------------------------------------------------------- certs init

def certs_init(directory: str, *, nodes: int, hosts: str, force: bool, days: int,
               out: TextIO) -> int:
    from dpq.security import certs

    try:
        paths = certs.init(directory, nodes, hosts, force=force, days=days)
    except certs.CertsError as exc:
        raise CommandError(str(exc)) from None
    for path in paths:
        print(path, file=out)
    print(f"TLS material for {nodes} node(s) written to {directory} (keys and token 0600).\n"
          f"Nodes and gateway: --tls-dir {directory}; clients: --tls-dir {directory} or "
          f"DPQ_TLS_DIR={directory} (they read ca.pem and token).", file=out)
    return 0


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) if i < 3 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))).rstrip(), file=out)


def stdin_lines() -> list[str]:
    return [line.rstrip("\n") for line in sys.stdin if line.strip()]
