"""``dpq bench --metrics``: the cost of Prometheus metrics, measured in the same run.

``--metrics on`` starts every process of the benchmark's clusters with
``--metrics-listen`` and scrapes all of them every ``--scrape-interval``
seconds (1 s: harsher than Prometheus's usual 15 s) from a thread of the driver
for the whole run. ``--metrics both`` runs the 3-node cluster twice, one after
the other on the same PostgreSQL and at the same offered rates: first without
metrics (``3-node``), then with them and the scraping (``3-node+metrics``), and
prints each figure of both side by side with their ratio. With ``--repeat 3``
each figure is the median of three such pairs.
"""

from __future__ import annotations

import statistics
import threading
import time
import urllib.request
from typing import Any

#: The run with metrics on in ``--metrics both``.
WITH_METRICS = "3-node+metrics"
DEFAULT_SCRAPE_INTERVAL_S = 1.0

#: (label, path in a run's result) of the figures compared.
FIGURES = (
    ("enqueue jobs/s", ("enqueue", "jobs_per_s")),
    ("consume+ack jobs/s", ("consume", "jobs_per_s")),
    ("steady peak delivered/s", ("steady_peak", "delivered_per_s")),
    ("steady end-to-end p50 ms", ("steady", "e2e_from_return", "p50")),
    ("steady end-to-end p99 ms", ("steady", "e2e_from_return", "p99")),
    ("steady nodes' cores", ("steady", "cpu_cores", "nodes")),
)


class Scraper:
    """GETs ``/metrics`` of every address every ``interval_s`` in a thread, until stopped."""

    def __init__(self, addresses: list[str], interval_s: float) -> None:
        self._addresses = addresses
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-scraper", daemon=True)
        self.scrapes = 0
        self.errors = 0
        self.bytes = 0  # of the last scrape of each address, added up
        self.seconds: list[float] = []

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(10)
        return {"scrapes": self.scrapes, "errors": self.errors, "bytes_per_round": self.bytes,
                "scrape_ms_p50": (statistics.median(self.seconds) * 1000
                                  if self.seconds else None),
                "interval_s": self._interval_s}

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            size = 0
            for address in self._addresses:
                t0 = time.perf_counter()
                try:
                    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as r:
                        size += len(r.read())
                    self.scrapes += 1
                    self.seconds.append(time.perf_counter() - t0)
                except OSError:
                    self.errors += 1
            self.bytes = size


def _get(d: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def comparison(result: dict[str, Any]) -> str:
    """Metrics off vs on, figure by figure ("" unless both runs are in ``result``)."""
    runs = result.get("runs", {})
    off, on = runs.get("3-node"), runs.get(WITH_METRICS)
    if not off or not on:
        return ""
    every = _get(on, ("metrics", "interval_s"))
    head = f"metrics off vs on (3 nodes, same run; on = every process scraped every {every} s):"
    lines = ["", head,
             f"  {'':28} {'off':>12} {'on':>12} {'on/off':>8}"]
    for label, path in FIGURES:
        a, b = _get(off, path), _get(on, path)
        ratio = f"{b / a:8.3f}" if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and a else f"{'-':>8}"
        lines.append(f"  {label:28} {_n(a):>12} {_n(b):>12} {ratio}")
    m = on.get("metrics", {})
    lines.append(f"  scrapes {m.get('scrapes', 0):,} ({m.get('errors', 0)} failed), "
                 f"{m.get('bytes_per_round', 0):,} bytes per round of all processes, "
                 f"p50 {_n(m.get('scrape_ms_p50'))} ms per scrape")
    return "\n".join(lines)


def _n(v: Any) -> str:
    return format(v, ",.2f") if isinstance(v, (int, float)) else "-"
