"""Which cluster a node belongs to, and how it proves it to its peers.

A cluster id (128 random bits, 32 hex digits) is created when a cluster first
starts and kept in two places: every node's data folder (``identity.json``,
written atomically, with the node's id) and PostgreSQL (the one-row table
``dpq_cluster_identity``). Every peer message carries it; a node refuses
traffic and proposals that carry another (``dpq.node.transport``,
``dpq.services.replication``). In ``--insecure`` mode the id is the only thing
that tells a peer from an outsider, so it is never shown on the client port:
ClusterInfo shows its fingerprint instead (``dpq.security.cluster_id``).

:func:`establish` is the one place a node decides its identity at start:

======================  =======================  ==========================================
data folder             PostgreSQL               outcome
======================  =======================  ==========================================
empty                   no id                    race: every node offers a random id, the
                                                 first INSERT wins, all adopt it (created)
empty                   id X                     adopt X (joined an existing cluster)
X                       X (or no id: insert X)   start
X                       Y                        refuse: another cluster's database
X, node N               (running as node M)      refuse: another node's data folder
X                       unreachable              start unverified; the node checks again
empty                   unreachable              refuse: the first start needs the database
======================  =======================  ==========================================

A node that lost its disk must not vote from amnesia (``dpq.paxos.core``, "A
replica that lost its disk"). So a node records its id in PostgreSQL
(``dpq_cluster_members``) once its data folder holds the identity and before it
takes part in Paxos; every vote it ever cast was cast after that record. A node
that finds no write-ahead log in its data folder (whether or not ``identity.json``
survived) while its id is recorded refuses to start unless ``--rejoin`` says the operator
knows: then it writes a ``rejoining`` marker first and starts as a non-voting learner. The
marker stays until the node is admitted as a voter again (the driver removes it),
so a crash during catch-up restarts it as a learner, with or without the flag.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass

import psycopg

from dpq.paxos.wal import WriteAheadLog
from dpq.pg import migrate
from dpq.pg.queries import QUERIES
from dpq.security.cluster_id import fingerprint, same_cluster

log = logging.getLogger("dpq.node.identity")

IDENTITY_FILE = "identity.json"
#: In the data folder while the node rejoins after a lost disk (it starts as a learner).
REJOIN_MARKER = "rejoining"
CLUSTER_ID = re.compile(r"[0-9a-f]{32}")
#: A start never waits longer than this on PostgreSQL for its identity.
DATABASE_TIMEOUT_S = 30.0


class IdentityError(RuntimeError):
    """A node must not start with this data folder and database; one line says why."""


@dataclass(frozen=True, slots=True)
class Identity:
    cluster_id: str
    node_id: int
    #: This node's insert won the first-start race: it created the cluster.
    created: bool
    #: The data folder had no identity: this is the node's first start in the cluster.
    #: (``not created and first_start`` = a new node joining a cluster that already
    #: exists: the hook for "a node with an empty data folder must not vote".)
    first_start: bool
    #: PostgreSQL confirmed the id; False when it was unreachable at start.
    verified: bool
    #: The data folder holds the rejoining marker: start as a non-voting learner.
    rejoining: bool = False

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.cluster_id)


def new_cluster_id() -> str:
    return secrets.token_hex(16)


# ---------------------------------------------------------------- data folder

def read_local(data_dir: str) -> tuple[str, int] | None:
    """``(cluster_id, node_id)`` from the data folder, or None when it has none."""
    path = os.path.join(data_dir, IDENTITY_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        cluster_id, node_id = data["cluster_id"], data["node_id"]
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise IdentityError(f"{path} is unreadable ({exc}); it must hold this node's "
                            "cluster id: restore it, or start from an empty data folder") from exc
    if not isinstance(cluster_id, str) or not CLUSTER_ID.fullmatch(cluster_id) \
            or not isinstance(node_id, int):
        raise IdentityError(f"{path} does not hold a cluster id and a node id")
    return cluster_id, node_id


def _sync_folder(data_dir: str) -> None:
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def wal_dir(data_dir: str) -> str:
    return os.path.join(data_dir, "wal")


def has_log(data_dir: str) -> bool:
    """The folder holds a write-ahead log: the promises and votes the node made.

    The log is created at the node's first start, before the node is recorded as
    a member; so a member without one lost it (a replaced disk, or just the
    ``wal`` folder), whether or not ``identity.json`` survived.
    """
    try:
        return any(os.scandir(wal_dir(data_dir)))
    except FileNotFoundError:
        return False


def create_log(data_dir: str) -> None:
    """Create the (empty) write-ahead log, durably."""
    WriteAheadLog.open(wal_dir(data_dir)).close()


def rejoining(data_dir: str) -> bool:
    return os.path.exists(os.path.join(data_dir, REJOIN_MARKER))


def write_rejoin_marker(data_dir: str) -> None:
    """Durably: a crash during catch-up must restart the node as a learner."""
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, REJOIN_MARKER)
    with open(path, "w", encoding="utf-8") as f:
        f.write("this node lost its data and rejoins as a learner; "
                "removed once it votes again\n")
        f.flush()
        os.fsync(f.fileno())
    _sync_folder(data_dir)


def remove_rejoin_marker(data_dir: str) -> None:
    """The node votes again: durably forget the marker (blocks on an fsync)."""
    try:
        os.unlink(os.path.join(data_dir, REJOIN_MARKER))
    except FileNotFoundError:
        return
    _sync_folder(data_dir)


def write_local(data_dir: str, cluster_id: str, node_id: int) -> None:
    """Write the identity file atomically: a crash leaves the old file or the new one."""
    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, IDENTITY_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"cluster_id": cluster_id, "node_id": node_id}, f)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_folder(data_dir)


# ----------------------------------------------------------------- PostgreSQL

async def joined(dsn: str, node_id: int) -> bool:
    """Whether ``node_id`` has ever joined the cluster of this database."""
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(QUERIES["member_joined"], (node_id,))
        return await cur.fetchone() is not None


async def record_member(dsn: str, node_id: int) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(QUERIES["record_member"], (node_id,))


async def claim(dsn: str, offered: str) -> tuple[str, bool]:
    """Offer ``offered`` as the database's cluster id; return ``(its id, whether ours won)``.

    Migrates first (the table is a migration). Safe to race: the first insert
    wins and everyone reads the winner back.
    """
    await migrate.migrate(dsn)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(QUERIES["claim_cluster_id"], (offered,))
        inserted = cur.rowcount == 1
        cur = await conn.execute(QUERIES["cluster_id"])
        row = await cur.fetchone()
    if row is None:  # cannot happen after the insert; refuse rather than guess
        raise IdentityError("the database has no cluster id after claiming one")
    return row[0], inserted


def _database_name(dsn: str) -> str:
    """The database, for messages (never the password)."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "the database at --dsn"
    return f"database {parts.get('dbname', '?')!r} on {parts.get('host', 'localhost')}"


