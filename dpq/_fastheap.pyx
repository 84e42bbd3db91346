# cython: language_level=3, cdivision=True
"""The per-node priority heap with aging, compiled: dpq's dequeue hot path.

(``FairHeap``, at the end of this file, is the same heap with fair shares by
tenant within a priority level; its rules are in :mod:`dpq.queue.fairheap`.)

``FastHeap`` keeps the jobs a node owns and hands out the most urgent ready
one.  The rules (aging key, delayed jobs, the clock, membership) are written
down once, in the docstring of :mod:`dpq.queue.heap`, whose ``PyHeap`` is this
class's pure-Python twin and the oracle of its property tests.  Both must give
identical answers and identical error messages.

Layout, and why:

* Jobs are C structs in two 4-ary heaps (ready, ordered by ``(key, seq)``;
  delayed, ordered by ``(due, seq)``), each one PyMem_Raw-allocated array.  A
  4-ary heap is half as deep as a binary one and its four children share one
  or two cache lines, so a pop touches fewer cold lines.  PyMem_Raw* is malloc
  with tracemalloc's hooks, so tests can see the memory come and go.
* Membership lives in an open-addressing hash table (linear probing,
  backward-shift deletion, no per-job allocation) mapping job id -> tag.
  Ids come from a counter, so runs of 8 consecutive ids share a stretch of
  the table (measured: per-item push 40 % faster than a fully scattered
  hash).  The tag is ``seq << 4 | delayed bit | priority``; a heap entry is
  live only if the table holds its id with its exact tag.  ``remove`` therefore just drops
  the id from the table: the entry left in a heap is a tombstone, skipped when
  it surfaces and swept out when tombstones outnumber live jobs.  That keeps
  sifts free of the position bookkeeping an indexed heap needs on every move.
* Counts are counters, so ``len``, ``ready_by_priority`` and friends are O(1)
  and never see tombstones.
* Batch calls loop in C over raw pointers taken from buffer-protocol inputs.
  The GIL is not released inside them: the heap has no lock of its own, and
  the GIL is what keeps two threads from sifting the same array at once.
"""

cimport cython
cimport cpython.array as carray
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_Check
from cpython.number cimport PyNumber_Index
from cpython.object cimport Py_SIZE
from cpython.mem cimport PyMem_RawCalloc, PyMem_RawFree, PyMem_RawRealloc
from libc.stdint cimport (INT64_MAX, INT64_MIN, SIZE_MAX, UINT32_MAX, int8_t, int64_t,
                          uint32_t, uint64_t)
from libc.string cimport memset

import array

__all__ = [
    "DEFAULT_AGING_STEP_US",
    "MAX_AGING_STEP_US",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "STRICT_MAX_US",
    "STRICT_MIN_US",
    "STRIDE",
    "TENANT_MAX",
    "WEIGHT_MAX",
    "WEIGHT_MIN",
    "FairHeap",
    "FastHeap",
]

cdef enum:
    PRIO_MIN = 1
    PRIO_MAX = 5
    ARITY = 4
    PRIO_MASK = 7           # low bits of a tag: the priority
    DELAYED = 8             # set in the table's tag while the job is delayed
    SEQ_SHIFT = 4
    MIN_TABLE = 64          # slots; a power of two
    MIN_HEAP = 64           # entries kept when a heap shrinks
    COMPACT_MIN = 1024      # tombstones tolerated before a sweep is worth it
    MIN_RECORD = 4          # entries in FairHeap's smallest arrays: one job costs 96 bytes

PRIORITY_MIN = PRIO_MIN
PRIORITY_MAX = PRIO_MAX
DEFAULT_AGING_STEP_US = 5_000_000
cdef int64_t MAX_STEP = INT64_MAX // (PRIO_MAX - PRIO_MIN)
MAX_AGING_STEP_US = MAX_STEP
# Strict priority (aging_step_us=0) is aging with a step wider than any time
# span it accepts: ready times within [-2**60, 2**60) and a step of 2**61, so
# a more urgent job always sorts first and one key comparison serves both modes.
cdef int64_t STRICT_SPAN = 1 << 60
STRICT_MIN_US = -STRICT_SPAN
STRICT_MAX_US = STRICT_SPAN - 1

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define DPQ_PREFETCH(p) __builtin_prefetch(p)
    #else
    #define DPQ_PREFETCH(p) ((void)0)
    #endif
    """
    void DPQ_PREFETCH(const void* p) noexcept nogil

ctypedef struct Ready:
    int64_t key
    uint64_t tag            # seq << 4 | priority: breaks ties, proves liveness
    uint64_t job_id

ctypedef struct Delayed:
    int64_t due
    uint64_t tag
    uint64_t job_id
    int64_t key             # the aging key it will have once ready

ctypedef struct FDelayed:     # FairHeap's: a Delayed that knows its tenant
    int64_t due
    uint64_t tag
    uint64_t job_id
    int64_t key
    uint64_t tenant

ctypedef fused Entry:
    Ready
    Delayed
    FDelayed

ctypedef struct Slot:
    uint64_t job_id
    uint64_t tag            # 0: the slot is empty (seq starts at 1)

ctypedef struct FSlot:      # FairHeap's: a Slot that knows its tenant
    uint64_t job_id
    uint64_t tag
    uint64_t tenant

ctypedef struct Table:
    Slot* slots
    size_t mask             # capacity - 1
    size_t used

ctypedef struct FTable:
    FSlot* slots
    size_t mask
    size_t used

# One table scheme, two slot layouts (FastHeap's 16-byte slots keep 8 ids to
# 128 bytes); fused types compile it once per layout, as Entry does the heaps.
ctypedef fused AnySlot:
    Slot
    FSlot

ctypedef fused AnyTable:
    Table
    FTable

ctypedef fused prio_t:
    int8_t
    int64_t


# -- heap primitives (shared by both heaps through the fused Entry type) ----

cdef inline bint _before(const Entry* a, const Entry* b) noexcept nogil:
    if Entry is Ready:
        return a.key < b.key or (a.key == b.key and a.tag < b.tag)
    else:
        return a.due < b.due or (a.due == b.due and a.tag < b.tag)


cdef inline void _sift_up(Entry* h, size_t pos, Entry item) noexcept nogil:
    cdef size_t parent
    while pos > 0:
        parent = (pos - 1) // ARITY
        if not _before(&item, &h[parent]):
            break
        h[pos] = h[parent]
        pos = parent
    h[pos] = item


cdef inline void _sift_down(Entry* h, size_t n, size_t pos, Entry item) noexcept nogil:
    cdef size_t child, best, c, end
    while True:
        child = pos * ARITY + 1
        if child >= n:
            break
        best = child
        end = child + ARITY if n - child > ARITY else n
        for c in range(child + 1, end):
            if _before(&h[c], &h[best]):
                best = c
        if not _before(&h[best], &item):
            break
        h[pos] = h[best]
        pos = best
    h[pos] = item


cdef inline void _heapify(Entry* h, size_t n) noexcept nogil:
    cdef size_t pos
    if n < 2:
        return
    pos = (n - 2) // ARITY + 1
    while pos > 0:
        pos -= 1
        _sift_down(h, n, pos, h[pos])


cdef inline size_t _pop_top(Entry* h, size_t n) noexcept nogil:
    """Drop the top of the ``n``-entry heap ``h``; returns the new size."""
    n -= 1
    if n:
        _sift_down(h, n, 0, h[n])
    return n


cdef int _reserve(void** items, size_t* cap, size_t need, size_t itemsize,
                  size_t least) except -1:
    """Grow an array (doubling, to at least ``least`` items) so it holds ``need`` items."""
    cdef size_t new_cap
    cdef void* p
    if need <= cap[0]:
        return 0
    new_cap = cap[0] * 2 if cap[0] * 2 > need else need
    if new_cap < least:
        new_cap = least
    if new_cap > SIZE_MAX // itemsize:
        raise MemoryError()
    p = PyMem_RawRealloc(items[0], new_cap * itemsize)
    if p == NULL:
        raise MemoryError()
    items[0] = p
    cap[0] = new_cap
    return 0


cdef inline void _trim(void** items, size_t* cap, size_t n, size_t itemsize) noexcept nogil:
    """Shrink an array that is three-quarters empty to twice what it holds."""
    cdef void* p
    cdef size_t new_cap = n * 2 if n * 2 > MIN_HEAP else MIN_HEAP
    if cap[0] <= MIN_HEAP or n >= cap[0] // 4:
        return
    p = PyMem_RawRealloc(items[0], new_cap * itemsize)
    if p != NULL:           # a failed shrink just keeps the bigger block
        items[0] = p
        cap[0] = new_cap


# -- the id table ----------------------------------------------------------

cdef inline uint64_t _spread(uint64_t x) noexcept nogil:
    # murmur3's finalizer: a bijection that scatters neighbouring values
    x ^= x >> 33
    x *= 0xff51afd7ed558ccdULL
    x ^= x >> 33
    x *= 0xc4ceb9fe1a85ec53ULL
    x ^= x >> 33
    return x


cdef inline size_t _home_in(uint64_t spread, uint64_t job_id, size_t mask) noexcept nogil:
    return <size_t>((spread << 3) | (job_id & 7)) & mask


cdef inline size_t _home(const AnyTable* t, uint64_t job_id) noexcept nogil:
    # Job ids come from a counter, so they arrive (and leave, roughly) in
    # runs.  Each run of 8 ids (same id >> 3) gets one scattered 128-byte
    # stretch of the table: pushes miss the cache once per run, not per job.
    return _home_in(_spread(job_id >> 3), job_id, t.mask)


cdef inline AnySlot* _probe(AnySlot* slots, size_t mask, uint64_t job_id) noexcept nogil:
    """The slot holding ``job_id``, or the empty slot where it would go."""
    cdef size_t i = _home_in(_spread(job_id >> 3), job_id, mask)
    while slots[i].tag != 0 and slots[i].job_id != job_id:
        i = (i + 1) & mask
    return &slots[i]


# the lookup, typed per table (a fused function cannot pick its return type)
cdef inline Slot* _lookup(const Table* t, uint64_t job_id) noexcept nogil:
    return _probe(t.slots, t.mask, job_id)


cdef inline FSlot* _flookup(const FTable* t, uint64_t job_id) noexcept nogil:
    return _probe(t.slots, t.mask, job_id)


cdef inline void _erase_at(AnyTable* t, size_t hole) noexcept nogil:
    # Backward-shift deletion: pull later entries of the probe run into the
    # hole, so the table never holds tombstones of its own.
    cdef size_t j = hole
    cdef size_t home
    cdef uint64_t run, cached_run = 0, spread = _spread(0)
    while True:
        j = (j + 1) & t.mask
        if t.slots[j].tag == 0:
            break
        run = t.slots[j].job_id >> 3
        if run != cached_run:   # neighbours mostly share a run: hash it once
            cached_run = run
            spread = _spread(run)
        home = _home_in(spread, t.slots[j].job_id, t.mask)
        # the entry at j may move to the hole only if the hole is on its probe path
        if ((j - home) & t.mask) >= ((j - hole) & t.mask):
            t.slots[hole] = t.slots[j]
            hole = j
    t.slots[hole].tag = 0
    t.used -= 1


cdef inline void _erase(Table* t, Slot* slot) noexcept nogil:
    _erase_at(t, slot - t.slots)


cdef inline void _ferase(FTable* t, FSlot* slot) noexcept nogil:
    _erase_at(t, slot - t.slots)


cdef int _new_slots(AnySlot** slots, size_t* mask, size_t capacity, bint keep) except -1:
    """Give a table ``capacity`` (a power of two) empty slots, moving its ids
    over if ``keep``.  A MemoryError leaves it as it was."""
    cdef AnySlot* old = slots[0]
    cdef size_t i, old_cap = mask[0] + 1
    cdef AnySlot* new = <AnySlot*>PyMem_RawCalloc(capacity, sizeof(AnySlot))
    if new == NULL:
        raise MemoryError()
    if keep:
        for i in range(old_cap):
            if old[i].tag != 0:
                _probe(new, capacity - 1, old[i].job_id)[0] = old[i]
    PyMem_RawFree(old)
    slots[0] = new
    mask[0] = capacity - 1
    return 0


cdef inline int _rehash(AnyTable* t, size_t capacity) except -1:
    return _new_slots(&t.slots, &t.mask, capacity, True)


cdef int _table_reset(AnyTable* t) except -1:
    """Empty (or, in __cinit__, make) the table with MIN_TABLE fresh slots."""
    _new_slots(&t.slots, &t.mask, MIN_TABLE, False)
    t.used = 0
    return 0


cdef void _table_empty(AnyTable* t) noexcept:
    """Drop every entry; give a grown table's memory back if a small one can be had."""
    if t.mask + 1 > MIN_TABLE:
        try:
            _table_reset(t)
            return
        except MemoryError:
            pass
    memset(t.slots, 0, (t.mask + 1) * sizeof(t.slots[0]))
    t.used = 0


