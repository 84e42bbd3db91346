"""Exactly-once application of client proposals: the table of applied ``(client_id, seq)``.

A client (the gateway) pipelines proposals (several seqs in flight), retries
them at the new leader after a leader change, and so a proposal can be chosen
twice (the old leader's copy and the retry), and seqs can commit out of order
(seq 7 before a retried seq 6). Deduplicating by "highest seq seen" would drop
that seq 6. :class:`Sessions` keeps, per client, a *floor* (every seq below it
is done) and the set of applied seqs at or above it; the floor moves over
contiguous runs, so a client that proposes 1, 2, 3, … keeps the set tiny.

The table is part of the replicated state: it is changed only by
:meth:`Sessions.should_apply` on committed entries, in slot order, so every
replica holds the same table at the same slot, and it travels in the
application's snapshot (:meth:`Sessions.to_bytes` / :meth:`Sessions.from_bytes`).
Nothing here reads a clock.

Bounded memory, and the assumptions that make it safe:

* ``window`` (per client, in seq numbers): a client issues seq ``s`` only once
  every seq ``<= s - window`` it issued is done (applied, as its leader told
  it), like a sliding window. Then, when ``s`` is applied, every seq ``<= s -
  window`` was applied earlier in the log (a new proposal lands in a slot after
  every slot chosen before it was proposed) or was never issued, so the floor
  jumps to ``s - window + 1``: at most ``window`` seqs are kept per client. A
  count of outstanding proposals is not enough: one stuck seq with the others
  flowing past it would pin the floor forever.
* ``max_clients``: the table keeps the clients most recently applied (in slot
  order); one more evicts the least recently used. An evicted client that later
  retries a seq already applied would have it applied again, so size this well
  above the number of clients that can have proposals in flight.
* Seqs start at ``first_seq`` (1): a seq below it is never applied.
"""

from __future__ import annotations

import heapq
import struct
from collections import OrderedDict
from collections.abc import Iterable

from dpq.paxos.types import RESERVED_CLIENT_PREFIX

__all__ = ["Sessions"]

_MAGIC = b"DPQS"
_VERSION = 1
#: Seqs a client may have between its oldest unfinished one and its newest.
DEFAULT_WINDOW = 1024

_HEADER = struct.Struct("<4sBIII")  # magic, version, max_clients, window, n_clients
_CLIENT = struct.Struct("<HqI")  # len(client_id), floor, n_seqs
_SEQ = struct.Struct("<q")


class _Client:
    __slots__ = ("floor", "seqs", "heap")

    def __init__(self, floor: int, seqs: Iterable[int] = ()) -> None:
        self.floor = floor  # every seq < floor is applied (or can no longer come)
        self.seqs: set[int] = set(seqs)  # the applied seqs above the floor
        self.heap: list[int] = sorted(self.seqs)  # the same seqs, as a min-heap

    def add(self, seq: int) -> None:
        """Record ``seq`` (at or above the floor, not yet applied) as applied."""
        if seq == self.floor:
            floor, seqs = seq + 1, self.seqs
            while floor in seqs:  # move over the contiguous run that follows
                seqs.discard(floor)
                floor += 1
            self.floor = floor
            heap = self.heap
            while heap and heap[0] < floor:  # drop what the run passed
                heapq.heappop(heap)
        else:
            self.seqs.add(seq)
            heapq.heappush(self.heap, seq)

    def raise_floor(self, floor: int) -> None:
        """Jump the floor up to ``floor`` (everything below is done), then over the run."""
        heap, seqs = self.heap, self.seqs
        while heap and heap[0] < floor:
            seqs.discard(heapq.heappop(heap))
        while floor in seqs:
            seqs.discard(floor)
            floor += 1
        self.floor = floor


class Sessions:
    """Per-client record of applied sequence numbers (see the module docstring)."""

    first_seq = 1

    def __init__(self, max_clients: int = 100_000, window: int = DEFAULT_WINDOW) -> None:
        if max_clients < 1 or window < 1:
            raise ValueError("max_clients and window must be >= 1")
        self.max_clients = max_clients
        self.window = window
        self._clients: OrderedDict[str, _Client] = OrderedDict()  # least recently used first

    def __len__(self) -> int:
        return len(self._clients)

    def __contains__(self, client_id: object) -> bool:
        return client_id in self._clients

    def should_apply(self, client_id: str, seq: int) -> bool:
        """True (and record it) if ``(client_id, seq)`` was not applied before.

        Call it for every committed proposal, in slot order, and apply the
        proposal only when it returns True. No-ops (empty ``client_id``) and the
        core's config entries (``client_id`` starting with ``paxos:``) are never
        applied, nor remembered.
        """
        if not client_id or client_id.startswith(RESERVED_CLIENT_PREFIX):
            return False
        clients = self._clients
        client = clients.get(client_id)
        if client is None:
            if seq < self.first_seq:
                return False
            client = clients[client_id] = _Client(self.first_seq)
            if len(clients) > self.max_clients:
                clients.popitem(last=False)
        else:
            clients.move_to_end(client_id)
            if seq < client.floor or seq in client.seqs:
                return False
        if seq - self.window >= client.floor:
            # The client issued seq only after every seq <= seq - window was done.
            client.raise_floor(seq - self.window + 1)
        client.add(seq)
        return True

    def is_applied(self, client_id: str, seq: int) -> bool:
        """Whether ``(client_id, seq)`` counts as applied (read-only)."""
        client = self._clients.get(client_id)
        if client is None:
            return False
        return seq < client.floor or seq in client.seqs

    def floor(self, client_id: str) -> int:
        """The client's floor (``first_seq`` for an unknown client)."""
        client = self._clients.get(client_id)
        return client.floor if client is not None else self.first_seq

    # ------------------------------------------------------------------ snapshot

    def to_bytes(self) -> bytes:
        """A deterministic encoding (same table, same bytes), LRU order kept."""
        parts = [_HEADER.pack(_MAGIC, _VERSION, self.max_clients, self.window,
                              len(self._clients))]
        for client_id, client in self._clients.items():
            raw = client_id.encode()
            seqs = sorted(client.seqs)
            parts.append(_CLIENT.pack(len(raw), client.floor, len(seqs)))
            parts.append(raw)
            parts.append(struct.pack(f"<{len(seqs)}q", *seqs))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes) -> Sessions:
        """Rebuild a table written by :meth:`to_bytes`; raises ValueError if malformed."""
        view = memoryview(data)
        try:
            magic, version, max_clients, window, n_clients = _HEADER.unpack_from(view, 0)
            if magic != _MAGIC or version != _VERSION:
                raise ValueError(f"not a sessions table (magic {magic!r}, version {version})")
            sessions = cls(max_clients, window)
            offset = _HEADER.size
            for _ in range(n_clients):
                n_raw, floor, n_seqs = _CLIENT.unpack_from(view, offset)
                offset += _CLIENT.size
                client_id = bytes(view[offset:offset + n_raw]).decode()
                offset += n_raw
                client = _Client(floor, struct.unpack_from(f"<{n_seqs}q", view, offset))
                offset += n_seqs * _SEQ.size
                sessions._clients[client_id] = client
        except (struct.error, UnicodeDecodeError) as exc:
            raise ValueError(f"truncated or corrupt sessions table: {exc}") from exc
        if offset != len(data):
            raise ValueError(f"{len(data) - offset} trailing bytes after the sessions table")
        return sessions

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sessions):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Sessions({len(self._clients)} clients, max {self.max_clients})"
