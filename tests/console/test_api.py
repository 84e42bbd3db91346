"""The web console's JSON API in process: shapes, status codes, bad input, the token.

The operations behind it are a stand-in recording its calls (what the console
asks of the gateway is the subject here; tests/console/test_browser.py runs the
real thing). Most tests call the routes directly; one goes through a socket.
"""

from __future__ import annotations

import asyncio

import grpc
import orjson
import pytest

from dpq.console import api
from dpq.console.api import Console, http_server
from dpq.errors import Forwarded, Unavailable
from dpq.queue.validate import InvalidArgument
from dpq.services.http import Request, Response
from dpq.v1 import queue_pb2 as pb

TOKEN = "s3cret-token"


class FakeOps:
    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.fail: Exception | None = None

    def _call(self, *call):
        self.calls.append(call)
        if self.fail is not None:
            raise self.fail

    async def stats(self, queue):
        self._call("stats", queue)
        return [pb.QueueStats(queue="b", ready_by_priority=[1, 2, 3, 4, 5], paused=True),
                pb.QueueStats(queue="a", ready_by_priority=[7, 0, 0, 0, 0],
                              oldest_ready_age_ms=[1500], enqueued_by_priority=[9, 1],
                              nacked=2, died=1)]

    async def cluster_info(self):
        self._call("cluster_info")
        return pb.ClusterInfoResponse(leader_id=2, cluster_fingerprint="abcd1234", nodes=[
            pb.NodeInfo(node_id=3, address="127.0.0.1:3", role="follower", reachable=False),
            pb.NodeInfo(node_id=2, address="127.0.0.1:2", role="leader", reachable=True,
                        balancer_weight=60, cpu_percent=12.345, ready_depth=4, serving=True),
            pb.NodeInfo(node_id=1, address="127.0.0.1:1", role="follower", reachable=True,
                        learner=True)])

    async def list_jobs(self, request):
        self._call("list_jobs", request)
        return pb.ListJobsResponse(jobs=[pb.JobInfo(
            job_id=5, queue="a", priority=2, attempt=3, state=pb.DEAD,
            last_error="<script>boom</script>")], next_page_token="next")

    async def pause_queue(self, queue, duration_ms):
        self._call("pause_queue", queue, duration_ms)
        return pb.QueuePaused(queue=queue, paused=True, slot=7)

    async def resume_queue(self, queue):
        self._call("resume_queue", queue)
        return pb.QueuePaused(queue=queue, paused=False, was_paused=True, slot=8)

    async def retry_jobs(self, selector):
        self._call("retry_jobs", selector)
        return pb.JobsAffected(count=len(selector.job_ids) or 4, slot=9)

    async def cancel_jobs(self, selector):
        self._call("cancel_jobs", selector)
        return pb.JobsAffected(count=1, slot=10)


def call(console: Console, method: str, path: str, body=None, *, query=None, headers=None,
         peer="127.0.0.1", content_type="application/json") -> Response:
    head = {"host": "127.0.0.1:8080"}
    if body is not None and content_type is not None:
        head["content-type"] = content_type
    head.update(headers or {})
    raw = body if isinstance(body, bytes) else orjson.dumps(body) if body is not None else b""
    routes = console.routes()
    handler = routes.get((method, path)) or routes[(method, "/static/")]
    return asyncio.run(handler(Request(method, path, query or {}, head, raw, peer)))


def data(response: Response):
    assert response.content_type == "application/json"
    return orjson.loads(response.body)


@pytest.fixture
def ops():
    return FakeOps()


@pytest.fixture
def console(ops):
    return Console(ops, token=None, listen_host="127.0.0.1")


@pytest.fixture
def guarded(ops):
    return Console(ops, token=TOKEN, listen_host="127.0.0.1")


# -------------------------------------------------------------------- reads

def test_the_page_and_its_files_are_served_from_the_package_with_a_strict_policy(console):
    page = call(console, "GET", "/")
    assert page.status == 200 and page.content_type.startswith("text/html")
    assert b'src="/static/app.js"' in page.body and b"https://" not in page.body
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    script = call(console, "GET", "/static/app.js")
    assert script.status == 200 and script.content_type.startswith("text/javascript")
    assert b"fetch(" in script.body and b"innerHTML" not in script.body
    assert call(console, "GET", "/static/style.css").status == 200
    for path in ("/static/nope.js", "/static/../api.py", "/static/", "/api/nope", "/x"):
        assert call(console, "GET", path).status == 404


