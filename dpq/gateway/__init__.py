"""dpq-gateway, the enqueue manager: buffers jobs, balances them over the nodes."""
