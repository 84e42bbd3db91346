"""Build script for dpq's compiled hot paths.

``pip install .`` compiles ``dpq/_fastheap.pyx`` and ``dpq/_wrr.pyx``.  Set
``DPQ_CYTHON_ANNOTATE=1`` to write the Cython HTML annotation next to each
source (yellow lines are where Python objects leak into a hot loop), and
``DPQ_DEBUG=1`` to build with bounds checks and line tracing.
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("DPQ_DEBUG") == "1"

directives = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": False,
    "cdivision": True,
    "initializedcheck": DEBUG,
    "embedsignature": True,
}
if DEBUG:
    directives["linetrace"] = True

macros = [("CYTHON_TRACE_NOGIL", "1")] if DEBUG else []
compile_args = ["-O0", "-g"] if DEBUG else ["-O3"]

extensions = [
    Extension(name, [f"dpq/{name.split('.')[-1]}.pyx"], define_macros=macros,
              extra_compile_args=compile_args)
    for name in ("dpq._fastheap", "dpq._wrr")
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=os.environ.get("DPQ_CYTHON_ANNOTATE") == "1",
    ),
)
