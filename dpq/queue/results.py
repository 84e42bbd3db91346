"""What applying a command yields: one small immutable type per command kind.

``QueueState.apply`` answers a slot with one result per command (or None, see
there); callers dispatch on the type, never on the shape of a value:

=====================  ==========================================================
command                result
=====================  ==========================================================
Enqueue                :class:`Enqueued` — the job ids, in request order
Lease                  :class:`Leased` — a :class:`Grant` per job granted
Ack, Nack, Extend,     :class:`Settled` — per job reference, None (done) or the
Expire                 :class:`Refusal` of that one job
Reassign               :class:`Reassigned` — how many jobs moved
Checkpoint             :class:`Checkpointed` — the slot PostgreSQL now holds
Cancel, Retry,         :class:`Affected` — how many jobs changed (and, for a
SetPriority, Purge     Cancel, how many leased ones are cancelled when their lease ends)
Pause, Resume          :class:`Paused` — the queue's pause after the command
any, refused whole     :class:`Refused` — the reason and a detail for people
=====================  ==========================================================

``Refusal`` is also the ``dpq.v1.Refusal`` enum of the wire: member ``X`` with
value ``"x"`` is ``REFUSAL_X`` there, and the string fields the wire carried
before the enum (``RefResult.error``, ``CommandResult.error``/``errors``) still
carry the value (``"lease_lost"``) or ``"<value>: <detail>"``.

Pure: no I/O. The results are deterministic and their ``repr`` is too, so
replicas can be compared by it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import NamedTuple

from dpq.v1 import queue_pb2


class Refusal(StrEnum):
    """Why a committed command (or a whole slot, or one job of a settle) changed nothing."""

    # one job reference of an Ack, Nack, Extend or Expire
    LEASE_LOST = "lease_lost"  # not the current lease (a later one, a wrong receipt)
    NOT_FOUND = "not_found"  # no such job (acked already, or never enqueued)
    NOT_LEASED = "not_leased"  # the job is not leased and the ref names no past lease
    # a whole command or slot
    UNPARSABLE = "unparsable"  # the stamp or the CommandBatch does not decode
    BAD_PROPOSAL = "bad_proposal"  # client id or seq out of range
    UNKNOWN = "unknown_command"  # no command kind this version knows
    INVALID = "invalid"  # a field outside its fixed limit
    NOT_MEMBER = "not_member"  # a node id that is not in the cluster
    FAILED = "failed"  # applying it raised: a bug, turned into a refusal


#: ``Refusal`` → ``dpq.v1.Refusal`` number, and back (tests/queue/test_results.py: a bijection).
TO_PB: dict[Refusal, int] = {r: queue_pb2.Refusal.Value(f"REFUSAL_{r.value.upper()}")
                             for r in Refusal}
FROM_PB: dict[int, Refusal] = {number: r for r, number in TO_PB.items()}


def refusal_to_pb(refusal: Refusal | str | None) -> int:
    """The wire's enum for a refusal or its string ("" and None: REFUSAL_UNSPECIFIED; a string
    this version does not know: REFUSAL_UNSPECIFIED too, the string field still says it)."""
    if not refusal:
        return queue_pb2.REFUSAL_UNSPECIFIED
    try:
        return TO_PB[Refusal(refusal)]
    except ValueError:
        return queue_pb2.REFUSAL_UNSPECIFIED


def refusal_from_pb(number: int, text: str) -> Refusal | None:
    """A per-item refusal from the wire: the enum, else (an older peer) its string; None: ok."""
    known = FROM_PB.get(number)
    if known is not None:
        return known
    if not text:
        return None
    try:
        return Refusal(text)
    except ValueError:
        return Refusal.FAILED


class Refused(NamedTuple):
    """A command (or slot) refused whole: it changed nothing."""

    reason: Refusal
    detail: str

    def __str__(self) -> str:
        """``"<reason>: <detail>"``, the form the wire's string fields carry."""
        return f"{self.reason}: {self.detail}"

    @classmethod
    def parse(cls, text: str) -> Refused:
        """Back from ``str()`` (a peer older than the enum field sent only the text);
        text that names no refusal this version knows is kept whole as FAILED's detail."""
        head, sep, detail = text.partition(": ")
        try:
            return cls(Refusal(head), detail) if sep else cls(Refusal(text), "")
        except ValueError:
            return cls(Refusal.FAILED, text)


class Grant(NamedTuple):
    """A lease granted on a job: its token (id, attempt, receipt) and deadline."""

    job_id: int
    attempt: int
    lease_expires_at_us: int
    receipt: int


class Enqueued(NamedTuple):
    job_ids: tuple[int, ...]  # one per job, in order; a dedup hit gives the first job's id


class Leased(NamedTuple):
    grants: tuple[Grant, ...]  # the jobs granted, in the command's order; others skipped


class Settled(NamedTuple):
    """Per job reference of an Ack, Nack, Extend or Expire: None (done) or why not."""

    outcomes: tuple[Refusal | None, ...]

    def errors(self) -> list[str]:
        """The wire's per-item strings: "" for done, else the refusal's value."""
        return [outcome or "" for outcome in self.outcomes]


class Reassigned(NamedTuple):
    count: int  # jobs that changed owner


class Checkpointed(NamedTuple):
    written_slot: int  # the state's written slot after the command (never lower)


class Affected(NamedTuple):
    count: int  # jobs changed
    deferred: int = 0  # Cancel: leased jobs cancelled once their lease ends unacked


class Paused(NamedTuple):
    queue: str
    paused: bool
    until_us: int  # 0 with paused: until resumed
    was_paused: bool  # before the command


class Configured(NamedTuple):
    queue: str
    config: queue_pb2.QueueConfig  # the queue's settings after the command


#: What one command yields.
Result = (Enqueued | Leased | Settled | Reassigned | Checkpointed | Affected | Paused
          | Configured | Refused)
