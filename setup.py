"""Build script for dpq's compiled parts.

``pip install .`` compiles ``dpq/_fastheap.pyx`` and ``dpq/_wrr.pyx`` and
generates the protobuf/gRPC stubs of ``proto/dpq/v1`` into ``dpq/v1``.
``python setup.py build_ext --inplace`` does both inside a checkout.

Set ``DPQ_CYTHON_ANNOTATE=1`` to write the Cython HTML annotation next to each
source (yellow lines are where Python objects leak into a hot loop), and
``DPQ_DEBUG=1`` to build with bounds checks and line tracing.
"""

import glob
import os

from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

DEBUG = os.environ.get("DPQ_DEBUG") == "1"
HERE = os.path.dirname(os.path.abspath(__file__))

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


def generate_stubs(out_root: str) -> None:
    """Run protoc on proto/dpq/v1/*.proto; the modules land in out_root/dpq/v1."""
    import grpc_tools
    from grpc_tools import protoc

    protos = sorted(glob.glob(os.path.join("proto", "dpq", "v1", "*.proto")))
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    os.makedirs(os.path.join(out_root, "dpq", "v1"), exist_ok=True)
    args = ["protoc", "-Iproto", f"-I{well_known}", f"--python_out={out_root}",
            f"--pyi_out={out_root}", f"--grpc_python_out={out_root}", *protos]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {protos}")


class BuildPyWithStubs(build_py):
    def run(self):
        super().run()
        generate_stubs(self.build_lib)


class BuildExtWithStubs(build_ext):
    def run(self):
        super().run()
        if self.inplace:
            generate_stubs(HERE)


setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives=directives,
        annotate=os.environ.get("DPQ_CYTHON_ANNOTATE") == "1",
    ),
    cmdclass={"build_py": BuildPyWithStubs, "build_ext": BuildExtWithStubs},
)