async def establish(data_dir: str, node_id: int, dsn: str, *, rejoin: bool = False,
                    timeout_s: float = DATABASE_TIMEOUT_S) -> Identity:
    """Decide this node's cluster identity at start, or raise :class:`IdentityError`.

    ``rejoin`` (``dpq-node --rejoin``): the operator knows the data folder was lost;
    start it as a learner (see the module docstring)."""
    local = read_local(data_dir)
    if local is not None and local[1] != node_id:
        raise IdentityError(
            f"the data folder {data_dir} belongs to node {local[1]} of cluster "
            f"{fingerprint(local[0])}, not node {node_id}: give each node its own data folder")
    # "empty": nothing a vote may rest on (identity.json alone holds no vote).
    empty, marked = not has_log(data_dir), rejoining(data_dir)
    if rejoin and not empty and not marked:
        raise IdentityError(
            f"--rejoin: the data folder {data_dir} still holds node {node_id}'s data, so there "
            "is nothing to rejoin: start it without --rejoin")
    offered = local[0] if local is not None else new_cluster_id()

    async def consult() -> tuple[str, bool, bool]:
        stored, created = await claim(dsn, offered)
        return stored, created, await joined(dsn, node_id)

    try:
        stored, created, member = await asyncio.wait_for(consult(), timeout_s)
    except migrate.MigrationError as exc:
        raise IdentityError(str(exc)) from exc
    except psycopg.ProgrammingError as exc:  # a malformed DSN: nothing to retry
        raise IdentityError(f"--dsn is not a valid PostgreSQL URL: {exc}") from exc
    except (psycopg.Error, OSError, TimeoutError) as exc:
        reason = _reason(exc)
        if local is None:
            raise IdentityError(
                f"cannot learn the cluster id from {_database_name(dsn)} ({reason}): "
                "a node's first start needs PostgreSQL") from exc
        if empty and not marked:
            raise IdentityError(
                f"the data folder {data_dir} has an identity but no write-ahead log (a lost "
                f"disk?), and {_database_name(dsn)} is unreachable ({reason}) to tell whether "
                f"node {node_id} has voted before: start it once PostgreSQL answers") from exc
        log.warning("PostgreSQL unreachable at start (%s): running as cluster %s from the "
                    "data folder, to be checked against the database once it answers",
                    reason, fingerprint(local[0]))
        return Identity(local[0], node_id, created=False, first_start=False, verified=False,
                        rejoining=marked)
    if local is not None and not same_cluster(stored, local[0]):
        raise IdentityError(
            f"the data folder {data_dir} belongs to cluster {fingerprint(local[0])} but "
            f"{_database_name(dsn)} belongs to cluster {fingerprint(stored)}: point --dsn at "
            "this cluster's database, or start from an empty data folder")
    if empty and member and not (rejoin or marked):
        raise IdentityError(
            f"node {node_id} has already been a member of cluster {fingerprint(stored)} but its "
            f"data folder {data_dir} has no write-ahead log (a lost disk?): it must not vote "
            f"from what it forgot; start it with `dpq-node … --rejoin` to catch up as a "
            f"non-voting learner")
    if empty and not member and rejoin:
        raise IdentityError(
            f"--rejoin: node {node_id} has never joined cluster {fingerprint(stored)}, so there "
            "is nothing to rejoin: start it without --rejoin")
    if empty and member and not marked:
        write_rejoin_marker(data_dir)  # first: a crash from here on restarts it as a learner
        marked = True
    if empty:
        # Before the member record below: a member without a log lost it.
        create_log(data_dir)
    if local is None:
        write_local(data_dir, stored, node_id)
        log.info("node %d joined cluster %s%s", node_id, fingerprint(stored),
                 " (created it)" if created else " (rejoining as a learner)" if marked else "")
    try:
        # After the identity is on disk, before the node takes part in Paxos: every
        # vote this node casts is cast after this record exists.
        await asyncio.wait_for(record_member(dsn, node_id), timeout_s)
    except (psycopg.Error, OSError, TimeoutError) as exc:
        raise IdentityError(f"cannot record node {node_id} as a member in "
                            f"{_database_name(dsn)} ({_reason(exc)})") from exc
    return Identity(stored, node_id, created=created, first_start=local is None, verified=True,
                    rejoining=marked)


def _reason(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


async def verify(dsn: str, identity: Identity, *, timeout_s: float = DATABASE_TIMEOUT_S) -> None:
    """For a node that started unverified: raise :class:`IdentityError` if the
    database belongs to another cluster (``psycopg.Error`` while it is unreachable)."""
    stored, _ = await asyncio.wait_for(claim(dsn, identity.cluster_id), timeout_s)
    if not same_cluster(stored, identity.cluster_id):
        raise IdentityError(
            f"{_database_name(dsn)} belongs to cluster {fingerprint(stored)}, not to this "
            f"node's cluster {identity.fingerprint}: stopping")
    await asyncio.wait_for(record_member(dsn, identity.node_id), timeout_s)
