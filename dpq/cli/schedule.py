"""``dpq schedule …``: periodic jobs, over :class:`dpq.client.Admin`.

::

    dpq schedule add NAME --queue Q --every 1s      [--priority P] [--payload TEXT]
    dpq schedule add NAME --queue Q --cron '*/5 * * * *'  [--start-at WHEN] [--jitter 5s]
    dpq schedule list
    dpq schedule rm NAME

Cron expressions have 5 fields, read in UTC. Each tick enqueues exactly one job;
ticks missed for up to 5 s run late, a longer gap gives one catch-up job. Every
command prints a table or a line for people, or with ``--json`` one JSON document.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TextIO

from dpq.cli.commands import CommandError, duration, span
from dpq.cli.manage import CLI_RETRY, CLI_TIMEOUT_S, _reach_error, relative, table, to_json
from dpq.client.admin import Admin
from dpq.client.errors import ServerError, UnauthenticatedError, UnavailableError
from dpq.client.schedules import ScheduleDeletion, ScheduleInfo
from dpq.security.errors import TlsError

#: The top-level commands this module serves.
COMMANDS = ("schedule",)


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                 client_options: Callable[[argparse.ArgumentParser], None]) -> None:
    """Add ``schedule`` to the ``dpq`` parser (``client_options``: --target, --tls-dir)."""
    schedule = commands.add_parser("schedule", help="periodic jobs: add, list and remove "
                                                    "schedules (dpq schedule ACTION --help)",
                                   description="Periodic jobs: one job per tick, cluster-wide.")
    actions = schedule.add_subparsers(dest="action", required=True, metavar="ACTION")

    def leaf(name: str, help: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help, description=help)
        client_options(p)
        p.add_argument("--json", action="store_true", help="print JSON, for scripts")
        p.set_defaults(full_command=f"schedule {name}")
        return p

    add = leaf("add", "enqueue a job into a queue every interval or on a cron expression")
    add.add_argument("name", metavar="NAME", help="the schedule's name (1..200 bytes)")
    add.add_argument("--queue", required=True, help="the queue its jobs go to")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", type=duration, metavar="DURATION",
                      help="a tick every 1s .. 366d: 1s, 90s, 5m, 1h, 1d")
    when.add_argument("--cron", metavar="EXPR",
                      help="a 5-field cron expression in UTC: '*/5 * * * *'")
    add.add_argument("--priority", type=int, default=3, help="1 (most urgent) .. 5 (3)")
    add.add_argument("--payload", default="", help="each job's payload (UTF-8 text)")
    add.add_argument("--start-at", type=start_at, metavar="WHEN",
                     help="no tick before this: ISO 8601 (UTC unless it has a zone) or "
                          "epoch seconds (default: now)")
    add.add_argument("--jitter", type=duration, metavar="DURATION",
                     help="move each tick later by a fixed pseudo-random 0..DURATION "
                          "(at most the interval)")
    add.add_argument("--fairness-key", default="", help="the jobs' fairness key")
    add.add_argument("--replace", action="store_true",
                     help="replace a schedule of that name (default: refuse)")
    leaf("list", "every schedule: when it ticks next, how often it fired")
    rm = leaf("rm", "remove a schedule: it enqueues nothing from then on")
    rm.add_argument("name", metavar="NAME")


def start_at(text: str) -> datetime:
    """``--start-at``: ISO 8601 (UTC without a zone) or epoch seconds."""
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time like 2025-01-31T09:00:00Z or epoch seconds") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


Result = ScheduleInfo | ScheduleDeletion | list[ScheduleInfo]


def _add(admin: Admin, a: argparse.Namespace) -> ScheduleInfo:
    return admin.create_schedule(a.name, a.queue, every=a.every, cron=a.cron,
                                 priority=a.priority, payload=a.payload.encode(),
                                 start_at=a.start_at, jitter=a.jitter,
                                 fairness_key=a.fairness_key, replace=a.replace)


ACTIONS: dict[str, Callable[[Admin, argparse.Namespace], Result]] = {
    "add": _add,
    "list": lambda admin, a: admin.list_schedules(),
    "rm": lambda admin, a: admin.delete_schedule(a.name),
}


def run(args: argparse.Namespace, target: str, tls_dir: str | None, out: TextIO,
        now: datetime | None = None) -> int:
    """Run ``dpq schedule ACTION``; the exit code."""
    try:
        with Admin(target, tls_dir=tls_dir, retry=CLI_RETRY, timeout=CLI_TIMEOUT_S) as admin:
            result = ACTIONS[args.action](admin, args)
    except (UnavailableError, UnauthenticatedError) as exc:
        raise CommandError(_reach_error(exc, target, tls_dir)) from None
    except ServerError as exc:
        raise CommandError(f"{exc.details} ({exc.code.name})") from None
    except (TlsError, ValueError, TypeError) as exc:
        raise CommandError(str(exc)) from None
    now = now or datetime.now(UTC)
    if args.json:
        print(json.dumps(_json(result), indent=2, ensure_ascii=False), file=out)
    else:
        for line in human(result, now):
            print(line, file=out)
    return 0


def _json(result: Result):
    if isinstance(result, list):
        return [_json(s) for s in result]
    value = to_json(result)
    if isinstance(result, ScheduleInfo):
        value["payload"] = result.payload.decode("utf-8", "backslashreplace")
    return value


def every_text(s: ScheduleInfo) -> str:
    """``every 1s`` / ``cron */5 * * * *`` (+ jitter)."""
    if s.cron:
        text = f"cron {s.cron}"
    else:
        every = s.every or 0
        text = f"every {span(every)}" if every >= 60 or every == int(every) else \
            f"every {every:g}s"
    return text + (f" +0..{s.jitter:g}s" if s.jitter else "")


def human(result: Result, now: datetime) -> list[str]:
    if isinstance(result, ScheduleDeletion):
        if not result.existed:
            return [f"no schedule {result.name!r} (log slot {result.slot})"]
        return [f"removed schedule {result.name!r} (log slot {result.slot})"]
    if isinstance(result, ScheduleInfo):
        return [(f"schedule {result.name!r}: {every_text(result)} into queue {result.queue} "
                f"(priority {result.priority}); next tick "
                f"{relative(result.next_fire_at, now) if result.next_fire_at else 'never'} "
                f"(version {result.version})")]
    if not result:
        return ["no schedules"]
    rows = [["name", "queue", "p", "when", "next", "last", "fired", "last job"]]
    rows += [[s.name, s.queue, str(s.priority), every_text(s),
              relative(s.next_fire_at, now) if s.next_fire_at else "never",
              relative(s.last_fire_at, now), str(s.fired),
              str(s.last_job_id) if s.last_job_id else "-"] for s in result]
    return table(rows, right=frozenset({2, 6, 7}))
