"""``python -m dpq.gateway`` is ``dpq-gateway``."""

import sys

from dpq.gateway.main import gateway_main

sys.exit(gateway_main())
