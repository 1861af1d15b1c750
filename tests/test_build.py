"""The build and the run-time choice of the compiled kernel (docs/design.md, "The
compiled kernel: build and choice"), through real processes: ``import fusedb`` and
``fusedb --version`` under each combination of FUSEDB_NO_EXTENSIONS and
FUSEDB_REQUIRE_EXTENSIONS, with the kernel built, absent or broken; sdists and
wheels built from a copy of the source tree (with and without a working C
compiler); and, marked slow, isolated builds installed into a fresh venv.

Compiled-path cases skip where the source tree has no built kernel (a machine
without a C compiler); CI's compiled run requires it (.ci/run)."""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

import fusedb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NO, REQUIRE = "FUSEDB_NO_EXTENSIONS", "FUSEDB_REQUIRE_EXTENSIONS"
#: The built kernel's file name in the source tree, e.g. _kernel.cpython-311-x86_64-linux-gnu.so
SUFFIXES = tuple("_kernel" + s for s in importlib.machinery.EXTENSION_SUFFIXES)
BUILT = any(f.endswith(SUFFIXES) for f in os.listdir(os.path.join(ROOT, "fusedb", "core")))
needs_kernel = pytest.mark.skipif(not BUILT, reason="the kernel is not built in the source "
                                  "tree (no C compiler?): python setup.py build_ext --inplace")
BUILD_WARNING = "WARNING: the compiled kernel fusedb.core._kernel could not be built"
SHOW = ("import fusedb; print(fusedb.compiled); print(fusedb.kernel_reason); "
        "print(fusedb.__file__)")


def _env(pythonpath: str | None = ROOT, **flags: str) -> dict[str, str]:
    """This environment without either kernel flag (the suite itself may run under
    one), plus ``flags``; the package imported from ``pythonpath``."""
    env = {k: v for k, v in os.environ.items() if k not in (NO, REQUIRE, "PYTHONPATH")}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    env.update(flags)
    return env


def _run(args: list[str], env: dict[str, str], cwd, timeout: float = 60):
    return subprocess.run(args, env=env, cwd=str(cwd), capture_output=True, text=True,
                          timeout=timeout)


def _show(env, cwd) -> tuple[str, str, str]:
    r = _run([sys.executable, "-c", SHOW], env, cwd)
    assert r.returncode == 0, r.stderr
    compiled, reason, path = r.stdout.splitlines()
    return compiled, reason, path


def _last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def _copy_package(dest) -> str:
    """The package (no built kernel, no generated C) under ``dest``; returns its
    parent directory, for PYTHONPATH."""
    shutil.copytree(os.path.join(ROOT, "fusedb"), os.path.join(dest, "fusedb"),
                    ignore=shutil.ignore_patterns("*.so", "*.pyd", "_kernel.c", "_hot.c",
                                                  "__pycache__"))
    return str(dest)


def _copy_source(dest) -> str:
    """What a build reads (the source tree less built files), in ``dest``."""
    os.makedirs(dest)
    for f in ("setup.py", "pyproject.toml", "MANIFEST.in", "README.md"):
        shutil.copy(os.path.join(ROOT, f), dest)
    return _copy_package(dest)


# --- the choice at run time ---------------------------------------------------------

def test_no_extensions_runs_pure_python(tmp_path):
    compiled, reason, path = _show(_env(**{NO: "1"}), tmp_path)
    assert (compiled, reason) == ("False", "FUSEDB_NO_EXTENSIONS is set")
    assert path.startswith(ROOT)


@needs_kernel
@pytest.mark.parametrize("flags", [{}, {REQUIRE: "1"}, {NO: "0"}, {NO: ""}],
                         ids=["neither", "require", "no=0", "no=empty"])
def test_built_kernel_runs_by_default_and_when_required(tmp_path, flags):
    assert _show(_env(**flags), tmp_path)[:2] == ("True", "")


def test_both_flags_are_an_import_error(tmp_path):
    r = _run([sys.executable, "-c", "import fusedb"], _env(**{NO: "1", REQUIRE: "1"}), tmp_path)
    assert r.returncode == 1
    assert _last_line(r.stderr) == ("ImportError: FUSEDB_NO_EXTENSIONS and "
                                    "FUSEDB_REQUIRE_EXTENSIONS are both set: unset one")


def test_missing_kernel_falls_back_unless_required(tmp_path):
    env = _env(_copy_package(tmp_path / "pkg"))
    compiled, reason, path = _show(env, tmp_path)
    assert path.startswith(str(tmp_path / "pkg"))
    assert (compiled, reason) == ("False", "the compiled kernel is not built")
    r = _run([sys.executable, "-c", "import fusedb"], {**env, REQUIRE: "1"}, tmp_path)
    assert r.returncode == 1
    assert _last_line(r.stderr) == (
        "ImportError: FUSEDB_REQUIRE_EXTENSIONS is set but the compiled kernel "
        "fusedb.core._kernel cannot be loaded: No module named 'fusedb.core._kernel' (it is "
        "compiled at install where a C compiler exists; pip install -v shows why it was not)")


