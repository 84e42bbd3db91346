"""dpq: a distributed priority job queue.

The hot paths are compiled: importing dpq without its extensions fails loudly
instead of falling back to the slow pure-Python twins.
"""

try:
    from dpq import _fastheap, _wrr  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only on broken installs
    raise ImportError(
        "dpq's compiled extensions (dpq._fastheap, dpq._wrr) are missing: "
        "install the package with `pip install .` (needs a C compiler and the Python "
        "headers), or build them in place with `python setup.py build_ext --inplace`. "
        f"Original error: {exc}"
    ) from exc

__version__ = "0.1.0"
