"""``python -m dpq.node`` is ``dpq-node``."""

import sys

from dpq.node.main import node_main

sys.exit(node_main())
