"""Dependencies run one way (issue 12): each package below may not import what its rule names.

* ``dpq/services`` (the gRPC servicers) type what they serve against small
  ``Protocol``s that the node implements, so they import nothing from
  ``dpq.node`` (nor from the gateway, which uses them);
* ``dpq/gateway`` shares batching with the node through ``dpq.proposing`` and
  imports nothing from ``dpq.node`` (so a gateway process loads no driver or WAL);
* ``dpq/proposing`` is used by both, and imports neither;
* the node and the gateway run from their own ``main.py`` and import nothing from
  the command line (``dpq.cli`` imports them); the node uses the gateway's WRR
  twin through ``dpq._wrr`` but none of the gateway's process;
* the pure cores ``dpq/paxos`` and ``dpq/queue`` do no I/O: no gRPC, no asyncio,
  no PostgreSQL, and nothing from the layers above them.

Every import statement counts, wherever it is (in a function, under
``TYPE_CHECKING``), relative ones resolved.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE_FORBIDDEN = ("dpq.node", "dpq.services", "dpq.gateway", "dpq.pg", "grpc", "asyncio")

RULES: dict[str, tuple[str, ...]] = {
    "dpq/services": ("dpq.node", "dpq.gateway", "dpq.cli"),
    "dpq/gateway": ("dpq.node", "dpq.cli"),
    "dpq/node": ("dpq.cli", "dpq.gateway.app", "dpq.gateway.main", "dpq.gateway.operations"),
    "dpq/proposing": ("dpq.node", "dpq.gateway", "dpq.services"),
    "dpq/paxos": CORE_FORBIDDEN,
    "dpq/queue": CORE_FORBIDDEN,
}


def imported_modules(source: str, package: str) -> list[tuple[int, str]]:
    """``(line, module)`` for every import in a module of ``package``; ``from a import b``
    gives ``a.b`` too (``b`` may be a module)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def forbidden_imports(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    files = sorted((ROOT / folder).rglob("*.py"))
    assert files, f"{folder} has no Python files: the rule would pass vacuously"
    broken = []
    for path in files:
        package = ".".join(path.relative_to(ROOT).parts[:-1])
        for line, module in imported_modules(path.read_text(encoding="utf-8"), package):
            for prefix in forbidden:
                if module == prefix or module.startswith(prefix + "."):
                    broken.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
                    break
    return sorted(set(broken))


@pytest.mark.parametrize("folder", sorted(RULES))
def test_no_forbidden_import(folder: str) -> None:
    assert forbidden_imports(folder, RULES[folder]) == []


def test_the_check_sees_imports() -> None:
    """The walker finds plain, from-, relative and nested imports (else the rules prove nothing)."""
    source = ("import grpc.aio\nfrom ..node import driver\nfrom . import errors\n"
              "def f():\n    from dpq.node.proposer import Proposer\n")
    modules = {m for _, m in imported_modules(source, "dpq.services")}
    assert {"grpc.aio", "dpq.node", "dpq.node.driver", "dpq.services.errors",
            "dpq.node.proposer"} <= modules
