"""The failures node and gateway alike report to clients, each carrying its gRPC status.

Every one derives from :class:`QueueError`, whose ``code`` is the status the
edge answers with (``dpq.services.errors``: a lookup, no chain of cases) and
whose :meth:`~QueueError.details` is the message. The pure cores cannot know
gRPC: their exceptions (``dpq.queue.validate.InvalidArgument``,
``dpq.paxos.core.NotLeader``) get their status from the table there.
"""

from __future__ import annotations

import grpc


class QueueError(Exception):
    """A failure with the gRPC status it is answered with."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def details(self) -> str:
        """The status message: what happened and what to do."""
        return str(self)


class Unavailable(QueueError):
    """No leader took the request in time; ``leader`` is the best guess of who leads."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, leader: str | None) -> None:
        super().__init__(message)
        self.leader = leader

    def details(self) -> str:
        where = f"; the leader is at {self.leader}" if self.leader else "; no leader is known yet"
        return f"{self}{where}: retry"


class ResourceExhausted(QueueError):
    """The queue is over its memory budget; nothing of the request was taken."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Forwarded(QueueError):
    """A node's answer other than UNAVAILABLE, passed on to the client as it was."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class Unimplemented(QueueError):
    """An RPC this server does not serve (a gateway's ``Consume``): the client falls back."""

    code = grpc.StatusCode.UNIMPLEMENTED


class NotFound(QueueError):
    """No such job (never enqueued, or ended long enough ago to be forgotten)."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(QueueError):
    """A schedule of that name exists and the request did not ask to replace it."""

    code = grpc.StatusCode.ALREADY_EXISTS
