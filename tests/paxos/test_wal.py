"""The acceptor's write-ahead log: recovery, torn tails, corruption, compaction, group commit.

Paxos Made Simple §2.5: "An acceptor records its intended response in stable
storage before actually sending the response." These tests check that what
`sync()` made durable comes back after a restart, and nothing that was not
fully written does.
"""

from __future__ import annotations

import os
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from dpq.paxos import walcodec
from dpq.paxos.types import NOOP, ZERO_BALLOT, Ballot, Entry, HardState, Proposal, Snapshot
from dpq.paxos.wal import Recovered, WalCorruption, WalError, WriteAheadLog


def entry(slot: int, rnd: int = 1, node: int = 1, data: bytes | None = None) -> Entry:
    if data is None:
        data = f"jobs for slot {slot}".encode()
    return Entry(slot, Ballot(rnd, node), Proposal(f"client-{slot % 3}", slot, data))


def hs(rnd: int, node: int, commit: int) -> HardState:
    return HardState(Ballot(rnd, node), commit)


def reopen(path: Path, **kw: int) -> Recovered:
    with WriteAheadLog.open(path, **kw) as wal:
        return wal.recovered


def segments(path: Path) -> list[Path]:
    return sorted(path.glob("wal-*.log"))


def records(path: Path) -> list[walcodec.Record]:
    found: list[tuple[int, walcodec.Record]] = []
    assert walcodec.scan(path.read_bytes(), found) is None
    return [rec for _, rec in found]


