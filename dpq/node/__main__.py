"""``python -m dpq.node`` is ``dpq-node``."""

import sys

from dpq import lifeline

lifeline.adopt()  # first: a starter that dies takes this process with it

from dpq.node.main import node_main

sys.exit(node_main())
