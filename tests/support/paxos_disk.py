"""A replica's durable state kept in memory, for tests that drive the Paxos core by
hand with a tiny driver that follows the contract (persist, send, apply, advance)."""

from __future__ import annotations

from typing import NamedTuple

from dpq.paxos import ZERO_BALLOT, Entry, HardState, Ready, Snapshot


class Recovered(NamedTuple):
    hard_state: HardState
    entries: list[Entry]
    snapshot: Snapshot | None


class Disk:
    """What a node persisted, as the WAL would give it back."""

    def __init__(self) -> None:
        self.hard_state = HardState(ZERO_BALLOT, 0)
        self.entries: dict[int, Entry] = {}
        self.snapshot: Snapshot | None = None

    def persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = {s: e for s, e in self.entries.items() if s > rd.snapshot.slot}
        for e in rd.entries:
            self.entries[e.slot] = e
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def recovered(self) -> Recovered:
        return Recovered(self.hard_state, [self.entries[s] for s in sorted(self.entries)],
                         self.snapshot)
