"""Telling a DSN that cannot work from a server that is down, and the outage log/back-off."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest

from dpq.pg import connect
from dpq.pg.outage import Outage


def _operational(text: str) -> psycopg.OperationalError:
    return psycopg.OperationalError(text)


@pytest.mark.parametrize("text", [
    ('connection failed: connection to server on socket "/s/.s.PGSQL.5432" failed: '
     'FATAL:  database "x" does not exist'),
    ('connection failed: connection to server at "db", port 5432 failed: '
     'FATAL:  password authentication failed for user "dpq"'),
    ('connection failed: connection to server at "db", port 5432 failed: '
     'fe_sendauth: no password supplied'),
    'connection failed: FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "dpq"',
])
def test_refusals_are_permanent(text):
    assert connect.is_permanent(_operational(text))


@pytest.mark.parametrize("text", [
    'connection failed: connection to server at "127.0.0.1", port 1 failed: Connection refused',
    ('connection is bad: connection to server on socket "/s/.s.PGSQL.5432" failed: '
     'No such file or directory'),
    "connection failed: FATAL:  the database system is starting up",
    "connection failed: FATAL:  the database system is shutting down",
    "connection failed: FATAL:  sorry, too many clients already",
    "connection timeout expired",
    "failed to resolve host 'db.example': [Errno -2] Name or service not known",
])
def test_a_server_that_is_down_is_not_permanent(text):
    assert not connect.is_permanent(_operational(text))


def test_timeouts_and_os_errors_are_not_permanent():
    assert not connect.is_permanent(TimeoutError())
    assert not connect.is_permanent(ConnectionRefusedError())


def test_malformed_dsn_is_refused_without_its_password():
    with pytest.raises(connect.DsnError) as refused:
        connect.check_syntax("postgresql://dpq:hunter2@[::1/dpq")
    assert "hunter2" not in str(refused.value) and "\n" not in str(refused.value)
    connect.check_syntax("postgresql://dpq:hunter2@db:5432/dpq")  # fine


def test_where_names_no_password():
    text = connect.where("postgresql://dpq:hunter2@db:5433/queue")
    assert text == "db:5433/queue as dpq"


def test_prepare_refuses_a_missing_database(pg_dsn):
    dsn = psycopg.conninfo.make_conninfo(pg_dsn, dbname="dpq_no_such_database")
    with pytest.raises(connect.DsnError) as refused:
        asyncio.run(connect.prepare(dsn, 5))
    assert "dpq_no_such_database" in str(refused.value) and "does not exist" in str(refused.value)


def test_prepare_reports_a_server_that_is_down():
    down = asyncio.run(connect.prepare("host=127.0.0.1 port=1 dbname=dpq", 2))
    assert down is not None and "refused" in down.lower()


def test_prepare_migrates_a_fresh_database(pg_database):
    dsn = pg_database("prepare", migrated=False)
    assert asyncio.run(connect.prepare(dsn, 5)) is None
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM dpq_migrations").fetchone()[0] >= 1


def test_connect_sets_server_side_timeouts(pg_db):
    async def settings():
        conn = await connect.connect(pg_db, 3.5)
        try:
            names = ("statement_timeout", "idle_in_transaction_session_timeout")
            before = [(await (await conn.execute(f"SHOW {name}")).fetchone())[0] for name in names]
            await connect.migrate_without_statement_timeout(conn)  # lifts it meanwhile only
            after = [(await (await conn.execute(f"SHOW {name}")).fetchone())[0] for name in names]
            return before, after
        finally:
            await connect.close_quietly(conn)

    before, after = asyncio.run(settings())
    assert before == after == ["3500ms", "3500ms"]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_outage_logs_once_per_outage_and_backs_off(caplog):
    clock = Clock()
    outage = Outage(logging.getLogger("test.outage"), "writing", first_delay_s=0.1,
                    max_delay_s=5.0, remind_every_s=60.0, clock=clock)
    outage.recovered()  # no outage: nothing to say
    delays = []
    with caplog.at_level(logging.INFO, logger="test.outage"):
        for _ in range(200):  # 200 failed tries, ~10 minutes of back-off
            delays.append(outage.failed("refused", "3 slots behind"))
            clock.now += delays[-1]
        outage.recovered("wrote 5 rows")
    assert delays[:6] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2])
    assert max(delays) == 5.0
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(errors) == 1 and "refused" in errors[0].getMessage()
    # one reminder a minute over ~16 minutes, and one line when it works again
    assert 10 <= len(warnings) <= 20
    last = warnings[-1].getMessage()
    assert "works again" in last and "200 failed tries" in last
    assert not outage.down
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="test.outage"):
        assert outage.failed("refused again") == pytest.approx(0.1)  # a new outage starts over
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert outage.outages == 2
