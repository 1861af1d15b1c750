"""Which per-operation path this process runs: the compiled kernel
(``fusedb.core._kernel``, built from ``_kernel.pyx`` by Cython at install) or
the pure-Python path over the same bytes.

Chosen once, at import, from the environment:

* ``FUSEDB_NO_EXTENSIONS=1``: pure Python, even where the kernel is built (it
  also skips building it at install: setup.py).
* ``FUSEDB_REQUIRE_EXTENSIONS=1``: the kernel must load; ImportError otherwise.
* neither: the kernel if it loads, else pure Python (:data:`REASON` says why).
"""

from __future__ import annotations

import os


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


kernel = None
REASON = ""
if _flag("FUSEDB_NO_EXTENSIONS") and _flag("FUSEDB_REQUIRE_EXTENSIONS"):
    raise ImportError("FUSEDB_NO_EXTENSIONS and FUSEDB_REQUIRE_EXTENSIONS are both set: "
                      "unset one")
if _flag("FUSEDB_NO_EXTENSIONS"):
    REASON = "FUSEDB_NO_EXTENSIONS is set"
else:
    try:
        from fusedb.core import _kernel as kernel
    except ImportError as e:
        if _flag("FUSEDB_REQUIRE_EXTENSIONS"):
            raise ImportError(f"FUSEDB_REQUIRE_EXTENSIONS is set but the compiled kernel "
                              f"cannot be loaded: {e}") from e
        REASON = f"the compiled kernel is not built ({e})"

#: Whether the compiled kernel runs in this process.
COMPILED = kernel is not None