class SyncCounter:
    """Counts fsync/fdatasync calls while still performing them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        for name in ("fsync", "fdatasync"):
            real = getattr(os, name)
            monkeypatch.setattr(os, name, self._counting(real))

    def _counting(self, real: Callable[[int], None]) -> Callable[[int], None]:
        def call(fd: int) -> None:
            self.calls += 1
            real(fd)

        return call


# ---------------------------------------------------------------- round trip


def test_a_new_directory_recovers_the_empty_state(tmp_path: Path) -> None:
    path = tmp_path / "node-1" / "wal"
    with WriteAheadLog.open(path) as wal:
        assert wal.recovered == Recovered(HardState(ZERO_BALLOT, 0), [], None)
    assert len(segments(path)) == 1
    assert reopen(path) == Recovered(HardState(ZERO_BALLOT, 0), [], None)


@pytest.mark.parametrize("segment_bytes", [64 << 20, 300], ids=["one-segment", "many-segments"])
def test_round_trip_keeps_hard_state_entries_newest_per_slot_and_snapshot(
    tmp_path: Path, segment_bytes: int
) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=segment_bytes) as wal:
        wal.append_hard_state(hs(1, 1, 0))
        for s in range(1, 9):
            wal.append_entries([entry(s)])
        wal.sync()
        wal.append_hard_state(hs(2, 3, 4))
        # A new leader re-proposes slots 5 and 6 at a higher ballot (slot 6 as a
        # gap-filling no-op), and the acceptor accepts them again.
        reaccepted = [
            Entry(5, Ballot(2, 3), Proposal("client-é", 77, b"\x00" * 40)),
            Entry(6, Ballot(2, 3), NOOP),
        ]
        wal.append_entries(reaccepted)
        wal.append_entries([entry(9, 2, 3, data=b"")])
        wal.save_snapshot(Snapshot(2, b"state up to slot 2"))
        wal.sync()

    got = reopen(tmp_path, segment_bytes=segment_bytes)
    assert got.hard_state == hs(2, 3, 4)
    assert got.snapshot == Snapshot(2, b"state up to slot 2")
    assert got.entries == [
        entry(3), entry(4), *reaccepted, entry(7), entry(8), entry(9, 2, 3, data=b"")
    ]
    if segment_bytes == 300:  # the newer record of slot 5 is in a later segment
        holding_5 = [
            seg for seg in segments(tmp_path)
            for r in records(seg) if isinstance(r, Entry) and r.slot == 5
        ]
        assert len(holding_5) == 2 and holding_5[0] < holding_5[1]


def test_close_syncs_what_is_pending(tmp_path: Path) -> None:
    wal = WriteAheadLog.open(tmp_path)
    wal.append_hard_state(hs(4, 2, 1))
    wal.append_entries([entry(1, 4, 2)])
    wal.close()
    wal.close()  # idempotent
    assert reopen(tmp_path) == Recovered(hs(4, 2, 1), [entry(1, 4, 2)], None)
    with pytest.raises(WalError, match="closed"):
        wal.append_entries([entry(2)])


def test_rotation_starts_every_segment_with_the_current_hard_state(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=200) as wal:
        for s in range(1, 30):
            wal.append_hard_state(hs(s, 1, s - 1))
            wal.append_entries([entry(s, s)])
            wal.sync()
    segs = segments(tmp_path)
    assert len(segs) > 5
    for n, seg in enumerate(segs, start=1):
        recs = records(seg)
        assert isinstance(recs[0], HardState), seg
        assert recs[0] == hard_state_before(segs, n)
        if seg != segs[-1]:
            assert recs[-1] == walcodec.Seal(n), seg
        assert seg.stat().st_size < 200 + 200  # at most one step past the limit
    assert reopen(tmp_path).hard_state == hs(29, 1, 28)


def hard_state_before(segs: list[Path], n: int) -> HardState:
    """The last hard state written before segment ``n`` began (what it must start with)."""
    if n == 1:
        return HardState(ZERO_BALLOT, 0)
    return [r for r in records(segs[n - 2]) if isinstance(r, HardState)][-1]


def test_rotation_seals_a_segment_only_after_syncing_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []

    def recording(real: Callable[[int], None]) -> Callable[[int], None]:
        def call(fd: int) -> None:
            synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
            real(fd)

        return call

    with WriteAheadLog.open(tmp_path, segment_bytes=100) as wal:
        wal.append_entries([entry(1, data=bytes(100))])  # unsynced, and over the limit
        monkeypatch.setattr(os, "fsync", recording(os.fsync))
        monkeypatch.setattr(os, "fdatasync", recording(os.fdatasync))
        wal.append_entries([entry(2)])  # rotates first
        # The old segment is made durable before it becomes sealed (a torn record
        # in a sealed segment would read as corruption), and the new one is
        # durable, directory entry included, before anything is appended to it.
        assert synced == [
            "wal-0000000000000001.log", "wal-0000000000000002.log", tmp_path.name
        ]


def test_a_second_open_of_the_same_directory_is_refused(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path), pytest.raises(WalError, match="in use"):
        WriteAheadLog.open(tmp_path)
    reopen(tmp_path)  # the lock went away with close()


# ---------------------------------------------------------------- torn tail


def _log_with_last_record(directory: Path, last: str) -> tuple[Path, int, Recovered]:
    """A synced log whose last record starts at the returned offset.

    Returns the segment, that offset, and what recovery must yield without the
    last record.
    """
    with WriteAheadLog.open(directory) as wal:
        wal.append_hard_state(hs(1, 1, 0))
        wal.append_entries([entry(s) for s in range(1, 6)])
        wal.append_hard_state(hs(2, 2, 3))
        wal.append_entries([entry(4, 2, 2, data=b"re-accepted")])
        wal.sync()
        before = Recovered(
            hs(2, 2, 3),
            [entry(1), entry(2), entry(3), entry(4, 2, 2, b"re-accepted"), entry(5)],
            None,
        )
        (seg,) = segments(directory)
        start = seg.stat().st_size
        if last == "entry":
            wal.append_entries([entry(6, 2, 2, data=bytes(range(60)))])
        else:
            wal.append_hard_state(hs(3, 1, 5))
        wal.sync()
    assert seg.stat().st_size > start
    return seg, start, before


def _check_recovers_prefix(directory: Path, seg_name: str, start: int, before: Recovered) -> None:
    seg = directory / seg_name
    assert reopen(directory) == before
    assert seg.stat().st_size == start, "the torn record must be truncated away"
    # Appending after the truncation works and survives another restart.
    with WriteAheadLog.open(directory) as wal:
        wal.append_entries([entry(100, 5, 1)])
        wal.sync()
    again = reopen(directory)
    assert again.entries == [*before.entries, entry(100, 5, 1)]
    assert again.hard_state == before.hard_state


@pytest.mark.slow
@pytest.mark.parametrize("last", ["entry", "hard_state"])
def test_a_log_cut_at_every_offset_of_its_last_record_recovers_the_records_before_it(
    tmp_path: Path, last: str
) -> None:
    seg, start, before = _log_with_last_record(tmp_path / "src", last)
    full = seg.read_bytes()
    for cut in range(start, len(full)):
        d = tmp_path / f"cut-{cut}"
        d.mkdir()
        (d / seg.name).write_bytes(full[:cut])
        _check_recovers_prefix(d, seg.name, start, before)


@pytest.mark.parametrize("last", ["entry", "hard_state"])
def test_a_flipped_byte_anywhere_in_the_last_record_drops_that_record_only(
    tmp_path: Path, last: str
) -> None:
    seg, start, before = _log_with_last_record(tmp_path / "src", last)
    full = seg.read_bytes()
    for at in range(start, len(full)):
        d = tmp_path / f"flip-{at}"
        d.mkdir()
        damaged = bytearray(full)
        damaged[at] ^= 0xFF
        (d / seg.name).write_bytes(damaged)
        _check_recovers_prefix(d, seg.name, start, before)


@pytest.mark.parametrize(
    "tail",
    [
        pytest.param(bytes(4096), id="zero-filled"),  # length 0 and crc32(b"") == 0
        pytest.param(walcodec.FRAME.pack(0xFFFF_FFF0, 0) + b"x" * 100, id="absurd-length"),
        pytest.param(b"\x07\x00", id="short-header"),
    ],
)
def test_garbage_after_the_last_good_record_is_truncated(tmp_path: Path, tail: bytes) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        wal.append_hard_state(hs(1, 1, 0))
        wal.append_entries([entry(1), entry(2)])
    (seg,) = segments(tmp_path)
    good = seg.stat().st_size
    with seg.open("ab") as f:
        f.write(tail)
    assert reopen(tmp_path) == Recovered(hs(1, 1, 0), [entry(1), entry(2)], None)
    assert seg.stat().st_size == good


def test_a_length_over_the_sane_maximum_is_torn_even_if_the_file_is_that_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(walcodec, "MAX_PAYLOAD", 1000)
    with WriteAheadLog.open(tmp_path) as wal:
        wal.append_entries([entry(1)])
    (seg,) = segments(tmp_path)
    good = seg.stat().st_size
    payload = b"\x02" + bytes(1000)
    with seg.open("ab") as f:
        f.write(walcodec.FRAME.pack(len(payload), zlib.crc32(payload)) + payload)
    assert reopen(tmp_path).entries == [entry(1)]
    assert seg.stat().st_size == good


def test_a_checksummed_record_that_does_not_decode_is_corruption_not_a_torn_tail(
    tmp_path: Path,
) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        wal.append_entries([entry(1)])
    (seg,) = segments(tmp_path)
    at = seg.stat().st_size
    payload = b"\x09unknown record type"
    with seg.open("ab") as f:
        f.write(walcodec.FRAME.pack(len(payload), zlib.crc32(payload)) + payload)
    size = seg.stat().st_size
    with pytest.raises(WalCorruption, match="unknown record type 9") as err:
        WriteAheadLog.open(tmp_path)
    assert (err.value.path, err.value.offset) == (seg, at)
    assert seg.stat().st_size == size, "nothing may be truncated"


# ---------------------------------------------------------------- sealed segments


def _three_segments(directory: Path) -> list[Path]:
    with WriteAheadLog.open(directory, segment_bytes=250) as wal:
        wal.append_hard_state(hs(1, 1, 0))
        for s in range(1, 20):
            wal.append_entries([entry(s)])
    segs = segments(directory)
    assert len(segs) >= 3
    return segs


def test_a_flipped_byte_in_a_sealed_segment_raises_naming_file_and_offset(
    tmp_path: Path,
) -> None:
    segs = _three_segments(tmp_path)
    found: list[tuple[int, walcodec.Record]] = []
    walcodec.scan(segs[0].read_bytes(), found)
    second_record = found[1][0]
    data = bytearray(segs[0].read_bytes())
    data[second_record + walcodec.FRAME.size + 3] ^= 0x01
    segs[0].write_bytes(data)
    sizes = [s.stat().st_size for s in segs]
    for _ in range(2):  # a failed open leaves everything as it was, lock included
        with pytest.raises(WalCorruption, match="sealed segment") as err:
            WriteAheadLog.open(tmp_path, segment_bytes=250)
        assert (err.value.path, err.value.offset) == (segs[0], second_record)
        assert str(segs[0]) in str(err.value) and str(second_record) in str(err.value)
    assert [s.stat().st_size for s in segs] == sizes


def test_a_truncated_sealed_segment_raises(tmp_path: Path) -> None:
    segs = _three_segments(tmp_path)
    data = segs[1].read_bytes()
    segs[1].write_bytes(data[:-5])
    with pytest.raises(WalCorruption) as err:
        WriteAheadLog.open(tmp_path)
    assert err.value.path == segs[1]


def test_a_sealed_segment_that_lost_whole_records_from_its_end_raises(tmp_path: Path) -> None:
    segs = _three_segments(tmp_path)
    found: list[tuple[int, walcodec.Record]] = []
    walcodec.scan(segs[0].read_bytes(), found)
    assert found[-1][1] == walcodec.Seal(1)
    for cut in (found[-1][0], found[-2][0]):  # cut exactly at a record boundary
        segs[0].write_bytes(segs[0].read_bytes()[:cut])
        with pytest.raises(WalCorruption, match="seal") as err:
            WriteAheadLog.open(tmp_path)
        assert err.value.path == segs[0]


def test_a_crash_after_sealing_and_before_the_next_segment_recovers(tmp_path: Path) -> None:
    segs = _three_segments(tmp_path / "src")
    (tmp_path / "crashed").mkdir()
    shutil.copy(segs[0], tmp_path / "crashed" / segs[0].name)  # the next one never appeared
    expected = [r for r in records(segs[0]) if isinstance(r, Entry)]
    with WriteAheadLog.open(tmp_path / "crashed") as wal:
        assert wal.recovered.entries == expected
        wal.append_entries([entry(99)])
    assert [s.name for s in segments(tmp_path / "crashed")] == [s.name for s in segs[:2]]
    assert reopen(tmp_path / "crashed").entries == [*expected, entry(99)]


def test_a_missing_middle_segment_raises(tmp_path: Path) -> None:
    segs = _three_segments(tmp_path)
    segs[1].unlink()
    with pytest.raises(WalCorruption, match="missing") as err:
        WriteAheadLog.open(tmp_path)
    assert err.value.path == segs[1]


# ---------------------------------------------------------------- compaction


def test_compaction_drops_old_segments_and_keeps_the_hard_state(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=400) as wal:
        # The only hard-state record the caller ever appends is in the first segment.
        wal.append_hard_state(hs(7, 2, 0))
        for s in range(1, 61):
            wal.append_entries([entry(s, 7, 2)])
            wal.sync()
        before = segments(tmp_path)
        slots = {seg: [r.slot for r in records(seg) if isinstance(r, Entry)] for seg in before}
        wal.save_snapshot(Snapshot(30, b"applied through 30"))
        dropped = wal.compact(30)
        after = segments(tmp_path)
        assert dropped == len(before) - len(after) > 0
        assert after == before[dropped:], "only the oldest segments go"
        assert all(max(slots[seg]) <= 30 for seg in before[:dropped])
        assert max(slots[after[0]]) > 30, "compaction stopped too early"

    got = reopen(tmp_path, segment_bytes=400)
    assert got.hard_state == hs(7, 2, 0)
    assert got.snapshot == Snapshot(30, b"applied through 30")
    assert got.entries == [entry(s, 7, 2) for s in range(31, 61)]


def test_compaction_needs_a_snapshot_that_covers_it(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=100) as wal:
        for s in range(1, 10):
            wal.append_entries([entry(s)])
        with pytest.raises(ValueError, match="snapshot"):
            wal.compact(3)
        wal.save_snapshot(Snapshot(3, b"s"))
        with pytest.raises(ValueError, match="covers up to 3"):
            wal.compact(4)
        with pytest.raises(ValueError, match="older"):
            wal.save_snapshot(Snapshot(2, b"s"))
        n = len(segments(tmp_path))
        assert wal.compact(3) > 0
        assert len(segments(tmp_path)) < n


def test_compaction_never_drops_the_active_segment_or_one_after_a_later_slot(
    tmp_path: Path,
) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=150) as wal:
        wal.append_entries([entry(50)])  # first segment: a high slot
        for s in range(1, 10):
            wal.append_entries([entry(s)])
        n = len(segments(tmp_path))
        wal.save_snapshot(Snapshot(20, b"s"))
        # Segment 1 holds slot 50 > 20, so nothing behind it goes either.
        assert wal.compact(20) == 0
        assert len(segments(tmp_path)) == n
    with WriteAheadLog.open(tmp_path / "single") as wal:
        wal.append_entries([entry(1)])
        wal.save_snapshot(Snapshot(100, b"s"))
        assert wal.compact(100) == 0
        assert len(segments(tmp_path / "single")) == 1


# ---------------------------------------------------------------- snapshots


def test_a_leftover_temp_snapshot_is_removed_and_the_previous_one_kept(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        wal.save_snapshot(Snapshot(5, b"five"))
    (tmp_path / "snapshot.tmp").write_bytes(b"half a snapshot, then the power went")
    assert reopen(tmp_path).snapshot == Snapshot(5, b"five")
    assert not (tmp_path / "snapshot.tmp").exists()


def test_a_crash_before_the_rename_keeps_the_previous_snapshot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        wal.save_snapshot(Snapshot(5, b"five"))

        def crash(src: object, dst: object) -> None:
            raise OSError("simulated crash before rename")

        with monkeypatch.context() as m:
            m.setattr(os, "replace", crash)
            with pytest.raises(OSError, match="simulated"):
                wal.save_snapshot(Snapshot(9, b"nine"))
        assert wal.snapshot == Snapshot(5, b"five")
        with pytest.raises(ValueError, match="covers up to 5"):
            wal.compact(9)  # the failed snapshot must not justify dropping entries
    assert reopen(tmp_path).snapshot == Snapshot(5, b"five")
    assert sorted(p.name for p in tmp_path.iterdir() if "snap" in p.name) == ["snapshot"]


def test_save_snapshot_fsyncs_the_file_before_the_rename_and_the_directory_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync-dir" if os.path.isdir(f"/proc/self/fd/{fd}") else "fsync-file")
        real_fsync(fd)

    def replace(src: object, dst: object) -> None:
        events.append("rename")
        real_replace(src, dst)  # type: ignore[arg-type]

    with WriteAheadLog.open(tmp_path) as wal:
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        wal.save_snapshot(Snapshot(1, b"one"))
    assert events[:3] == ["fsync-file", "rename", "fsync-dir"]


def test_a_staged_snapshot_counts_only_once_kept(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path, segment_bytes=100) as wal:
        for s in range(1, 10):
            wal.append_entries([entry(s)])
        wal.save_snapshot(Snapshot(2, b"two"))
        staged = wal.stage_snapshot(Snapshot(6, b"six"))
        wal.append_entries([entry(10)])  # the log goes on while a snapshot is staged
        assert wal.snapshot == Snapshot(2, b"two")
        with pytest.raises(ValueError, match="covers up to 2"):
            wal.compact(6)  # staged is not saved: it must not justify dropping entries
        assert reopen_snapshot_after_crash(tmp_path) == Snapshot(2, b"two")
        assert wal.keep_snapshot(staged) is True
        assert wal.snapshot == Snapshot(6, b"six")
        assert wal.compact(6) > 0
    got = reopen(tmp_path)
    assert got.snapshot == Snapshot(6, b"six")
    assert [e.slot for e in got.entries][-1] == 10
    assert sorted(p.name for p in tmp_path.iterdir() if "snap" in p.name) == ["snapshot"]


def reopen_snapshot_after_crash(path: Path) -> Snapshot | None:
    """What a restart would find now (a copy of the folder, opened without the lock)."""
    copy = path.parent / (path.name + "-crash")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(path, copy, ignore=shutil.ignore_patterns("LOCK"))
    found = reopen(copy).snapshot
    assert not (copy / "snapshot.staged").exists(), "a staged file survived a restart"
    return found


def test_a_staged_snapshot_older_than_the_saved_one_is_dropped(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        staged = wal.stage_snapshot(Snapshot(4, b"four"))
        wal.save_snapshot(Snapshot(7, b"seven from the leader"))  # installed meanwhile
        assert wal.keep_snapshot(staged) is False
        assert wal.snapshot == Snapshot(7, b"seven from the leader")
        assert not staged.path.exists()
    assert reopen(tmp_path).snapshot == Snapshot(7, b"seven from the leader")


def test_a_damaged_snapshot_is_corruption(tmp_path: Path) -> None:
    with WriteAheadLog.open(tmp_path) as wal:
        wal.save_snapshot(Snapshot(5, b"five"))
    data = bytearray((tmp_path / "snapshot").read_bytes())
    data[-1] ^= 0x20
    (tmp_path / "snapshot").write_bytes(data)
    with pytest.raises(WalCorruption, match="snapshot"):
        WriteAheadLog.open(tmp_path)


# ---------------------------------------------------------------- group commit and I/O


def test_many_appends_then_one_sync_is_one_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = SyncCounter(monkeypatch)
    writes = 0
    real_write = os.write

    def write(fd: int, data: bytes) -> int:
        nonlocal writes
        writes += 1
        return real_write(fd, data)

    with WriteAheadLog.open(tmp_path) as wal:
        counter.calls = 0
        monkeypatch.setattr(os, "write", write)
        for step in range(50):
            wal.append_hard_state(hs(1, 1, step))
            wal.append_entries([entry(step * 10 + i) for i in range(10)])
        assert writes == 100, "one write per append call, not one per record"
        assert counter.calls == 0, "appends must not sync"
        wal.sync()
        assert counter.calls == 1
        wal.sync()  # nothing new: no fsync
        assert counter.calls == 1
        wal.append_entries([entry(1000)])
        wal.sync()
        assert counter.calls == 2
    assert len(reopen(tmp_path).entries) == 501


def test_after_a_failed_fsync_the_log_refuses_work_until_reopened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wal = WriteAheadLog.open(tmp_path)
    wal.append_entries([entry(1)])
    wal.sync()
    wal.append_entries([entry(2)])

    def eio(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with monkeypatch.context() as m:
        m.setattr(os, "fdatasync", eio)
        with pytest.raises(WalError, match="I/O error"):
            wal.sync()
    # A retry could report success for pages the kernel already dropped.
    with pytest.raises(WalError, match="reopen"):
        wal.sync()
    with pytest.raises(WalError, match="reopen"):
        wal.append_entries([entry(3)])
    wal.close()
    assert [e.slot for e in reopen(tmp_path).entries][:1] == [1]


def test_an_oversized_entry_is_refused_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(walcodec, "MAX_PAYLOAD", 1000)
    with WriteAheadLog.open(tmp_path) as wal:
        (seg,) = segments(tmp_path)
        size = seg.stat().st_size
        with pytest.raises(ValueError, match="limit"):
            wal.append_entries([entry(1), entry(2, data=bytes(2000))])
        assert seg.stat().st_size == size
    assert reopen(tmp_path).entries == []


def test_a_recovered_log_can_be_copied_and_reopened(tmp_path: Path) -> None:
    # The torn-tail tests copy segment files into fresh directories; make sure a
    # plain copy of a whole directory is a valid log too.
    with WriteAheadLog.open(tmp_path / "a", segment_bytes=200) as wal:
        wal.append_hard_state(hs(3, 3, 3))
        wal.append_entries([entry(s) for s in range(1, 12)])
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert reopen(tmp_path / "b") == reopen(tmp_path / "a")