def test_cluster_shows_the_leader_nodes_health_and_weights(console):
    response = call(console, "GET", "/api/cluster")
    assert response.status == 200
    info = data(response)
    assert info["leader_id"] == 2 and info["fingerprint"] == "abcd1234"
    assert [n["id"] for n in info["nodes"]] == [1, 2, 3]
    by_id = {n["id"]: n for n in info["nodes"]}
    assert by_id[2]["role"] == "leader" and by_id[2]["balancer_weight"] == 60
    assert by_id[2]["cpu_percent"] == 12.3 and by_id[2]["health"] == "ok"
    assert by_id[1]["health"] == "catching up" and by_id[3]["health"] == "unreachable"
    # reachable, no learner, but its gRPC health is not SERVING (no leader, behind)
    assert api.node_health(pb.NodeInfo(reachable=True, serving=False)) == "not serving"


def test_queues_are_sorted_with_five_entries_per_priority(console, ops):
    body = data(call(console, "GET", "/api/queues"))
    assert ops.calls == [("stats", "")]
    assert isinstance(body["time_ms"], int)
    a, b = body["queues"]
    assert (a["queue"], b["queue"]) == ("a", "b")
    assert a["ready_by_priority"] == [7, 0, 0, 0, 0]
    assert a["oldest_ready_age_ms"] == [1500, 0, 0, 0, 0]
    assert a["enqueued_by_priority"] == [9, 1, 0, 0, 0]
    assert a["delivered_by_priority"] == [0] * 5 and a["nacked"] == 2 and a["died"] == 1
    assert b["paused"] is True and a["paused"] is False


def test_dead_lists_dead_jobs_with_their_last_error(console, ops):
    body = data(call(console, "GET", "/api/dead", query={"queue": "a", "limit": "20"}))
    [(_, request)] = ops.calls
    assert (request.queue, request.state, request.limit) == ("a", pb.DEAD, 20)
    assert body["jobs"] == [{"job_id": 5, "queue": "a", "priority": 2, "attempt": 3,
                             "last_error": "<script>boom</script>", "created_at_us": 0,
                             "payload_bytes": 0, "dedup_key": ""}]
    assert body["next_page_token"] == "next"
    data(call(console, "GET", "/api/dead"))
    assert ops.calls[-1][1].queue == "" and ops.calls[-1][1].limit == 50  # every queue


@pytest.mark.parametrize(("query", "message"), [
    ({"queue": "no spaces"}, "has characters outside"),
    ({"queue": "q" * 129}, "over the limit of 128"),
    ({"limit": "0"}, "limit: '0' is not a whole number from 1 to 1000"),
    ({"limit": "1001"}, "from 1 to 1000"),
    ({"limit": "-1"}, "from 1 to 1000"),
    ({"state": "READY"}, "unknown query parameter 'state'"),
])
def test_bad_reads_are_400_with_the_servers_message(console, ops, query, message):
    response = call(console, "GET", "/api/dead", query=query)
    assert response.status == 400
    assert message in data(response)["error"]
    assert ops.calls == []


def test_reads_take_no_query(console):
    response = call(console, "GET", "/api/queues", query={"x": "1"})
    assert response.status == 400 and "unknown query parameter 'x'" in data(response)["error"]


# ------------------------------------------------------------------ actions

def test_pause_and_resume_go_through_the_operations(console, ops):
    paused = call(console, "POST", "/api/queues/pause", {"queue": "a"})
    assert paused.status == 200 and data(paused) == {
        "queue": "a", "paused": True, "paused_until_us": 0, "was_paused": False, "slot": 7}
    call(console, "POST", "/api/queues/pause", {"queue": "a", "duration_ms": 60_000})
    resumed = data(call(console, "POST", "/api/queues/resume", {"queue": "a"}))
    assert resumed["was_paused"] is True
    assert ops.calls == [("pause_queue", "a", 0), ("pause_queue", "a", 60_000),
                         ("resume_queue", "a")]


def test_retry_and_cancel_select_only_dead_jobs_of_one_queue(console, ops):
    assert data(call(console, "POST", "/api/dead/retry", {"queue": "a"}))["count"] == 4
    assert data(call(console, "POST", "/api/dead/cancel",
                     {"queue": "a", "job_ids": [5, 6]}))["slot"] == 10
    (_, everything), (_, some) = ops.calls
    assert (everything.queue, everything.state, list(everything.job_ids)) == ("a", pb.DEAD, [])
    assert (some.queue, some.state, list(some.job_ids)) == ("a", pb.DEAD, [5, 6])


