"""The web console in a real browser: Debian's Chromium, headless, driven by Playwright.

A real cluster (3 dpq-node processes, PostgreSQL) and a dpq-gateway serving the
console with --http-listen. The page must load without a console error, show
the leader, show a queue's depth once the test enqueues and its fall once the
jobs are consumed, show a dead job with its last error and retry it with its
button, pause a queue with its button (Stats then says paused), and say that
the cluster cannot be reached once the gateway is gone. It leaves a screenshot
in docs/console.png (README shows it).

Playwright never downloads a browser here: it launches /usr/bin/chromium (found
on PATH); without it this test fails and says how to install it.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from support.browser import WAIT_MS, launch
from support.cluster import Cluster, free_ports, wait_until

from dpq.security import certs
from dpq.v1 import queue_pb2 as pb

pytestmark = pytest.mark.slow  # real processes and a browser

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "console.png"
T = 15  # seconds: every RPC's deadline


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_database):
    root = tmp_path_factory.mktemp("console")
    [http_port] = free_ports(1)
    # --max-attempts 1: a nacked job is dead at once (the dead-jobs table)
    with Cluster(root, pg_database("console"), args=("--max-attempts", "1"),
                 http_listen=f"127.0.0.1:{http_port}") as c:
        c.wait_leader()
        c.start_gateway_and_wait()
        yield c


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = launch(p)
        try:
            yield launched
        finally:
            launched.close()


def enqueue(stub, queue: str, priorities: list[int]) -> list[int]:
    jobs = [pb.NewJob(queue=queue, priority=p, payload=b"x") for p in priorities]
    return list(stub.Enqueue(pb.EnqueueRequest(jobs=jobs), timeout=T).job_ids)


def take_all(stub, queue: str, count: int) -> list[pb.Job]:
    """Lease ``count`` jobs of ``queue`` (they may sit on any node: poll until all came)."""
    taken: list[pb.Job] = []

    def more():
        taken.extend(stub.Dequeue(pb.DequeueRequest(
            queue=queue, max_jobs=count - len(taken), wait_ms=500, lease_ms=60_000,
            consumer_id="browser-test"), timeout=T).jobs)
        return len(taken) >= count

    wait_until(more, 60, f"{count} jobs of {queue} leased")
    return taken


def refs(jobs: list[pb.Job]) -> list[pb.JobRef]:
    return [pb.JobRef(job_id=j.job_id, attempt=j.attempt, receipt=j.receipt) for j in jobs]


def stats(stub, queue: str) -> pb.QueueStats:
    [found] = stub.Stats(pb.StatsRequest(queue=queue), timeout=T).queues
    return found


def test_the_console_in_a_real_browser(cluster, browser):
    from playwright.sync_api import expect

    gateway = cluster.gateway_stub()
    leader = cluster.wait_leader()
    page = browser.new_page(viewport={"width": 1360, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}")
            if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))

    page.goto(f"http://{cluster.http_listen}/")
    expect(page.locator("#leader")).to_contain_text(f"leader: node {leader}", timeout=WAIT_MS)
    expect(page.locator(f'#nodes tr[data-node="{leader}"] td').nth(2)).to_have_text("leader")
    expect(page.locator("#live")).to_contain_text("live")

    # depth appears ...
    enqueue(gateway, "orders", [1] * 10 + [3] * 20)
    card = page.locator('section.queue[data-queue="orders"]')
    expect(card.locator(".total-ready")).to_have_text("30", timeout=WAIT_MS)
    expect(card.locator('tr[data-priority="1"] .depth')).to_have_text("10")
    expect(card.locator('tr[data-priority="3"] .depth')).to_have_text("20")

    # ... and falls once the jobs are consumed
    jobs = take_all(gateway, "orders", 30)
    results = gateway.Ack(pb.AckRequest(jobs=refs(jobs)), timeout=T).results
    assert [r.error for r in results] == [""] * 30
    expect(card.locator(".total-ready")).to_have_text("0", timeout=WAIT_MS)

    # a dead job shows its last error, and its Retry button redrives it
    first, second = enqueue(gateway, "emails", [2, 4])
    leased = take_all(gateway, "emails", 2)
    nacked = gateway.Nack(pb.NackRequest(jobs=refs(leased), error="SMTP 451: mailbox busy"),
                          timeout=T).results
    assert [r.error for r in nacked] == ["", ""]
    row = page.locator(f'tr.dead-job[data-job-id="{first}"]')
    expect(row.locator("td.error")).to_have_text("SMTP 451: mailbox busy", timeout=WAIT_MS)
    expect(page.locator(f'tr.dead-job[data-job-id="{second}"]')).to_be_visible()
    row.locator("button.retry").click()
    expect(row).to_have_count(0, timeout=WAIT_MS)
    expect(page.locator("#notice")).to_contain_text(f"Retried job {first} (1 job)")
    wait_until(lambda: stats(gateway, "emails").dead == 1
               and sum(stats(gateway, "emails").ready_by_priority) == 1, 30,
               "one job of emails retried, one still dead")

    # pausing through the page's button: the page and Stats say paused
    enqueue(gateway, "orders", [1, 2, 2, 3, 5, 5, 5])
    toggle = card.locator("button.pause-toggle")
    expect(toggle).to_have_text("Pause")
    toggle.click()
    expect(card.locator(".paused-badge")).to_be_visible(timeout=WAIT_MS)
    expect(toggle).to_have_text("Resume")
    assert stats(gateway, "orders").paused
    leader_stub = cluster.stub(leader)
    assert stats(leader_stub, "orders").paused
    expect(card.locator(".total-ready")).to_have_text("7", timeout=WAIT_MS)

    # a few polls for the chart, then the picture README shows
    page.wait_for_timeout(4000)
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
    assert errors == [], errors

    # the gateway goes: the page says the cluster cannot be reached
    cluster.gateway.terminate()
    cluster.gateway.wait(15)
    expect(page.locator("#banner")).to_contain_text("cannot be reached", timeout=WAIT_MS)
    expect(page.locator("#live")).to_have_text("unreachable")
    with pytest.raises(grpc.RpcError):
        gateway.Stats(pb.StatsRequest(queue="orders"), timeout=2)


def test_with_tls_the_page_asks_for_the_token_before_an_action(tmp_path, pg_database, browser):
    """A cluster with TLS has a token: the page reads freely (loopback), but Pause answers
    401 until the token is given in the page's form; a wrong one is refused."""
    from playwright.sync_api import expect

    [http_port] = free_ports(1)
    with Cluster(tmp_path, pg_database("console_tls"), nodes=1, tls=True,
                 http_listen=f"127.0.0.1:{http_port}") as c:
        c.wait_leader()
        c.start_gateway_and_wait()
        token = (Path(c.tls_dir) / certs.TOKEN_FILE).read_text().strip()
        gateway = c.gateway_stub()  # TLS with the token
        enqueue(gateway, "secured", [1, 1, 2])

        page = browser.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        page.goto(f"http://{c.http_listen}/")
        expect(page.locator("#token-button")).to_be_visible(timeout=WAIT_MS)
        card = page.locator('section.queue[data-queue="secured"]')
        expect(card.locator(".total-ready")).to_have_text("3", timeout=WAIT_MS)

        card.locator("button.pause-toggle").click()
        form = page.locator("#token-form")
        expect(form).to_be_visible(timeout=WAIT_MS)
        expect(page.locator("#notice")).to_contain_text("missing bearer token")
        assert not stats(gateway, "secured").paused

        page.fill("#token-input", "not-the-token")
        form.locator('button[type="submit"]').click()
        expect(form).to_be_visible(timeout=WAIT_MS)  # asked again
        expect(page.locator("#notice")).to_contain_text("wrong bearer token")
        assert not stats(gateway, "secured").paused

        page.fill("#token-input", token)
        form.locator('button[type="submit"]').click()  # the pending action goes on
        expect(card.locator(".paused-badge")).to_be_visible(timeout=WAIT_MS)
        expect(form).to_be_hidden()
        assert stats(gateway, "secured").paused
        assert page.evaluate("sessionStorage.getItem('dpq.console.token')") == token
        assert errors == [], errors
