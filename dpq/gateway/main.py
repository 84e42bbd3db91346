"""``dpq-gateway``: the enqueue manager in front of a cluster (``python -m dpq.gateway``).

The ``dpq-gateway`` entry point stays ``dpq.cli:gateway_main``; it lives here, with the
gateway, so the gateway's package imports nothing from the command line.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from dpq import runtime
from dpq.services import ports


def gateway_main(argv: list[str] | None = None) -> int:
    """``dpq-gateway``: the enqueue manager in front of a cluster."""
    import logging

    from dpq import logs
    from dpq.gateway import config as gateway_config

    try:
        config = gateway_config.from_args(argv)
        ports.probe_all({"--listen": config.listen, "--http-listen": config.http_listen or "",
                         "--metrics-listen": config.metrics_listen or ""})
    except (gateway_config.ConfigError, OSError) as exc:
        print(f"dpq-gateway: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.log_dir, level=config.log_level, request_level=config.request_log_level)
    if config.tls is None:
        logging.getLogger("dpq.gateway").warning(
            "plaintext: the client port %s and the calls to the nodes carry no TLS and no token; "
            "use TLS (`dpq certs init`, --tls-dir) on any network you do not trust", config.listen)
    try:
        return runtime.run(_serve_gateway(config))
    except KeyboardInterrupt:
        return 0


async def _serve_gateway(config) -> int:
    from dpq.gateway.app import Gateway

    try:
        gateway = Gateway(config)
    except OSError as exc:
        print(f"dpq-gateway: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    runtime.tune_for_server()
    metrics = (f", metrics on http://{config.metrics_listen}/metrics (port {gateway.metrics.port})"
               if gateway.metrics is not None else "")
    print(f"dpq-gateway serving on {config.listen} (port {gateway.port}){metrics}", flush=True)
    if gateway.console is not None:
        host = ports.split(config.http_listen)[0]
        host = f"[{host}]" if ":" in host else host
        print(f"web console on http://{host}:{gateway.http_port}/", flush=True)
    try:
        await stop.wait()
    finally:
        await gateway.stop()
    return 0
