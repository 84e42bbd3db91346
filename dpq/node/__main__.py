"""``python -m dpq.node`` is ``dpq-node``."""

import sys

from dpq.cli import node_main

sys.exit(node_main())
