"""Build script for the optional compiled kernel (fusedb.core._kernel).

Everything else is declared in pyproject.toml. The kernel is compiled from
fusedb/core/_kernel.pyx with Cython (a build requirement) where a C compiler
exists. Where it cannot be built (no compiler, no Cython, a compile error) the
build prints a warning and installs the pure-Python package: never a failed
install. Environment, read at build time:

* ``FUSEDB_NO_EXTENSIONS=1``: do not build the kernel (a pure-Python wheel).
* ``FUSEDB_REQUIRE_EXTENSIONS=1``: a kernel that cannot be built fails the build
  (cibuildwheel sets it, so a release never ships a pure wheel by mistake).

The same two variables choose the path at run time (fusedb/core/kernel.py).
See docs/design.md, "The compiled kernel: build and choice".
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name):
    return os.environ.get(name, "") not in ("", "0")


KERNEL = Extension(
    "fusedb.core._kernel", ["fusedb/core/_kernel.pyx"],
    include_dirs=["fusedb/core/vendor"],
    define_macros=[("XXH_INLINE_ALL", None)],       # xxhash.h is header-only
    extra_compile_args=["-O3"],
)
# The Redis protocol's hot path (GET, SET, INCR parsed and answered in C): built,
# skipped and chosen at run time together with the kernel it calls.
HOT = Extension("fusedb.resp._hot", ["fusedb/resp/_hot.pyx"], extra_compile_args=["-O3"])
CYTHON_DIRECTIVES = {"language_level": 3, "boundscheck": False, "wraparound": False,
                     "cdivision": True, "initializedcheck": False}


class optional_build_ext(build_ext):
    """build_ext that turns any failure to build the kernel into a warning (the
    package then runs pure Python), unless FUSEDB_REQUIRE_EXTENSIONS is set."""

    failed = False

    def run(self):
        try:
            from Cython.Build import cythonize
            # .pyx -> .c; keep setuptools' own Extension objects (finalized already)
            for ext, c_ext in zip(self.extensions, cythonize(
                    self.extensions, compiler_directives=CYTHON_DIRECTIVES)):
                ext.sources = c_ext.sources
            super().run()
        except Exception as e:      # no Cython, no compiler, a compile or link error
            self._give_up(e)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:
            self._give_up(e)

    def _give_up(self, e):
        if self.failed:     # a failed build_extension makes the in-place copy fail too
            return
        self.failed = True
        what = f"{type(e).__name__}: {e}"
        if _flag("FUSEDB_REQUIRE_EXTENSIONS"):
            raise SystemExit(f"error: FUSEDB_REQUIRE_EXTENSIONS is set and the compiled "
                             f"kernel fusedb.core._kernel could not be built ({what})")
        bar = "*" * 76
        print(f"\n{bar}\nWARNING: the compiled kernel fusedb.core._kernel could not be "
              f"built:\n  {what}\nFuseDB is installed without it and runs its pure-Python "
              f"path (slower,\nsame behaviour and files). Building it needs a C compiler "
              f"(e.g. gcc), the\nPython headers and Cython>=3.0 (pip fetches Cython unless "
              f"--no-build-isolation).\n{bar}\n", file=sys.stderr)


setup(
    ext_modules=[] if _flag("FUSEDB_NO_EXTENSIONS") else [KERNEL, HOT],
    cmdclass={"build_ext": optional_build_ext},
)
