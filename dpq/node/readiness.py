"""When a node says SERVING on the standard gRPC health service (issue 15).

A node serves (``""`` and ``dpq.v1.Queue`` both SERVING) only when all hold:

1. it has replayed its own log: applied every slot it knew committed at start;
2. it knows a live leader (``Replica.in_lease``): it leads and a quorum answered
   within the last election timeout (else ``_check_quorum`` made it step down), or
   it follows a leader it heard from within the election timeout;
3. it has caught up: its applied slot is within ``CATCH_UP_SLOTS`` of the highest
   commit index a leader announced to it (``Replica.leader_commit``).

Otherwise NOT_SERVING. Once serving, a node falls back to NOT_SERVING when it
loses its leader or quorum (2), at once, or when it falls more than
``FALL_BEHIND_SLOTS`` behind (a wider bound than the way in, so a follower a few
slots late under load does not flap).

Pure: the node feeds it numbers from its replica and state (``Node._watch_readiness``).
"""

from __future__ import annotations

from typing import NamedTuple

#: A node starts serving when its applied slot is this close to the leader's commit.
CATCH_UP_SLOTS = 128
#: A serving node stops when it falls this far behind.
FALL_BEHIND_SLOTS = 1024


class Verdict(NamedTuple):
    serving: bool
    reason: str  # one line for the log


class Readiness:
    """The health status of one node, from its progress. ``replay_through``: the
    commit index its log held when it started (replayed once applied)."""

    def __init__(self, replay_through: int, *, catch_up: int = CATCH_UP_SLOTS,
                 fall_behind: int = FALL_BEHIND_SLOTS) -> None:
        self.replay_through = replay_through
        self.catch_up = catch_up
        self.fall_behind = fall_behind
        self.serving = False
        self._replayed = replay_through == 0

    def assess(self, *, applied: int, leader_commit: int, in_lease: bool,
               leader: int | None) -> Verdict:
        if not self._replayed:
            if applied < self.replay_through:
                return self._verdict(False, f"replaying its log: applied slot {applied} of "
                                            f"{self.replay_through}")
            self._replayed = True
        if not in_lease or leader is None:
            return self._verdict(False, "knows no live leader (no quorum heard within an "
                                        "election timeout)")
        lag = max(0, leader_commit - applied)
        bound = self.fall_behind if self.serving else self.catch_up
        if lag > bound:
            return self._verdict(False, f"catching up: applied slot {applied}, leader's commit "
                                        f"{leader_commit} ({lag} behind; serves within "
                                        f"{self.catch_up})")
        return self._verdict(True, f"node {leader} leads; applied slot {applied} of "
                                   f"{leader_commit}")

    def _verdict(self, serving: bool, reason: str) -> Verdict:
        self.serving = serving
        return Verdict(serving, reason)
