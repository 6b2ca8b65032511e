"""The booster called through XGBoost's C API, with the per-call work done once.

`Booster.inplace_predict` spends about 120 us per call in Python before and
after the C prediction (argument checks, dispatch on the input type, building
two JSON strings, wrapping the output): as much as a whole 400-round
prediction for one object costs in C. The server's inputs are always the same
kind (C-contiguous float32 [n, 13]), so `DensePredictor` builds the
configuration string once and per call only formats the array interface,
calls `XGBoosterPredictFromDense` (the function `inplace_predict` calls for
numpy input, public in xgboost's c_api.h) and copies the result out.

`DensePredictor.for_booster` proves the call gives the same bits as
`inplace_predict` on probe rows before it is used; if the library lacks the
function or the answers differ, it returns plain `inplace_predict`.
"""

from __future__ import annotations

import ctypes
import functools
import json
import logging
from typing import Callable

import numpy as np

log = logging.getLogger("stellar_serving.booster_call")

Predict = Callable[[np.ndarray], np.ndarray]  # float32 [n, features] -> float32 [n, outputs]

_uint64_p = ctypes.POINTER(ctypes.c_uint64)
_float_p = ctypes.POINTER(ctypes.c_float)


class BoosterCallError(RuntimeError):
    """XGBoost refused a prediction; the message is XGBoost's."""


@functools.cache
def _library() -> ctypes.CDLL:
    import xgboost  # noqa: F401  (loads libxgboost and its OpenMP runtime first)
    from xgboost.libpath import find_lib_path

    # dlopen of the path xgboost loaded returns the same library, so booster
    # handles made by xgboost are valid here. Own CDLL object: setting argtypes
    # here leaves xgboost's function objects untouched.
    lib = ctypes.CDLL(find_lib_path()[0])
    fn = lib.XGBoosterPredictFromDense
    fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p,
                   ctypes.POINTER(_uint64_p), ctypes.POINTER(ctypes.c_uint64), ctypes.POINTER(_float_p)]
    fn.restype = ctypes.c_int
    lib.XGBGetLastError.restype = ctypes.c_char_p
    return lib


class DensePredictor:
    """`booster.inplace_predict(x)` for C-contiguous float32 [n, n_features] x, without the wrapper."""

    def __init__(self, booster, n_features: int, n_outputs: int) -> None:
        self._booster = booster  # holds the handle alive as long as this object
        self._handle = booster.handle
        self._lib = _library()
        self._call = self._lib.XGBoosterPredictFromDense
        self.n_features = n_features
        self.n_outputs = n_outputs
        # The configuration inplace_predict sends: probabilities, all trees, NaN missing.
        self._config = json.dumps({"type": 0, "training": False, "iteration_begin": 0, "iteration_end": 0,
                                   "missing": float("nan"), "strict_shape": False, "cache_id": 0}).encode()

    def __call__(self, features: np.ndarray) -> np.ndarray:
        if features.dtype != np.float32 or not features.flags.c_contiguous:
            features = np.ascontiguousarray(features, dtype=np.float32)
        n, m = features.shape
        if m != self.n_features:
            raise ValueError(f"expected {self.n_features} features per row, got {m}")
        interface = b'{"data": [%d, true], "shape": [%d, %d], "typestr": "<f4", "version": 3}' % (
            features.ctypes.data, n, m)
        shape, dims, preds = _uint64_p(), ctypes.c_uint64(), _float_p()
        status = self._call(self._handle, interface, self._config, None,
                            ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(preds))
        if status != 0:
            raise BoosterCallError((self._lib.XGBGetLastError() or b"unknown XGBoost error").decode("utf-8", "replace"))
        size = 1
        for k in range(dims.value):
            size *= shape[k]
        if size != n * self.n_outputs:
            raise BoosterCallError(f"XGBoost answered {size} values for {n} rows x {self.n_outputs} outputs")
        # The result lives in a per-thread buffer XGBoost reuses: copy it out now.
        out = np.empty((n, self.n_outputs), dtype=np.float32)
        ctypes.memmove(out.ctypes.data, preds, out.nbytes)
        return out

    @classmethod
    def for_booster(cls, booster, n_outputs: int, probe: np.ndarray) -> Predict:
        """A DensePredictor when it answers `probe` bit for bit as inplace_predict does; else inplace_predict."""
        probe = np.ascontiguousarray(probe, dtype=np.float32)

        def fallback(features: np.ndarray) -> np.ndarray:
            out = booster.inplace_predict(np.ascontiguousarray(features, dtype=np.float32))
            return np.asarray(out, dtype=np.float32).reshape(-1, n_outputs)

        try:
            fast = cls(booster, probe.shape[1], n_outputs)
            same = np.array_equal(fast(probe), fallback(probe)) and np.array_equal(fast(probe[:1]), fallback(probe[:1]))
        except (AttributeError, OSError, BoosterCallError, ValueError) as exc:
            log.warning("direct XGBoost call unavailable (%s); using Booster.inplace_predict", exc,
                        extra={"event": "booster_call_fallback"})
            return fallback
        if not same:
            log.warning("direct XGBoost call answers differently from inplace_predict; using inplace_predict",
                        extra={"event": "booster_call_fallback"})
            return fallback
        return fast
