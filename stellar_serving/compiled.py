"""A model version's trees compiled to C (tl2cgen), for small requests.

XGBoost spends about 0.5 ms on one row of a 400-round model, mostly walking
its generic tree structures; the same trees compiled to C by tl2cgen answer
one row in a few tens of microseconds. Compiling takes seconds (about 14 s
for 400 rounds on 2 cores), so it never runs on the request path: the model
store serves from XGBoost and swaps the compiled predictor in when it is
ready (see model_store.py). The compile runs in a child process at lower
priority, which a stopping server ends (`compile_library`).

- `library_path` names the shared library in the model cache: model version,
  a digest of the model's bytes, the platform and the tl2cgen, treelite and
  compiler versions. A restart finds it there and does not compile again; a
  new library version or compiler gets a new file.
- `CompiledPredictor` calls the library's generated `predict(row)` through
  ctypes, one row at a time (the call releases the GIL), for the float32
  [n, 13] -> float32 [n, 3] contract of booster_call.Predict.
- `prepare` returns a predictor only after it answered the probe rows within
  PROBE_TOLERANCE of XGBoost; every failure (tl2cgen missing, no compiler, a
  compile error, a library that answers differently) is a CompileFailed whose
  message is the one sentence GetModelInfo shows.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stellar_serving.booster_call import Predict

log = logging.getLogger("stellar_serving.compiled")

COMPILED_DIR = "compiled"  # under the model's cache folder; not a "v*" folder, so bundle pruning leaves it
PROBE_TOLERANCE = 1e-5  # largest probability difference from XGBoost a compiled predictor may show
# The compiler runs below the request threads' priority: on a small machine it
# would otherwise take the cores the (XGBoost) answers need while it compiles.
COMPILE_NICENESS = 10
CHILD_UNAVAILABLE = 3  # the compile child's exit status when tl2cgen cannot be imported
# Source files the trees are split into. A 400-round depth-6 model cost 34 s of
# compiler CPU in 64 files against 57 s in 2 (measured on the 2-core machine).
SOURCE_FILES = 64


class CompileFailed(RuntimeError):
    """No compiled predictor for this version; the message says why in one sentence.

    `outcome` is the metrics label: "unavailable" (tl2cgen or the compiler missing),
    "failed" (compiling or loading failed), "mismatch" (answers differ from XGBoost)
    or "cancelled" (the server stopped during the compile)."""

    def __init__(self, message: str, outcome: str = "failed") -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True)
class Prepared:
    predict: Predict
    note: str  # what answers, for GetModelInfo
    outcome: str  # "compiled" (built now) or "reused" (found in the cache)


def library_path(cache_root: Path, version: str, model_bytes: bytes, compiler: str) -> Path:
    """Where the library of this model version, built by this toolchain on this platform, lives."""
    key = "|".join((hashlib.sha256(model_bytes).hexdigest(), *toolchain_identity(compiler)))
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    return Path(cache_root) / COMPILED_DIR / f"v{version}-{digest}{_library_suffix()}"


@functools.cache
def toolchain_identity(compiler: str) -> tuple[str, ...]:
    """Everything a library depends on besides the model: platform, library versions, compiler version."""
    try:
        import tl2cgen
        import treelite
    except ImportError as exc:
        raise CompileFailed(f"tl2cgen is not installed ({exc})", "unavailable") from None
    return (sys.platform, platform.machine(), platform.python_implementation(),
            f"tl2cgen {tl2cgen.__version__}", f"treelite {treelite.__version__}", _compiler_version(compiler))


def _compiler_version(compiler: str) -> str:
    try:
        done = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CompileFailed(f"no C compiler: {compiler!r} cannot be run ({exc})", "unavailable") from None
    if done.returncode != 0:
        raise CompileFailed(f"no C compiler: `{compiler} --version` exited with {done.returncode}", "unavailable")
    return (done.stdout.strip().splitlines() or [compiler])[0]


def _library_suffix() -> str:
    return ".dll" if sys.platform == "win32" else ".dylib" if sys.platform == "darwin" else ".so"


def compile_library(model_bytes: bytes, path: Path, compiler: str, cancel: threading.Event | None = None) -> None:
    """Compile the XGBoost model (UBJSON bytes) to the shared library `path`, written atomically.

    The work runs in a child process (`python -m stellar_serving.compiled`) at lower priority, with the
    compilers it starts in its own process group: setting `cancel` ends them all (a server that stops
    does not wait for, or leave behind, a compile), and a crash in tl2cgen cannot take the server down."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{path.stem}-", dir=path.parent) as work:
        model_file, partial = Path(work) / "model.ubj", Path(work) / f"library{path.suffix}"
        model_file.write_bytes(model_bytes)
        child = subprocess.Popen([sys.executable, "-m", "stellar_serving.compiled", str(model_file), str(partial),
                                  compiler], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)
        output = _wait_for_child(child, cancel)
        if child.returncode == CHILD_UNAVAILABLE:
            raise CompileFailed(_last_line(output), "unavailable")
        if child.returncode != 0 or not partial.is_file():
            raise CompileFailed(f"compiling the trees with {compiler!r} failed: {_last_line(output)}")
        os.replace(partial, path)


def _wait_for_child(child: subprocess.Popen, cancel: threading.Event | None) -> str:
    while True:
        try:
            return child.communicate(timeout=0.5)[0] or ""
        except subprocess.TimeoutExpired:
            if cancel is not None and cancel.is_set():
                os.killpg(child.pid, signal.SIGKILL)
                child.communicate()
                raise CompileFailed("the compile was cancelled: the server is stopping", "cancelled") from None


