"""A one-minute tour of dpq's compiled hot paths: the aging heap and the balancer.

Run it with ``dpq demo``. It drives the same objects a node and a gateway use,
on a simulated clock, and prints what they decide.
"""

from __future__ import annotations

from collections import Counter

from dpq._fastheap import FastHeap
from dpq._wrr import SmoothWRR
from dpq.balancer import NodeHealth, weights

MS = 1000  # microseconds


def heap_tour() -> None:
    print("== the per-node heap: priority first, FIFO within a priority, aging for the rest ==")
    heap = FastHeap(aging_step_us=500 * MS)  # one priority level = 500 ms of waiting
    heap.push(1, 5, enqueued_at_us=0)  # a low-priority job at t=0
    heap.push(99, 1, enqueued_at_us=0, due_at_us=1_500 * MS)  # urgent, delayed to t=1.5 s
    arrivals = {job_id: (job_id - 1) * 400 * MS for job_id in range(2, 8)}  # urgent, every 400 ms
    for job_id, at in arrivals.items():
        if at <= 1_000 * MS:
            heap.push(job_id, 1, enqueued_at_us=at)
    early = list(heap.pop_many(1, 1_000 * MS))
    for job_id, at in arrivals.items():
        if at > 1_000 * MS:
            heap.push(job_id, 1, enqueued_at_us=at)
    rest = list(heap.pop_many(10, 3_000 * MS))
    print("  t=0: #1 (priority 5) and #99 (priority 1, delayed to t=1.5 s);")
    print("  priority-1 jobs #2..#7 arrive every 400 ms from t=0.4 s")
    print("  a consumer polling at t=1.0 s for one job gets:", " ".join(f"#{j}" for j in early))
    print("  the next poll, at t=3.0 s, gets:", " ".join(f"#{j}" for j in rest))
    print("  #1 ranks as if it had come at t=2.0 s (4 levels x 500 ms), so it overtakes")
    print("  the priority-1 jobs from t=2.0 s on (#6, #7): nothing starves. #99 waited")
    print("  in the delay heap until t=1.5 s.\n")


def balancer_tour() -> None:
    print("== the gateway's balancer: live health -> weights -> smooth round-robin ==")
    reports = [
        NodeHealth(node_id=1, cpu_percent=20, ready_depth=10, consume_rate=500),
        NodeHealth(node_id=2, cpu_percent=15, ready_depth=0, consume_rate=800, waiting_consumers=4),
        NodeHealth(node_id=3, cpu_percent=95, ready_depth=40_000, consume_rate=300),
        NodeHealth(node_id=4, reachable=False),
    ]
    ids, ws = weights(reports)
    wrr = SmoothWRR(ids, ws)
    picks = wrr.pick_many(1000)
    share = Counter(picks)
    for report, w in zip(reports, ws):
        why = (
            "unreachable" if not report.reachable
            else f"cpu {report.cpu_percent:.0f}%, {report.ready_depth} ready, "
                 f"{report.consume_rate:.0f} jobs/s, {report.waiting_consumers} waiting"
        )
        print(f"  node {report.node_id}: weight {w:5d}  "
              f"{share[report.node_id] / 10:5.1f}% of jobs  ({why})")
    print("  first picks:", " ".join(str(n) for n in picks[:20]), "...")


def main() -> None:
    heap_tour()
    balancer_tour()


if __name__ == "__main__":
    main()
