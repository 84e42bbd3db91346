"""The command line: ``dpq`` (``up``, ``demo``, ``enqueue`` …), ``dpq-node``, ``dpq-gateway``.

``main.py`` parses the commands (the node and gateway processes run from
``dpq/node/main.py`` and ``dpq/gateway/main.py``);
``commands.py`` holds the bodies of the client commands; ``up.py`` is ``dpq up``
over ``localcluster.py`` (a whole cluster of real processes on one machine, also
used by the tests and the benchmark); ``demo.py`` is ``dpq demo`` and
``dpq up --demo``. The entry points stay importable from here
(``dpq.cli:main``, ``dpq.cli:node_main``, ``dpq.cli:gateway_main``).
"""

from dpq.cli.main import gateway_main, main, node_main

__all__ = ["gateway_main", "main", "node_main"]
