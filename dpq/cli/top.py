"""``dpq top``: a live terminal view of the whole cluster, refreshed every second.

Each refresh asks the target (a gateway, by default the one ``dpq up`` starts)
for ClusterInfo and Stats; ``dpq.cli.topmodel`` turns two refreshes into rows,
rates and sparklines; this module polls and draws with ``rich``. Through a
gateway every node's CPU, balancer weight and ready depth are known; through a
node they show as "-". When the target cannot be reached, the frame says so and
the next refresh tries again. ``--once`` samples twice, one interval apart (so
rates are known), prints one frame and exits: 0, or 1 if the cluster could not
be reached.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TextIO

import grpc
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from dpq.cli import topmodel
from dpq.cli.topmodel import Frame, History, Sample
from dpq.v1 import queue_pb2, queue_pb2_grpc

INTERVAL_S = 1.0
CALL_TIMEOUT_S = 2.0
#: Reconnect quickly once the cluster is back (gRPC's default backoff grows to 2 min).
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 250),
                   ("grpc.max_reconnect_backoff_ms", 1000)]
#: Wide enough for every column when the output is not a terminal (--once in a script).
PLAIN_WIDTH = 120


class Poller:
    """Reads one :class:`Sample` per call from ``target``."""

    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.target = target
        self._clock = clock
        self._channel = (grpc.secure_channel(target, credentials, CHANNEL_OPTIONS)
                         if credentials is not None
                         else grpc.insecure_channel(target, CHANNEL_OPTIONS))
        self._stub = queue_pb2_grpc.QueueStub(self._channel)

    def sample(self) -> Sample:
        try:
            info = self._stub.ClusterInfo(queue_pb2.ClusterInfoRequest(),
                                          timeout=CALL_TIMEOUT_S)
            queues = self._stub.Stats(queue_pb2.StatsRequest(), timeout=CALL_TIMEOUT_S).queues
        except grpc.RpcError as exc:
            what = exc.details() or exc.code().name
            return Sample(self._clock(), error=f"{exc.code().name}: {what}")
        return Sample(self._clock(), info, list(queues))

    def close(self) -> None:
        self._channel.close()


# ------------------------------------------------------------------ drawing

def render(frame: Frame, *, interval_s: float = INTERVAL_S, stamp: str = ""):
    """The rich renderable of one frame."""
    title = Text.assemble(("dpq top", "bold"), f"  {frame.target}",
                          f"  cluster {frame.fingerprint}" if frame.fingerprint else "",
                          f"  {stamp}" if stamp else "")
    if frame.error and not frame.nodes:
        body = Text.assemble(
            ("cannot reach the cluster", "bold red"), f" at {frame.target}: {frame.error}\n",
            f"trying again every {interval_s:g}s (is `dpq up` running? --target, --tls-dir?)")
        return Panel(body, title=title, title_align="left")
    leader = frame.leader
    head = Text.assemble(
        "leader: ", (f"node {frame.leader_id}" if leader else "none elected",
                     "bold green" if leader else "bold red"),
        f" ({leader.address})" if leader else "",
        f"   answered by {frame.served_by}",
        f"   delayed {frame.delayed}  leased {frame.leased}  dead {frame.dead}")
    parts: list = [head]
    if frame.error:
        parts.append(Text(f"last refresh failed: {frame.error}", style="red"))
    parts += [_nodes_table(frame), _queues_table(frame)]
    return Panel(Group(*parts), title=title, title_align="left")


def _nodes_table(frame: Frame) -> Table:
    table = Table(title="nodes", title_justify="left", expand=False, box=None,
                  header_style="bold")
    for name, justify in (("node", "right"), ("address", "left"), ("role", "left"),
                          ("reachable", "left"), ("health", "left"), ("cpu", "right"),
                          ("weight", "right"),
                          ("ready", "right"), ("applied", "right"), ("lag", "right")):
        table.add_column(name, justify=justify)
    for n in frame.nodes:
        style = "bold" if n.node_id == frame.leader_id else ""
        table.add_row(
            str(n.node_id), n.address, Text(n.role, style="green" if n.role == "leader" else ""),
            Text("yes") if n.reachable else Text("NO", style="bold red"),
            "-" if n.serving is None else (
                Text("serving") if n.serving else Text("NOT serving", style="bold red")),
            "-" if n.cpu_percent is None else f"{n.cpu_percent:.0f}%",
            "-" if n.weight is None else str(n.weight),
            "-" if n.ready is None else str(n.ready), str(n.applied),
            Text(str(n.lag), style="yellow" if n.lag else ""), style=style)
    return table


def _queues_table(frame: Frame) -> Table | Text:
    if not frame.queues:
        return Text("no queues yet: `dpq enqueue` makes one", style="dim")
    table = Table(title="queues (rates in jobs/s)", title_justify="left", expand=False,
                  box=None, header_style="bold")
    for name, justify in (("queue", "left"), ("prio", "right"), ("ready", "right"),
                          ("oldest", "right"), ("in/s", "right"), ("out/s", "right"),
                          ("acked/s", "right"), ("deliveries, last minute", "left")):
        table.add_column(name, justify=justify, no_wrap=True)
    for q in frame.queues:
        table.add_row(
            q.queue + (" (paused)" if q.paused else ""), f"p{q.priority}", str(q.ready),
            topmodel.age(q.oldest_age_ms) if q.ready else "-",
            topmodel.per_second(q.enqueue_rate), topmodel.per_second(q.delivery_rate),
            topmodel.per_second(q.ack_rate), Text(q.spark, style="cyan"))
    return table


# ------------------------------------------------------------------ running

def run(target: str, tls_dir: str | None, *, once: bool, out: TextIO,
        interval_s: float = INTERVAL_S) -> int:
    from dpq.cli.commands import CommandError
    from dpq.client._endpoints import security
    from dpq.security.errors import TlsError

    try:
        credentials = security(tls_dir) if tls_dir else None
    except TlsError as exc:
        raise CommandError(str(exc)) from None
    poller = Poller(target, credentials)
    history = History()
    terminal = out.isatty()
    console = Console(file=out, width=None if terminal else PLAIN_WIDTH,
                      force_terminal=terminal or None, highlight=False)
    try:
        if once:
            return _once(poller, history, console, interval_s)
        with Live(console=console, auto_refresh=False, screen=terminal,
                  transient=False) as live:
            before: Sample | None = None
            while True:
                started = time.monotonic()
                now = poller.sample()
                live.update(render(topmodel.frame(target, before, now, history),
                                   interval_s=interval_s, stamp=time.strftime("%H:%M:%S")),
                            refresh=True)
                if now.info is not None:
                    before = now
                time.sleep(max(0.0, interval_s - (time.monotonic() - started)))
    except KeyboardInterrupt:
        return 0
    finally:
        poller.close()


def _once(poller: Poller, history: History, console: Console, interval_s: float) -> int:
    first = poller.sample()
    now = first
    if first.info is not None:
        time.sleep(interval_s)
        now = poller.sample()
    frame = topmodel.frame(poller.target, first if first.info is not None else None, now,
                           history)
    console.print(render(frame, interval_s=interval_s, stamp=time.strftime("%H:%M:%S")))
    return 0 if now.info is not None else 1
