# cython: language_level=3
"""Smooth weighted round-robin over the cluster's nodes (the nginx algorithm).

Each pick adds every node's weight to its running ``current`` value, takes the
node with the largest ``current`` (the first such in node order on a tie) and
subtracts the total weight from it. Over any ``sum(weights)`` consecutive picks
from a fresh selector every node is picked exactly its weight times, and the
picks of a heavy node are spread between the others instead of bunched.

The gateway calls :meth:`SmoothWRR.pick_many` once per batch, so the loop runs
in C without the GIL. ``dpq.gateway.wrr.PyWRR`` is the pure-Python twin and the oracle
in the property tests.
"""

from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.stdint cimport int64_t, uint32_t

from array import array

from dpq.gateway.wrr import MAX_NODES, MAX_WEIGHT, validate_weights


cdef class SmoothWRR:
    """Pick node ids in proportion to integer weights, smoothly."""

    cdef uint32_t* _ids
    cdef int64_t* _weights
    cdef int64_t* _current
    cdef Py_ssize_t _n
    cdef int64_t _total

    def __cinit__(self):
        self._ids = NULL
        self._weights = NULL
        self._current = NULL
        self._n = 0
        self._total = 0

    def __dealloc__(self):
        PyMem_Free(self._ids)
        PyMem_Free(self._weights)
        PyMem_Free(self._current)

    def __init__(self, node_ids=(), weights=()):
        if len(node_ids) or len(weights):
            self.set_weights(node_ids, weights)

    def set_weights(self, node_ids, weights):
        """Replace the node set and weights; refused input changes nothing.

        A node that stays keeps its running value, so a weight change steers
        the sequence without restarting it. Weight 0 means never picked.
        """
        ids, ws, total = validate_weights(node_ids, weights)
        previous = self.current_values()
        cdef Py_ssize_t n = len(ids)
        cdef uint32_t* new_ids = <uint32_t*>PyMem_Malloc(n * sizeof(uint32_t))
        cdef int64_t* new_weights = <int64_t*>PyMem_Malloc(n * sizeof(int64_t))
        cdef int64_t* new_current = <int64_t*>PyMem_Malloc(n * sizeof(int64_t))
        if new_ids == NULL or new_weights == NULL or new_current == NULL:
            PyMem_Free(new_ids)
            PyMem_Free(new_weights)
            PyMem_Free(new_current)
            raise MemoryError()
        cdef Py_ssize_t i
        for i in range(n):
            new_ids[i] = ids[i]
            new_weights[i] = ws[i]
            # A node at weight 0 sits out; it must not win on a stale value.
            new_current[i] = previous.get(ids[i], 0) if ws[i] else 0
        PyMem_Free(self._ids)
        PyMem_Free(self._weights)
        PyMem_Free(self._current)
        self._ids, self._weights, self._current = new_ids, new_weights, new_current
        self._n = n
        self._total = total

    def current_values(self):
        """Each node's running value, by node id (for diagnostics and tests)."""
        return {self._ids[i]: self._current[i] for i in range(self._n)}

    def weights(self):
        """The weights in force, by node id."""
        return {self._ids[i]: self._weights[i] for i in range(self._n)}

    @property
    def total_weight(self):
        return self._total

    def __len__(self):
        return self._n

    def pick(self):
        """The next node id."""
        self._check_ready()
        cdef uint32_t out
        with nogil:
            out = self._pick()
        return out

    def pick_many(self, Py_ssize_t n):
        """The next ``n`` node ids, as ``array('I')``: one call per batch."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self._check_ready()
        result = array("I", bytes(n * 4))
        cdef uint32_t[::1] out = result
        cdef Py_ssize_t i
        with nogil:
            for i in range(n):
                out[i] = self._pick()
        return result

    cdef inline uint32_t _pick(self) noexcept nogil:
        cdef Py_ssize_t i, best = -1
        cdef int64_t w
        for i in range(self._n):
            w = self._weights[i]
            if w == 0:
                continue
            self._current[i] += w
            if best < 0 or self._current[i] > self._current[best]:
                best = i
        self._current[best] -= self._total
        return self._ids[best]

    cdef _check_ready(self):
        if self._total == 0:
            raise LookupError("no node to pick: set_weights() has not been called")
