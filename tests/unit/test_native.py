"""The mypyc-compiled modules (``pipeline.native``): used when current, sources otherwise."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline import native

SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
MODULES = ("pkg.core.a", "pkg.b")


def make_tree(root: Path, compiled: tuple[str, ...], source_newer: str = "") -> Path:
    """A package whose modules' extensions exist for ``compiled`` (names as in MODULES)."""
    package = root / "pkg"
    (package / "core").mkdir(parents=True)
    for module in MODULES:
        native.source_path(module, package).write_text("WHERE = 'source'\n")
    written = time.time() - 60  # the sources, then the extensions, then the edit
    for module in MODULES:
        source = native.source_path(module, package)
        os.utime(source, (written, written))
        if module in compiled:
            extension = source.with_name(source.stem + SUFFIX)
            extension.write_bytes(b"not a real extension")
            os.utime(extension, (written + 10, written + 10))
    if source_newer:
        os.utime(native.source_path(source_newer, package), (written + 20, written + 20))
    return package


def test_extensions_matching_their_sources_are_used(tmp_path: Path) -> None:
    assert native.extension_problem(MODULES, make_tree(tmp_path, MODULES)) is None


def test_no_extension_at_all_means_not_built(tmp_path: Path) -> None:
    assert native.extension_problem(MODULES, make_tree(tmp_path, ())) == "not built"


def test_an_edited_source_or_a_missing_extension_makes_the_sources_run(tmp_path: Path) -> None:
    edited = make_tree(tmp_path / "edited", MODULES, source_newer="pkg.b")
    assert native.extension_problem(MODULES, edited) == "b.py is newer than its compiled module"
    partial = make_tree(tmp_path / "partial", ("pkg.b",))
    assert native.extension_problem(MODULES, partial) == "a.py has no compiled module"


def test_the_sources_first_finder_imports_the_source_beside_an_extension(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = make_tree(tmp_path, MODULES)
    (package / "__init__.py").write_text("")
    (package / "core" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError):  # the (broken) extension wins without the finder
        importlib.import_module("pkg.b")
    monkeypatch.setattr(sys, "meta_path", [native._SourcesFirst(MODULES, package), *sys.meta_path])
    try:
        for module in MODULES:
            sys.modules.pop(module, None)
            assert importlib.import_module(module).WHERE == "source"
    finally:
        for name in [name for name in sys.modules if name.split(".")[0] == "pkg"]:
            del sys.modules[name]


def where_modules_come_from(**env: str) -> list[str]:
    """``NATIVE_MODE`` and each native module's file, from a fresh interpreter."""
    environ = {k: v for k, v in os.environ.items() if k != native.PURE_ENV} | env
    script = (
        "import importlib, pipeline\n"
        "from pipeline.native import NATIVE_MODULES\n"
        "print(pipeline.NATIVE_MODE)\n"
        "for name in NATIVE_MODULES: print(importlib.import_module(name).__file__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=environ, capture_output=True, text=True, check=True
    )
    return done.stdout.splitlines()


def test_qasid_pure_python_runs_every_source() -> None:
    mode, *files = where_modules_come_from(QASID_PURE_PYTHON="1")
    assert mode == "python (QASID_PURE_PYTHON is set)"
    assert files and all(name.endswith(".py") for name in files)


def test_built_extensions_are_what_runs() -> None:
    problem = native.extension_problem(native.NATIVE_MODULES)
    if problem is not None:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the compiled modules (make native): {problem}")
        pytest.skip(f"compiled modules not in use: {problem}")
    mode, *files = where_modules_come_from()
    assert mode == "compiled"
    assert len(files) == len(native.NATIVE_MODULES)
    assert all(name.endswith(SUFFIX) for name in files)
