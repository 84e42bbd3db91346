"""Batching and proposing, shared by the node and the gateway (issue 12).

* :mod:`dpq.proposing.proposer`: the :class:`~dpq.proposing.proposer.Proposer`
  (many commands, one Paxos slot, retried exactly once) and the ``Router``
  protocol it sends batches through;
* :mod:`dpq.proposing.stream`: :class:`~dpq.proposing.stream.ProposalStream`, one
  long-lived ``Replication/ProposeStream`` to a leader that the routers send
  batches on (unary Propose to a leader without it);
* :mod:`dpq.proposing.results`: what a batch yields (``Applied``: the state
  machine's typed results, ``dpq.queue.results``), its protobuf form, and the
  helpers that read one kind of result (``enqueued``, ``granted``, ``reassigned``).

Nothing here imports ``dpq.node``, ``dpq.gateway`` or ``dpq.services``.
"""