@pytest.mark.parametrize(("path", "body", "status", "message"), [
    ("/api/queues/pause", b"", 400, "queue: missing"),
    ("/api/queues/pause", b"{not json", 400, "the body is not JSON"),
    ("/api/queues/pause", [1], 400, "a JSON list, not an object"),
    ("/api/queues/pause", {"queue": "a", "extra": 1}, 400, "unknown field 'extra'"),
    ("/api/queues/pause", {"queue": ""}, 400, "queue: '' is not a queue name"),
    ("/api/queues/pause", {"queue": 5}, 400, "queue: 5 is not a queue name"),
    ("/api/queues/pause", {"queue": "a b"}, 400, "has characters outside"),
    ("/api/queues/pause", {"queue": "a", "duration_ms": -1}, 400, "duration_ms: -1"),
    ("/api/queues/pause", {"queue": "a", "duration_ms": True}, 400, "duration_ms: True"),
    ("/api/queues/pause", {"queue": "a", "duration_ms": 1.5}, 400, "duration_ms: 1.5"),
    ("/api/queues/resume", {"queue": "a", "duration_ms": 1}, 400, "unknown field"),
    ("/api/dead/retry", {"job_ids": [1]}, 400, "queue: missing"),
    ("/api/dead/retry", {"queue": "a", "job_ids": 1}, 400, "job_ids: a list"),
    ("/api/dead/retry", {"queue": "a", "job_ids": [0]}, 400, "job_ids[0]: 0 is not a job id"),
    ("/api/dead/cancel", {"queue": "a", "job_ids": ["1"]}, 400, "job_ids[0]: '1'"),
    ("/api/dead/cancel", b'{"queue": "a", "job_ids": [18446744073709551616]}', 400,
     "is not a job id"),
    ("/api/dead/cancel", {"queue": "a", "job_ids": list(range(1, 10_002))}, 400,
     "at most 10000"),
])
def test_bad_actions_are_400_and_reach_nothing(console, ops, path, body, status, message):
    response = call(console, "POST", path, body)
    assert response.status == status
    assert message in data(response)["error"]
    assert ops.calls == []


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_actions_want_json_so_a_form_cannot_post_them(console, ops, content_type):
    response = call(console, "POST", "/api/queues/pause", {"queue": "a"},
                    content_type=content_type)
    assert response.status == 415 and "application/json" in data(response)["error"]
    assert ops.calls == []
    ok = call(console, "POST", "/api/queues/pause", {"queue": "a"},
              content_type="application/json; charset=utf-8")
    assert ok.status == 200


def test_a_foreign_origin_or_host_name_is_refused(console, ops):
    foreign = call(console, "POST", "/api/queues/pause", {"queue": "a"},
                   headers={"origin": "http://evil.example"})
    assert foreign.status == 403 and "Origin" in data(foreign)["error"]
    own = call(console, "POST", "/api/queues/pause", {"queue": "a"},
               headers={"origin": "http://127.0.0.1:8080"})
    assert own.status == 200
    rebound = call(console, "GET", "/api/queues", headers={"host": "evil.example:8080"})
    assert rebound.status == 403 and "Host 'evil.example:8080'" in data(rebound)["error"]
    for host in ("localhost:8080", "[::1]:8080", "10.1.2.3:80", "127.0.0.1"):
        assert call(console, "GET", "/api/queues", headers={"host": host}).status == 200
    assert ops.calls == [("pause_queue", "a", 0)] + [("stats", "")] * 4


def test_a_named_listen_host_is_accepted():
    named = Console(FakeOps(), token=None, listen_host="queue.internal")
    assert call(named, "GET", "/api/queues", headers={"host": "queue.internal:8080"}).status == 200
    assert call(named, "GET", "/api/queues", headers={"host": "other.internal"}).status == 403


# -------------------------------------------------------------------- token

def test_with_a_token_actions_need_it(guarded, ops):
    missing = call(guarded, "POST", "/api/queues/pause", {"queue": "a"})
    assert missing.status == 401 and "missing bearer token" in data(missing)["error"]
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = call(guarded, "POST", "/api/queues/pause", {"queue": "a"},
                 headers={"authorization": "Bearer nope"})
    assert wrong.status == 401 and data(wrong)["error"] == "wrong bearer token"
    bare = call(guarded, "POST", "/api/queues/pause", {"queue": "a"},
                headers={"authorization": TOKEN})
    assert bare.status == 401
    assert ops.calls == []
    right = call(guarded, "POST", "/api/queues/pause", {"queue": "a"},
                 headers={"authorization": f"Bearer {TOKEN}"})
    assert right.status == 200 and ops.calls == [("pause_queue", "a", 0)]
    check = call(guarded, "POST", "/api/token", {}, headers={"authorization": f"Bearer {TOKEN}"})
    assert data(check) == {"ok": True, "token_required": True}
    assert call(guarded, "POST", "/api/token", {}).status == 401


