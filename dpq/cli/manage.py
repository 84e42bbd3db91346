"""``dpq job …`` and ``dpq queue …``: managing jobs and queues, over :class:`dpq.client.Admin`.

::

    dpq job show ID                  dpq queue pause Q [--for 10m]
    dpq job list [--queue Q] [--state dead] [--priority P] [--limit N]
    dpq job cancel [ID…] [selector]  dpq queue resume Q
    dpq job retry [ID…] [selector]   dpq queue purge Q --yes
    dpq job priority P [ID…] [selector]
    dpq job explain ID               dpq queue config Q [--max-in-flight N] [--rate 200/s]

A selector is job ids and/or ``--queue``, ``--state``, ``--priority``,
``--dedup-prefix`` (all must match), or ``--all``. Every command prints an
aligned table or a few lines for people, or with ``--json`` one JSON document
for scripts. A refusal prints the server's message and exits 1.

The formatting functions are pure (they take ``now``) so they are tested
without a cluster.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TextIO

from dpq.cli import queueconfig
from dpq.cli.commands import CommandError, duration, span
from dpq.client._retry import RetryPolicy
from dpq.client.admin import (
    Admin,
    Affected,
    Explanation,
    JobInfo,
    JobPage,
    JobState,
    QueueConfig,
    QueuePause,
    Selector,
)
from dpq.client.errors import ServerError, UnauthenticatedError, UnavailableError
from dpq.security.errors import TlsError

#: The top-level commands this module serves.
COMMANDS = ("job", "queue")

#: A command line gives up sooner than a library client: a person is waiting.
CLI_RETRY = RetryPolicy(max_attempts=5, deadline=15.0)
CLI_TIMEOUT_S = 15.0

#: ``--state`` values (``unknown`` is the client's word for a state it cannot name).
STATES = [s.value for s in JobState if s is not JobState.UNKNOWN]

#: The longest last error a ``dpq job list`` row shows.
ERROR_COLUMN = 60
#: The longest payload ``dpq job show`` prints (``--json`` has all of it).
PAYLOAD_SHOWN = 1000


# ---------------------------------------------------------------- the parsers

def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                 client_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``job`` and ``queue`` to the ``dpq`` parser; ``client_options`` adds
    ``--target`` and ``--tls-dir`` to a parser."""
    job = commands.add_parser("job", help="show, list, cancel, retry, re-prioritize and "
                                          "explain jobs (dpq job ACTION --help)",
                              description="Show, list and change jobs.")
    jobs = job.add_subparsers(dest="action", required=True, metavar="ACTION")

    def leaf(group: argparse._SubParsersAction[argparse.ArgumentParser], parent: str,
             name: str, help: str) -> argparse.ArgumentParser:
        p = group.add_parser(name, help=help, description=help)
        client_options(p)
        p.add_argument("--json", action="store_true", help="print JSON, for scripts")
        p.set_defaults(full_command=f"{parent} {name}")
        return p

    show = leaf(jobs, "job", "show", "everything the cluster knows about one job")
    show.add_argument("job_id", type=int, metavar="ID")
    show.add_argument("--no-payload", action="store_true", help="leave the payload out")

    lst = leaf(jobs, "job", "list", "list jobs: ready and delayed ones first in delivery "
                                    "order, then the others oldest first")
    lst.add_argument("--queue", help="one queue (default: all)")
    lst.add_argument("--state", type=str.lower, choices=STATES, help="one state (default: any)")
    lst.add_argument("--priority", type=int, help="one priority, 1..5 (default: any)")
    lst.add_argument("--limit", type=int, default=100, help="jobs per page (100; at most 1000)")
    lst.add_argument("--page-token", default="", help="the next page of an earlier listing")

    cancel = leaf(jobs, "job", "cancel", "cancel the selected jobs (leased ones when their "
                                         "lease ends unacked)")
    _selector_options(cancel)
    retry = leaf(jobs, "job", "retry", "make the selected dead or cancelled jobs ready again")
    _selector_options(retry)
    priority = leaf(jobs, "job", "priority", "give the selected jobs priority P")
    priority.add_argument("new_priority", type=int, metavar="P", help="1 (most urgent) .. 5")
    _selector_options(priority, priority_help="only jobs that have this priority now")

    explain = leaf(jobs, "job", "explain", "why a job is not being worked on, and when it "
                                           "should be")
    explain.add_argument("job_id", type=int, metavar="ID")

    queue = commands.add_parser("queue", help="pause, resume, purge or configure a queue "
                                              "(dpq queue ACTION --help)",
                                description="Pause, resume, purge or configure a queue.")
    queues = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    pause = leaf(queues, "queue", "pause", "deliver nothing of queue Q (enqueues go on)")
    pause.add_argument("queue", metavar="Q")
    pause.add_argument("--for", dest="pause_for", type=duration, metavar="DURATION",
                       help="resume by itself after this long: 90s, 10m, 2h, 1d "
                            "(default: until dpq queue resume)")
    resume = leaf(queues, "queue", "resume", "deliver queue Q again")
    resume.add_argument("queue", metavar="Q")
    purge = leaf(queues, "queue", "purge", "remove every job of queue Q for good")
    purge.add_argument("queue", metavar="Q")
    purge.add_argument("--yes", action="store_true", help="yes, remove them (required)")
    queueconfig.add_options(leaf(queues, "queue", "config",
                                 "show or change queue Q's limits and fairness weights"))


