"""What a proposed batch yields: plain values per command, the same on a node and a gateway.

A node's applier normalises the state machine's results to these values
(``dpq.node.applier``); the leader's Propose handler sends them over gRPC
(:func:`results_to_pb`) and a remote proposer reads them back
(:func:`results_from_pb`):

* Enqueue → ``list[int]`` of job ids,
* Lease → ``list[Grant]``,
* Ack / Nack / Extend / Expire → ``list[str]`` of per-item errors ("" = ok),
* a command refused whole → ``str`` (the reason), others → ``None``.
"""

from __future__ import annotations

from typing import NamedTuple

from dpq.v1 import replication_pb2


class Grant(NamedTuple):
    """A lease granted on a job: its token (id, attempt, receipt) and deadline."""

    job_id: int
    attempt: int
    lease_expires_at_us: int
    receipt: int


class Applied(NamedTuple):
    slot: int
    results: list | None  # None: a duplicate whose results are forgotten, or a no-op


def results_to_pb(results: list | None) -> list[replication_pb2.CommandResult]:
    out = []
    for result in results or ():
        item = replication_pb2.CommandResult()
        if isinstance(result, str):
            item.error = result
        elif isinstance(result, list) and result and isinstance(result[0], Grant):
            for g in result:
                item.jobs.add(job_id=g.job_id, attempt=g.attempt,
                              lease_expires_at_us=g.lease_expires_at_us, receipt=g.receipt)
        elif isinstance(result, list) and result and isinstance(result[0], str):
            item.errors.extend(result)
        elif isinstance(result, list):
            item.job_ids.extend(result)
        out.append(item)
    return out


def results_from_pb(items, kinds: list[str]) -> list:
    """Back to plain values; ``kinds`` are the commands' oneof names, in order."""
    out = []
    for item, kind in zip(items, kinds):
        if item.error:
            out.append(item.error)
        elif kind == "enqueue":
            out.append(list(item.job_ids))
        elif kind == "lease":
            out.append([Grant(j.job_id, j.attempt, j.lease_expires_at_us, j.receipt)
                        for j in item.jobs])
        elif kind in ("ack", "nack", "extend", "expire"):
            out.append(list(item.errors))
        else:
            out.append(None)
    return out