def test_with_a_token_reads_are_open_on_loopback_only(guarded, ops):
    assert data(call(guarded, "GET", "/api/console"))["token_required"] is True
    assert call(guarded, "GET", "/api/queues", peer="127.0.0.1").status == 200
    assert call(guarded, "GET", "/api/queues", peer="::1").status == 200
    assert call(guarded, "GET", "/api/queues", peer="::ffff:127.0.0.1").status == 200
    remote = call(guarded, "GET", "/api/queues", peer="10.0.0.5")
    assert remote.status == 401
    assert call(guarded, "GET", "/api/queues", peer="10.0.0.5",
                headers={"authorization": f"Bearer {TOKEN}"}).status == 200
    # the page itself is no secret: it asks for the token
    assert call(guarded, "GET", "/", peer="10.0.0.5").status == 200


def test_without_a_token_everything_is_open(console):
    assert data(call(console, "GET", "/api/console"))["token_required"] is False
    assert call(console, "GET", "/api/queues", peer="10.0.0.5").status == 200
    assert call(console, "POST", "/api/token", {}).status == 200


# ------------------------------------------------------------------- errors

@pytest.mark.parametrize(("error", "status", "code"), [
    (Unavailable("Stats could not reach a node (no node is reachable)", None), 503,
     "UNAVAILABLE"),
    (Forwarded(grpc.StatusCode.FAILED_PRECONDITION, "the queue is gone"), 409,
     "FAILED_PRECONDITION"),
    (Forwarded(grpc.StatusCode.DEADLINE_EXCEEDED, "too slow"), 504, "DEADLINE_EXCEEDED"),
    (Forwarded(grpc.StatusCode.UNAUTHENTICATED, "wrong bearer token"), 502, "UNAUTHENTICATED"),
    (InvalidArgument("queue: checked again by the leader"), 400, "INVALID_ARGUMENT"),
])
def test_errors_of_the_cluster_come_back_as_json_with_its_message(console, ops, error, status,
                                                                   code):
    ops.fail = error
    response = call(console, "GET", "/api/queues")
    assert response.status == status
    body = data(response)
    assert body["code"] == code and str(error).split(" (")[0] in body["error"]


def test_a_bug_is_a_json_500_and_logged(console, ops, caplog):
    ops.fail = RuntimeError("boom")
    response = call(console, "POST", "/api/queues/resume", {"queue": "a"})
    assert response.status == 500 and "RuntimeError: boom" in data(response)["error"]
    assert "console: POST /api/queues/resume failed" in caplog.text


# ------------------------------------------------------------- over a socket

def test_over_http():
    async def main():
        server = http_server(FakeOps(), "127.0.0.1:0", TOKEN)
        port = await server.start("127.0.0.1:0")
        try:
            async def exchange(raw: bytes) -> bytes:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(raw)
                await writer.drain()
                answer = await reader.read()
                writer.close()
                return answer

            page = await exchange(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert page.startswith(b"HTTP/1.1 200 ") and b"<title>dpq console</title>" in page
            body = b'{"queue": "a"}'
            refused = await exchange(
                b"POST /api/queues/pause HTTP/1.1\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            assert refused.startswith(b"HTTP/1.1 401 ") and b"missing bearer token" in refused
            allowed = await exchange(
                b"POST /api/queues/pause HTTP/1.1\r\nContent-Type: application/json\r\n"
                b"Authorization: Bearer %s\r\nContent-Length: %d\r\n\r\n%s"
                % (TOKEN.encode(), len(body), body))
            assert allowed.startswith(b"HTTP/1.1 200 ") and b'"paused":true' in allowed
            wrong_method = await exchange(b"POST /api/queues HTTP/1.1\r\n\r\n")
            assert wrong_method.startswith(b"HTTP/1.1 405 ")
            for path in (b"/api/queues/pause", b"/nope", b"/index.html"):
                unknown = await exchange(b"GET %s HTTP/1.1\r\n\r\n" % path)
                assert unknown.startswith(b"HTTP/1.1 404 "), path
        finally:
            await server.stop()
    asyncio.run(main())
