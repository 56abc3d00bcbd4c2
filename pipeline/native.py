"""The modules compiled to C by mypyc, and when their Python sources are imported instead.

``make native`` (part of ``make install``, ``scripts/build_native.py``) compiles
``NATIVE_MODULES``, the digest build's and the send path's hottest code, into C
extensions beside their sources: a digest fan-out of 100,000 readers takes about an eighth
less time (BENCHMARKS.md, twelfth session). The sources stay the reference: they are
typed Python that mypy checks, and everything works without a compiler, only slower.

Python imports an extension before a ``.py`` file of the same name, so a stale extension
would hide an edited source. ``use_sources_if_needed`` (run when ``pipeline`` is imported)
makes the sources win when ``QASID_PURE_PYTHON`` is set (to test or debug the pure code) or
when the extensions do not all match their sources. It is all of them or none: compiled
modules call each other natively, and a mix would hold two versions of a class.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

# Leaves first: mypyc compiles them as one group either way.
NATIVE_MODULES = (
    "pipeline.core.text",
    "pipeline.core.reader_hits",
    "pipeline.core.digest",
    "pipeline.adapters.digest_render",
)
NATIVE_GROUP = "pipeline.native_core"  # the shared library: pipeline/native_core__mypyc.*.so
PURE_ENV = "QASID_PURE_PYTHON"
PACKAGE_ROOT = Path(__file__).resolve().parent


def source_path(module: str, root: Path = PACKAGE_ROOT) -> Path:
    """``pipeline.core.digest`` → ``<root>/core/digest.py``."""
    parts = module.split(".")[1:]
    return root.joinpath(*parts[:-1], parts[-1] + ".py")


def extension_path(source: Path) -> Path | None:
    """The compiled module beside ``source`` (``digest.cpython-311-x86_64-linux-gnu.so``)."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = source.with_name(source.stem + suffix)
        if candidate.exists():
            return candidate
    return None


def extension_problem(modules: Sequence[str], root: Path = PACKAGE_ROOT) -> str | None:
    """Why the compiled modules must not be used (``None``: they all match their sources).

    "not built" when none is; otherwise the first one missing or older than its source."""
    found = [(source_path(m, root), extension_path(source_path(m, root))) for m in modules]
    if all(extension is None for _, extension in found):
        return "not built"
    for source, extension in found:
        if extension is None:
            return f"{source.name} has no compiled module"
        if source.stat().st_mtime > extension.stat().st_mtime:
            return f"{source.name} is newer than its compiled module"
    return None


class _SourcesFirst(importlib.abc.MetaPathFinder):
    """Finds the listed modules' ``.py`` sources ahead of their extensions."""

    def __init__(self, modules: Sequence[str], root: Path) -> None:
        self.sources = {module: source_path(module, root) for module in modules}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        if source is None:
            return None
        return importlib.util.spec_from_file_location(fullname, source)


def use_sources_if_needed() -> str:
    """Install the finder when the sources must win; returns which modules run ("compiled",
    or "python" with the reason)."""
    if any(isinstance(finder, _SourcesFirst) for finder in sys.meta_path):
        return "python (sources first)"
    if os.environ.get(PURE_ENV):
        reason: str | None = f"{PURE_ENV} is set"
    else:
        reason = extension_problem(NATIVE_MODULES)
        if reason is None:
            return "compiled"
        if reason != "not built":
            warnings.warn(
                f"qasid's compiled modules are out of date ({reason}): running the Python "
                "sources; `make native` compiles them again",
                RuntimeWarning,
                stacklevel=2,
            )
    sys.meta_path.insert(0, _SourcesFirst(NATIVE_MODULES, PACKAGE_ROOT))
    return f"python ({reason})"
