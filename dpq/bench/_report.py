"""The progress line (stderr, one line redrawn) and the table at the end.

No dependency: the line is ``\\r`` + text + erase-to-end, redrawn at most 8
times a second, and only on a terminal (elsewhere each phase prints one
line when it ends, so a CI log stays readable).
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from dpq.bench import _probe

BAR = 24
HEADS = ["3n enq", "3n cons", "3n peak", "3n steady", "3n low", "1n enq", "1n cons"]


class Progress:
    def __init__(self, enabled: bool | None = None, out: TextIO = sys.stderr) -> None:
        self.out = out
        self.live = out.isatty() if enabled is None else enabled
        self._last = 0.0
        self._label = ""
        self._t0 = time.monotonic()

    def begin(self, label: str) -> None:
        self._label = label
        self._t0 = time.monotonic()

    def update(self, done: int, total: int | None, what: str) -> None:
        now = time.monotonic()
        if not self.live or now - self._last < 0.125:
            return
        self._last = now
        elapsed = now - self._t0
        if total:
            filled = min(BAR, BAR * done // max(1, total))
            bar = "█" * filled + "░" * (BAR - filled)
            count = f"{done:>9,}/{total:,}"
        else:
            bar, count = "·" * BAR, f"{done:>9,}"
        speed = f"{done / elapsed:>9,.0f}/s" if elapsed > 0 else ""
        self.out.write(f"\r{self._label:<28} {bar} {count} {what} {speed} {elapsed:5.1f}s\x1b[K")
        self.out.flush()

    def end(self, summary: str) -> None:
        if self.live:
            self.out.write("\r\x1b[K")
        self.out.write(f"{self._label:<28} {summary}\n")
        self.out.flush()


# -------------------------------------------------------------------- table

def _num(v: Any, fmt: str = ",.0f") -> str:
    if v is None:
        return "–"
    return format(v, fmt)


def _get(d: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def table(result: dict[str, Any]) -> str:
    """The human-readable summary of a result dict (the one written with ``--json``)."""
    o = result["options"]
    m = result["machine"]
    pg = result.get("postgres", {})
    runs = result.get("runs", {})
    r3, r1 = runs.get("3-node", {}), runs.get("1-node", {})
    ceil = result.get("ceilings", {}).get("copy", {})
    frac = result.get("fractions", {})
    lines = [
        (f"dpq end-to-end benchmark: {o['jobs']:,} jobs of {o['payload_bytes']} B, priorities "
         f"1..5, seed {o['seed']}; {o['producers']} producer and {o['consumers']} consumer "
         f"processes"),
        (f"machine: {m['platform']}, {m['cpus']} CPUs, Python {m['python']}; load average "
         f"{m['load_before']} before, {m.get('load_after', '?')} after"),
        (f"PostgreSQL {pg.get('version', '?')}: fsync={pg.get('fsync', '?')}, "
         f"synchronous_commit={pg.get('synchronous_commit', '?')}; nodes fsync their log "
         f"(group commit){'; an existing server (--dsn)' if o.get('dsn') else ''}"),
        "",
        f"{'throughput, jobs/s':<44}{'3 nodes':>10}{'1 node':>10}{'3n/1n':>8}{'target':>10}",
    ]
    targets = result.get("targets", {})

    def row(label: str, a: Any, b: Any, t: str = "", fmt: str = ",.0f") -> None:
        ratio = f"{a / b:.2f}" if a and b else "–"
        lines.append(f"{label:<44}{_num(a, fmt):>10}{_num(b, fmt):>10}{ratio:>8}{t:>10}")

    row("enqueue only (producers' view)", _get(r3, "enqueue", "jobs_per_s"),
        _get(r1, "enqueue", "jobs_per_s"), f"≥{targets.get('enqueue_jobs_per_s', 0):,}")
    row("  … and in PostgreSQL (incl. catch-up)", _get(r3, "enqueue", "jobs_per_s_written"),
        _get(r1, "enqueue", "jobs_per_s_written"))
    row("consume+ack only (full queue)", _get(r3, "consume", "jobs_per_s"),
        _get(r1, "consume", "jobs_per_s"), f"≥{targets.get('consume_jobs_per_s', 0):,}")
    row("steady peak: delivered in the window", _get(r3, "steady_peak", "delivered_per_s"),
        _get(r1, "steady_peak", "delivered_per_s"), f"≥{targets.get('steady_jobs_per_s', 0):,}")
    row("  … offered (more than it can take)", _get(r3, "steady_peak", "offered_rate"),
        _get(r1, "steady_peak", "offered_rate"))
    row("steady at half the peak: delivered", _get(r3, "steady", "delivered_per_s"),
        _get(r1, "steady", "delivered_per_s"))
    lines.append("replication cost (1 − 3n/1n): "
                 f"enqueue {_pct(frac.get('replication_cost_enqueue'))}, "
                 f"consume {_pct(frac.get('replication_cost_consume'))} "
                 f"(target ≤ {targets.get('replication_cost', 0):.0%})")
    lines.append("")
    lines.append(f"{'ceiling: raw COPY into the same PostgreSQL':<44}{'rows/s':>10}"
                 f"{'3n enq':>10}{'1n enq':>8}")
    if not ceil:
        lines.append("  (not measured: --skip-copy)")
    for kind in ceil:
        for size, m in ceil[kind].items():
            rate = m["rows_per_s"]
            lines.append(f"{'  ' + kind + ' table, ' + format(int(size), ',') + ' rows/txn':<44}"
                         f"{_num(rate):>10}{_fmt_frac(frac, '3-node', kind, size):>10}"
                         f"{_fmt_frac(frac, '1-node', kind, size):>8}")
    lines.append("  (3n/1n enq: dpq's enqueue rate as a fraction of the ceiling)")

    for st_key in ("steady_low", "steady"):
        st = r3.get(st_key)
        if not st:
            continue
        peak = _get(r3, "steady_peak", "delivered_per_s")
        share = f", {st['offered_rate'] / peak:.0%} of the steady peak" if peak else ""
        what = "low rate" if st_key == "steady_low" else "steady state"
        lines += ["", (f"latency, ms, {what} at {st['offered_rate']:,.0f} jobs/s offered "
                       f"for {o['steady_seconds']:g}s (3 nodes{share})"),
                  f"{'':<44}{'p50':>9}{'p99':>9}{'p999':>9}{'max':>9}{'n':>9}"]
        for label, key in [("enqueue, per job (scheduled → id returned)", "enqueue_latency"),
                           ("end to end, enqueue return → delivery", "e2e_from_return"),
                           ("end to end, scheduled send → delivery", "e2e_from_send")]:
            s = st[key]
            lines.append(f"{label:<44}{_lat(s['p50']):>9}{_lat(s['p99']):>9}"
                         f"{_lat(s['p999']):>9}{_lat(s['max']):>9}{s['n']:>9,}")
        cons_rate = _get(r3, "consume", "jobs_per_s")
        if cons_rate and st["offered_rate"] > cons_rate:
            lines.append(f"  NOTE: {st['offered_rate']:,.0f}/s offered is above the consume+ack "
                         f"rate of phase 2 ({cons_rate:,.0f}/s): the queue grows in the window "
                         f"(backlog {st['backlog_at_window_end']:,} at its end), and the "
                         f"latencies include that backlog")
        lines.append(f"  targets: enqueue p99 ≤ {targets.get('enqueue_p99_ms')} ms, end-to-end "
                     f"p99 ≤ {targets.get('e2e_p99_ms')} ms; delivered before the enqueue "
                     f"returned: {st['delivered_before_return']:,}")
        lines.append(_cores_line(st, _get(r3, "idle_cpu_per_s", "nodes")))
    if any(_get(r3, k, "ordering") for k in ("steady_peak", "steady", "steady_low")):
        step = next(_get(r3, k, "ordering", "aging_step_ms") for k in
                    ("steady_peak", "steady", "steady_low") if _get(r3, k, "ordering"))
        lines.append(f"  out of order (a more urgent job by aged key, aging step {step} ms, was "
                     "ready), target < 1 %: " + "; ".join(
                         _ordering_part(label, _get(r3, k, "ordering"))
                         for label, k in (("peak", "steady_peak"), ("half peak", "steady"),
                                          ("low rate", "steady_low"))
                         if _get(r3, k, "ordering")))
    enq = r3.get("enqueue")
    if enq:
        s = enq["call_latency"]
        lines.append(f"  enqueue only: per enqueue_many call of {o['batch']} jobs, ms: p50 "
                     f"{_num(s['p50'], '.1f')}, p99 {_num(s['p99'], '.1f')}, max "
                     f"{_num(s['max'], '.1f')} (saturated, {o['inflight']} calls in flight "
                     f"per producer)")

    lines += ["", f"{'CPU seconds per 1,000 jobs':<30}" + "".join(
        f"{h:>11}" for h in HEADS)]
    cols = [(r3, "enqueue"), (r3, "consume"), (r3, "steady_peak"), (r3, "steady"),
            (r3, "steady_low"), (r1, "enqueue"), (r1, "consume")]
    kinds = ["nodes", "gateway", "postgres", "producers", "consumers", "driver", "total"]
    for kind in kinds:
        lines.append(f"  {kind:<28}" + "".join(
            f"{_num(_get(r, ph, 'cpu_per_1000_jobs', kind), '.3f'):>11}" for r, ph in cols))
    idle = [_get(r, "idle_cpu_per_s") or {} for r in (r3, r1)]
    if any(idle):
        lines.append("  idle cluster, CPU s per s: " + "; ".join(
            f"{name} " + ", ".join(f"{k} {v:.3f}" for k, v in d.items())
            for name, d in zip(("3 nodes", "1 node"), idle, strict=True) if d))
        lines.append("  (each phase's window runs from its start until PostgreSQL caught up)")
    lines.append(f"  {'nodes, cores (CPU s per s)':<28}" + "".join(
        f"{_num(_get(r, ph, 'cpu_cores', 'nodes'), '.3f'):>11}" for r, ph in cols))
    lines += ["", f"{'batch sizes (counters, per phase)':<30}" + "".join(
        f"{h:>11}" for h in HEADS)]
    for label, key in [("Paxos entries per fsync", "paxos_entries_per_sync"),
                       ("commands per proposal", "commands_per_proposal"),
                       ("writer rows per transaction", "writer_rows_per_transaction"),
                       ("gateway jobs per proposal", "gateway_jobs_per_proposal"),
                       ("gateway requests per proposal", "gateway_requests_per_proposal")]:
        lines.append(f"  {label:<28}" + "".join(
            f"{_num(_get(r, ph, 'counters', 'batch_sizes', key), ',.1f'):>11}" for r, ph in cols))
    lines.append(f"  {'producer requests per job':<28}" + "".join(
        f"{_num(_get(r, ph, 'messages_per_job', 'producer_requests'), '.4f'):>11}"
        for r, ph in cols))
    lines += ["", f"{'gRPC messages per job (in + out)':<30}" + "".join(
        f"{h:>11}" for h in HEADS)]
    for hop in [*_probe.HOPS, "all gRPC messages"]:
        lines.append(f"  {hop:<28}" + "".join(
            f"{_num(_get(r, ph, 'messages_per_job', hop), '.3f'):>11}" for r, ph in cols))
    lines.append(f"  {'load average (1 min), start':<28}" + "".join(
        f"{(_get(r, ph, 'load_before') or '–').split()[0]:>11}" for r, ph in cols))
    lines.append(f"  {'leader elected during phase':<28}" + "".join(
        f"{_yn(_get(r, ph, 'counters', 'ballot_changed')):>11}" for r, ph in cols))
    lines.append("")
    for name, r in (("3 nodes", r3), ("1 node", r1)):
        chk = r.get("checks")
        if chk:
            lines.append(f"checks, {name}: " + ", ".join(f"{k.replace('_', ' ')} {v:,}"
                                                          for k, v in chk.items()))
    if result.get("error"):
        lines += ["", f"STOPPED EARLY: {result['error']}"]
    return "\n".join(lines)


def _cores_line(st: dict[str, Any], idle_nodes: float | None) -> str:
    cores = st.get("cpu_cores") or {}
    idle = "" if idle_nodes is None else f" (idle: {idle_nodes:.3f})"
    return (f"  CPU in cores (CPU s per s of the phase): nodes together "
            f"{_num(cores.get('nodes'), '.3f')}{idle}, gateway {_num(cores.get('gateway'), '.3f')}"
            f", PostgreSQL {_num(cores.get('postgres'), '.3f')}")


def _ordering_part(label: str, o: dict[str, Any]) -> str:
    share = "–" if o.get("share") is None else f"{o['share']:.2%}"
    prio = o.get("share_by_priority")
    by_prio = "" if prio is None else f", by priority alone {prio:.2%}"
    return (f"{label} {share} ({o.get('out_of_order', 0):,} of {o.get('deliveries', 0):,}"
            f"{by_prio})")


def _lat(v: float | None) -> str:
    if v is None:
        return "–"
    return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"


def _yn(v: bool | None) -> str:
    return "–" if v is None else ("YES" if v else "no")


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{v:.0%}"


def _fmt_frac(frac: dict[str, Any], run: str, kind: str, size: str) -> str:
    v = _get(frac, "enqueue_vs_copy", run, kind, size)
    return "–" if v is None else f"{v:.2f}"
