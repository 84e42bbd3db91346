"""The end-to-end benchmark (issue 6): ``python bench/e2e.py --help``; the same as ``dpq bench``.

The implementation ships in the package, ``dpq/bench/e2e.py``; this is its wrapper for a checkout.
"""
import sys
from pathlib import Path

try:
    from dpq.bench import e2e
except ImportError:  # a checkout built in place and not installed: use it
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from dpq.bench import e2e

if __name__ == "__main__":
    sys.exit(e2e.main())
