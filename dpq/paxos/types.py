"""Values shared by the Paxos core, its storage and its drivers.

Nothing here does I/O. Every type is immutable so a value handed to the
driver (to persist or to send) cannot change under it.
"""

from __future__ import annotations

from typing import NamedTuple

# --------------------------------------------------------------------------- bounds
#
# What a value may be anywhere in Paxos: the wire refuses anything outside
# (dpq.node.wire), the core ignores it (Replica.step) or refuses it
# (Replica.propose), so the write-ahead log, which stores rounds, slots, seqs
# and node ids as signed 64-bit integers (dpq.paxos.walcodec), is never asked to
# encode a value it cannot. The limits sit at 2**62, far inside int64, so the
# core's own arithmetic past them (a campaign's round + 1, a slot + a window)
# still fits: nothing honest ever gets near them (a round grows by one per
# election, a slot by one per committed batch).

#: The highest ballot round accepted from anyone.
MAX_ROUND = 1 << 62
#: The highest slot number (of an entry, a commit index, a snapshot) accepted.
MAX_SLOT = 1 << 62
#: The highest proposal sequence number accepted.
MAX_SEQ = 1 << 62
#: Node ids travel as uint32.
MAX_NODE_ID = (1 << 32) - 1
#: A proposal's client id, in UTF-8 bytes (a node's proposer uses ~30).
MAX_CLIENT_ID_BYTES = 256
#: A proposal's data (the leader's stamp + a CommandBatch): with its header and
#: client id it must fit one write-ahead-log record (walcodec.MAX_PAYLOAD, 256 MiB).
MAX_PROPOSAL_BYTES = 255 << 20
#: A snapshot's data (the queue state), whole in one message or
#: reassembled from pieces (dpq.node.snapshot_pieces): a receiver holds at most
#: one unfinished snapshot of this size per peer.
MAX_SNAPSHOT_BYTES = 1 << 30
#: Proposals in one Accept (the core sends at most Config.max_entries_per_message, 64).
MAX_PROPOSALS_PER_MESSAGE = 4096
#: Entries in one Promise: a node's whole uncompacted log (a node snapshots every
#: 20,000 slots by default), with room to spare.
MAX_ENTRIES_PER_MESSAGE = 1 << 18
#: Messages in one PeerBatch (a transport queues at most 10,000 per peer).
MAX_MESSAGES_PER_BATCH = 1 << 14
#: Proposals and entries in one PeerBatch, all messages together: bounds the
#: objects one batch of tiny (2-byte) protobuf items can make a node build.
MAX_ITEMS_PER_BATCH = 1 << 20


def over_limit(field: str, value: int, limit: int) -> str | None:
    """``None`` if ``0 <= value <= limit``, else the problem, naming field, value and limit."""
    if value > limit:
        return f"{field}: {value} is over the limit of {limit}"
    if value < 0:
        return f"{field}: {value} is below 0"
    return None


def proposal_problem(client_id: str, seq: int, data_len: int, field: str = "") -> str | None:
    """What is wrong with a client proposal's fields, or ``None`` (cheap: no copies)."""
    problem = over_limit(f"{field}seq", seq, MAX_SEQ)
    if problem is not None:
        return problem
    if len(client_id) > MAX_CLIENT_ID_BYTES:  # a character is at least one byte
        return (f"{field}client_id: {len(client_id)} characters is over the limit of "
                f"{MAX_CLIENT_ID_BYTES} bytes")
    try:
        size = len(client_id.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate: the WAL could not write it
        return f"{field}client_id: {client_id!r} is not encodable as UTF-8"
    if size > MAX_CLIENT_ID_BYTES:
        return f"{field}client_id: {size} bytes is over the limit of {MAX_CLIENT_ID_BYTES}"
    if data_len > MAX_PROPOSAL_BYTES:
        return f"{field}data: {data_len} bytes is over the limit of {MAX_PROPOSAL_BYTES}"
    return None


class Ballot(NamedTuple):
    """A proposal number: ``(round, node_id)``, ordered as a tuple.

    Two leaders can never share a ballot because the node id breaks ties
    (Paxos Made Simple §2.5: "different proposers choose their numbers from
    disjoint sets").
    """

    round: int
    node: int

    def __str__(self) -> str:
        return f"{self.round}.{self.node}"


ZERO_BALLOT = Ballot(0, 0)


class Proposal(NamedTuple):
    """An opaque batch of commands from one client.

    ``(client_id, seq)`` identifies the proposal across retries and leader
    changes: the state machine applies a given pair at most once. ``seq``
    grows by one or more per new proposal of a client. A no-op (``data`` empty,
    ``client_id`` empty) fills gaps a new leader finds in the log.
    """

    client_id: str
    seq: int
    data: bytes

    @property
    def is_noop(self) -> bool:
        return not self.client_id


NOOP = Proposal("", 0, b"")

# --------------------------------------------------------------------------- config entries
#
# Membership changes the core itself writes into the log (see dpq.paxos.core,
# "A replica that lost its disk"). They are committed and delivered in
# Ready.committed like any slot; the application skips them, as it skips no-ops.

#: The client id of a core-level config entry "node N votes again" (``data`` is
#: N in ASCII digits, ``seq`` the rejoin id of the learner it admits). Clients
#: may not use any client id starting with ``paxos:`` (Replica.propose refuses it).
VOTER_CLIENT_ID = "paxos:voter"
#: Client ids with this prefix belong to the core.
RESERVED_CLIENT_PREFIX = "paxos:"


def is_config(proposal: Proposal) -> bool:
    """Whether ``proposal`` is a core-level config entry (the application skips it)."""
    return proposal.client_id.startswith(RESERVED_CLIENT_PREFIX)


def voter_proposal(node: int, rejoin: int) -> Proposal:
    """The config entry "``node`` votes again", admitting its learner phase ``rejoin``."""
    return Proposal(VOTER_CLIENT_ID, rejoin, str(node).encode("ascii"))


def voter_of(proposal: Proposal) -> tuple[int, int] | None:
    """``(node, rejoin)`` if ``proposal`` is a "votes again" entry, else None."""
    data = proposal.data
    if proposal.client_id != VOTER_CLIENT_ID or not 0 < len(data) <= 10 or not data.isdigit():
        return None
    return int(data), proposal.seq


class Entry(NamedTuple):
    """The value an acceptor accepted for one slot, at one ballot."""

    slot: int
    ballot: Ballot
    proposal: Proposal


class HardState(NamedTuple):
    """What an acceptor must have durable before it answers anyone.

    ``promised`` is the highest ballot it promised (phase 1b). ``commit`` is the
    highest slot it knows committed; persisting it is an optimisation for
    recovery, not a safety requirement.
    """

    promised: Ballot
    commit: int


class Snapshot(NamedTuple):
    """The application's state after applying every slot up to ``slot``.

    ``data`` is opaque to Paxos: the queue state machine (with its table of
    applied client sequences) writes it and reads it back.
    """

    slot: int
    data: bytes
