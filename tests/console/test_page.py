"""The console's page in a real browser against a scripted API: the numbers it computes.

The cluster's counters advance by known steps between polls (the API's clock
too: one second per poll), so the rates the page computes from their
differences are exact: the legend must say them. The oldest waiting age is
formatted per priority. A queue that drops out of Stats keeps its card, at
zero. (tests/console/test_browser.py runs the page on a real cluster.)
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from support.browser import WAIT_MS, launch

from dpq.console.api import Console
from dpq.services.http import HttpServer
from dpq.v1 import queue_pb2 as pb

pytestmark = pytest.mark.slow  # a browser


class ScriptedOps:
    """Each Stats call is one second later, with 10 more enqueued, 6 delivered, 4 acked."""

    def __init__(self) -> None:
        self.polls = 0
        self.drained = False

    async def stats(self, queue):
        self.polls += 1
        n = self.polls
        queues = [pb.QueueStats(
            queue="steady", ready_by_priority=[3, 0, 12, 0, 1],
            oldest_ready_age_ms=[65_000, 0, 1_500, 0, 7_200_000],
            enqueued_by_priority=[5 * n, 0, 5 * n], delivered_by_priority=[6 * n],
            acked_by_priority=[0, 4 * n])]
        if not self.drained:
            queues.append(pb.QueueStats(queue="draining", ready_by_priority=[2]))
        return queues

    async def cluster_info(self):
        return pb.ClusterInfoResponse(leader_id=1, nodes=[
            pb.NodeInfo(node_id=1, address="127.0.0.1:1", role="leader", reachable=True)])

    async def list_jobs(self, request):
        return pb.ListJobsResponse()


@pytest.fixture
def console_url():
    ops = ScriptedOps()
    loop = asyncio.new_event_loop()
    server = HttpServer(Console(ops, token=None, clock=lambda: float(ops.polls)).routes(),
                        name="console")
    port = loop.run_until_complete(server.start("127.0.0.1:0"))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/", ops
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_rates_ages_and_a_drained_queue(console_url):
    from playwright.sync_api import expect, sync_playwright

    url, ops = console_url
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(url)
            card = page.locator('section.queue[data-queue="steady"]')
            legend = card.locator(".legend")
            expect(legend).to_have_text("enqueued 10.0delivered 6.0acked 4.0", timeout=WAIT_MS)
            ages = card.locator("td.age")
            expect(ages).to_have_text(["1 min 5 s", "—", "1.5 s", "—", "2 h 0 min"])
            expect(card.locator(".total-ready")).to_have_text("16")

            drained = page.locator('section.queue[data-queue="draining"]')
            expect(drained.locator(".total-ready")).to_have_text("2")
            ops.drained = True
            expect(drained.locator(".total-ready")).to_have_text("0", timeout=WAIT_MS)
            expect(drained.locator(".empty")).to_be_visible()
            assert page.locator("canvas").count() == 2
            assert errors == [], errors
        finally:
            browser.close()
