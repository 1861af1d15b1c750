"""Build script for the optional compiled kernel (fusedb.core._kernel).

Everything else is declared in pyproject.toml. The kernel is compiled with
Cython where a C compiler exists; where none does, or with
FUSEDB_NO_EXTENSIONS=1, the pure-Python package is installed instead (never a
failed install). See docs/design.md, "The compiled kernel".
"""

import os

from setuptools import Extension, setup

ext_modules = []
if os.environ.get("FUSEDB_NO_EXTENSIONS", "") in ("", "0"):
    try:
        from Cython.Build import cythonize
    except ImportError:     # no Cython (a build without isolation): pure Python
        cythonize = None
    if cythonize is not None:
        ext_modules = cythonize(
            [Extension("fusedb.core._kernel", ["fusedb/core/_kernel.pyx"],
                       include_dirs=["fusedb/core/vendor"],
                       define_macros=[("XXH_INLINE_ALL", None)],   # xxhash.h: header-only
                       extra_compile_args=["-O3"])],
            compiler_directives={"language_level": 3, "boundscheck": False,
                                 "wraparound": False, "cdivision": True,
                                 "initializedcheck": False},
        )

setup(ext_modules=ext_modules)
