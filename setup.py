"""Build the compiled kernels.

Every extension is listed here explicitly.  Cython directives are set once, below;
``CM_DEBUG=1`` builds with bounds checks, line tracing and annotated HTML (``cython -a``
output next to each ``.pyx``) for profiling and coverage. ``CM_SYMBOLS=1`` keeps ``-O3`` but
adds debug info mapped to the ``.pyx`` lines, for ``valgrind --tool=callgrind`` or ``perf``;
``CM_SYMBOLS=cpp`` maps it to the generated C++ instead (exact where Cython's line mapping
lumps glue code onto the wrong ``.pyx`` line).
"""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("CM_DEBUG") == "1"

DIRECTIVES = {
    "language_level": "3",
    "boundscheck": DEBUG,
    "wraparound": False,
    "initializedcheck": DEBUG,
    "cdivision": True,
    "embedsignature": True,
}
MACROS = []
if DEBUG:
    DIRECTIVES.update(linetrace=True, profile=True)
    MACROS += [("CYTHON_TRACE_NOGIL", "1")]

CXX_FLAGS = ["-std=c++17", "-O3" if not DEBUG else "-O0", "-g0" if not DEBUG and not os.environ.get("CM_SYMBOLS") else "-g"]


def kernel(name: str, libraries=()) -> Extension:
    """One C++ Cython extension in the ``matcher`` package."""
    return Extension(
        f"matcher.{name}",
        [f"matcher/{name}.pyx"],
        language="c++",
        extra_compile_args=CXX_FLAGS,
        libraries=list(libraries),
        define_macros=MACROS,
    )


EXTENSIONS = [
    kernel("_ruleset_c", libraries=["re2"]),
    kernel("_actionset_c"),
]
# CM_ONLY=_ruleset_c,... builds a subset while developing one kernel.
if os.environ.get("CM_ONLY"):
    _only = set(os.environ["CM_ONLY"].split(","))
    EXTENSIONS = [e for e in EXTENSIONS if e.name.split(".")[-1] in _only]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        compiler_directives=DIRECTIVES,
        annotate=DEBUG,
        include_path=["matcher"],
        # With CM_SYMBOLS=1, debug info points at .pyx lines: callgrind/perf annotate the source.
        emit_linenums=os.environ.get("CM_SYMBOLS", "cpp") != "cpp",
    ),
)
