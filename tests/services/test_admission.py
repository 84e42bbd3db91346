"""The per-connection admission gate (dpq.services.admission), driven step by step."""

from __future__ import annotations

import asyncio

from dpq.services.admission import AdmissionGate, AdmissionLimits


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


class Holder:
    """A request that enters the gate and stays in until released."""

    def __init__(self, gate: AdmissionGate, client: str, jobs: int, log: list[str],
                 name: str) -> None:
        self.release = asyncio.Event()
        self.task = asyncio.create_task(self._run(gate, client, jobs, log, name))

    async def _run(self, gate, client, jobs, log, name) -> None:
        async with gate.admit(client, jobs):
            log.append(name)
            await self.release.wait()


def test_a_connection_waits_in_order_while_another_goes_at_once():
    async def main():
        gate = AdmissionGate(AdmissionLimits(max_requests=2, max_jobs=100, max_total_jobs=0))
        log: list[str] = []
        flood = [Holder(gate, "ipv4:10.0.0.1:1", 10, log, f"f{i}") for i in range(5)]
        await _settle()
        assert log == ["f0", "f1"] and gate.in_flight("ipv4:10.0.0.1:1") == (2, 20)
        quiet = Holder(gate, "ipv4:10.0.0.2:1", 1, log, "q")
        await _settle()
        assert log[-1] == "q"  # not behind the flood
        flood[1].release.set()
        await _settle()
        assert log == ["f0", "f1", "q", "f2"]
        for h in flood:
            h.release.set()
        quiet.release.set()
        await asyncio.gather(*(h.task for h in [*flood, quiet]))
        assert log == ["f0", "f1", "q", "f2", "f3", "f4"]
        assert gate.in_flight("ipv4:10.0.0.1:1") == (0, 0)
        assert gate._connections == {}  # nothing kept for connections that went quiet

    asyncio.run(main())


def test_jobs_are_limited_too_and_a_big_request_goes_alone():
    async def main():
        gate = AdmissionGate(AdmissionLimits(max_requests=10, max_jobs=100, max_total_jobs=0))
        log: list[str] = []
        a = Holder(gate, "c", 60, log, "a")
        b = Holder(gate, "c", 60, log, "b")  # 120 jobs would pass 100
        await _settle()
        assert log == ["a"]
        a.release.set()
        await _settle()
        assert log == ["a", "b"]
        b.release.set()
        big = Holder(gate, "c", 5000, log, "big")  # over the limit, but alone: admitted
        await _settle()
        assert log[-1] == "big"
        big.release.set()
        await asyncio.gather(a.task, b.task, big.task)

    asyncio.run(main())


def test_a_waiter_cancelled_gives_its_turn_to_the_next():
    async def main():
        gate = AdmissionGate(AdmissionLimits(max_requests=1, max_jobs=0, max_total_jobs=0))
        log: list[str] = []
        first = Holder(gate, "c", 1, log, "first")
        doomed = Holder(gate, "c", 1, log, "doomed")
        last = Holder(gate, "c", 1, log, "last")
        await _settle()
        doomed.task.cancel()
        first.release.set()
        last.release.set()
        await asyncio.gather(first.task, last.task)
        assert log == ["first", "last"]
        assert gate.in_flight("c") == (0, 0)

    asyncio.run(main())


def test_limits_of_zero_turn_the_gate_off():
    async def main():
        gate = AdmissionGate(AdmissionLimits(max_requests=0, max_jobs=0, max_total_jobs=0))
        log: list[str] = []
        holders = [Holder(gate, "c", 10_000, log, str(i)) for i in range(50)]
        await _settle()
        assert len(log) == 50
        for h in holders:
            h.release.set()
        await asyncio.gather(*(h.task for h in holders))

    asyncio.run(main())


def test_over_the_total_the_client_with_the_least_in_flight_goes_next():
    async def main():
        gate = AdmissionGate(AdmissionLimits(max_requests=4, max_jobs=0, max_total_jobs=30))
        log: list[str] = []
        a = [Holder(gate, "a", 10, log, f"a{i}") for i in range(4)]
        await _settle()
        b = [Holder(gate, "b", 5, log, f"b{i}") for i in range(2)]
        await _settle()
        # a3 waits for the total; b0 had nothing in flight (the express lane)
        assert log == ["a0", "a1", "a2", "b0"] and gate.total_jobs == 35
        a[0].release.set()
        await _settle()
        assert log[4:] == ["b1"]  # b has 5 in flight, a 20: b goes, though a3 came first
        a[1].release.set()
        await _settle()
        assert log[5:] == ["a3"]  # 10 each now: a was served longer ago
        for h in [*a, *b]:
            h.release.set()
        await asyncio.gather(*(h.task for h in [*a, *b]))
        assert gate.total_jobs == 0 and gate._connections == {}

    asyncio.run(main())


def test_a_flood_that_just_finished_does_not_go_before_a_quiet_client():
    async def main():
        gate = AdmissionGate(AdmissionLimits(max_requests=4, max_jobs=0, max_total_jobs=10))
        log: list[str] = []
        flood = [Holder(gate, "flood", 10, log, f"f{i}") for i in range(4)]  # f1.. queued early
        await _settle()
        quiet = Holder(gate, "quiet", 1, log, "q")  # nothing in flight: the express lane
        late = Holder(gate, "late", 10, log, "late")  # nothing in flight, but 21 > 2 * 10
        await _settle()
        assert log == ["f0", "q"]
        flood[0].release.set()
        quiet.release.set()
        # flood and late have nothing in flight; the flood was served more recently
        await _settle()
        assert log == ["f0", "q", "late"]
        late.release.set()
        for h in flood:
            h.release.set()
        await asyncio.gather(*(h.task for h in [*flood, quiet, late]))
        assert log == ["f0", "q", "late", "f1", "f2", "f3"]

    asyncio.run(main())