def _compile_in_this_process(model_file: str, library: str, compiler: str) -> int:
    """The child's work: treelite reads the model, tl2cgen writes C and runs the compiler."""
    os.nice(COMPILE_NICENESS)  # the child and its compilers give way to the server's request threads
    try:
        import tl2cgen
        import treelite
    except ImportError as exc:
        print(f"tl2cgen is not installed ({exc})")
        return CHILD_UNAVAILABLE
    try:
        model = treelite.frontend.from_xgboost_ubjson(Path(model_file).read_bytes())
        # The trees spread over SOURCE_FILES files, one compiler per core at a time: gcc -O3
        # spends far more time on a few huge functions than on many small ones.
        tl2cgen.export_lib(model, toolchain=compiler, libpath=library, params={"parallel_comp": SOURCE_FILES},
                           nthread=max(1, os.cpu_count() or 1))
    except Exception as exc:  # tl2cgen reports a compiler failure as TL2cgenError, a missing one as ValueError
        print(_first_line(exc))
        return 1
    return 0


class CompiledPredictor:
    """The library's `predict(row, pred_margin, out)` for C-contiguous float32 [n, n_features] rows."""

    def __init__(self, path: Path, n_features: int, n_outputs: int) -> None:
        try:
            lib = ctypes.CDLL(str(path))
            self._predict = lib.predict
        except (OSError, AttributeError) as exc:
            raise CompileFailed(f"the compiled library {path.name} cannot be loaded: {exc}") from exc
        self._check_shape(lib, path, n_features, n_outputs)
        self._predict.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        self._predict.restype = None
        self._lib = lib  # keeps the library loaded as long as this object
        self.path = path
        self.n_features = n_features
        self.n_outputs = n_outputs

    @staticmethod
    def _check_shape(lib: ctypes.CDLL, path: Path, n_features: int, n_outputs: int) -> None:
        # predict() writes MAX_N_CLASS floats per row: a library for another shape would write past the output.
        lib.get_num_feature.restype = ctypes.c_int32
        lib.get_num_target.restype = ctypes.c_int32
        lib.get_leaf_output_type.restype = ctypes.c_char_p
        lib.get_threshold_type.restype = ctypes.c_char_p
        classes = (ctypes.c_int32 * 1)()
        targets = lib.get_num_target()
        if targets == 1:
            lib.get_num_class(classes)
        shape = (lib.get_num_feature(), targets, classes[0], lib.get_leaf_output_type(), lib.get_threshold_type())
        expected = (n_features, 1, n_outputs, b"float32", b"float32")
        if shape != expected:
            raise CompileFailed(f"the compiled library {path.name} has (features, targets, classes, leaf type, "
                                f"threshold type) {shape}, not {expected}")

    def __call__(self, features: np.ndarray) -> np.ndarray:
        features = np.ascontiguousarray(features, dtype=np.float32)
        n, m = features.shape
        if m != self.n_features:
            raise ValueError(f"expected {self.n_features} features per row, got {m}")
        missing = np.isnan(features)
        if missing.any():
            # The generated code reads a missing value as the int -1 in the slot (tl2cgen's Entry union).
            features = features.copy()
            features.view(np.int32)[missing] = -1
        out = np.zeros((n, self.n_outputs), dtype=np.float32)  # predict() adds the trees to what is there
        row_bytes, out_bytes = m * 4, self.n_outputs * 4
        rows, outs, predict = features.ctypes.data, out.ctypes.data, self._predict
        for k in range(n):
            predict(rows + k * row_bytes, 0, outs + k * out_bytes)
        return out


def max_difference(predict: Predict, reference: Predict, probe: np.ndarray) -> float:
    """Largest absolute probability difference between two predictors on the probe rows, one by one and together."""
    worst = 0.0
    for rows in (probe, probe[:1], probe[-7:]):
        got, want = np.asarray(predict(rows)), np.asarray(reference(rows))
        if got.shape != want.shape:
            return float("inf")
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        worst = max(worst, float(np.nanmax(diff)) if np.isfinite(diff).all() else float("inf"))
    return worst


def checked(predict: Predict, reference: Predict, probe: np.ndarray, tolerance: float = PROBE_TOLERANCE) -> Predict:
    """`predict`, once it answers `probe` within `tolerance` of `reference` (XGBoost); else CompileFailed."""
    worst = max_difference(predict, reference, probe)
    if not worst <= tolerance:
        raise CompileFailed(f"compiled predictor differed from XGBoost by {worst:.3g} on probe rows "
                            f"(at most {tolerance:g} allowed)", "mismatch")
    return predict


def prepare(model_bytes: bytes, version: str, cache_root: Path, compiler: str, reference: Predict,
            probe: np.ndarray, n_outputs: int, build: bool = True,
            cancel: threading.Event | None = None) -> Prepared | None:
    """The checked compiled predictor of this version: from the cache, or compiled now when `build`.

    None when it is not cached and `build` is False; CompileFailed says why there is none."""
    path = library_path(cache_root, version, model_bytes, compiler)
    outcome = "reused"
    if not path.is_file():
        if not build:
            return None
        compile_library(model_bytes, path, compiler, cancel)
        outcome = "compiled"
    predict = checked(CompiledPredictor(path, probe.shape[1], n_outputs), reference, probe)
    what = "compiled just now" if outcome == "compiled" else "reused from the model cache"
    return Prepared(predict, f"compiled trees (tl2cgen, {what}, within {PROBE_TOLERANCE:g} of XGBoost "
                             f"on probe rows)", outcome)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]


def _last_line(output: str, limit: int = 300) -> str:
    lines = [line for line in output.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else "no message")[:limit]


if __name__ == "__main__":
    raise SystemExit(_compile_in_this_process(*sys.argv[1:4]))
