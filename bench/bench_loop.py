"""grpc.aio round trips on the standard asyncio loop against uvloop.

One process serves a bidirectional echo stream and a unary echo on loopback
and calls them one at a time (client and server CPU both count), on each
event loop in turn:

- ``stream``: round trips of one 100-byte message on an open stream, as fast
  as they go;
- ``unary``: the same with one unary call each.

It prints round trips/s, CPU ms per round trip (``time.process_time``, every
thread) and uvloop's ratio to the standard loop. This is why dpq's servers run
on uvloop (``dpq/runtime.py``). Usage::

    python bench/bench_loop.py [--rounds 3000] [--repeat 3]

Medians of ``--repeat`` runs; the loops alternate so drift hits both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import grpc
import uvloop

PAYLOAD = b"x" * 100


async def _serve() -> tuple[grpc.aio.Server, int]:
    async def echo_stream(requests, context):
        async for request in requests:
            yield request

    async def echo(request, context):
        return request

    handler = grpc.method_handlers_generic_handler("bench.Echo", {
        "Stream": grpc.stream_stream_rpc_method_handler(echo_stream),
        "Unary": grpc.unary_unary_rpc_method_handler(echo),
    })
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def _measure(kind: str, rounds: int) -> tuple[float, float]:
    """(round trips per second, CPU ms per round trip)."""
    server, port = await _serve()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            if kind == "stream":
                call = channel.stream_stream("/bench.Echo/Stream")()
                await call.write(PAYLOAD)  # connect before timing
                await call.read()
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(rounds):
                    await call.write(PAYLOAD)
                    await call.read()
                t1, c1 = time.perf_counter(), time.process_time()
                await call.done_writing()
                await call.code()  # the stream ends cleanly before the server stops
            else:
                unary = channel.unary_unary("/bench.Echo/Unary")
                await unary(PAYLOAD)
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(rounds):
                    await unary(PAYLOAD)
                t1, c1 = time.perf_counter(), time.process_time()
    finally:
        await server.stop(None)
    return rounds / (t1 - t0), (c1 - c0) / rounds * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runners = {"asyncio": asyncio.run, "uvloop": uvloop.run}
    print(f"{'':<8}{'loop':<9}{'round trips/s':>15}{'CPU ms/round trip':>19}")
    for kind in ("stream", "unary"):
        medians = {}
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
        for _ in range(args.repeat):
            for name, run in runners.items():
                samples[name].append(run(_measure(kind, args.rounds)))
        for name, got in samples.items():
            rate = statistics.median(r for r, _ in got)
            cpu = statistics.median(c for _, c in got)
            medians[name] = (rate, cpu)
            print(f"{kind:<8}{name:<9}{rate:>15,.0f}{cpu:>19.3f}")
        (ra, ca), (ru, cu) = medians["asyncio"], medians["uvloop"]
        print(f"{kind:<8}{'ratio':<9}{ru / ra:>14.2f}×{cu / ca:>18.2f}×")


if __name__ == "__main__":
    main()
