"""``python -m dpq.gateway`` is ``dpq-gateway``."""

import sys

from dpq import lifeline

lifeline.adopt()  # first: a starter that dies takes this process with it

from dpq.gateway.main import gateway_main

sys.exit(gateway_main())
