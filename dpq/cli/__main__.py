"""``python -m dpq.cli``: the ``dpq`` command."""

import sys

from dpq.cli.main import main

sys.exit(main())
