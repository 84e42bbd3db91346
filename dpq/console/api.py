"""The console's JSON API and its files, as routes for :class:`dpq.services.http.HttpServer`.

Reads (all ``GET``, JSON out):

* ``/api/console``: what the page needs before anything else (is a token needed).
* ``/api/cluster``: ClusterInfo as the gateway sees it: leader, nodes, health, weights.
* ``/api/queues``: Stats of every queue: depth and oldest age per priority, the counters.
* ``/api/dead?queue=Q&limit=N&page_token=T``: dead jobs (ListJobs state=DEAD) with
  their last error; no ``queue``: of every queue.

Actions (all ``POST``, a JSON object in, JSON out): ``/api/queues/pause``
(``{"queue", "duration_ms"?}``), ``/api/queues/resume`` (``{"queue"}``),
``/api/dead/retry`` and ``/api/dead/cancel`` (``{"queue", "job_ids"?}``: the
dead jobs of one queue, or only those ids among them), ``/api/token``
(``{}``: answers 200 if the request's token is right). They go through the
gateway's own job-management operations in process, the same as its gRPC
methods, so the leader validates and replicates them like any other call.

Security (why it is this way):

* With TLS on, the cluster has a bearer token; every action needs
  ``Authorization: Bearer <token>``, as the gRPC methods do. The page asks for it
  once and keeps it in ``sessionStorage`` (gone with the tab). Reads are open to
  loopback peers: whoever is on the machine can read the data folder anyway, and a
  dashboard that asks for a secret before it shows anything is one nobody opens;
  from any other peer, reads need the token too. Without TLS there is no token and
  everything is open, as the plaintext gRPC port is (``dpq up`` binds loopback).
* The console speaks plain HTTP (a browser would not trust the cluster's private
  CA): on another interface than loopback the token would cross the network in
  the clear, which the gateway warns about at start.
* CSRF: an action must come with ``Content-Type: application/json`` (an HTML
  form cannot send that; a cross-site ``fetch`` that does needs a CORS preflight,
  which is never granted), and a browser's ``Origin``, when sent, must be this
  host. DNS rebinding: a request whose ``Host`` is a name other than
  ``localhost`` or the ``--http-listen`` host is refused, so a web page cannot
  reach the console through a name it controls.
* Every input is checked (queue names by :mod:`dpq.queue.validate`, numbers,
  unknown keys refused); errors are JSON ``{"error": message, "code": …}``
  carrying the server's message. Responses forbid framing and limit scripts to
  this origin (a Content-Security-Policy), and the page writes server text only
  as text, never as HTML.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, Protocol

import grpc
import orjson

import dpq
from dpq.queue import validate
from dpq.queue.rules import PRIORITY_MAX
from dpq.services import ports
from dpq.services.errors import status_of
from dpq.services.http import Handler, HttpServer, Request, Response
from dpq.v1 import queue_pb2

log = logging.getLogger("dpq.console")

#: How often the page polls (it is told by /api/console).
POLL_MS = 1500
#: Dead jobs listed at once by default (at most validate's ListJobs limit).
DEFAULT_DEAD_LIMIT = 50

STATIC_FILES = {"index.html": "text/html; charset=utf-8",
                "app.js": "text/javascript; charset=utf-8",
                "style.css": "text/css; charset=utf-8"}

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

#: The HTTP status a gRPC status becomes (anything else: 502, the cluster failed us).
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class Operations(Protocol):
    """What the console calls (``dpq.gateway.operations.GatewayOperations`` has it)."""

    async def stats(self, queue: str) -> list[queue_pb2.QueueStats]: ...
    async def cluster_info(self) -> queue_pb2.ClusterInfoResponse: ...
    async def list_jobs(self, request: queue_pb2.ListJobsRequest
                        ) -> queue_pb2.ListJobsResponse: ...
    async def pause_queue(self, queue: str, duration_ms: int) -> queue_pb2.QueuePaused: ...
    async def resume_queue(self, queue: str) -> queue_pb2.QueuePaused: ...
    async def retry_jobs(self, selector: queue_pb2.JobSelector) -> queue_pb2.JobsAffected: ...
    async def cancel_jobs(self, selector: queue_pb2.JobSelector) -> queue_pb2.JobsAffected: ...


def http_server(ops: Operations, listen: str, token: str | None) -> HttpServer:
    """The console's HTTP server for ``--http-listen`` (not started yet)."""
    host = ports.split(listen)[0]
    if host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("the web console on %s speaks plain HTTP to other machines: %s", listen,
                    "the token its actions need crosses the network in the clear; keep it on "
                    "loopback or behind an HTTPS proxy" if token else
                    "with no TLS there is no token, so anyone who reaches it can pause queues "
                    "and retry or cancel dead jobs")
    limits = getattr(ops, "limits", validate.DEFAULT_LIMITS)
    return HttpServer(Console(ops, token=token, listen_host=host, limits=limits).routes(),
                      name="console")