def _selector_options(p: argparse.ArgumentParser,
                      priority_help: str = "only jobs of this priority (1..5)") -> None:
    p.add_argument("job_ids", type=int, nargs="*", metavar="ID", help="these jobs")
    p.add_argument("--queue", help="only jobs of this queue")
    p.add_argument("--state", type=str.lower, choices=STATES, help="only jobs in this state")
    p.add_argument("--priority", type=int, help=priority_help)
    p.add_argument("--dedup-prefix", help="only jobs whose dedup key starts with this")
    p.add_argument("--all", action="store_true",
                   help="every job of every queue (needed when nothing else selects)")


def selector_of(args: argparse.Namespace) -> Selector:
    """The selector the options name; refuses an empty one without ``--all``."""
    chosen = Selector(tuple(args.job_ids), args.queue, args.state, args.priority,
                      args.dedup_prefix, args.all)
    if chosen.empty and not chosen.all:
        raise CommandError("select jobs: give job ids, --queue, --state, --priority or "
                           "--dedup-prefix, or --all for every job of every queue")
    return chosen


# ---------------------------------------------------------------- running one

def run(args: argparse.Namespace, target: str, tls_dir: str | None, out: TextIO,
        now: datetime | None = None) -> int:
    """Run ``dpq job ACTION`` / ``dpq queue ACTION``; the exit code."""
    action = ACTIONS[(args.command, args.action)]
    if args.command == "queue" and args.action == "purge" and not args.yes:
        raise CommandError(f"this removes every job of queue {args.queue!r} for good: "
                           "add --yes to do it")
    if args.command == "job" and args.action in ("cancel", "retry", "priority"):
        selector_of(args)  # refuse an empty selector before connecting
    try:
        with Admin(target, tls_dir=tls_dir, retry=CLI_RETRY, timeout=CLI_TIMEOUT_S) as admin:
            result = action(admin, args)
    except (UnavailableError, UnauthenticatedError) as exc:
        raise CommandError(_reach_error(exc, target, tls_dir)) from None
    except ServerError as exc:
        raise CommandError(f"{exc.details} ({exc.code.name})") from None
    except (TlsError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    now = now or datetime.now(UTC)
    if args.json:
        print(json.dumps(to_json(result), indent=2, ensure_ascii=False), file=out)
    else:
        for line in human(args, result, now):
            print(line, file=out)
    return 0


def _reach_error(exc: ServerError, target: str, tls_dir: str | None) -> str:
    if isinstance(exc, UnauthenticatedError):
        return (f"{target} refused the call ({exc.details}): give the cluster's TLS folder "
                "with --tls-dir or DPQ_TLS_DIR")
    how = (f"with TLS from {tls_dir}" if tls_dir else "in plaintext") + \
        "; is `dpq up` running, is --target / DPQ_ADDR right, does the cluster use TLS?"
    return f"{target} is not answering ({exc.details}) {how}"


Result = JobInfo | JobPage | Affected | QueuePause | QueueConfig | Explanation

ACTIONS: dict[tuple[str, str], Callable[[Admin, argparse.Namespace], Result]] = {
    ("job", "show"): lambda admin, a: admin.get_job(a.job_id, payload=not a.no_payload),
    ("job", "list"): lambda admin, a: admin.list_jobs(a.queue, a.state, a.priority, a.limit,
                                                      a.page_token),
    ("job", "cancel"): lambda admin, a: admin.cancel_jobs(selector_of(a)),
    ("job", "retry"): lambda admin, a: admin.retry_jobs(selector_of(a)),
    ("job", "priority"): lambda admin, a: admin.set_priority(a.new_priority, selector_of(a)),
    ("job", "explain"): lambda admin, a: admin.explain_job(a.job_id),
    ("queue", "pause"): lambda admin, a: admin.pause_queue(a.queue, a.pause_for),
    ("queue", "resume"): lambda admin, a: admin.resume_queue(a.queue),
    ("queue", "purge"): lambda admin, a: admin.purge_queue(a.queue),
    ("queue", "config"): queueconfig.run,
}


# ----------------------------------------------------------------------- JSON

def to_json(value: Any) -> Any:
    """A result as plain JSON values: times in ISO 8601 (UTC), states and holds as
    their names, a payload as ``payload_base64`` and (when it is UTF-8) ``payload_text``."""
    if isinstance(value, JobInfo):
        fields = {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)
                  if f.name != "payload"}
        if value.payload is not None:
            fields["payload_base64"] = base64.b64encode(value.payload).decode("ascii")
            try:
                fields["payload_text"] = value.payload.decode("utf-8")
            except UnicodeDecodeError:
                fields["payload_text"] = None
        return fields
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


