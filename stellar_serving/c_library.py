"""A few lines of generated C compiled into a shared library and loaded, for this process.

The C TreeSHAP (treeshap.py) and the tree kernel (tree_kernel.py) are small,
generic C sources: the model's trees are arguments (arrays), not code, so a
source is compiled once per process and compiler (about half a second), in a
temporary folder that is removed at once (a loaded library stays mapped).
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
import tempfile
from pathlib import Path

# These sources compile in under a second; a compiler that takes this long is stuck (the tree kernel's
# compile holds up a version's load until then).
COMPILE_TIMEOUT_SECONDS = 30


class CBuildFailed(RuntimeError):
    """The source could not be compiled or loaded; the message says why in one sentence."""


def build(source: str, compiler: str, what: str) -> ctypes.CDLL:
    """`source` compiled with `compiler` (-O3, shared) and loaded; CBuildFailed names `what` and why."""
    folder = Path(tempfile.mkdtemp(prefix="stellar-c-"))  # its own folder: fixed file names cannot clash
    try:
        source_file, library = folder / "source.c", folder / "library.so"
        source_file.write_text(source)
        try:
            done = subprocess.run([compiler, "-O3", "-shared", "-fPIC", "-o", str(library), str(source_file), "-lm"],
                                  capture_output=True, text=True, timeout=COMPILE_TIMEOUT_SECONDS)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CBuildFailed(f"no C compiler for {what}: {compiler!r} cannot be run ({exc})") from None
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1][:300]
            raise CBuildFailed(f"compiling {what} with {compiler!r} failed: {last}")
        try:
            return ctypes.CDLL(str(library))
        except OSError as exc:
            raise CBuildFailed(f"the compiled {what} library cannot be loaded: {exc}") from None
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def function(source: str, compiler: str, what: str, name: str, argtypes: list, restype=None,
             error: type[Exception] = CBuildFailed):
    """The C function `name` of `source`, compiled and loaded (see build), with its ctypes signature;
    a failure is raised as `error` with build's one-sentence message."""
    try:
        fn = getattr(build(source, compiler, what), name)
    except CBuildFailed as exc:
        raise error(str(exc)) from None
    fn.argtypes, fn.restype = argtypes, restype
    return fn