def test_broken_kernel_falls_back_with_its_error(tmp_path):
    pkg = _copy_package(tmp_path / "pkg")
    so = os.path.join(pkg, "fusedb", "core", SUFFIXES[0])
    with open(so, "wb") as f:
        f.write(b"not a shared object")
    compiled, reason, _ = _show(_env(pkg), tmp_path)
    assert compiled == "False"
    assert reason.startswith("the compiled kernel does not load: ") and so in reason
    r = _run([sys.executable, "-c", "import fusedb"], _env(pkg, **{REQUIRE: "1"}), tmp_path)
    assert r.returncode == 1 and "cannot be loaded: " in _last_line(r.stderr)


@needs_kernel
def test_kernel_older_than_its_source_is_refused(tmp_path):
    """A checkout whose _kernel.pyx changed after the build (edited, or a git
    checkout) does not run the stale module."""
    pkg = _copy_package(tmp_path / "pkg")
    core = os.path.join(pkg, "fusedb", "core")
    so = os.path.join(core, SUFFIXES[0])
    shutil.copy(os.path.join(ROOT, "fusedb", "core", SUFFIXES[0]), so)
    assert _show(_env(pkg), tmp_path)[:2] == ("True", "")
    later = os.path.getmtime(so) + 10
    os.utime(os.path.join(core, "_kernel.pyx"), (later, later))
    compiled, reason, _ = _show(_env(pkg), tmp_path)
    assert compiled == "False"
    assert reason.startswith("the compiled kernel does not load: ") and "rebuild it" in reason
    r = _run([sys.executable, "-c", "import fusedb"], _env(pkg, **{REQUIRE: "1"}), tmp_path)
    assert r.returncode == 1 and "is older than" in _last_line(r.stderr)


