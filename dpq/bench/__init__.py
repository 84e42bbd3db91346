"""Benchmarks that ship with dpq: ``dpq bench`` (the end-to-end benchmark, :mod:`dpq.bench.e2e`).

Modules, one idea each:

- ``e2e``: the options, the runs (3 nodes, 1 node) and their phases, ``main``;
- ``_phase``: one phase: worker processes started together, watched, stopped, their results;
- ``_workers``: the producer and consumer processes (the project's client library);
- ``_probe``: what is read from outside: counters of nodes and gateway, CPU seconds by
  process kind, PostgreSQL's settings and how far the writer has come;
- ``_ceiling``: raw COPY of the same rows into the same PostgreSQL;
- ``_stats``: percentiles;
- ``_report``: the progress line, the table, the JSON file.
"""
