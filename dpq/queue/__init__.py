"""The replicated queue state machine: pure (no I/O, no asyncio, no clock, no randomness).

Every replica applies the same committed commands to the same state and gets
the same result. ``state.py`` is the state machine (``QueueState``: jobs,
leases, dedup keys, dead jobs), ``results.py`` what each command yields (one
type per command kind, and the ``Refusal`` enum the wire shares), ``rules.py``
what every replica requires of a command before applying it, ``commands.py``
how a batch of log commands rides in one Paxos slot, ``snapshot.py`` the state
as bytes, ``validate.py`` the checks on client input at the edge, ``owned.py``
the slice of jobs one node serves (over the compiled heap ``dpq._fastheap``),
and ``heap.py`` that heap's pure-Python twin, the oracle of its property tests
and the home of the priority bounds.
"""
