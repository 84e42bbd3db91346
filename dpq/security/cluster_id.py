"""The cluster id as a secret: how it is compared, how it is shown, how refusals are logged.

A node decides its cluster id at start (``dpq.node.identity``); every peer
message and every node's proposal carries it, and in ``--insecure`` mode it is
the only thing that tells a peer from an outsider. So it is compared in
constant time (:func:`same_cluster`), shown only as a :func:`fingerprint`, and
traffic refused for a wrong one is logged once per source (:class:`OnceLog`),
by the node's transport and by the Replication service alike.
"""

from __future__ import annotations

import hashlib
import hmac
import logging


def fingerprint(cluster_id: str) -> str:
    """A short, safe-to-show name of a cluster id: 8 hex digits of its SHA-256."""
    return hashlib.sha256(cluster_id.encode("utf-8", "replace")).hexdigest()[:8]


def same_cluster(presented: str, ours: str) -> bool:
    """Constant-time: the id is a secret in --insecure mode."""
    return hmac.compare_digest(presented.encode("utf-8", "replace"), ours.encode())


class OnceLog:
    """Logs a refusal once per source, not once per message (bounded memory:
    an outsider varying its claims cannot grow it without end)."""

    def __init__(self, logger: logging.Logger, limit: int = 1024) -> None:
        self._log = logger
        self._seen: set[tuple] = set()
        self._limit = limit

    def warn(self, key: tuple, message: str, *args: object) -> None:
        if key in self._seen:
            return
        if len(self._seen) >= self._limit:
            return
        self._seen.add(key)
        self._log.warning(message, *args)
