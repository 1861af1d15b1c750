"""Which per-operation path this process runs: the compiled kernel
(``fusedb.core._kernel``, built from ``_kernel.pyx`` by Cython at install,
setup.py) or the pure-Python path over the same bytes.

Chosen once, when this module is first imported (``import fusedb`` does), from
the environment (a variable counts as set unless it is empty or ``0``):

* ``FUSEDB_NO_EXTENSIONS``: pure Python, even where the kernel is built (at
  install time it also skips building it).
* ``FUSEDB_REQUIRE_EXTENSIONS``: the kernel must load; :class:`ImportError`
  (naming the variable and the cause) otherwise.
* both: :class:`ImportError` (they contradict each other).
* neither: the kernel if it loads, else pure Python; :data:`REASON` says why.

Processes choose independently: a compiled client and a pure-Python one attach
to the same database. See docs/design.md, "The compiled kernel: build and choice".
"""

from __future__ import annotations

import importlib
import os

NO_EXTENSIONS = "FUSEDB_NO_EXTENSIONS"
REQUIRE_EXTENSIONS = "FUSEDB_REQUIRE_EXTENSIONS"


def _flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def _load():
    """(the kernel module or None, why not: "" when loaded)."""
    if _flag(NO_EXTENSIONS) and _flag(REQUIRE_EXTENSIONS):
        raise ImportError(f"{NO_EXTENSIONS} and {REQUIRE_EXTENSIONS} are both set: "
                          f"unset one")
    if _flag(NO_EXTENSIONS):
        return None, f"{NO_EXTENSIONS} is set"
    try:
        mod = importlib.import_module("fusedb.core._kernel")
        _check_fresh(mod.__file__)
        return mod, ""
    except ImportError as e:
        not_built = isinstance(e, ModuleNotFoundError) and e.name == "fusedb.core._kernel"
        if _flag(REQUIRE_EXTENSIONS):
            hint = (" (it is compiled at install where a C compiler exists; "
                    "pip install -v shows why it was not)") if not_built else ""
            raise ImportError(f"{REQUIRE_EXTENSIONS} is set but the compiled kernel "
                              f"fusedb.core._kernel cannot be loaded: {e}{hint}") from e
        if not_built:
            return None, "the compiled kernel is not built"
        return None, f"the compiled kernel does not load: {e}"


def _check_fresh(built: str, source: str = "_kernel.pyx") -> None:
    """In a source checkout (``source`` beside the built module), refuse a
    module older than its source: it was built from other code (the .pyx was
    edited, or git changed it) and would not match the Python it mirrors."""
    src = os.path.join(os.path.dirname(built), source)
    if os.path.exists(src) and os.path.getmtime(src) > os.path.getmtime(built):
        raise ImportError(f"{built} is older than {src}: rebuild it "
                          f"(pip install -e . or python setup.py build_ext --inplace)")


#: The compiled kernel module, or None when this process runs pure Python; REASON
#: says why not ("" when it runs).
kernel, REASON = _load()
#: Whether the compiled kernel runs in this process.
COMPILED = kernel is not None


def describe() -> str:
    """Which path runs, for people: ``"compiled kernel"`` or
    ``"pure Python (<REASON>)"``."""
    return "compiled kernel" if COMPILED else f"pure Python ({REASON})"
