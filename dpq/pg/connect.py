"""Connecting to PostgreSQL with time limits, and telling a bad DSN from a server that is down.

A node must start while its PostgreSQL is down (a maintenance window, a
cluster restarted before its database): the log is the source of truth for
the queue and the leader's writer catches up later. But a DSN that can never
work — malformed, naming a database that does not exist, or credentials the
server refuses — is a configuration mistake that no amount of retrying fixes,
so it is refused at start (:class:`DsnError`, one line, no traceback).

libpq gives no SQLSTATE for a failed connection, only its message: the server's
own refusals carry ``FATAL:``, and the few of those that pass by themselves
(starting up, shutting down, too many clients) are listed in
:data:`TRANSIENT_FATAL`. Everything else that goes wrong on the way (refused,
no such socket, timed out, host name not found) may pass, and is retried.

A frozen server (SIGSTOPped, a hung disk, a network that drops packets) never
answers at all: every connect has ``connect_timeout`` and runs under an asyncio
timeout too, and each connection gets a server-side ``statement_timeout`` and
``idle_in_transaction_session_timeout`` so that a writer that gave up does not
leave a backend holding its locks.
"""

from __future__ import annotations

import asyncio
import math
import re

import psycopg
from psycopg import conninfo, sql

from dpq.pg import migrate

#: Fragments of a server's ``FATAL`` refusal that mean "try again later".
TRANSIENT_FATAL = (
    "starting up", "shutting down", "in recovery", "not yet accepting", "not accepting",
    "too many clients", "connection slots", "terminating connection", "administrator command",
)
#: Client-side libpq messages (no ``FATAL``) that retrying cannot fix.
PERMANENT_CLIENT = (
    "no password supplied", "invalid connection option", "invalid port", "invalid integer value",
    "invalid sslmode", "invalid value for", "password authentication failed",
    "server does not support SSL", "Servname not supported",
)


class DsnError(ValueError):
    """A DSN that cannot work however long we wait; the message is one line."""


def where(dsn: str) -> str:
    """``host:port/dbname as user`` of a DSN, without its password (for messages)."""
    try:
        parts = conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(malformed DSN)"
    host = str(parts.get("host") or "localhost")
    port = parts.get("port")
    place = f"{host}:{port}" if port else host
    return f"{place}/{parts.get('dbname') or '?'} as {parts.get('user') or '(default user)'}"


def one_line(exc: BaseException) -> str:
    """The message of a psycopg (or OS, or timeout) error on one line."""
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _scrub(text: str, dsn: str) -> str:
    """``text`` without quoted DSNs or passwords (libpq quotes a bad URI, password and all)."""
    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        password = None

    def hide(match: re.Match) -> str:
        quoted = match.group(1)
        secret = (password and str(password) in quoted) or any(c in quoted for c in "@=/")
        return '"…"' if secret else match.group(0)

    return _QUOTED.sub(hide, text)


_QUOTED = re.compile(r'"([^"]*)"')


def check_syntax(dsn: str) -> None:
    """Raise :class:`DsnError` unless ``dsn`` parses as a libpq URL or key=value string."""
    try:
        conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise DsnError(f"--dsn is not a valid PostgreSQL URL or key=value string: "
                       f"{_scrub(one_line(exc), dsn)}") from None


def is_permanent(exc: BaseException) -> bool:
    """Whether a failure to connect is the DSN's fault (retrying will not help)."""
    if isinstance(exc, psycopg.ProgrammingError):
        return True  # a malformed DSN
    if not isinstance(exc, psycopg.OperationalError):
        return False
    text = str(exc)
    if "FATAL:" in text:
        return not any(fragment in text for fragment in TRANSIENT_FATAL)
    return any(fragment in text for fragment in PERMANENT_CLIENT)


def refusal(dsn: str, exc: BaseException) -> DsnError:
    """A :class:`DsnError` for a connection the server refused for good."""
    text = _scrub(one_line(exc), dsn)
    if "FATAL:" not in text:
        return DsnError(f"--dsn cannot work: {text} (PostgreSQL at {where(dsn)})")
    reason = text.split("FATAL:", 1)[1].strip()
    return DsnError(f"PostgreSQL at {where(dsn)} refused the connection: {reason} "
                    "(check the database name and credentials in --dsn)")


async def connect(dsn: str, timeout_s: float) -> psycopg.AsyncConnection:
    """An autocommit connection, given up after ``timeout_s``, with server-side timeouts.

    ``statement_timeout`` and ``idle_in_transaction_session_timeout`` are set to
    ``timeout_s`` for the session; a caller that needs longer for one statement
    raises it with ``SET LOCAL statement_timeout`` inside its transaction.
    """
    # libpq counts whole seconds and treats anything below 2 as 2.
    libpq_s = max(2, math.ceil(timeout_s))
    conn = await asyncio.wait_for(
        psycopg.AsyncConnection.connect(dsn, autocommit=True, connect_timeout=libpq_s),
        timeout_s + 1)
    try:
        ms = max(1, int(timeout_s * 1000))
        for setting in ("statement_timeout", "idle_in_transaction_session_timeout"):
            await asyncio.wait_for(conn.execute(f"SET {setting} = {ms}"), timeout_s)
    except BaseException:
        await close_quietly(conn)
        raise
    return conn


async def close_quietly(conn: psycopg.AsyncConnection | None) -> None:
    """Close a connection that may be broken or stuck mid-statement, without waiting on it."""
    if conn is None:
        return
    try:
        # close() only sends Terminate and drops the socket: it does not wait
        # for the server, so a frozen one cannot hold us here.
        await asyncio.wait_for(conn.close(), 1.0)
    except Exception:  # noqa: BLE001, S110 - it is being thrown away
        pass


async def prepare(dsn: str, timeout_s: float, migrate_timeout_s: float = 120.0) -> str | None:
    """What a node does with its DSN at start: check it, and migrate if the server is up.

    Raises :class:`DsnError` for a DSN that cannot work (malformed, refused by
    the server, or a database whose migrations differ from this version's).
    Returns ``None`` when the schema is up to date, else why PostgreSQL could
    not be reached: the node starts anyway, and the leader's writer migrates
    and writes once the server answers.
    """
    check_syntax(dsn)
    try:
        conn = await connect(dsn, timeout_s)
    except (psycopg.Error, OSError, TimeoutError) as exc:
        if is_permanent(exc):
            raise refusal(dsn, exc) from None
        if isinstance(exc, TimeoutError):
            return f"no answer within {timeout_s:g}s"
        return one_line(exc)
    try:
        await asyncio.wait_for(migrate_without_statement_timeout(conn), migrate_timeout_s)
    except migrate.MigrationError as exc:
        raise DsnError(f"the database at {where(dsn)} cannot be used: {exc}") from None
    except (psycopg.Error, OSError, TimeoutError) as exc:
        return f"migrating failed: {one_line(exc)}"
    finally:
        await close_quietly(conn)
    return None


async def migrate_without_statement_timeout(conn: psycopg.AsyncConnection) -> list[str]:
    """:func:`dpq.pg.migrate.migrate_on`, with the session's ``statement_timeout`` lifted
    meanwhile: a released migration may rewrite a big table. The caller bounds the whole."""
    cur = await conn.execute("SHOW statement_timeout")
    (previous,) = await cur.fetchone()  # type: ignore[misc]
    await conn.execute("SET statement_timeout = 0")
    try:
        return await migrate.migrate_on(conn)
    finally:
        await conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(previous)))