cdef int _table_reserve(AnyTable* t, size_t more) except -1:
    """Room for ``more`` ids at a load factor of at most 1/2."""
    cdef size_t want, cap = t.mask + 1
    if more > (SIZE_MAX // 4) // sizeof(t.slots[0]) - t.used:
        raise MemoryError()
    want = (t.used + more) * 2
    if want <= cap:
        return 0
    while cap < want:
        cap *= 2
    return _rehash(t, cap)


cdef void _table_refit(AnyTable* t) noexcept:
    cdef size_t cap = MIN_TABLE
    while cap < t.used * 4:
        cap *= 2
    try:
        _rehash(t, cap)
    except MemoryError:
        pass                # keep the bigger table


cdef inline void _table_shrink(AnyTable* t) noexcept:
    """Give a table that is under 1/8 full back down to twice its need."""
    # inline: every pop asks, and the answer is almost always no
    if t.mask + 1 > MIN_TABLE and t.used * 8 < t.mask + 1:
        _table_refit(t)


# -- tombstones: a heap entry is live iff the table holds its id with its tag --

cdef inline bint _live(const AnyTable* t, const Entry* e) noexcept nogil:
    if Entry is Ready:
        return _probe(t.slots, t.mask, e.job_id).tag == e.tag
    else:
        return _probe(t.slots, t.mask, e.job_id).tag == (e.tag | DELAYED)


cdef inline size_t _drop_dead_top(Entry* h, size_t n, const AnyTable* t) noexcept nogil:
    """Pop tombstones off the heap until a live entry is on top; returns the new size."""
    while n and not _live(t, &h[0]):
        n = _pop_top(h, n)
    return n


cdef size_t _compacted(Entry* h, size_t n, const AnyTable* t) noexcept nogil:
    """Sweep every tombstone out of the heap (O(n)); returns the new size."""
    cdef size_t i, j = 0
    for i in range(n):
        if _live(t, &h[i]):
            h[j] = h[i]
            j += 1
    _heapify(h, j)
    return j


# -- messages (dpq.queue.heap builds the same strings) ---------------------------

cdef str _priority_error(object value):
    return (f"priority must be {PRIORITY_MIN} (most urgent) to {PRIORITY_MAX} "
            f"(least urgent), got {value}")


cdef str _key_error(int64_t ready_at, int priority, int64_t step):
    if step == 0:
        return (f"ready time {ready_at} is out of range for strict priority "
                f"(aging_step_us=0): must be {STRICT_MIN_US} to {STRICT_MAX_US}")
    return (f"aging key overflows int64: ready time {ready_at} + "
            f"(priority {priority} - 1) * aging_step_us {step}")


ctypedef str (*Complaint)(object)


cdef inline long long _in_range(object value, long long lo, long long hi,
                                Complaint complaint) except? -1:
    """``value`` as a C integer if within ``lo..hi``, else ValueError(complaint(value))."""
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow:
        raise ValueError(complaint(value))
    if v < lo or v > hi:
        raise ValueError(complaint(v))
    return v


cdef inline int _check_priority(object priority) except -1:
    return <int>_in_range(priority, PRIO_MIN, PRIO_MAX, _priority_error)


cdef str _step_error(object value):
    return f"aging_step_us must be 0 to {MAX_AGING_STEP_US} microseconds, got {value}"


cdef int64_t _aging(object aging_step_us, int64_t* lo, int64_t* hi,
                    int64_t* offset) except? -1:
    """Check the step and set, per priority, the ready times giving a key in range
    and the key's offset; returns the step."""
    cdef int p
    cdef int64_t step = _in_range(aging_step_us, 0, MAX_STEP, _step_error)
    for p in range(5):
        if step:
            lo[p] = INT64_MIN
            hi[p] = INT64_MAX - p * step
            offset[p] = p * step
        else:
            lo[p] = -STRICT_SPAN
            hi[p] = STRICT_SPAN - 1
            offset[p] = p * (2 * STRICT_SPAN) - 4 * STRICT_SPAN
    return step


cdef Py_ssize_t _first_bad_priority(const prio_t* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] < PRIO_MIN or p[i] > PRIO_MAX:
            return i
    return n


# Cython's own int conversion takes floats (through __int__) and truncates
# them; a job id or a time given as a float is a bug upstream, so insist on
# __index__, as operator.index and the twin do.

cdef inline uint64_t _u64(object v) except? <uint64_t>-1:
    if PyLong_Check(v):
        return v
    return PyNumber_Index(v)


cdef inline int64_t _i64(object v) except? -1:
    if PyLong_Check(v):
        return v
    return PyNumber_Index(v)


# -- buffers ---------------------------------------------------------------
# Inputs in the native format (array('Q'), array('q'), array('b')) are read in
# place; anything else (lists, other int widths, strided views) is copied
# into one by array.array, which also raises on values that do not fit.

cdef const uint64_t[::1] _u64_view(object obj):
    cdef const uint64_t[::1] view
    try:
        view = obj
    except (TypeError, ValueError, BufferError):
        view = array.array("Q", obj)
    return view


cdef const int64_t[::1] _i64_view(object obj):
    cdef const int64_t[::1] view
    try:
        view = obj
    except (TypeError, ValueError, BufferError):
        view = array.array("q", obj)
    return view


cdef carray.array _U64_TEMPLATE = array.array("Q")


@cython.auto_pickle(False)
cdef class _HeapCore:
    """What FastHeap and FairHeap share: aging keys, the clock and the counts.

    Not for use on its own: ``_advance`` and ``_has`` are each heap's own.
    """

    cdef int64_t _step
    # per priority: the ready times that give a key in range, and the key's offset
    cdef int64_t _lo[5]
    cdef int64_t _hi[5]
    cdef int64_t _offset[5]
    cdef int64_t _clock             # the latest now_us seen
    cdef uint64_t _seq              # push counter
    cdef Py_ssize_t _ready_live[5]  # live ready jobs per priority
    cdef Py_ssize_t _delayed_live

    def __cinit__(self, aging_step_us=DEFAULT_AGING_STEP_US):
        self._step = _aging(aging_step_us, self._lo, self._hi, self._offset)

    @property
    def aging_step_us(self):
        return self._step

    cdef int _advance(self, int64_t now) except -1:
        """Move the clock to ``now`` (never back) and promote what fell due."""
        raise NotImplementedError

    cdef bint _has(self, uint64_t job_id) noexcept:
        return False

    cdef inline Py_ssize_t _ready_total(self) noexcept nogil:
        return (self._ready_live[0] + self._ready_live[1] + self._ready_live[2]
                + self._ready_live[3] + self._ready_live[4])

    cdef carray.array _out(self, object n, object now_us):
        """pop_many's start: check ``n``, advance, and make the result's room."""
        cdef Py_ssize_t m, count = PyNumber_Index(n)
        if count < 0:
            raise ValueError(f"n must be >= 0, got {count}")
        self._advance(_i64(now_us))
        m = self._ready_total()
        return carray.clone(_U64_TEMPLATE, count if count < m else m, False)

    def __contains__(self, job_id):
        cdef uint64_t key
        try:
            key = _u64(job_id)
        except (TypeError, OverflowError):
            return False
        return self._has(key)

    def ready_count(self, now_us):
        self._advance(_i64(now_us))
        return self._ready_total()

    def delayed_count(self, now_us):
        self._advance(_i64(now_us))
        return self._delayed_live

    def ready_by_priority(self, now_us):
        """Ready jobs per priority; index 0 is priority 1."""
        self._advance(_i64(now_us))
        return (self._ready_live[0], self._ready_live[1], self._ready_live[2],
                self._ready_live[3], self._ready_live[4])


@cython.final
@cython.auto_pickle(False)
cdef class FastHeap(_HeapCore):
    """A priority heap of job ids with static aging and delayed jobs.

    ``FastHeap(aging_step_us=5_000_000)``; 0 means strict priority, then
    ready time, then push order.  Job ids are uint64, times int64
    microseconds.  See :mod:`dpq.queue.heap` for the ordering rules.
    """

    cdef Ready* _ready
    cdef size_t _ready_n            # entries, tombstones included
    cdef size_t _ready_cap
    cdef Delayed* _delayed
    cdef size_t _delayed_n
    cdef size_t _delayed_cap
    cdef Table _ids                 # live job id -> tag
    cdef size_t _dead               # tombstones in both heaps

    def __cinit__(self, aging_step_us=DEFAULT_AGING_STEP_US):
        _table_reset(&self._ids)

    def __dealloc__(self):
        PyMem_RawFree(self._ready)
        PyMem_RawFree(self._delayed)
        PyMem_RawFree(self._ids.slots)

    # -- internals -----------------------------------------------------------

    cdef int _advance(self, int64_t now) except -1:
        """Move the clock to ``now`` (never back) and promote what fell due."""
        cdef Delayed d
        cdef Slot* slot
        if now > self._clock:
            self._clock = now
        while self._delayed_n and self._delayed[0].due <= self._clock:
            _reserve(<void**>&self._ready, &self._ready_cap, self._ready_n + 1, sizeof(Ready), MIN_HEAP)
            d = self._delayed[0]
            self._delayed_n = _pop_top(self._delayed, self._delayed_n)
            slot = _lookup(&self._ids, d.job_id)
            if slot.tag != (d.tag | DELAYED):
                self._dead -= 1
                continue
            slot.tag = d.tag
            _sift_up(self._ready, self._ready_n, Ready(d.key, d.tag, d.job_id))
            self._ready_n += 1
            self._delayed_live -= 1
            self._ready_live[(d.tag & PRIO_MASK) - 1] += 1
        return 0

    cdef inline bint _take(self, uint64_t* job_id) noexcept nogil:
        """Pop the most urgent live ready job into ``job_id``; False if there is none."""
        cdef Ready top
        cdef Slot* slot
        while self._ready_n:
            top = self._ready[0]
            # start fetching its table slot now; the sift below hides the miss
            DPQ_PREFETCH(&self._ids.slots[_home(&self._ids, top.job_id)])
            self._ready_n = _pop_top(self._ready, self._ready_n)
            slot = _lookup(&self._ids, top.job_id)
            if slot.tag == top.tag:
                _erase(&self._ids, slot)
                self._ready_live[(top.tag & PRIO_MASK) - 1] -= 1
                job_id[0] = top.job_id
                return True
            self._dead -= 1
        return False

    cdef inline void _place(self, uint64_t job_id, uint64_t tag, int64_t key,
                            int64_t due) noexcept nogil:
        """Put a job whose id is already in the table into its heap.

        The caller reserved room in that heap and set the table's tag
        (with DELAYED iff ``due > self._clock``).
        """
        if due <= self._clock:
            _sift_up(self._ready, self._ready_n, Ready(key, tag, job_id))
            self._ready_n += 1
            self._ready_live[(tag & PRIO_MASK) - 1] += 1
        else:
            _sift_up(self._delayed, self._delayed_n, Delayed(due, tag, job_id, key))
            self._delayed_n += 1
            self._delayed_live += 1

    cdef void _compact(self) noexcept:
        """Sweep tombstones out of both heaps (O(n), paid for by the removes)."""
        self._ready_n = _compacted(self._ready, self._ready_n, &self._ids)
        self._delayed_n = _compacted(self._delayed, self._delayed_n, &self._ids)
        self._dead = 0
        self._trim()

    cdef void _trim(self) noexcept:
        """Give memory back after a drain (heaps 3/4 empty, table under 1/8 full)."""
        _trim(<void**>&self._ready, &self._ready_cap, self._ready_n, sizeof(Ready))
        _trim(<void**>&self._delayed, &self._delayed_cap, self._delayed_n, sizeof(Delayed))
        _table_shrink(&self._ids)

    # -- adding --------------------------------------------------------------

    def push(self, job_id, priority, enqueued_at_us, due_at_us=0):
        """Add one job.  ValueError for a priority outside 1..5 or an id already here."""
        cdef uint64_t jid = _u64(job_id)
        cdef int64_t enq = _i64(enqueued_at_us)
        cdef int64_t due = _i64(due_at_us)
        cdef int prio = _check_priority(priority)
        cdef int64_t ready_at = enq if enq > due else due
        cdef Slot* slot
        cdef uint64_t tag
        if ready_at < self._lo[prio - 1] or ready_at > self._hi[prio - 1]:
            raise ValueError(_key_error(ready_at, prio, self._step))
        # make room first, so a MemoryError leaves the heap as it was
        _table_reserve(&self._ids, 1)
        if due <= self._clock:
            _reserve(<void**>&self._ready, &self._ready_cap, self._ready_n + 1, sizeof(Ready), MIN_HEAP)
        else:
            _reserve(<void**>&self._delayed, &self._delayed_cap, self._delayed_n + 1,
                     sizeof(Delayed), MIN_HEAP)
        slot = _lookup(&self._ids, jid)
        if slot.tag != 0:
            raise ValueError(f"job id {jid} is already in the heap")
        self._seq += 1
        tag = (self._seq << SEQ_SHIFT) | <uint64_t>prio
        slot.job_id = jid
        slot.tag = tag | DELAYED if due > self._clock else tag
        self._ids.used += 1
        self._place(jid, tag, ready_at + self._offset[prio - 1], due)

    def push_many(self, job_ids, priorities, enqueued_at_us, due_at_us=None):
        """Add a batch; all or nothing.

        Takes anything with the buffer protocol or iterable of ints:
        ``array('Q')`` ids, ``array('b')`` or ``array('q')`` priorities and
        ``array('q')`` times are read in place.  Items are checked in order
        (priority, aging key, duplicate id) and the first bad one refuses the
        whole batch with ValueError.
        """
        cdef const uint64_t[::1] ids = _u64_view(job_ids)
        cdef const int8_t[::1] p8 = None
        cdef const int64_t[::1] p64 = None
        cdef const int64_t[::1] enq
        cdef const int64_t[::1] due = None
        try:
            p8 = priorities
        except (TypeError, ValueError, BufferError):
            p64 = _i64_view(priorities)
        enq = _i64_view(enqueued_at_us)
        if due_at_us is not None:
            due = _i64_view(due_at_us)

        cdef Py_ssize_t n = ids.shape[0]
        cdef Py_ssize_t n_prio = p8.shape[0] if p8 is not None else p64.shape[0]
        if n_prio != n or enq.shape[0] != n or (due is not None and due.shape[0] != n):
            lengths = [n, n_prio, enq.shape[0]] + ([due.shape[0]] if due is not None else [])
            raise ValueError("job_ids, priorities, enqueued_at_us and due_at_us must have the "
                             f"same length, got {', '.join(map(str, lengths))}")
        if n == 0:
            return

        cdef const uint64_t* ip = &ids[0]
        cdef const int64_t* ep = &enq[0]
        cdef const int64_t* dp = &due[0] if due is not None else NULL
        cdef const int8_t* p8p = &p8[0] if p8 is not None else NULL
        cdef const int64_t* p64p = &p64[0] if p8 is None else NULL
        cdef Py_ssize_t bad_prio = (_first_bad_priority(p8p, n) if p8p != NULL
                                    else _first_bad_priority(p64p, n))
        cdef Py_ssize_t i, j, n_delayed = 0
        cdef int prio
        cdef int64_t d, ready_at
        cdef uint64_t first_seq = self._seq + 1
        cdef Slot* slot

        for i in range(n):      # the same rule _place applies, so the room matches
            d = dp[i] if dp != NULL else 0
            n_delayed += d > self._clock
        _table_reserve(&self._ids, n)
        _reserve(<void**>&self._ready, &self._ready_cap, self._ready_n + (n - n_delayed),
                 sizeof(Ready), MIN_HEAP)
        _reserve(<void**>&self._delayed, &self._delayed_cap, self._delayed_n + n_delayed,
                 sizeof(Delayed), MIN_HEAP)

        # Pass 1: claim every id in the table, checking keys on the way.  The
        # first bad item stops it: release what was claimed, then refuse.
        cdef int failure = 0            # 1 key out of range, 2 id here, 3 id repeated
        cdef uint64_t earlier = 0       # with 3: the batch index it repeats
        for i in range(bad_prio):
            if i + 8 < n:   # random table slots: keep a few misses in flight
                DPQ_PREFETCH(&self._ids.slots[_home(&self._ids, ip[i + 8])])
            prio = p8p[i] if p8p != NULL else <int>p64p[i]
            d = dp[i] if dp != NULL else 0
            ready_at = ep[i] if ep[i] > d else d
            if ready_at < self._lo[prio - 1] or ready_at > self._hi[prio - 1]:
                failure = 1
                break
            slot = _lookup(&self._ids, ip[i])
            if slot.tag != 0:
                earlier = (slot.tag >> SEQ_SHIFT) - first_seq
                failure = 3 if (slot.tag >> SEQ_SHIFT) >= first_seq else 2
                break
            slot.job_id = ip[i]
            slot.tag = ((first_seq + <uint64_t>i) << SEQ_SHIFT) | <uint64_t>prio
            if d > self._clock:
                slot.tag |= DELAYED
            self._ids.used += 1
        else:
            i = bad_prio
        if failure or bad_prio < n:
            for j in range(i):
                _erase(&self._ids, _lookup(&self._ids, ip[j]))
            if failure == 1:
                raise ValueError(f"item {i}: {_key_error(ready_at, prio, self._step)}")
            if failure == 2:
                raise ValueError(f"job_ids[{i}]: job id {ip[i]} is already in the heap")
            if failure == 3:
                raise ValueError(f"job_ids[{i}]: job id {ip[i]} repeats job_ids[{earlier}]")
            raise ValueError("priorities[%d]: %s" % (i, _priority_error(
                p8p[i] if p8p != NULL else p64p[i])))

        # Pass 2: every id is ours; place the jobs (no second table lookup).
        for i in range(n):
            prio = p8p[i] if p8p != NULL else <int>p64p[i]
            d = dp[i] if dp != NULL else 0
            ready_at = ep[i] if ep[i] > d else d
            self._place(ip[i], ((first_seq + <uint64_t>i) << SEQ_SHIFT) | <uint64_t>prio,
                        ready_at + self._offset[prio - 1], d)
        self._seq += <uint64_t>n

    # -- taking --------------------------------------------------------------

    def pop(self, now_us):
        """Remove and return the most urgent ready job id, or None."""
        cdef uint64_t job_id
        self._advance(_i64(now_us))
        if self._take(&job_id):
            self._trim()
            return job_id
        return None

    def pop_many(self, n, now_us):
        """Remove and return up to ``n`` ready job ids, most urgent first, as ``array('Q')``."""
        cdef carray.array out = self._out(n, now_us)
        cdef uint64_t* dst = <uint64_t*>out.data.as_ulonglongs
        cdef Py_ssize_t i
        for i in range(Py_SIZE(out)):
            self._take(&dst[i])     # m <= live ready jobs, so this always finds one
        self._trim()
        return out

    def peek(self, now_us):
        """The job id ``pop(now_us)`` would return, without removing it."""
        cdef size_t n
        self._advance(_i64(now_us))
        n = _drop_dead_top(self._ready, self._ready_n, &self._ids)
        self._dead -= self._ready_n - n
        self._ready_n = n
        return self._ready[0].job_id if n else None

    def remove(self, job_id):
        """Take a ready or delayed job out (reassigned, cancelled); False if it is not here."""
        cdef Slot* slot = _lookup(&self._ids, _u64(job_id))
        if slot.tag == 0:
            return False
        if slot.tag & DELAYED:
            self._delayed_live -= 1
        else:
            self._ready_live[(slot.tag & PRIO_MASK) - 1] -= 1
        _erase(&self._ids, slot)
        self._dead += 1
        if self._dead > COMPACT_MIN and self._dead > self._ids.used:
            self._compact()
        return True

    def clear(self):
        """Drop every job and give the memory back.  The clock is kept: time does not go back."""
        cdef int i
        _table_reset(&self._ids)
        PyMem_RawFree(self._ready)
        PyMem_RawFree(self._delayed)
        self._ready = NULL
        self._delayed = NULL
        self._ready_n = self._ready_cap = self._delayed_n = self._delayed_cap = 0
        for i in range(5):
            self._ready_live[i] = 0
        self._delayed_live = 0
        self._dead = 0

    # -- looking -------------------------------------------------------------

    def __len__(self):
        return self._ids.used

    cdef bint _has(self, uint64_t job_id) noexcept:
        return _lookup(&self._ids, job_id).tag != 0

    def next_due_us(self):
        """When the earliest delayed job falls due, or None if none waits."""
        cdef size_t n = _drop_dead_top(self._delayed, self._delayed_n, &self._ids)
        self._dead -= self._delayed_n - n
        self._delayed_n = n
        return self._delayed[0].due if n else None

    def __sizeof__(self):
        return (object.__sizeof__(self) + self._ready_cap * sizeof(Ready)
                + self._delayed_cap * sizeof(Delayed) + (self._ids.mask + 1) * sizeof(Slot))

    def __repr__(self):
        return (f"FastHeap(aging_step_us={self._step}, ready={self._ready_total()}, "
                f"delayed={self._delayed_live})")


# == FairHeap ===============================================================
# FastHeap's jobs, split by tenant: one 4-ary ready heap per tenant (the
# Ready entries and primitives above), one delayed heap for all, one id table
# whose slots also say the tenant.  The ordering rules (level, then turns by
# stride, then the tenant's own order) are written down in
# dpq.queue.fairheap, whose PyFairHeap is the twin.
#
# Tenants are records in two parallel arrays (hot: what a pick reads; cold:
# the tenant's heap), the backlogged ones (a live ready job) first.  Under
# GROUP_AT backlogged tenants a pick scans exactly them (two sequential
# passes; one tenant skips the scan); from GROUP_AT on they are filed in
# level groups (below) and a pick costs O(log T), amortised.  Each
# backlogged tenant's heap top is live (tombstones under it are dropped as
# they surface), so its head key is the top's key.

cdef int64_t FAIR_STRIDE = 1 << 20
cdef int64_t TENANT_LIMIT = 0xFFFFFFFF
cdef enum:
    WEIGHT_LO = 1
    WEIGHT_HI = 1000
    MIN_IDLE_SWEEP = 64     # idle tenant records tolerated before a sweep
    GROUP_AT = 16           # backlogged tenants from which a pick uses the level groups
STRIDE = FAIR_STRIDE
TENANT_MAX = TENANT_LIMIT
WEIGHT_MIN = WEIGHT_LO
WEIGHT_MAX = WEIGHT_HI
# passes are rebased to 0 when the virtual time passes this (after ~2**42 turns)
cdef int64_t REBASE_AT = 1 << 62
# strict mode: key + this, as uint64, >> 61 is the priority index (see _offset)
cdef uint64_t STRICT_SHIFT = (1ULL << 62) + (1ULL << 60)

ctypedef struct THot:       # what a pick reads, per tenant
    int64_t head            # the aging key of its live head (backlogged only)
    int64_t pass_
    uint64_t tenant
    int grp                 # its level group while the groups are up and it is backlogged, else -1
    bint in_c               # filed among the clamped (pass < V) of its group
    uint32_t cpos           # its place in that clamped or unclamped heap
    uint32_t hpos           # its place in the group's head heap (groups 1.. with aging only)

ctypedef struct TCold:
    Ready* heap
    size_t n                # entries, tombstones included
    size_t cap
    size_t dead
    Py_ssize_t ready        # live jobs in heap
    int64_t stride          # FAIR_STRIDE // weight


# -- level groups -----------------------------------------------------------------
# From GROUP_AT backlogged tenants on, a pick does not scan: every backlogged
# tenant is filed in the group of its head's level (levels 1 to 5, and one
# group for every level above 5, only reachable with an enqueue time ahead of
# the clock), and within it in one of two binary heaps of record indices:
# the clamped (pass < V, effective pass V) by tenant id, the others by
# (pass, tenant).  Groups 1.. also keep their tenants in a heap by head key:
# its top is the first to age into a lower group as the clock moves.

cdef enum:
    NGROUP = 6
    LAST_GROUP = 5          # every level above 5: picked from by a scan
    K_C = 0                 # heap kinds: clamped by tenant,
    K_P = 1                 # unclamped by (pass, tenant),
    K_H = 2                 # by head key


cdef inline bint _gbefore(const THot* h, int k, uint32_t a, uint32_t b) noexcept nogil:
    if k == K_C:
        return h[a].tenant < h[b].tenant
    if k == K_P:
        return h[a].pass_ < h[b].pass_ or (h[a].pass_ == h[b].pass_ and h[a].tenant < h[b].tenant)
    return h[a].head < h[b].head


cdef inline void _gset(THot* h, int k, uint32_t* a, size_t pos, uint32_t r) noexcept nogil:
    a[pos] = r
    if k == K_H:
        h[r].hpos = <uint32_t>pos
    else:
        h[r].cpos = <uint32_t>pos


cdef void _gup(THot* h, int k, uint32_t* a, size_t pos, uint32_t r) noexcept nogil:
    cdef size_t parent
    while pos:
        parent = (pos - 1) >> 1
        if not _gbefore(h, k, r, a[parent]):
            break
        _gset(h, k, a, pos, a[parent])
        pos = parent
    _gset(h, k, a, pos, r)


cdef void _gdown(THot* h, int k, uint32_t* a, size_t n, size_t pos, uint32_t r) noexcept nogil:
    cdef size_t c
    while True:
        c = 2 * pos + 1
        if c >= n:
            break
        if c + 1 < n and _gbefore(h, k, a[c + 1], a[c]):
            c += 1
        if not _gbefore(h, k, a[c], r):
            break
        _gset(h, k, a, pos, a[c])
        pos = c
    _gset(h, k, a, pos, r)


cdef inline void _gfix(THot* h, int k, uint32_t* a, size_t n, size_t pos) noexcept nogil:
    """The item at ``pos`` changed its key: put it in its place."""
    if pos and _gbefore(h, k, a[pos], a[(pos - 1) >> 1]):
        _gup(h, k, a, pos, a[pos])
    else:
        _gdown(h, k, a, n, pos, a[pos])


cdef inline void _gdel(THot* h, int k, uint32_t* a, size_t* n, size_t pos) noexcept nogil:
    n[0] -= 1
    if pos != n[0]:
        a[pos] = a[n[0]]
        _gfix(h, k, a, n[0], pos)


cdef str _tenant_error(object value):
    return f"tenant must be 0 to {TENANT_MAX}, got {value}"


cdef str _weight_error(object value):
    return f"weight must be {WEIGHT_MIN} to {WEIGHT_MAX}, got {value}"


cdef inline uint64_t _check_tenant(object tenant) except? <uint64_t>-1:
    return <uint64_t>_in_range(tenant, 0, TENANT_LIMIT, _tenant_error)


cdef inline int64_t _check_weight(object weight) except -1:
    return _in_range(weight, WEIGHT_LO, WEIGHT_HI, _weight_error)


@cython.final
@cython.auto_pickle(False)
cdef class FairHeap(_HeapCore):
    """FastHeap with fair shares by tenant within a priority level.

    ``FairHeap(aging_step_us=5_000_000)``; ``push`` takes a ``tenant`` (0 to
    ``TENANT_MAX``).  See :mod:`dpq.queue.fairheap` for the ordering rules.
    """

    cdef FDelayed* _delayed
    cdef size_t _delayed_n
    cdef size_t _delayed_cap
    cdef size_t _delayed_dead
    cdef FTable _ids                # live job id -> tag, tenant
    cdef Table _tmap                # tenant -> record index + 1
    cdef Table _wmap                # tenant -> its own weight
    cdef THot* _hot                 # records: [0, _nb) backlogged, [_nb, _nt) idle
    cdef TCold* _cold
    cdef size_t _nt
    cdef size_t _nb
    cdef size_t _tcap
    cdef uint32_t* _gh[18]          # level groups' heaps: [group * 3 + kind]
    cdef size_t _gn[18]
    cdef size_t _gcap               # room in each: as many as records
    cdef bint _grouped              # the groups are up: every backlogged record is filed
    cdef size_t _group_at           # put them up at this many backlogged tenants
    cdef size_t _sweep_at           # sweep when more idle records than this
    cdef int64_t _sweep_v           # ... or when V reaches this
    cdef int64_t _vtime             # V: the effective pass of the last turn
    cdef int64_t _rebase_at
    cdef int64_t _default_weight

    def __cinit__(self, aging_step_us=DEFAULT_AGING_STEP_US):
        _table_reset(&self._ids)
        _table_reset(&self._tmap)
        _table_reset(&self._wmap)
        self._default_weight = 1
        self._rebase_at = REBASE_AT
        self._sweep_at = MIN_IDLE_SWEEP
        self._sweep_v = INT64_MAX
        self._group_at = GROUP_AT

    def __dealloc__(self):
        self._free_records()
        PyMem_RawFree(self._delayed)
        PyMem_RawFree(self._ids.slots)
        PyMem_RawFree(self._tmap.slots)
        PyMem_RawFree(self._wmap.slots)

    # -- tenant records --------------------------------------------------------

    cdef void _free_records(self) noexcept:
        cdef size_t i
        for i in range(self._nt):
            PyMem_RawFree(self._cold[i].heap)
        PyMem_RawFree(self._hot)
        PyMem_RawFree(self._cold)
        self._hot = NULL
        self._cold = NULL
        self._nt = self._nb = self._tcap = 0
        for i in range(18):
            PyMem_RawFree(self._gh[i])
            self._gh[i] = NULL
            self._gn[i] = 0
        self._gcap = 0
        self._grouped = False

    cdef inline Py_ssize_t _index(self, uint64_t tenant) noexcept nogil:
        """The record of ``tenant``, or -1."""
        return <Py_ssize_t>_lookup(&self._tmap, tenant).tag - 1

    cdef inline int64_t _stride_of(self, uint64_t tenant) noexcept nogil:
        cdef uint64_t w = _lookup(&self._wmap, tenant).tag
        return FAIR_STRIDE // (<int64_t>w if w else self._default_weight)

    cdef Py_ssize_t _record(self, uint64_t tenant) except -1:
        """The record of ``tenant``, made (idle, pass 0) if it has none."""
        cdef Py_ssize_t i = self._index(tenant)
        cdef size_t cap
        cdef int k
        cdef Slot* slot
        if i >= 0:
            return i
        if self._nt == self._tcap:
            cap = self._tcap
            _reserve(<void**>&self._hot, &cap, self._nt + 1, sizeof(THot), MIN_RECORD)
            cap = self._tcap
            _reserve(<void**>&self._cold, &cap, self._nt + 1, sizeof(TCold), MIN_RECORD)
            self._tcap = cap
        if self._nt == self._gcap:  # room for every record in every group: filing never fails
            if self._nt >= UINT32_MAX:
                raise MemoryError()
            for k in range(18):
                cap = self._gcap
                _reserve(<void**>&self._gh[k], &cap, self._nt + 1, sizeof(uint32_t), MIN_RECORD)
            self._gcap = cap
        _table_reserve(&self._tmap, 1)
        i = self._nt
        self._hot[i] = THot(0, 0, tenant, -1, False, 0, 0)
        self._cold[i] = TCold(NULL, 0, 0, 0, 0, self._stride_of(tenant))
        slot = _lookup(&self._tmap, tenant)
        slot.job_id = tenant
        slot.tag = <uint64_t>i + 1
        self._tmap.used += 1
        self._nt += 1
        return i

    cdef inline void _swap(self, size_t i, size_t j) noexcept nogil:
        cdef THot h
        cdef TCold c
        if i == j:
            return
        h = self._hot[i]
        self._hot[i] = self._hot[j]
        self._hot[j] = h
        c = self._cold[i]
        self._cold[i] = self._cold[j]
        self._cold[j] = c
        _lookup(&self._tmap, self._hot[i].tenant).tag = i + 1
        _lookup(&self._tmap, self._hot[j].tenant).tag = j + 1
        self._gmoved(i)
        self._gmoved(j)

    cdef void _drop(self, size_t i) noexcept:
        """Forget the idle record ``i`` (its jobs are gone, its pass no longer matters)."""
        cdef size_t last = self._nt - 1
        PyMem_RawFree(self._cold[i].heap)
        _erase(&self._tmap, _lookup(&self._tmap, self._hot[i].tenant))
        if i != last:
            self._hot[i] = self._hot[last]
            self._cold[i] = self._cold[last]
            _lookup(&self._tmap, self._hot[i].tenant).tag = i + 1
        self._nt = last

    cdef void _forget_all(self) noexcept:
        """The busy period is over: V moves up to every pass, and every record goes."""
        cdef size_t i
        for i in range(self._nt):
            if self._hot[i].pass_ > self._vtime:
                self._vtime = self._hot[i].pass_
        self._free_records()
        _table_empty(&self._tmap)
        self._sweep_at = MIN_IDLE_SWEEP
        self._sweep_v = INT64_MAX

    cdef void _went_idle(self, size_t i) noexcept:
        """Record ``i`` has no ready job left."""
        self._cold[i].n = 0         # whatever is left is tombstones
        self._cold[i].dead = 0
        if self._hot[i].grp >= 0:
            self._unfile(i)
        self._nb -= 1
        self._swap(i, self._nb)
        i = self._nb
        if self._nb == 0:
            self._forget_all()
            return
        if self._grouped and 2 * self._nb < self._group_at:
            self._groups_down()
        if self._hot[i].pass_ <= self._vtime:
            self._drop(i)
        if self._nt - self._nb > self._sweep_at:
            self._sweep()

    cdef void _sweep(self) noexcept:
        """Forget the idle records whose pass V has reached.

        Run when the idle records doubled since the last sweep, or when V
        reached every pass the last sweep kept: either way about as many
        records go as are looked at.
        """
        cdef size_t j = self._nt
        self._sweep_v = INT64_MIN
        while j > self._nb:     # from the end: a dropped record's stand-in was seen
            j -= 1
            if self._hot[j].pass_ <= self._vtime:
                self._drop(j)
            elif self._hot[j].pass_ > self._sweep_v:
                self._sweep_v = self._hot[j].pass_
        if self._sweep_v == INT64_MIN:
            self._sweep_v = INT64_MAX
        self._sweep_at = 2 * (self._nt - self._nb)
        if self._sweep_at < MIN_IDLE_SWEEP:
            self._sweep_at = MIN_IDLE_SWEEP
        _table_shrink(&self._tmap)

    cdef inline void _push_ready(self, size_t i, Ready r) noexcept:
        """Put a ready job into record ``i``'s heap (room reserved)."""
        _sift_up(self._cold[i].heap, self._cold[i].n, r)
        self._cold[i].n += 1
        self._cold[i].ready += 1
        self._ready_live[(r.tag & PRIO_MASK) - 1] += 1
        if self._cold[i].ready == 1:
            self._swap(i, self._nb)
            i = self._nb
            self._nb += 1
            self._hot[i].head = self._cold[i].heap[0].key
            if self._grouped:
                self._file(i)
            elif self._nb >= self._group_at:
                self._groups_up()
        elif self._hot[i].head != self._cold[i].heap[0].key:
            self._hot[i].head = self._cold[i].heap[0].key
            if self._grouped:
                self._refile(i)

    cdef inline void _clean_top(self, size_t i) noexcept nogil:
        cdef TCold* c = &self._cold[i]
        cdef size_t n = _drop_dead_top(c.heap, c.n, &self._ids)
        c.dead -= c.n - n
        c.n = n

    # -- level groups ----------------------------------------------------------------

    cdef inline int _group_of(self, int64_t head) noexcept nogil:
        """The group of a head key now: its level - 1, at most LAST_GROUP."""
        cdef uint64_t d, k
        if self._step == 0:         # the level is the priority
            return <int>((<uint64_t>head + STRICT_SHIFT) >> 61)
        if head <= self._clock:
            return 0
        d = <uint64_t>head - <uint64_t>self._clock
        k = d // <uint64_t>self._step + (d % <uint64_t>self._step != 0)
        return <int>k if k < LAST_GROUP else LAST_GROUP

    cdef inline void _gmoved(self, size_t i) noexcept nogil:
        """Record ``i`` moved to index ``i``: the heaps that hold it say so."""
        cdef THot* h = &self._hot[i]
        if h.grp >= 0:
            self._gh[h.grp * 3 + (K_C if h.in_c else K_P)][h.cpos] = <uint32_t>i
            if h.grp and self._step:
                self._gh[h.grp * 3 + K_H][h.hpos] = <uint32_t>i

    cdef void _file(self, size_t i) noexcept nogil:
        """File backlogged record ``i`` in the group of its head."""
        cdef THot* h = self._hot
        cdef int g = self._group_of(h[i].head)
        cdef int k
        h[i].grp = g
        h[i].in_c = h[i].pass_ < self._vtime
        k = g * 3 + (K_C if h[i].in_c else K_P)
        self._gn[k] += 1
        _gup(h, K_C if h[i].in_c else K_P, self._gh[k], self._gn[k] - 1, <uint32_t>i)
        if g and self._step:
            k = g * 3 + K_H
            self._gn[k] += 1
            _gup(h, K_H, self._gh[k], self._gn[k] - 1, <uint32_t>i)

    cdef void _unfile(self, size_t i) noexcept nogil:
        cdef THot* h = self._hot
        cdef int g = h[i].grp
        cdef int kind = K_C if h[i].in_c else K_P
        _gdel(h, kind, self._gh[g * 3 + kind], &self._gn[g * 3 + kind], h[i].cpos)
        if g and self._step:
            _gdel(h, K_H, self._gh[g * 3 + K_H], &self._gn[g * 3 + K_H], h[i].hpos)
        h[i].grp = -1

    cdef void _refile(self, size_t i) noexcept nogil:
        """Record ``i``'s head key changed."""
        cdef int g = self._hot[i].grp
        if self._group_of(self._hot[i].head) != g:
            self._unfile(i)
            self._file(i)
        elif g and self._step:
            _gfix(self._hot, K_H, self._gh[g * 3 + K_H], self._gn[g * 3 + K_H],
                  self._hot[i].hpos)

    cdef void _groups_up(self) noexcept nogil:
        cdef size_t j
        self._grouped = True
        for j in range(self._nb):
            self._file(j)

    cdef void _groups_down(self) noexcept nogil:
        cdef size_t j
        for j in range(self._nb):
            self._hot[j].grp = -1
        for j in range(18):
            self._gn[j] = 0
        self._grouped = False

    cdef void _groups_rebased(self) noexcept nogil:
        """The passes were rebased: passes below V all became 0, so order the heaps again."""
        cdef size_t j, g
        cdef uint32_t* a
        for g in range(NGROUP):
            a = self._gh[g * 3 + K_P]
            j = self._gn[g * 3 + K_P] // 2
            while j:
                j -= 1
                _gdown(self._hot, K_P, a, self._gn[g * 3 + K_P], j, a[j])

    cdef size_t _group_choose(self) noexcept nogil:
        """_choose by the level groups: the same pick in O(log T), amortised.

        The best level's tenants are the lowest non-empty group, once the
        tenants whose level improved since are moved down.  In it, a clamped
        tenant (pass < V) has effective pass V, the least there is, so among
        the clamped the lowest tenant id is best; the others (pass >= V,
        once those V has passed since are clamped) go by (pass, tenant); the
        better of the two tops wins.  Clamping only pass < V (not <= V)
        spares tenants taking turns at one level any clamping.
        """
        cdef THot* h = self._hot
        cdef int g
        cdef uint32_t r, c, p
        cdef uint32_t* a
        if self._step:
            for g in range(1, NGROUP):
                a = self._gh[g * 3 + K_H]
                while self._gn[g * 3 + K_H] and self._group_of(h[a[0]].head) < g:
                    r = a[0]
                    self._unfile(r)
                    self._file(r)
        g = 0
        while self._gn[g * 3 + K_C] + self._gn[g * 3 + K_P] == 0:
            g += 1
        if g == LAST_GROUP:
            return self._scan_last()
        a = self._gh[g * 3 + K_P]
        while self._gn[g * 3 + K_P] and h[a[0]].pass_ < self._vtime:
            r = a[0]
            _gdel(h, K_P, a, &self._gn[g * 3 + K_P], 0)
            h[r].in_c = True
            self._gn[g * 3 + K_C] += 1
            _gup(h, K_C, self._gh[g * 3 + K_C], self._gn[g * 3 + K_C] - 1, r)
        if self._gn[g * 3 + K_C] == 0:
            return a[0]
        c = self._gh[g * 3 + K_C][0]
        if self._gn[g * 3 + K_P] == 0:
            return c
        p = a[0]
        if self._vtime < h[p].pass_ or (self._vtime == h[p].pass_ and h[c].tenant < h[p].tenant):
            return c
        return p

    cdef size_t _scan_last(self) noexcept nogil:
        """The pick among the tenants above level 5 (only they are backlogged): a scan."""
        cdef THot* h = self._hot
        cdef uint32_t* a
        cdef size_t j, best = 0
        cdef int k
        cdef int64_t g = INT64_MAX, top, p, best_p = INT64_MAX
        for k in range(2):
            a = self._gh[LAST_GROUP * 3 + k]
            for j in range(self._gn[LAST_GROUP * 3 + k]):
                if h[a[j]].head < g:
                    g = h[a[j]].head
        top = self._threshold(g)
        for k in range(2):
            a = self._gh[LAST_GROUP * 3 + k]
            for j in range(self._gn[LAST_GROUP * 3 + k]):
                if h[a[j]].head <= top:
                    p = h[a[j]].pass_ if h[a[j]].pass_ > self._vtime else self._vtime
                    if p < best_p or (p == best_p and h[a[j]].tenant < h[best].tenant):
                        best_p = p
                        best = a[j]
        return best

    def _set_group_at(self, size_t count):
        """Tests only: pick by the level groups from ``count`` (>= 1) backlogged tenants on."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        self._group_at = count
        if self._grouped and 2 * self._nb < count:
            self._groups_down()
        elif not self._grouped and self._nb >= count:
            self._groups_up()

    # -- picking ---------------------------------------------------------------

    cdef inline int64_t _threshold(self, int64_t g) noexcept nogil:
        """The largest aging key at the level of key ``g`` (the best head) now."""
        cdef uint64_t d, rem
        if self._step == 0:         # the level is the priority: its whole key range
            return self._offset[(<uint64_t>g + STRICT_SHIFT) >> 61] + STRICT_SPAN - 1
        if g <= self._clock:
            return self._clock
        d = <uint64_t>(g - self._clock)
        rem = (<uint64_t>self._step - d % <uint64_t>self._step) % <uint64_t>self._step
        if g > INT64_MAX - <int64_t>rem:
            return INT64_MAX
        return g + <int64_t>rem

    cdef inline size_t _choose(self) noexcept nogil:
        """The record served next; there is a backlogged one."""
        cdef size_t i, best = 0
        cdef int64_t g, top, p, best_p
        cdef THot* h = self._hot
        if self._nb == 1:
            return 0
        if self._grouped:
            return self._group_choose()
        # One pass finds the best head and, in case it is at level 1 (the
        # usual case: every head at or below the clock), the pick as well.
        g = h[0].head
        best_p = INT64_MAX
        if self._step:
            for i in range(self._nb):
                if h[i].head < g:
                    g = h[i].head
                if h[i].head <= self._clock:
                    p = h[i].pass_ if h[i].pass_ > self._vtime else self._vtime
                    if p < best_p or (p == best_p and h[i].tenant < h[best].tenant):
                        best_p = p
                        best = i
            if g <= self._clock:
                return best
        else:
            for i in range(1, self._nb):
                if h[i].head < g:
                    g = h[i].head
        top = self._threshold(g)
        best = 0
        best_p = INT64_MAX
        for i in range(self._nb):
            if h[i].head <= top:
                p = h[i].pass_ if h[i].pass_ > self._vtime else self._vtime
                if p < best_p or (p == best_p and h[i].tenant < h[best].tenant):
                    best_p = p
                    best = i
        return best

    cdef inline uint64_t _serve(self, size_t i) noexcept:
        """Give record ``i`` its turn: pop its head."""
        cdef TCold* c = &self._cold[i]
        cdef Ready top = c.heap[0]
        cdef int64_t p = self._hot[i].pass_
        cdef size_t j
        if self._hot[i].grp >= 0:   # filed again below by its new head and pass
            self._unfile(i)
        if p < self._vtime:
            p = self._vtime
        self._vtime = p
        self._hot[i].pass_ = p + c.stride
        if self._vtime > self._rebase_at:
            for j in range(self._nt):
                self._hot[j].pass_ = (self._hot[j].pass_ - self._vtime
                                      if self._hot[j].pass_ > self._vtime else 0)
            if self._sweep_v != INT64_MAX:
                self._sweep_v = (self._sweep_v - self._vtime
                                 if self._sweep_v > self._vtime else 0)
            self._vtime = 0
            if self._grouped:
                self._groups_rebased()
        if self._vtime >= self._sweep_v and self._nt - self._nb > MIN_IDLE_SWEEP:
            self._sweep()
        c.n = _pop_top(c.heap, c.n)
        _ferase(&self._ids, _flookup(&self._ids, top.job_id))
        self._ready_live[(top.tag & PRIO_MASK) - 1] -= 1
        c.ready -= 1
        if c.ready:
            if c.dead:          # no tombstone, no lookup: the top is live
                self._clean_top(i)
            self._hot[i].head = c.heap[0].key
            if self._grouped:
                self._file(i)
            _trim(<void**>&c.heap, &c.cap, c.n, sizeof(Ready))
        else:
            self._went_idle(i)
        return top.job_id

    # -- time ------------------------------------------------------------------

    cdef int _advance(self, int64_t now_us) except -1:
        """Move the clock to ``now_us`` (never back) and promote the jobs that fell due."""
        cdef FDelayed d
        cdef FSlot* slot
        cdef Py_ssize_t i
        cdef size_t cap
        if now_us > self._clock:
            self._clock = now_us
        while self._delayed_n and self._delayed[0].due <= self._clock:
            d = self._delayed[0]
            if _flookup(&self._ids, d.job_id).tag == (d.tag | DELAYED):
                # room first: a MemoryError leaves the job delayed
                i = self._record(d.tenant)
                cap = self._cold[i].cap
                _reserve(<void**>&self._cold[i].heap, &cap, self._cold[i].n + 1, sizeof(Ready), MIN_RECORD)
                self._cold[i].cap = cap
            else:
                i = -1
                self._delayed_dead -= 1
            self._delayed_n = _pop_top(self._delayed, self._delayed_n)
            if i >= 0:
                slot = _flookup(&self._ids, d.job_id)
                slot.tag = d.tag
                self._delayed_live -= 1
                self._push_ready(i, Ready(d.key, d.tag, d.job_id))
        return 0

    # -- weights ---------------------------------------------------------------

    def set_weight(self, tenant, weight):
        """Give ``tenant`` turns in proportion to ``weight`` (1..1000), from its next turn."""
        cdef uint64_t tid = _check_tenant(tenant)
        cdef int64_t w = _check_weight(weight)
        cdef Slot* slot
        cdef Py_ssize_t i
        _table_reserve(&self._wmap, 1)
        slot = _lookup(&self._wmap, tid)
        if slot.tag == 0:
            slot.job_id = tid
            self._wmap.used += 1
        slot.tag = <uint64_t>w
        i = self._index(tid)
        if i >= 0:
            self._cold[i].stride = FAIR_STRIDE // w

    def reset_weight(self, tenant):
        """Back to the default weight."""
        cdef uint64_t tid = _check_tenant(tenant)
        cdef Slot* slot = _lookup(&self._wmap, tid)
        cdef Py_ssize_t i
        if slot.tag:
            _erase(&self._wmap, slot)
            _table_shrink(&self._wmap)
        i = self._index(tid)
        if i >= 0:
            self._cold[i].stride = FAIR_STRIDE // self._default_weight

    def weight(self, tenant):
        cdef uint64_t w = _lookup(&self._wmap, _check_tenant(tenant)).tag
        return <int64_t>w if w else self._default_weight

    def set_default_weight(self, weight):
        """The weight of every tenant without one of its own (1 unless set)."""
        cdef size_t i
        self._default_weight = _check_weight(weight)
        for i in range(self._nt):
            self._cold[i].stride = self._stride_of(self._hot[i].tenant)

    @property
    def default_weight(self):
        return self._default_weight

    def _set_rebase_at(self, int64_t limit):
        """Tests only: rebase passes once the virtual time passes ``limit``."""
        self._rebase_at = limit

    # -- adding ----------------------------------------------------------------

    def push(self, job_id, priority, enqueued_at_us, due_at_us=0, tenant=0):
        """Add one job.  ValueError for a bad priority or tenant, or an id already here."""
        cdef uint64_t jid = _u64(job_id)
        cdef int64_t enq = _i64(enqueued_at_us)
        cdef int64_t due = _i64(due_at_us)
        cdef int prio = _check_priority(priority)
        cdef uint64_t tid = _check_tenant(tenant)
        cdef int64_t ready_at = enq if enq > due else due
        cdef FSlot* slot
        cdef uint64_t tag
        cdef Py_ssize_t i = -1
        cdef size_t cap
        cdef bint made = False
        if ready_at < self._lo[prio - 1] or ready_at > self._hi[prio - 1]:
            raise ValueError(_key_error(ready_at, prio, self._step))
        # make room first, so a MemoryError leaves the heap as it was
        _table_reserve(&self._ids, 1)
        if due <= self._clock:
            made = self._index(tid) < 0
            i = self._record(tid)
            cap = self._cold[i].cap
            try:
                _reserve(<void**>&self._cold[i].heap, &cap, self._cold[i].n + 1, sizeof(Ready), MIN_RECORD)
            except MemoryError:
                if made:
                    self._drop(i)
                raise
            self._cold[i].cap = cap
        else:
            _reserve(<void**>&self._delayed, &self._delayed_cap, self._delayed_n + 1,
                     sizeof(FDelayed), MIN_HEAP)
        slot = _flookup(&self._ids, jid)
        if slot.tag != 0:
            if made:
                self._drop(i)
            raise ValueError(f"job id {jid} is already in the heap")
        self._seq += 1
        tag = (self._seq << SEQ_SHIFT) | <uint64_t>prio
        slot.job_id = jid
        slot.tenant = tid
        self._ids.used += 1
        if i >= 0:
            slot.tag = tag
            self._push_ready(i, Ready(ready_at + self._offset[prio - 1], tag, jid))
        else:
            slot.tag = tag | DELAYED
            _sift_up(self._delayed, self._delayed_n,
                     FDelayed(due, tag, jid, ready_at + self._offset[prio - 1], tid))
            self._delayed_n += 1
            self._delayed_live += 1

    # -- taking ----------------------------------------------------------------

    def pop(self, now_us):
        """Remove and return the next job id by level, then turns, then the tenant's order."""
        self._advance(_i64(now_us))
        if self._nb == 0:
            return None
        job_id = self._serve(self._choose())
        self._trim_all()
        return job_id

    def pop_many(self, n, now_us):
        """Remove and return up to ``n`` ready job ids in ``pop`` order, as ``array('Q')``."""
        cdef carray.array out = self._out(n, now_us)
        cdef uint64_t* dst = <uint64_t*>out.data.as_ulonglongs
        cdef Py_ssize_t i
        for i in range(Py_SIZE(out)):
            dst[i] = self._serve(self._choose())
        self._trim_all()
        return out

    def peek(self, now_us):
        """The job id ``pop(now_us)`` would return, without removing it."""
        self._advance(_i64(now_us))
        if self._nb == 0:
            return None
        return self._cold[self._choose()].heap[0].job_id

    def remove(self, job_id):
        """Take a ready or delayed job out (reassigned, cancelled); False if it is not here."""
        cdef FSlot* slot = _flookup(&self._ids, _u64(job_id))
        cdef uint64_t tag = slot.tag
        cdef size_t i
        cdef TCold* c
        if tag == 0:
            return False
        if tag & DELAYED:
            self._delayed_live -= 1
            _ferase(&self._ids, slot)
            self._delayed_dead += 1
            if self._delayed_dead > COMPACT_MIN and self._delayed_dead > <size_t>self._delayed_live:
                self._compact_delayed()
            self._trim_all()
            return True
        i = <size_t>self._index(slot.tenant)
        _ferase(&self._ids, slot)
        self._ready_live[(tag & PRIO_MASK) - 1] -= 1
        c = &self._cold[i]
        c.ready -= 1
        c.dead += 1
        if c.ready == 0:
            self._went_idle(i)
        else:
            if c.heap[0].tag == tag:    # it was the head
                self._clean_top(i)
                self._hot[i].head = c.heap[0].key
                if self._grouped:
                    self._refile(i)
            if c.dead > COMPACT_MIN and c.dead > <size_t>c.ready:
                self._compact_tenant(i)
            else:
                _trim(<void**>&c.heap, &c.cap, c.n, sizeof(Ready))
        self._trim_all()
        return True

    cdef void _compact_tenant(self, size_t i) noexcept:
        cdef TCold* c = &self._cold[i]
        c.n = _compacted(c.heap, c.n, &self._ids)
        c.dead = 0
        _trim(<void**>&c.heap, &c.cap, c.n, sizeof(Ready))

    cdef void _compact_delayed(self) noexcept:
        self._delayed_n = _compacted(self._delayed, self._delayed_n, &self._ids)
        self._delayed_dead = 0
        _trim(<void**>&self._delayed, &self._delayed_cap, self._delayed_n, sizeof(FDelayed))

    cdef inline void _trim_all(self) noexcept:
        """Give memory back after a drain (as FastHeap._trim)."""
        _table_shrink(&self._ids)
        _trim(<void**>&self._delayed, &self._delayed_cap, self._delayed_n, sizeof(FDelayed))

    def clear(self):
        """Drop every job and every pass.  The clock and the weights are kept."""
        cdef int i
        _table_reset(&self._ids)
        self._free_records()
        _table_empty(&self._tmap)
        PyMem_RawFree(self._delayed)
        self._delayed = NULL
        self._delayed_n = self._delayed_cap = self._delayed_dead = 0
        for i in range(5):
            self._ready_live[i] = 0
        self._delayed_live = 0
        self._vtime = 0
        self._sweep_at = MIN_IDLE_SWEEP
        self._sweep_v = INT64_MAX

    # -- looking ---------------------------------------------------------------

    def __len__(self):
        return self._ids.used

    cdef bint _has(self, uint64_t job_id) noexcept:
        return _flookup(&self._ids, job_id).tag != 0

    def ready_by_tenant(self, now_us):
        """Ready jobs per tenant that has any, in tenant order."""
        cdef size_t i
        self._advance(_i64(now_us))
        return dict(sorted([(self._hot[i].tenant, self._cold[i].ready)
                            for i in range(self._nb)]))

    def next_due_us(self):
        """When the earliest delayed job falls due, or None if none waits."""
        cdef size_t n = _drop_dead_top(self._delayed, self._delayed_n, &self._ids)
        self._delayed_dead -= self._delayed_n - n
        self._delayed_n = n
        return self._delayed[0].due if n else None

    def remembered_tenants(self):
        """Tenant records held: memory, not ordering (the twin keeps a different number)."""
        return self._nt

    def __sizeof__(self):
        cdef size_t i, heaps = 0
        for i in range(self._nt):
            heaps += self._cold[i].cap * sizeof(Ready)
        return (object.__sizeof__(self) + self._delayed_cap * sizeof(FDelayed)
                + (self._ids.mask + 1) * sizeof(FSlot)
                + (self._tmap.mask + 1 + self._wmap.mask + 1) * sizeof(Slot)
                + self._tcap * (sizeof(THot) + sizeof(TCold)) + self._gcap * 18 * sizeof(uint32_t)
                + heaps)

    def __repr__(self):
        return (f"FairHeap(aging_step_us={self._step}, ready={self._ready_total()}, "
                f"delayed={self._delayed_live}, tenants={self._nb})")
