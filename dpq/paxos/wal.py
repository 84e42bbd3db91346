"""The durable write-ahead log of one Paxos acceptor.

The core (``dpq.paxos.core``) is pure: after each step it hands its driver a
:class:`~dpq.paxos.types.HardState` (the promise) and the
:class:`~dpq.paxos.types.Entry` values it accepted. The driver appends them
here, calls :meth:`WriteAheadLog.sync` once for the whole step (group commit),
and only then sends the step's messages. A restarted node rebuilds its acceptor
from :attr:`WriteAheadLog.recovered`.

Layout of the data directory::

    wal-0000000000000001.log   segments, in order; the last one is active
    wal-0000000000000002.log   (record format: dpq.paxos.walcodec)
    snapshot                   the newest snapshot, replaced atomically
    snapshot.tmp               a snapshot being written; removed on open
    LOCK                       flock()ed while a WriteAheadLog has the directory

Every segment starts with a hard-state record (the state when it was created),
so dropping old segments in :meth:`~WriteAheadLog.compact` never loses the
newest promise. Every finished segment ends with a seal record naming it, so a
finished segment that lost records from its end is detected, not believed. On
recovery the last hard-state record wins, and for each slot the last entry
record wins (a slot is re-accepted at a higher ballot after a leader change).

Durability rules
----------------
* When :meth:`~WriteAheadLog.sync` returns, every record appended before the
  call is on stable storage: it survives a process kill, a kernel crash and a
  power cut (on a device that honours cache flushes). The acceptor may answer
  only then (Paxos Made Simple §2.5: "An acceptor records its intended
  response in stable storage before actually sending the response.").
* Appended but not yet synced records are in the page cache: they survive a
  process kill but not a machine crash, and a machine crash may keep any prefix
  of them, with a torn record at its end. Recovery keeps the records before the
  first torn or corrupt one in the *last* segment and truncates the rest; those
  records were never acknowledged to anyone, so dropping them is safe.
* Rotation appends the seal record and fsyncs the segment before the next
  segment exists, so a bad record in a sealed (not last) segment cannot be a
  torn write: it is real corruption of acknowledged data, and
  :meth:`WriteAheadLog.open` raises :class:`WalCorruption` instead of dropping
  it. So does a sealed segment without its seal, a missing segment in the
  middle of the sequence, and a record whose checksum matches but whose
  contents do not decode (a bug or an unknown format, never a crash).
* Why the directory is fsynced: ``fsync`` of a file makes its data and inode
  durable, not the directory entry that names it. A new segment, or a snapshot
  renamed into place, could vanish in a power cut along with everything synced
  into it. So a new segment is created, written, fsynced and then its directory
  is fsynced before any record in it is acknowledged; a snapshot is fsynced,
  renamed, then its directory fsynced; compaction fsyncs the directory after
  each removed segment so the survivors always form a contiguous run.
* After any failed write or fsync the log refuses further use
  (:class:`WalError`): after a failed fsync Linux may have dropped the dirty
  pages and marked them clean, so a retry can "succeed" with the data gone
  (PostgreSQL's "fsyncgate", 2018). The node must stop and reopen the log,
  which recovers what is really on disk.
* CRC32 detects torn and corrupted records; it does not repair them. Damage to
  already-synced records of the *active* segment looks the same as a torn
  tail and is truncated, with a warning in the log.

Not thread-safe: one caller at a time (the node calls it from a single executor
thread), except :meth:`WriteAheadLog.stage_snapshot`, which writes a file of its
own. Nothing in here starts threads or touches asyncio.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import os
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, NoReturn, Self

from dpq.paxos import walcodec
from dpq.paxos.types import ZERO_BALLOT, Entry, HardState, Snapshot

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "Recovered",
    "StagedSnapshot",
    "WalCorruption",
    "WalError",
    "WriteAheadLog",
]

DEFAULT_SEGMENT_BYTES = 64 << 20

_log = logging.getLogger(__name__)

_SEGMENT_RE = re.compile(r"wal-([0-9a-f]{16})\.log")
_SNAPSHOT = "snapshot"
_SNAPSHOT_TMP = "snapshot.tmp"
_SNAPSHOT_STAGED = "snapshot.staged"
_LOCK = "LOCK"
# magic, slot, len(data), crc32 over (slot, len) and then data
_SNAP_HEADER = struct.Struct("<8sqQI")
_SNAP_MAGIC = b"DPQSNAP1"


@dataclass(frozen=True)
class StagedSnapshot:
    """A snapshot written and fsynced beside the log, not yet the saved one."""

    snapshot: Snapshot
    path: Path


def _write_snapshot_file(path: Path, snapshot: Snapshot) -> None:
    """Write and fsync one snapshot file (header with a CRC, then the data)."""
    data = snapshot.data
    head = struct.pack("<qQ", snapshot.slot, len(data))
    crc = zlib.crc32(data, zlib.crc32(head))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            _write_all(fd, _SNAP_HEADER.pack(_SNAP_MAGIC, snapshot.slot, len(data), crc))
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


class WalError(Exception):
    """The log cannot be used: closed, locked by another process, or broken by an I/O error."""


class WalCorruption(WalError):
    """Bytes on disk that no crash can explain; acknowledged data may be at stake."""

    def __init__(self, path: Path, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class Recovered(NamedTuple):
    """What :meth:`WriteAheadLog.open` found on disk."""

    hard_state: HardState
    #: The newest record of each slot after the snapshot, sorted by slot.
    entries: list[Entry]
    snapshot: Snapshot | None


@dataclass
class _Segment:
    seq: int
    path: Path
    max_slot: int | None  # highest entry slot in the segment; None if it has no entries


def _segment_name(seq: int) -> str:
    return f"wal-{seq:016x}.log"


def _datasync(fd: int) -> None:
    # Looked up at call time, not import time, so tests can count the calls.
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:  # pragma: no cover - macOS
        os.fsync(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class WriteAheadLog:
    """An append-only log of hard states and accepted entries, in segments.

    Open it with :meth:`open`; read :attr:`recovered` once to rebuild the
    acceptor; then, per step of the core: :meth:`append_hard_state`,
    :meth:`append_entries`, :meth:`sync`, send.
    """

    def __init__(
        self,
        directory: Path,
        lock_fd: int,
        segments: list[_Segment],
        active_fd: int,
        active_size: int,
        recovered: Recovered,
        segment_bytes: int,
    ) -> None:
        # Use WriteAheadLog.open().
        self._dir = directory
        self._lock_fd = lock_fd
        self._segments = segments
        self._fd = active_fd
        self._size = active_size
        self._recovered = recovered
        self._segment_bytes = segment_bytes
        self._hard_state = recovered.hard_state
        self._snapshot = recovered.snapshot
        self._pending = False
        self._closed = False
        self._failed: BaseException | None = None

    # ------------------------------------------------------------ opening

    @classmethod
    def open(
        cls, directory: str | os.PathLike[str], *, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> WriteAheadLog:
        """Open (creating if needed) the log in ``directory`` and recover it.

        Truncates a torn tail of the last segment; raises :class:`WalCorruption`
        for anything else that is wrong on disk, and :class:`WalError` if
        another process has the directory open.
        """
        if segment_bytes <= 0:
            raise ValueError(f"segment_bytes must be positive, got {segment_bytes}")
        path = Path(directory)
        if not path.is_dir():
            path.mkdir(parents=True)
            _fsync_dir(path.parent)
        lock_fd = _lock(path)
        try:
            return cls._recover(path, lock_fd, segment_bytes)
        except BaseException:
            os.close(lock_fd)
            raise

    @classmethod
    def _recover(cls, path: Path, lock_fd: int, segment_bytes: int) -> WriteAheadLog:
        for unfinished in (_SNAPSHOT_TMP, _SNAPSHOT_STAGED):  # a crash mid-snapshot left it
            (path / unfinished).unlink(missing_ok=True)
        snapshot = _load_snapshot(path / _SNAPSHOT)

        seqs = sorted(
            int(m.group(1), 16) for name in os.listdir(path) if (m := _SEGMENT_RE.fullmatch(name))
        )
        for prev, seq in itertools.pairwise(seqs):
            if seq != prev + 1:
                raise WalCorruption(
                    path / _segment_name(prev + 1), 0, "segment missing between two that exist"
                )

        hard_state = HardState(ZERO_BALLOT, 0)
        latest: dict[int, Entry] = {}
        segments: list[_Segment] = []
        sealed = False  # whether the segment just read ended with its seal
        for i, seq in enumerate(seqs):
            seg = _Segment(seq, path / _segment_name(seq), None)
            last = i == len(seqs) - 1
            records = _read_segment(seg.path, last)
            if records and not isinstance(records[0][1], HardState):
                raise WalCorruption(seg.path, 0, "segment does not start with a hard-state record")
            sealed = False
            for off, rec in records:
                if sealed:
                    raise WalCorruption(seg.path, off, "record after the segment's seal")
                if isinstance(rec, HardState):
                    hard_state = rec
                elif isinstance(rec, Entry):
                    latest[rec.slot] = rec
                    if seg.max_slot is None or rec.slot > seg.max_slot:
                        seg.max_slot = rec.slot
                elif rec.segment != seq:
                    raise WalCorruption(seg.path, off, f"seal of segment {rec.segment} in {seq}")
                else:
                    sealed = True
            if not last and not sealed:
                raise WalCorruption(
                    seg.path, seg.path.stat().st_size,
                    "finished segment does not end with its seal record (did it lose its end?)",
                )
            segments.append(seg)

        after = snapshot.slot if snapshot is not None else None
        entries = [latest[s] for s in sorted(latest) if after is None or s > after]
        recovered = Recovered(hard_state, entries, snapshot)

        if not segments or sealed:
            # A new log, or a crash between sealing a segment and creating the next.
            seq = segments[-1].seq + 1 if segments else 1
            segments.append(_Segment(seq, path / _segment_name(seq), None))
        active = segments[-1]
        if active.path.exists() and active.path.stat().st_size > 0:
            fd = os.open(active.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            size = os.fstat(fd).st_size
        else:  # new segment, or the active one was torn before its first record ended
            fd, size = _start_segment(active.path, hard_state)
        return cls(path, lock_fd, segments, fd, size, recovered, segment_bytes)

    # ------------------------------------------------------------ reading

    @property
    def recovered(self) -> Recovered:
        """The state found on disk by :meth:`open` (not updated by later appends)."""
        return self._recovered

    @property
    def hard_state(self) -> HardState:
        """The last hard state appended (synced or not), or the recovered one."""
        return self._hard_state

    @property
    def snapshot(self) -> Snapshot | None:
        """The newest durable snapshot."""
        return self._snapshot

    @property
    def directory(self) -> Path:
        return self._dir

    # ------------------------------------------------------------ writing

    def append_hard_state(self, hs: HardState) -> None:
        """Append a hard-state record. Not durable until :meth:`sync`."""
        self._check()
        buf = walcodec.encode_hard_state(hs)
        self._append(buf)
        self._hard_state = hs

    def append_entries(self, entries: Iterable[Entry]) -> None:
        """Append accepted entries with one ``write``. Not durable until :meth:`sync`.

        A slot appended again (re-accepted at a higher ballot) replaces the older
        record on recovery.
        """
        self._check()
        entries = list(entries)
        if not entries:
            return
        buf = walcodec.encode_entries(entries)
        top = max(e.slot for e in entries)
        self._append(buf)
        seg = self._segments[-1]
        if seg.max_slot is None or top > seg.max_slot:
            seg.max_slot = top

    def sync(self) -> None:
        """Make everything appended so far durable with one fdatasync (group commit).

        A no-op if nothing was appended since the last sync.
        """
        self._check()
        if not self._pending:
            return
        try:
            _datasync(self._fd)
        except OSError as exc:
            self._fail(exc)
        self._pending = False

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Durably replace the snapshot: write a temp file, fsync, rename, fsync the directory.

        A crash at any point leaves either the previous snapshot or the new one.
        Entries are not dropped here; call :meth:`compact` afterwards.
        """
        self._check()
        if self._snapshot is not None and snapshot.slot < self._snapshot.slot:
            raise ValueError(
                f"snapshot at slot {snapshot.slot} is older than the saved one at "
                f"{self._snapshot.slot}"
            )
        tmp = self._dir / _SNAPSHOT_TMP
        _write_snapshot_file(tmp, snapshot)
        self._replace_snapshot(tmp, snapshot)

    def stage_snapshot(self, snapshot: Snapshot) -> StagedSnapshot:
        """Write ``snapshot`` to a file of its own and fsync it; the log is not touched.

        The one method that may run in another thread while the log is in use:
        it writes only its own file and reads nothing the others change. A node
        writes a big snapshot this way, beside the thread that fsyncs the log,
        and then makes it the saved one with :meth:`keep_snapshot`.
        """
        path = self._dir / _SNAPSHOT_STAGED
        _write_snapshot_file(path, snapshot)
        return StagedSnapshot(snapshot, path)

    def keep_snapshot(self, staged: StagedSnapshot) -> bool:
        """Make a staged snapshot the saved one (rename, fsync the directory).

        False, and the staged file removed, when the saved snapshot is already as
        new (one from the leader was installed meanwhile).
        """
        self._check()
        if self._snapshot is not None and staged.snapshot.slot <= self._snapshot.slot:
            staged.path.unlink(missing_ok=True)
            return False
        self._replace_snapshot(staged.path, staged.snapshot)
        return True

    def _replace_snapshot(self, written: Path, snapshot: Snapshot) -> None:
        try:
            os.replace(written, self._dir / _SNAPSHOT)
        except BaseException:
            written.unlink(missing_ok=True)
            raise
        _fsync_dir(self._dir)
        # Only now may compact() rely on it: until the rename is durable a
        # restart may still find the previous snapshot.
        self._snapshot = snapshot

    def compact(self, upto_slot: int) -> int:
        """Delete the oldest sealed segments whose entries are all at or below ``upto_slot``.

        ``upto_slot`` must be covered by the saved snapshot: the dropped entries
        exist nowhere else. Stops at the first segment holding a later slot (the
        survivors stay a contiguous run) and never touches the active segment.
        Returns the number of segments deleted.
        """
        self._check()
        if self._snapshot is None or upto_slot > self._snapshot.slot:
            have = None if self._snapshot is None else self._snapshot.slot
            raise ValueError(
                f"cannot compact up to slot {upto_slot}: the saved snapshot covers up to {have}"
            )
        dropped = 0
        while len(self._segments) > 1:
            seg = self._segments[0]
            if seg.max_slot is not None and seg.max_slot > upto_slot:
                break
            seg.path.unlink(missing_ok=True)  # missing: an earlier attempt got this far
            # One directory fsync per segment: if a crash kept a later unlink and
            # lost an earlier one, recovery would see a gap and call it corruption.
            _fsync_dir(self._dir)
            del self._segments[0]
            dropped += 1
        return dropped

    def close(self) -> None:
        """Sync what is pending, then release the files. Idempotent."""
        if self._closed:
            return
        try:
            if self._failed is None:
                self.sync()
        finally:
            self._closed = True
            os.close(self._fd)
            os.close(self._lock_fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------ internals

    def _check(self) -> None:
        if self._closed:
            raise WalError(f"write-ahead log in {self._dir} is closed")
        if self._failed is not None:
            raise WalError(
                f"write-ahead log in {self._dir} failed earlier ({self._failed}); "
                "reopen it to recover what is on disk"
            ) from self._failed

    def _fail(self, exc: OSError) -> NoReturn:
        self._failed = exc
        raise WalError(f"write-ahead log in {self._dir}: I/O error: {exc}") from exc

    def _append(self, buf: bytes) -> None:
        if self._size >= self._segment_bytes:
            self._rotate()
        try:
            _write_all(self._fd, buf)
        except OSError as exc:
            self._fail(exc)
        self._size += len(buf)
        self._pending = True

    def _rotate(self) -> None:
        """Seal the active segment, sync it, and start the next one."""
        try:
            seq = self._segments[-1].seq + 1
            _write_all(self._fd, walcodec.encode_seal(seq - 1))
            self._pending = True
            _datasync(self._fd)
            self._pending = False
            path = self._dir / _segment_name(seq)
            fd, size = _start_segment(path, self._hard_state)
        except OSError as exc:
            self._fail(exc)
        os.close(self._fd)
        self._fd, self._size = fd, size
        self._segments.append(_Segment(seq, path, None))


def _lock(path: Path) -> int:
    fd = os.open(path / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            raise WalError(f"{path} is in use by another WriteAheadLog") from None
        raise
    return fd


def _start_segment(path: Path, hard_state: HardState) -> tuple[int, int]:
    """Create (or refill an empty) segment holding only ``hard_state``, durably."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        buf = walcodec.encode_hard_state(hard_state)
        _write_all(fd, buf)
        os.fsync(fd)
        _fsync_dir(path.parent)
    except BaseException:
        os.close(fd)
        raise
    return fd, len(buf)


def _read_segment(path: Path, last: bool) -> list[tuple[int, walcodec.Record]]:
    """The records of one segment; truncates a torn tail if it is the last one."""
    buf = path.read_bytes()
    found: list[tuple[int, walcodec.Record]] = []
    try:
        torn = walcodec.scan(buf, found)
    except walcodec.BadRecord as exc:
        raise WalCorruption(path, exc.offset, str(exc)) from None
    if torn is not None:
        if not last:
            raise WalCorruption(path, torn.offset, f"{torn.reason} in a sealed segment")
        _log.warning(
            "%s: torn record at byte offset %d (%s): dropping the last %d bytes, "
            "which were never synced",
            path, torn.offset, torn.reason, len(buf) - torn.offset,
        )
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, torn.offset)
            os.fsync(fd)
        finally:
            os.close(fd)
    return found


def _load_snapshot(path: Path) -> Snapshot | None:
    try:
        buf = path.read_bytes()
    except FileNotFoundError:
        return None
    # The snapshot was fsynced before it was renamed into place: any damage is corruption.
    if len(buf) < _SNAP_HEADER.size:
        raise WalCorruption(path, 0, f"snapshot file of {len(buf)} bytes has no header")
    magic, slot, length, crc = _SNAP_HEADER.unpack_from(buf)
    if magic != _SNAP_MAGIC:
        raise WalCorruption(path, 0, f"not a dpq snapshot (magic {magic!r})")
    data = buf[_SNAP_HEADER.size :]
    if length != len(data):
        raise WalCorruption(path, 0, f"snapshot says {length} bytes of data, file has {len(data)}")
    if zlib.crc32(data, zlib.crc32(struct.pack("<qQ", slot, length))) != crc:
        raise WalCorruption(path, _SNAP_HEADER.size, "snapshot CRC mismatch")
    return Snapshot(slot, data)
