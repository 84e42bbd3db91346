"""The failures node and gateway alike report to clients, each mapped to one gRPC status at
the edge (``dpq.services.errors``). Bad input is ``dpq.queue.validate.InvalidArgument``."""

from __future__ import annotations

import grpc


class Unavailable(Exception):
    """No leader took the request in time; ``leader`` is the best guess of who leads."""

    def __init__(self, message: str, leader: str | None) -> None:
        super().__init__(message)
        self.leader = leader


class ResourceExhausted(Exception):
    """The queue is over its memory budget; nothing of the request was taken."""


class Forwarded(Exception):
    """A node's answer other than UNAVAILABLE, passed on to the client as it was."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
