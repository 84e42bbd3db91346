"""The named SQL of ``dpq/pg/sql/queries.sql``, as ``QUERIES["name"]``."""

from __future__ import annotations

import re
from importlib import resources

_HEADER = re.compile(r"^-- ([a-z_][a-z0-9_]*) --$", re.MULTILINE)


def parse(text: str) -> dict[str, str]:
    """``{name: statement}`` from a file of "-- name --" blocks (comment lines dropped)."""
    queries: dict[str, str] = {}
    parts = _HEADER.split(text)
    for name, body in zip(parts[1::2], parts[2::2]):
        lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
        statement = "\n".join(lines).strip().rstrip(";").strip()
        if name in queries:
            raise ValueError(f"query {name!r} is defined twice")
        queries[name] = statement
    return queries


QUERIES: dict[str, str] = parse(
    resources.files("dpq.pg").joinpath("sql", "queries.sql").read_text(encoding="utf-8")
)