# ---------------------------------------------------------------- for people

def human(args: argparse.Namespace, result: Result, now: datetime) -> list[str]:
    """The lines a person reads for ``result``."""
    if isinstance(result, JobInfo):
        return show_lines(result, now)
    if isinstance(result, JobPage):
        return list_lines(result, now)
    if isinstance(result, Explanation):
        return explain_lines(result, now)
    if isinstance(result, QueuePause):
        return [pause_line(result, now)]
    if isinstance(result, QueueConfig):
        return queueconfig.lines(result)
    return [affected_line(args.action, result, args)]


def table(rows: Sequence[Sequence[str]], right: frozenset[int] = frozenset()) -> list[str]:
    """Rows as aligned columns (two spaces apart); the columns in ``right`` are
    right-aligned (numbers). No trailing spaces."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in rows]


def relative(when: datetime | None, now: datetime) -> str:
    """``"in 5m"``, ``"12s ago"``, ``"now"`` (within a second) or ``"-"``."""
    if when is None:
        return "-"
    delta = (when - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {span(delta)}" if delta > 0 else f"{span(delta)} ago"


def local(when: datetime | None, now: datetime) -> str:
    """A time in local time to the second, with how far from now it is."""
    if when is None:
        return "-"
    return f"{when.astimezone().strftime('%Y-%m-%d %H:%M:%S')} ({relative(when, now)})"


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _state(job: JobInfo) -> str:
    return f"{job.state.value} (cancel requested)" if job.cancel_requested else job.state.value


def show_lines(job: JobInfo, now: datetime) -> list[str]:
    """``dpq job show``: one line per field that is set."""
    rows: list[tuple[str, str]] = [
        ("job", str(job.job_id)), ("queue", job.queue), ("state", _state(job)),
        ("priority", str(job.priority)), ("attempt", str(job.attempt)),
        ("owner node", str(job.owner_node)), ("created", local(job.created_at, now)),
        ("due", local(job.ready_at, now)),
    ]
    if job.lease_expires_at is not None:
        rows.append(("lease ends", local(job.lease_expires_at, now)))
    if job.consumer_id:
        rows.append(("consumer", job.consumer_id))
    if job.finished_at is not None:
        rows.append(("finished", local(job.finished_at, now)))
    if job.dedup_key:
        rows.append(("dedup key", job.dedup_key))
    rows.append(("aged key", f"{job.aged_key_us} us"))
    rows.append(("last error", job.last_error or "-"))
    rows.append(("payload", f"{job.payload_bytes} bytes"))
    lines = table([list(r) for r in rows])
    if job.payload:
        text = job.payload.decode("utf-8", "backslashreplace")
        if len(text) > PAYLOAD_SHOWN:
            text = text[:PAYLOAD_SHOWN] + f"… (--json for all {job.payload_bytes} bytes)"
        lines += ["", text]
    return lines


def list_lines(page: JobPage, now: datetime) -> list[str]:
    """``dpq job list``: a table, and how to get the next page."""
    if not page.jobs:
        return ["no jobs match"]
    rows = [["id", "queue", "p", "state", "attempt", "due", "node", "last error"]]
    rows += [[str(j.job_id), j.queue, str(j.priority), _state(j), str(j.attempt),
              relative(j.ready_at, now), str(j.owner_node),
              _one_line(j.last_error, ERROR_COLUMN)] for j in page.jobs]
    lines = table(rows, right=frozenset({0, 2, 4, 6}))
    if page.next_page_token:
        lines.append(f"(more: add --page-token {page.next_page_token})")
    return lines


def affected_line(action: str, done: Affected, args: argparse.Namespace) -> str:
    """``dpq job cancel|retry|priority``, ``dpq queue purge``: what changed."""
    jobs = f"{done.count} job{'' if done.count == 1 else 's'}"
    verb = {"cancel": f"cancelled {jobs}",
            "retry": f"retried {jobs} (ready again)",
            "priority": f"set priority {getattr(args, 'new_priority', '?')} on {jobs}",
            "purge": f"purged {jobs} of queue {getattr(args, 'queue', '?')}"}[action]
    if done.deferred:
        verb += (f"; {done.deferred} leased job{'' if done.deferred == 1 else 's'} go when "
                 "the lease ends unacked")
    return f"{verb} (log slot {done.slot})"


def pause_line(pause: QueuePause, now: datetime) -> str:
    """``dpq queue pause|resume``: the queue's state after."""
    if pause.paused:
        until = (f"until {local(pause.paused_until, now)}" if pause.paused_until is not None
                 else "until dpq queue resume")
        return f"queue {pause.queue} paused {until} (log slot {pause.slot})"
    was = "resumed" if pause.was_paused else "was not paused"
    return f"queue {pause.queue} {was} (log slot {pause.slot})"


def explain_lines(why: Explanation, now: datetime) -> list[str]:
    """``dpq job explain``: where the job stands, what holds it, when it should start."""
    job = why.job
    lines = [
        (f"job {job.job_id} in queue {job.queue}: {_state(job)}, priority {job.priority}, "
         f"attempt {job.attempt}, on node {job.owner_node}"),
        (f"ahead of it: {why.ahead_on_node} on node {job.owner_node}, "
         f"{why.ahead_in_cluster} in the cluster"),
    ]
    if why.holds:
        lines.append("held by: " + ", ".join(h.value for h in why.holds))
    else:
        lines.append("held by: nothing")
    lines += [f"  - {reason}" for reason in why.reasons]
    lines.append(f"drain rate: {why.drain_rate_per_s:.1f} jobs/s; estimated start: "
                 + (local(why.estimated_start, now) if why.estimated_start else "unknown"))
    consumers = "unknown" if why.waiting_consumers is None else str(why.waiting_consumers)
    lines.append(f"waiting consumers on node {job.owner_node}: {consumers}")
    if job.last_error:
        lines.append(f"last error: {job.last_error}")
    lines.append(f"answered by node {why.answered_by} as of log slot {why.as_of_slot}")
    return lines