@pytest.mark.parametrize("case", ["compiled", "no_extensions", "not_built"])
def test_version_names_the_path(tmp_path, case):
    if case == "compiled" and not BUILT:
        pytest.skip("the kernel is not built in the source tree")
    env = {"compiled": lambda: _env(),
           "no_extensions": lambda: _env(**{NO: "1"}),
           "not_built": lambda: _env(_copy_package(tmp_path / "pkg"))}[case]()
    r = _run([sys.executable, "-m", "fusedb", "--version"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    path = {"compiled": "compiled kernel",
            "no_extensions": "pure Python (FUSEDB_NO_EXTENSIONS is set)",
            "not_built": "pure Python (the compiled kernel is not built)"}[case]
    assert r.stdout == f"fusedb {fusedb.__version__}, {path}\n"


# --- CI -------------------------------------------------------------------------------

def test_readme_test_command_is_what_ci_runs():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = [ln.split("#")[0].strip() for ln in f if "# run the tests" in ln]
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
    assert len(readme) == 1 and readme[0] == ci[-1]
    # the whole suite twice: the compiled kernel required, then pure Python
    assert f"{REQUIRE}=1 python -m pytest" in ci[-1] and f"{NO}=1 python -m pytest" in ci[-1]


# --- sdist and wheels -----------------------------------------------------------------

def _build_tool_ready(cwd, *mods: str):
    # not from ROOT: its build/ directory (setuptools') would import as `build`
    for mod in ("Cython", "setuptools") + mods:
        r = _run([sys.executable, "-c", f"import {mod}"], _env(None), cwd)
        assert r.returncode == 0, f"{mod} is not installed: pip install -e '.[test]' installs it"


def _wheel(out) -> tuple[str, list[str]]:
    (whl,) = [f for f in os.listdir(out) if f.endswith(".whl")]
    with zipfile.ZipFile(os.path.join(out, whl)) as z:
        return whl, z.namelist()


@needs_kernel
def test_sdist_and_compiled_wheel(tmp_path):
    """``python -m build`` (without isolation: offline, seconds) builds the sdist,
    then the wheel from it: the sdist carries the kernel's sources, the wheel the
    module (which imports) and xxhash's licence."""
    _build_tool_ready(tmp_path, "build")
    src, out = _copy_source(tmp_path / "src"), tmp_path / "dist"
    r = _run([sys.executable, "-m", "build", "--no-isolation", "-o", str(out), src],
             _env(None), tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (sdist,) = [f for f in os.listdir(out) if f.endswith(".tar.gz")]
    with tarfile.open(out / sdist) as t:
        names = [n.split("/", 1)[1] for n in t.getnames() if "/" in n]
    for need in ("fusedb/core/_kernel.pyx", "fusedb/resp/_hot.pyx", "fusedb/core/vendor/xxhash.h",
                 "fusedb/core/vendor/xxhash.LICENSE", "setup.py", "MANIFEST.in"):
        assert need in names
    assert not [n for n in names if n.endswith((".so", "_kernel.c", "_hot.c"))]
    whl, names = _wheel(out)
    assert "-none-any" not in whl
    for module in ("fusedb/core/_kernel.", "fusedb/resp/_hot."):
        assert [n for n in names if n.startswith(module) and n.endswith(".so")], names
    assert any(n.endswith("licenses/fusedb/core/vendor/xxhash.LICENSE") for n in names)
    assert not [n for n in names if n.endswith((".pyx", ".c", ".h"))]
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(out / whl) as z:
        z.extractall(unpacked)
    compiled, reason, path = _show(_env(str(unpacked), **{REQUIRE: "1"}), tmp_path)
    assert (compiled, reason) == ("True", "") and path.startswith(str(unpacked))


@pytest.mark.parametrize("how", ["no_compiler", "no_cython", "no_extensions"])
def test_wheel_without_kernel_is_pure_python(tmp_path, how):
    """No C compiler (CC=/bin/false) or no Cython (an import of it that fails,
    first on the path): a warning and a wheel without the kernel, never a failed
    build. FUSEDB_NO_EXTENSIONS=1: a pure wheel, for any platform."""
    _build_tool_ready(tmp_path)
    src, out = _copy_source(tmp_path / "src"), tmp_path / "dist"
    if how == "no_compiler":
        env = _env(None, CC="/bin/false")
    elif how == "no_cython":
        os.makedirs(tmp_path / "block" / "Cython")
        (tmp_path / "block" / "Cython" / "__init__.py").write_text(
            "raise ImportError('Cython blocked by the test')\n")
        env = _env(str(tmp_path / "block"))
    else:
        env = _env(None, **{NO: "1"})
    r = _run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
              "-w", str(out), src], env, tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    whl, names = _wheel(out)
    assert not [n for n in names if n.endswith(".so")]
    if how == "no_extensions":
        assert whl.endswith("-py3-none-any.whl")
    else:
        assert BUILD_WARNING in r.stdout + r.stderr
        if how == "no_cython":
            assert "ImportError: Cython blocked by the test" in r.stdout + r.stderr


def test_required_kernel_fails_a_build_without_compiler(tmp_path):
    """FUSEDB_REQUIRE_EXTENSIONS at build (cibuildwheel sets it): no pure wheel."""
    _build_tool_ready(tmp_path)
    src = _copy_source(tmp_path / "src")
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
              "-w", str(tmp_path / "dist"), src],
             _env(None, CC="/bin/false", **{REQUIRE: "1"}), tmp_path, timeout=600)
    assert r.returncode != 0
    assert ("FUSEDB_REQUIRE_EXTENSIONS is set and the compiled kernel fusedb.core._kernel "
            "could not be built") in r.stdout + r.stderr
    assert not os.path.exists(tmp_path / "dist") or not os.listdir(tmp_path / "dist")


# --- slow: isolated builds into a fresh venv (dependencies from the package index) ---

def _venv(path) -> str:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=120)
    return os.path.join(path, "bin")


@pytest.mark.slow
def test_isolated_wheel_installs_compiled_in_fresh_venv(tmp_path):
    """``pip wheel .`` with build isolation (Cython from the index, as on a user's
    machine), installed into a fresh venv: the kernel loads; so does the command."""
    src, out = _copy_source(tmp_path / "src"), tmp_path / "dist"
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(out), src],
             _env(None), tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    whl, _ = _wheel(out)
    bin_ = _venv(tmp_path / "venv")
    r = _run([os.path.join(bin_, "pip"), "install", str(out / whl)], _env(None), tmp_path,
             timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r = _run([os.path.join(bin_, "fusedb"), "--version"], _env(None, **{REQUIRE: "1"}),
             tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"fusedb {fusedb.__version__}, compiled kernel\n"


@pytest.mark.slow
def test_pip_install_without_compiler_installs_pure_python(tmp_path):
    """``CC=/bin/false pip install .`` into a fresh venv: installed, runs pure Python."""
    src = _copy_source(tmp_path / "src")
    bin_ = _venv(tmp_path / "venv")
    r = _run([os.path.join(bin_, "pip"), "install", "-v", src], _env(None, CC="/bin/false"),
             tmp_path, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert BUILD_WARNING in r.stdout + r.stderr
    r = _run([os.path.join(bin_, "fusedb"), "--version"], _env(None), tmp_path)
    assert r.stdout == (f"fusedb {fusedb.__version__}, pure Python "
                        f"(the compiled kernel is not built)\n")
