# cython: language_level=3, cdivision=True
"""The per-node priority heap with aging, compiled: dpq's dequeue hot path.

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
from cpython.mem cimport PyMem_RawCalloc, PyMem_RawFree, PyMem_RawRealloc
from libc.stdint cimport INT64_MAX, INT64_MIN, SIZE_MAX, int8_t, int64_t, uint64_t

import array

__all__ = [
    "DEFAULT_AGING_STEP_US",
    "MAX_AGING_STEP_US",
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "STRICT_MAX_US",
    "STRICT_MIN_US",
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

ctypedef fused Entry:
    Ready
    Delayed

ctypedef struct Slot:
    uint64_t job_id
    uint64_t tag            # 0: the slot is empty (seq starts at 1)

ctypedef struct Table:
    Slot* slots
    size_t mask             # capacity - 1
    size_t used

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


cdef int _reserve(void** items, size_t* cap, size_t need, size_t itemsize) except -1:
    """Grow an array (doubling) so it holds ``need`` items."""
    cdef size_t new_cap
    cdef void* p
    if need <= cap[0]:
        return 0
    new_cap = cap[0] * 2 if cap[0] * 2 > need else need
    if new_cap < MIN_HEAP:
        new_cap = MIN_HEAP
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


cdef inline size_t _home(const Table* t, uint64_t job_id) noexcept nogil:
    # Job ids come from a counter, so they arrive (and leave, roughly) in
    # runs.  Each run of 8 ids (same id >> 3) gets one scattered 128-byte
    # stretch of the table: pushes miss the cache once per run, not per job.
    return _home_in(_spread(job_id >> 3), job_id, t.mask)


cdef inline Slot* _lookup(const Table* t, uint64_t job_id) noexcept nogil:
    """The slot holding ``job_id``, or the empty slot where it would go."""
    cdef size_t i = _home(t, job_id)
    while t.slots[i].tag != 0 and t.slots[i].job_id != job_id:
        i = (i + 1) & t.mask
    return &t.slots[i]


cdef inline void _erase(Table* t, Slot* slot) noexcept nogil:
    # Backward-shift deletion: pull later entries of the probe run into the
    # hole, so the table never holds tombstones of its own.
    cdef size_t hole = slot - t.slots
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


cdef int _rehash(Table* t, size_t capacity) except -1:
    cdef Slot* old = t.slots
    cdef size_t old_cap = t.mask + 1
    cdef size_t i
    cdef Slot* new = <Slot*>PyMem_RawCalloc(capacity, sizeof(Slot))
    if new == NULL:
        raise MemoryError()
    t.slots = new
    t.mask = capacity - 1
    for i in range(old_cap):
        if old[i].tag != 0:
            _lookup(t, old[i].job_id)[0] = old[i]
    PyMem_RawFree(old)
    return 0


cdef int _table_reserve(Table* t, size_t more) except -1:
    """Room for ``more`` ids at a load factor of at most 1/2."""
    cdef size_t want, cap = t.mask + 1
    if more > (SIZE_MAX // 4) // sizeof(Slot) - t.used:
        raise MemoryError()
    want = (t.used + more) * 2
    if want <= cap:
        return 0
    while cap < want:
        cap *= 2
    return _rehash(t, cap)


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


cdef inline int _check_priority(object priority) except -1:
    cdef int overflow = 0
    cdef long long p = PyLong_AsLongLongAndOverflow(priority, &overflow)
    if overflow:
        raise ValueError(_priority_error(priority))
    if p < PRIO_MIN or p > PRIO_MAX:
        raise ValueError(_priority_error(p))
    return <int>p


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


@cython.final
@cython.auto_pickle(False)
cdef class FastHeap:
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
    cdef int64_t _step
    # per priority: the ready times that give a key in range, and the key's offset
    cdef int64_t _lo[5]
    cdef int64_t _hi[5]
    cdef int64_t _offset[5]
    cdef int64_t _clock             # the latest now_us seen
    cdef uint64_t _seq              # push counter
    cdef Py_ssize_t _ready_live[5]  # live ready jobs per priority
    cdef Py_ssize_t _delayed_live
    cdef size_t _dead               # tombstones in both heaps

    def __cinit__(self, aging_step_us=DEFAULT_AGING_STEP_US):
        cdef int p, overflow = 0
        cdef long long step = PyLong_AsLongLongAndOverflow(aging_step_us, &overflow)
        if overflow or step < 0 or step > MAX_STEP:
            raise ValueError(f"aging_step_us must be 0 to {MAX_AGING_STEP_US} microseconds, "
                             f"got {aging_step_us if overflow else step}")
        self._step = step
        for p in range(5):
            if step:
                self._lo[p] = INT64_MIN
                self._hi[p] = INT64_MAX - p * step
                self._offset[p] = p * step
            else:
                self._lo[p] = -STRICT_SPAN
                self._hi[p] = STRICT_SPAN - 1
                self._offset[p] = p * (2 * STRICT_SPAN) - 4 * STRICT_SPAN
        self._ids.slots = <Slot*>PyMem_RawCalloc(MIN_TABLE, sizeof(Slot))
        if self._ids.slots == NULL:
            raise MemoryError()
        self._ids.mask = MIN_TABLE - 1

    def __dealloc__(self):
        PyMem_RawFree(self._ready)
        PyMem_RawFree(self._delayed)
        PyMem_RawFree(self._ids.slots)

    @property
    def aging_step_us(self):
        return self._step

    # -- internals -----------------------------------------------------------

    cdef inline Py_ssize_t _ready_total(self) noexcept nogil:
        return (self._ready_live[0] + self._ready_live[1] + self._ready_live[2]
                + self._ready_live[3] + self._ready_live[4])

    cdef int _advance(self, int64_t now) except -1:
        """Move the clock to ``now`` (never back) and promote what fell due."""
        cdef Delayed d
        cdef Slot* slot
        if now > self._clock:
            self._clock = now
        while self._delayed_n and self._delayed[0].due <= self._clock:
            _reserve(<void**>&self._ready, &self._ready_cap, self._ready_n + 1, sizeof(Ready))
            d = self._delayed[0]
            self._delayed_n -= 1
            if self._delayed_n:
                _sift_down(self._delayed, self._delayed_n, 0, self._delayed[self._delayed_n])
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
            self._ready_n -= 1
            if self._ready_n:
                _sift_down(self._ready, self._ready_n, 0, self._ready[self._ready_n])
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
        cdef size_t i, j = 0
        for i in range(self._ready_n):
            if _lookup(&self._ids, self._ready[i].job_id).tag == self._ready[i].tag:
                self._ready[j] = self._ready[i]
                j += 1
        self._ready_n = j
        _heapify(self._ready, j)
        j = 0
        for i in range(self._delayed_n):
            if (_lookup(&self._ids, self._delayed[i].job_id).tag
                    == (self._delayed[i].tag | DELAYED)):
                self._delayed[j] = self._delayed[i]
                j += 1
        self._delayed_n = j
        _heapify(self._delayed, j)
        self._dead = 0
        self._trim()

    cdef void _trim(self) noexcept:
        """Give memory back after a drain (heaps 3/4 empty, table under 1/8 full)."""
        cdef size_t cap = self._ids.mask + 1
        _trim(<void**>&self._ready, &self._ready_cap, self._ready_n, sizeof(Ready))
        _trim(<void**>&self._delayed, &self._delayed_cap, self._delayed_n, sizeof(Delayed))
        if cap > MIN_TABLE and self._ids.used * 8 < cap:
            cap = MIN_TABLE
            while cap < self._ids.used * 4:
                cap *= 2
            try:
                _rehash(&self._ids, cap)
            except MemoryError:
                pass            # keep the bigger table

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
            _reserve(<void**>&self._ready, &self._ready_cap, self._ready_n + 1, sizeof(Ready))
        else:
            _reserve(<void**>&self._delayed, &self._delayed_cap, self._delayed_n + 1,
                     sizeof(Delayed))
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
                 sizeof(Ready))
        _reserve(<void**>&self._delayed, &self._delayed_cap, self._delayed_n + n_delayed,
                 sizeof(Delayed))

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
        cdef Py_ssize_t i, m, count = PyNumber_Index(n)
        cdef carray.array out
        cdef uint64_t* dst
        if count < 0:
            raise ValueError(f"n must be >= 0, got {count}")
        self._advance(_i64(now_us))
        m = self._ready_total()
        if count < m:
            m = count
        out = carray.clone(_U64_TEMPLATE, m, False)
        dst = <uint64_t*>out.data.as_ulonglongs
        for i in range(m):
            self._take(&dst[i])     # m <= live ready jobs, so this always finds one
        self._trim()
        return out

    def peek(self, now_us):
        """The job id ``pop(now_us)`` would return, without removing it."""
        self._advance(_i64(now_us))
        while self._ready_n:
            if _lookup(&self._ids, self._ready[0].job_id).tag == self._ready[0].tag:
                return self._ready[0].job_id
            self._ready_n -= 1
            if self._ready_n:
                _sift_down(self._ready, self._ready_n, 0, self._ready[self._ready_n])
            self._dead -= 1
        return None

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
        cdef Slot* slots = <Slot*>PyMem_RawCalloc(MIN_TABLE, sizeof(Slot))
        if slots == NULL:
            raise MemoryError()
        PyMem_RawFree(self._ids.slots)
        self._ids.slots = slots
        self._ids.mask = MIN_TABLE - 1
        self._ids.used = 0
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

    def __contains__(self, job_id):
        cdef uint64_t key
        try:
            key = _u64(job_id)
        except (TypeError, OverflowError):
            return False
        return _lookup(&self._ids, key).tag != 0

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

    def next_due_us(self):
        """When the earliest delayed job falls due, or None if none waits."""
        while self._delayed_n:
            if (_lookup(&self._ids, self._delayed[0].job_id).tag
                    == (self._delayed[0].tag | DELAYED)):
                return self._delayed[0].due
            self._delayed_n -= 1
            if self._delayed_n:
                _sift_down(self._delayed, self._delayed_n, 0, self._delayed[self._delayed_n])
            self._dead -= 1
        return None

    def __sizeof__(self):
        return (object.__sizeof__(self) + self._ready_cap * sizeof(Ready)
                + self._delayed_cap * sizeof(Delayed) + (self._ids.mask + 1) * sizeof(Slot))

    def __repr__(self):
        return (f"FastHeap(aging_step_us={self._step}, ready={self._ready_total()}, "
                f"delayed={self._delayed_live})")