class ApiError(Exception):
    """A refusal with its HTTP status; the message goes to the page as it is."""

    def __init__(self, status: int, message: str, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def json_response(status: int, value: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(status, orjson.dumps(value), "application/json",
                    {**SECURITY_HEADERS, **(headers or {})})


def _error(exc: ApiError) -> Response:
    body = {"error": str(exc), "code": exc.code or str(exc.status)}
    headers = {"WWW-Authenticate": 'Bearer realm="dpq"'} if exc.status == 401 else None
    return json_response(exc.status, body, headers)


class Console:
    """The console of one gateway: ``routes()`` for its HTTP server.

    ``token``: the cluster's bearer token (None without TLS). ``listen_host``:
    the host of ``--http-listen``, the one name besides ``localhost`` and IP
    literals a request's ``Host`` may carry.
    """

    def __init__(self, ops: Operations, *, token: str | None, listen_host: str = "",
                 limits: validate.Limits = validate.DEFAULT_LIMITS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ops = ops
        self._expected = f"Bearer {token}".encode() if token else None
        self._listen_host = listen_host.strip("[]").lower()
        self._limits = limits
        self._clock = clock
        folder = resources.files("dpq.console") / "static"
        self._files = {name: Response(200, (folder / name).read_bytes(), kind,
                                      dict(SECURITY_HEADERS))
                       for name, kind in STATIC_FILES.items()}

    def routes(self) -> dict[tuple[str, str], Handler]:
        reads = {"/api/console": self._console, "/api/cluster": self._cluster,
                 "/api/queues": self._queues, "/api/dead": self._dead}
        actions = {"/api/queues/pause": self._pause, "/api/queues/resume": self._resume,
                   "/api/dead/retry": self._retry, "/api/dead/cancel": self._cancel,
                   "/api/token": self._token}
        routes: dict[tuple[str, str], Handler] = {
            ("GET", "/"): self._index,
            ("GET", "/static/"): self._static,
        }
        routes.update({("GET", path): self._guarded(h, write=False) for path, h in reads.items()})
        routes.update({("POST", path): self._guarded(h, write=True)
                       for path, h in actions.items()})
        return routes

    # ------------------------------------------------------------------ checks

    def _guarded(self, handler: Callable[[Request], Awaitable[Any]], *,
                 write: bool) -> Handler:
        async def answer(request: Request) -> Response:
            try:
                self._check_host(request)
                if write:
                    self._check_origin(request)
                    self._check_json(request)
                if write or not _loopback(request.peer):
                    self._check_token(request)
                return json_response(200, await handler(request))
            except ApiError as exc:
                return _error(exc)
            except Exception as exc:
                status = status_of(exc)
                if status is None:
                    log.exception("console: %s %s failed", request.method, request.path)
                    return _error(ApiError(500, f"{type(exc).__name__}: {exc} (see the "
                                                "gateway's error log)", "INTERNAL"))
                code, message = status
                return _error(ApiError(HTTP_STATUS.get(code, 502), message, code.name))
        return answer

    def _check_host(self, request: Request) -> None:
        host = request.headers.get("host")
        if host is None:
            return  # not a browser (browsers always send Host)
        name = host.rpartition("]")[0].lstrip("[") if host.startswith("[") else (
            host.rpartition(":")[0] if ":" in host else host)
        name = name.lower()
        if name in ("localhost", self._listen_host) or _is_ip(name):
            return
        raise ApiError(403, f"Host {host[:100]!r} is not this console's address: use an IP "
                            f"address, localhost or {self._listen_host or 'the --http-listen host'}"
                            " (names are refused so no web page can reach the console through "
                            "a name it controls)", "FORBIDDEN")

    def _check_origin(self, request: Request) -> None:
        origin = request.headers.get("origin")
        if origin is None:
            return  # not sent by a browser, or a same-origin request of an old one
        netloc = urllib.parse.urlsplit(origin).netloc
        if netloc != request.headers.get("host"):
            raise ApiError(403, f"Origin {origin[:100]!r} is not this console: actions are "
                                "accepted only from its own page", "FORBIDDEN")

    @staticmethod
    def _check_json(request: Request) -> None:
        kind = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind != "application/json":
            raise ApiError(415, f"Content-Type {kind or '(none)'!r}: actions take a JSON "
                                "object, sent as application/json", "UNSUPPORTED_MEDIA_TYPE")

    def _check_token(self, request: Request) -> None:
        if self._expected is None:
            return
        given = request.headers.get("authorization")
        if given is None:
            raise ApiError(401, "missing bearer token: this cluster has one (the `token` file "
                                "of its TLS folder); send Authorization: Bearer <token>",
                           "UNAUTHENTICATED")
        if not hmac.compare_digest(given.encode("latin-1", "replace"), self._expected):
            raise ApiError(401, "wrong bearer token", "UNAUTHENTICATED")

    # ------------------------------------------------------------------- files

    async def _index(self, request: Request) -> Response:
        # "/" is a prefix route (dpq.services.http): every path no other route takes
        if request.path != "/":
            return Response.text(404, f"{request.method} {request.path}: not served here\n")
        return self._files["index.html"]

    async def _static(self, request: Request) -> Response:
        found = self._files.get(request.path.removeprefix("/static/"))
        if found is None:
            return Response.text(404, f"{request.path}: no such file\n")
        return found

    # ------------------------------------------------------------------- reads

    async def _console(self, request: Request) -> dict:
        return {"version": dpq.__version__, "poll_ms": POLL_MS,
                "token_required": self._expected is not None}

    async def _cluster(self, request: Request) -> dict:
        _no_query(request)
        info = await self._ops.cluster_info()
        return cluster_json(info)

    async def _queues(self, request: Request) -> dict:
        _no_query(request)
        queues = await self._ops.stats("")
        return {"time_ms": round(self._clock() * 1000),
                "queues": [queue_json(q) for q in sorted(queues, key=lambda q: q.queue)]}

    async def _dead(self, request: Request) -> dict:
        _only(request.query, {"queue", "limit", "page_token"}, "query parameter")
        queue = request.query.get("queue", "")
        if queue:
            validate.queue_name(queue, "queue", self._limits)
        limit = _int(request.query.get("limit", str(DEFAULT_DEAD_LIMIT)), "limit", 1,
                     self._limits.max_list_jobs)
        response = await self._ops.list_jobs(queue_pb2.ListJobsRequest(
            queue=queue, state=queue_pb2.DEAD, limit=limit,
            page_token=request.query.get("page_token", "")))
        return {"jobs": [dead_json(j) for j in response.jobs],
                "next_page_token": response.next_page_token}

    # ----------------------------------------------------------------- actions

    async def _pause(self, request: Request) -> dict:
        body = _body(request, {"queue"}, {"duration_ms"})
        queue = self._queue(body)
        duration_ms = body.get("duration_ms", 0)
        if type(duration_ms) is not int or duration_ms < 0:
            raise ApiError(400, f"duration_ms: {duration_ms!r} is not a whole number of ms "
                                f"from 0 (until resumed) to {self._limits.max_pause_ms}",
                           "INVALID_ARGUMENT")
        return paused_json(await self._ops.pause_queue(queue, duration_ms))

    async def _resume(self, request: Request) -> dict:
        return paused_json(await self._ops.resume_queue(
            self._queue(_body(request, {"queue"}, set()))))

    async def _retry(self, request: Request) -> dict:
        return affected_json(await self._ops.retry_jobs(self._dead_selector(request)))

    async def _cancel(self, request: Request) -> dict:
        return affected_json(await self._ops.cancel_jobs(self._dead_selector(request)))

    async def _token(self, request: Request) -> dict:
        _body(request, set(), set())
        return {"ok": True, "token_required": self._expected is not None}

    def _queue(self, body: dict) -> str:
        queue = body["queue"]
        if not isinstance(queue, str) or not queue:
            raise ApiError(400, f"queue: {queue!r} is not a queue name", "INVALID_ARGUMENT")
        return validate.queue_name(queue, "queue", self._limits)

    def _dead_selector(self, request: Request) -> queue_pb2.JobSelector:
        """The dead jobs of one queue (only ``job_ids`` among them, if given): the
        console acts on dead jobs only, one queue at a time."""
        body = _body(request, {"queue"}, {"job_ids"})
        queue = self._queue(body)
        ids = body.get("job_ids", [])
        if not isinstance(ids, list) or len(ids) > self._limits.max_selector_ids:
            raise ApiError(400, f"job_ids: a list of at most {self._limits.max_selector_ids} "
                                "job ids", "INVALID_ARGUMENT")
        for i, value in enumerate(ids):
            if type(value) is not int or value <= 0 or value >= 1 << 64:
                raise ApiError(400, f"job_ids[{i}]: {value!r} is not a job id",
                               "INVALID_ARGUMENT")
        return queue_pb2.JobSelector(queue=queue, state=queue_pb2.DEAD, job_ids=ids)


# ---------------------------------------------------------------- input helpers

def _loopback(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _only(given, allowed: set[str], what: str) -> None:
    unknown = sorted(set(given) - allowed)
    if unknown:
        raise ApiError(400, f"unknown {what} {unknown[0][:50]!r} (known: "
                            f"{', '.join(sorted(allowed)) or 'none'})", "INVALID_ARGUMENT")


def _no_query(request: Request) -> None:
    _only(request.query, set(), "query parameter")


def _int(text: str, field: str, low: int, high: int) -> int:
    if not text.isdigit() or not low <= int(text) <= high:
        raise ApiError(400, f"{field}: {text[:30]!r} is not a whole number from {low} to {high}",
                       "INVALID_ARGUMENT")
    return int(text)


def _body(request: Request, required: set[str], optional: set[str]) -> dict:
    try:
        body = orjson.loads(request.body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not JSON: {exc}", "INVALID_ARGUMENT") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the body is a JSON {type(body).__name__}, not an object",
                       "INVALID_ARGUMENT")
    _only(body, required | optional, "field")
    missing = sorted(required - set(body))
    if missing:
        raise ApiError(400, f"{missing[0]}: missing", "INVALID_ARGUMENT")
    return body


# ------------------------------------------------------------------ JSON shapes

def _per_priority(values) -> list[int]:
    """Index 0 = priority 1; always PRIORITY_MAX entries (older nodes send fewer)."""
    out = [int(v) for v in values][:PRIORITY_MAX]
    return out + [0] * (PRIORITY_MAX - len(out))


def node_health(node: queue_pb2.NodeInfo) -> str:
    if not node.reachable:
        return "unreachable"
    if node.learner:
        return "catching up"
    if not node.serving:
        return "not serving"
    return "ok"


def cluster_json(info: queue_pb2.ClusterInfoResponse) -> dict:
    return {
        "leader_id": info.leader_id,
        "fingerprint": info.cluster_fingerprint,
        "served_by": info.served_by,
        "nodes": [{
            "id": n.node_id, "address": n.address, "role": n.role or "unknown",
            "reachable": n.reachable, "learner": n.learner, "health": node_health(n),
            "cpu_percent": round(n.cpu_percent, 1), "ready_depth": n.ready_depth,
            "waiting_consumers": n.waiting_consumers, "consume_rate": round(n.consume_rate, 1),
            "balancer_weight": n.balancer_weight, "assigned_jobs": n.assigned_jobs,
            "commit_index": n.commit_index, "applied_index": n.applied_index,
            "behind": n.behind,
        } for n in sorted(info.nodes, key=lambda n: n.node_id)],
    }


def queue_json(q: queue_pb2.QueueStats) -> dict:
    return {
        "queue": q.queue,
        "ready_by_priority": _per_priority(q.ready_by_priority),
        "oldest_ready_age_ms": _per_priority(q.oldest_ready_age_ms),
        "delayed": q.delayed, "leased": q.leased, "dead": q.dead, "cancelled": q.cancelled,
        "paused": q.paused, "paused_until_us": q.paused_until_us,
        "enqueued_by_priority": _per_priority(q.enqueued_by_priority),
        "delivered_by_priority": _per_priority(q.delivered_by_priority),
        "acked_by_priority": _per_priority(q.acked_by_priority),
        "nacked": q.nacked, "expired": q.expired, "died": q.died,
        "cancelled_total": q.cancelled_total,
    }


def dead_json(j: queue_pb2.JobInfo) -> dict:
    return {"job_id": j.job_id, "queue": j.queue, "priority": j.priority,
            "attempt": j.attempt, "last_error": j.last_error,
            "created_at_us": j.created_at_us, "payload_bytes": j.payload_bytes,
            "dedup_key": j.dedup_key}


def paused_json(p: queue_pb2.QueuePaused) -> dict:
    return {"queue": p.queue, "paused": p.paused, "paused_until_us": p.paused_until_us,
            "was_paused": p.was_paused, "slot": p.slot}


def affected_json(a: queue_pb2.JobsAffected) -> dict:
    return {"count": a.count, "deferred": a.deferred, "slot": a.slot}
