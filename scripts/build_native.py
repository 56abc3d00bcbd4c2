"""Compile qasid's hot pure modules (``pipeline.native.NATIVE_MODULES``) with mypyc.

    python scripts/build_native.py           # when a source is newer than its extension
    python scripts/build_native.py --force   # always
    python scripts/build_native.py --clean   # remove the extensions: the sources run

The C extensions are built under ``build/native/`` and moved beside their sources (by
rename, so a running worker keeps the files it mapped), the shared library as
``pipeline/native_core__mypyc.*.so``. Without mypyc or a C compiler this says so and leaves
the Python sources to run (exit status 0: the project works either way, only slower);
``--strict`` makes that an error (CI).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUILD_DIR = REPO / "build" / "native"

os.environ["QASID_PURE_PYTHON"] = "1"  # importing pipeline must not warn about what we rebuild
sys.path.insert(0, str(REPO))

from pipeline import native  # noqa: E402


def extensions() -> list[Path]:
    """Every compiled file of the group (the modules' and the shared library)."""
    found = [native.extension_path(native.source_path(m)) for m in native.NATIVE_MODULES]
    shared = native.PACKAGE_ROOT / f"{native.NATIVE_GROUP.split('.')[-1]}__mypyc.py"
    found.append(native.extension_path(shared))
    return [path for path in found if path is not None]


def native_suffix() -> str:
    return importlib.machinery.EXTENSION_SUFFIXES[0]


def clean() -> None:
    for path in extensions():
        path.unlink()
        print(f"removed {path.relative_to(REPO)}")


def build() -> None:
    from mypyc.build import mypycify
    from setuptools import Distribution

    sources = [str(native.source_path(m).relative_to(REPO)) for m in native.NATIVE_MODULES]
    started = time.perf_counter()
    os.chdir(REPO)  # mypyc names modules by their paths from here
    modules = mypycify(
        sources,
        opt_level="3",
        group_name=native.NATIVE_GROUP,
        target_dir=str(BUILD_DIR),
        verbose=False,
    )
    # A bare Distribution: setup() would read pyproject.toml, which is not about this.
    dist = Distribution({"name": "qasid-native", "ext_modules": modules})
    command = dist.get_command_obj("build_ext")
    command.build_temp = str(BUILD_DIR / "temp")
    command.build_lib = str(lib := BUILD_DIR / "lib")
    shutil.rmtree(lib, ignore_errors=True)  # only this build's files are moved into place
    dist.run_command("build_ext")
    # Into place by rename, not by writing over: a running worker has the old files mapped,
    # and a library rewritten under a process crashes it.
    for built in sorted(lib.rglob("*" + native_suffix())):
        target = REPO / built.relative_to(lib)
        partial = target.with_name(target.name + ".partial")
        shutil.copy2(built, partial)
        os.replace(partial, target)
    for path in extensions():  # newer than every source, whatever order they were written
        path.touch()
    took = time.perf_counter() - started
    print(f"compiled {len(sources)} modules with mypyc in {took:.0f} s: {', '.join(sources)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="compile even when up to date")
    parser.add_argument("--clean", action="store_true", help="remove the compiled modules")
    parser.add_argument("--strict", action="store_true", help="fail when it cannot compile")
    args = parser.parse_args()
    if args.clean:
        clean()
        return 0
    problem = native.extension_problem(native.NATIVE_MODULES)
    if problem is None and not args.force:
        print("compiled modules are up to date")
        return 0
    print(f"compiling {len(native.NATIVE_MODULES)} modules with mypyc ({problem or 'forced'})")
    try:
        build()
    except (SystemExit, Exception) as error:  # no mypyc, no compiler, C errors
        clean()  # never leave a part of the group
        message = f"could not compile ({type(error).__name__}: {error}); the Python sources run"
        print(message, file=sys.stderr)
        return 1 if args.strict else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
