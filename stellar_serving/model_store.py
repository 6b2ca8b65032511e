"""The champion in memory: loaded from the MLflow alias, cached locally, swapped atomically.

- `LoadedModel` is immutable. The store holds ONE reference to the current
  one; a request reads `store.current` once and uses that object for the whole
  call, so a response's version always matches its probabilities, and a swap
  (one attribute assignment) never fails or mixes a request.
- Every model that loaded and passed its contract check is copied to the cache
  folder; `last_good.json` names it. When the registry is unreachable at
  start-up the server serves that copy; when it becomes unreachable later the
  server keeps what it has.
- Every model is probed with objects spread over the input ranges before it
  is accepted: a finite (n, 3) probability matrix, rows summing to 1. A model
  that fails is refused (ModelRejected names why) and the current one stays.
  A version refused for its answers or its contract is not downloaded again
  by the poller (an explicit reload tries it once more); one that failed to
  load for a passing fault (I/O, memory) is tried again at the next reload.
- Reloads (the poller's and ReloadModel's) run on ONE reload thread, so a
  burst of callers shares registry round trips and never holds request threads.
  `request_reload()` joins a reload that has not read the alias yet, or queues
  one to run after the current one: a caller never gets an answer read before
  it asked (the poller, which does not care, joins the running one).
- Every request goes to the tree kernel (tree_kernel.py: XGBoost's
  arithmetic in a few lines of C over the trees laid out as arrays), built
  when the version is loaded (about half a second, off the request path) and
  checked against XGBoost on probe rows. Where it cannot be built (a model too
  deep for its padded arrays, no compiler, STELLAR_TREE_KERNEL=off), small
  requests (fewer than STELLAR_COMPILED_MAX_ROWS rows) go to the
  version's trees compiled to C (compiled.py) once they are ready: a library
  in the model cache is loaded with the version; otherwise XGBoost answers
  while the compile thread builds one (in a child process that stop() ends),
  then `settle_predictor` swaps in a copy
  of the same LoadedModel with the compiled predictor, only while that version
  is still the one served and still waiting for it (a late compile never
  replaces a newer model). `predictor` and `predictor_note` say which one
  answers and why.
- `add_listener` callbacks hear of every swap, in order, off the request
  path: the health status, and the servicer's C TreeSHAP build of the newest
  version (servicers.Explainer.prepare), start from them.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from stellar_core.contract import CLASSES, INPUT_RANGES, MODEL_INPUTS
from stellar_core.features import derive_feature_matrix
from stellar_mlflow.names import TAG_WINDOW_FIRST, TAG_WINDOW_LAST
from stellar_core.model_bundle import ContractMismatch, ModelBundle

from stellar_serving import compiled, tree_kernel
from stellar_serving.booster_call import DensePredictor, Predict
from stellar_serving.config import ServingConfig
from stellar_serving.metrics import ServerMetrics
from stellar_serving.treeshap import probe_features

log = logging.getLogger("stellar_serving.model_store")

LAST_GOOD_FILE = "last_good.json"
CACHE_LOCK_FILE = ".lock"
REGISTRY_FILE = "registry.json"  # version metadata saved beside a cached bundle


class RegistryUnavailable(RuntimeError):
    """The registry could not be asked (down, unreachable, refusing)."""


class NoChampion(RuntimeError):
    """The registry answered, but the alias names no version."""


class ModelRejected(RuntimeError):
    """The alias names a version this server cannot serve (bad contract, broken files, wrong answers).

    `lasting`: the version itself is at fault (contract, answers), so asking again cannot help;
    False for a fault of this load (I/O, memory) that the next try may not meet."""

    def __init__(self, message: str, lasting: bool = True) -> None:
        super().__init__(message)
        self.lasting = lasting


# Probe rows sum to 1 within this (float32 softmax rounding is ~1e-7).
PROBABILITY_SUM_TOLERANCE = 1e-3

PREDICTOR_XGBOOST = "xgboost"
PREDICTOR_COMPILED = "compiled"
PREDICTOR_KERNEL = "tree_kernel"
COMPILING_NOTE = "compiling the trees in the background; XGBoost answers until the compiled predictor is ready"
OFF_NOTE = "compiled predictor off (STELLAR_COMPILED_PREDICTOR=off): XGBoost answers every request"


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    alias: str
    run_id: str
    bundle: ModelBundle = field(repr=False, compare=False)
    loaded_at: float
    source: str  # "registry" or "cache"
    training_window: tuple[str, str] = ("", "")
    metrics: dict = field(default_factory=dict, compare=False)
    # Two direct booster calls (see booster_call.py). Small requests use a
    # single-threaded copy: concurrency comes from the server's threads (the
    # call releases the GIL); an OpenMP team per one-object call costs more than
    # the prediction, and on a busy machine a team waiting for a core stalls the
    # call for milliseconds. Requests of `parallel_batch_min` rows or more use
    # the booster's own threads. None: the bundle's inplace_predict.
    predict_small: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False, compare=False)
    predict_large: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False, compare=False)
    parallel_batch_min: int = 256
    # The trees compiled to C (compiled.py), for requests of fewer than compiled_max_rows rows.
    predict_compiled: Predict | None = field(default=None, repr=False, compare=False)
    compiled_max_rows: int = 0
    # The tree kernel (tree_kernel.py): when built, it answers every request.
    predict_kernel: Predict | None = field(default=None, repr=False, compare=False)
    kernel_note: str = ""  # why there is no tree kernel ("" when there is one, or it is switched off)
    predictor: str = PREDICTOR_XGBOOST  # what answers small requests: "tree_kernel", "compiled" or "xgboost"
    predictor_note: str = ""  # one sentence: why that one (or that the compiled one is on its way)

    @property
    def classes(self) -> tuple[str, ...]:
        return CLASSES  # ModelBundle.load refuses a contract with other classes

    @property
    def contract(self) -> dict:
        return self.bundle.contract

    @property
    def predictor_account(self) -> str:
        """What answers and why, for GetModelInfo: the predictor's note, and why the tree kernel does not."""
        if not self.kernel_note:
            return self.predictor_note
        return f"{self.predictor_note} (no tree kernel: {self.kernel_note})" if self.predictor_note else (
            f"no tree kernel: {self.kernel_note}")

    @property
    def compiling(self) -> bool:
        """Whether the compile thread is still building this version's compiled predictor."""
        return self.predictor_note == COMPILING_NOTE

    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        """float32 [n, 6] raw inputs -> float32 [n, 3]: derive_feature_matrix, then the booster."""
        rows = len(inputs)
        if self.predict_kernel is not None:
            predict = self.predict_kernel
        elif self.predict_compiled is not None and rows < self.compiled_max_rows:
            predict = self.predict_compiled
        else:
            predict = self.predict_small if rows < self.parallel_batch_min else self.predict_large
        return (predict or self.bundle.predict_proba_features)(derive_feature_matrix(inputs))


@dataclass(frozen=True)
class ReloadOutcome:
    previous: LoadedModel | None
    current: LoadedModel | None
    changed: bool


class ModelStore:
    def __init__(self, config: ServingConfig, metrics: ServerMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self._current: LoadedModel | None = None
        self._swap_lock = threading.Lock()  # a swap and a compiled predictor's check-then-swap never interleave
        self._compile_jobs: queue.Queue = queue.Queue()
        self._compile_thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()
        self._reloader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stellar-reload")
        self._reload_lock = threading.Lock()
        self._reload: Future | None = None  # the last reload submitted (running or queued)
        self._retry_refused = False  # an explicit reload asked: the next refresh tries a refused version again
        self._refused: tuple[str, str] | None = None  # (version, why): not downloaded again
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._listeners: list[Callable[[LoadedModel], None]] = []
        self._client = None
        self.cache_root = Path(config.cache_dir).expanduser().resolve() / config.model_name
        config.set_mlflow_http_defaults()

    # -- what requests use -------------------------------------------------
    @property
    def current(self) -> LoadedModel | None:
        return self._current

    def add_listener(self, listener: Callable[[LoadedModel], None]) -> None:
        """Call `listener(model)` at every swap: a new version, and each copy of one (its source
        confirmed, its compiled predictor settled). Called in swap order, under the swap lock and
        never on a request thread: a listener must be quick (start work elsewhere) and not raise."""
        self._listeners.append(listener)

    # -- lifecycle ------------------------------------------------------------
    def start(self) -> None:
        """Load the champion (or the cached last good model), then poll in the background."""
        try:
            self.refresh()
        except Exception as exc:  # whatever went wrong, the cached last good model may serve
            log.warning("champion not loaded from the registry: %s", exc, extra={"event": "registry_fallback"})
            if self.load_from_cache() is None:
                log.error("no cached model either: NOT_SERVING until a champion appears",
                          extra={"event": "no_model"})
        if self.config.poll_seconds > 0:
            self._poller = threading.Thread(target=self._poll, name="stellar-alias-poller", daemon=True)
            self._poller.start()

    def stop(self) -> None:
        self._stop.set()
        self._compile_jobs.put(None)
        self._reloader.shutdown(wait=False, cancel_futures=True)
        if self._poller is not None:
            self._poller.join(timeout=5)

    def request_reload(self, explicit: bool = True) -> Future:
        """A Future of the ReloadOutcome, shared with other callers.

        explicit (ReloadModel): the outcome of a reload that reads the alias after this call,
        which also tries a refused version once more. Not explicit (the poller): any reload."""
        with self._reload_lock:
            latest = self._reload
            if explicit:
                self._retry_refused = True
            if latest is not None and not latest.done() and not (explicit and latest.running()):
                return latest
            # Nothing to join, or the running reload may have read the alias before this call:
            # at most one reload waits behind it (later callers join that one).
            self._reload = self._reloader.submit(self.refresh)
            return self._reload

    def _take_retry_refused(self) -> bool:
        with self._reload_lock:
            retry, self._retry_refused = self._retry_refused, False
            return retry

    def serving_note(self) -> str:
        """What a failed reload leaves in place, for messages."""
        current = self._current
        return f"still serving the previous model (version {current.version})" if current else "no model is loaded"

    def _poll(self) -> None:
        while not self._stop.wait(self.config.poll_seconds):
            try:
                self.request_reload(explicit=False).result()
            except Exception as exc:  # keep polling; the current model keeps serving
                log.warning("alias poll failed, still serving %s: %s",
                            self._current.version if self._current else "nothing", exc,
                            extra={"event": "poll_failed"})

    # -- registry ---------------------------------------------------------------
    def _registry(self):
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.config.tracking_uri or None,
                                        registry_uri=self.config.tracking_uri or None)
        return self._client

    def refresh(self) -> ReloadOutcome:
        """Ask the registry which version the alias names; swap it in if it is new."""
        from stellar_mlflow.registry import download_bundle, get_alias_version

        with self._refresh_lock:
            retry_refused = self._take_retry_refused()
            previous = self._current
            try:
                version = get_alias_version(self._registry(), self.config.model_name, self.config.model_alias)
            except Exception as exc:
                self._count("failed")
                raise RegistryUnavailable(
                    f"model registry at {self.config.tracking_uri or '(MLflow default)'} unreachable: "
                    f"{type(exc).__name__}: {_short(exc)}") from exc
            if version is None:
                self._count("failed")
                raise NoChampion(f"registered model {self.config.model_name!r} has no alias "
                                 f"{self.config.model_alias!r}")
            if self._refused is not None and self._refused[0] == str(version.version) and not retry_refused:
                self._count("failed")
                raise ModelRejected(self._refused[1])
            if previous is not None and previous.version == str(version.version) and previous.source == "registry":
                self._count("unchanged")
                return ReloadOutcome(previous, previous, False)
            if previous is not None and previous.version == str(version.version):
                # Started from the cache while the registry was down: same model, now confirmed.
                current = _replace_source(previous, "registry")
                self._swap(current)
                self._count("unchanged")
                return ReloadOutcome(previous, current, False)

            self.cache_root.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".v{version.version}-", dir=self.cache_root))
            try:
                try:
                    bundle_dir = download_bundle(self._registry(), version, staging)
                except Exception as exc:
                    self._count("failed")
                    raise RegistryUnavailable(f"could not download version {version.version}: {_short(exc)}") from exc
                meta = {
                    "name": self.config.model_name,
                    "version": str(version.version),
                    "alias": self.config.model_alias,
                    "run_id": version.run_id or "",
                    "tags": dict(version.tags or {}),
                }
                try:
                    model = self._load(bundle_dir, meta, source="registry")
                except ModelRejected as exc:
                    if exc.lasting:
                        self._refused = (str(version.version), str(exc))
                    log.error("refused version %s: %s; %s", version.version, exc, self.serving_note(),
                              extra={"event": "model_refused", "model_version": str(version.version)})
                    raise
                (Path(bundle_dir) / REGISTRY_FILE).write_text(json.dumps(meta, indent=2))
                final = self.cache_root / f"v{version.version}"
                with self._cache_lock():
                    if final.exists():
                        shutil.rmtree(final)
                    os.replace(bundle_dir, final)
                    self._write_last_good(final)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            model, compile_job = self._with_predictor(model)
            self._swap(model)
            self._compile_later(compile_job)
            self._count("swapped")
            with self._cache_lock():
                self._prune(keep={final.name, f"v{previous.version}" if previous else ""})
            return ReloadOutcome(previous, model, True)

    # -- cache --------------------------------------------------------------------
    def load_from_cache(self) -> LoadedModel | None:
        pointer = self.cache_root / LAST_GOOD_FILE
        if not pointer.exists():
            return None
        try:
            folder = self.cache_root / json.loads(pointer.read_text())["folder"]
            meta = json.loads((folder / REGISTRY_FILE).read_text())
            model = self._load(folder, meta, source="cache")
        except Exception as exc:
            log.error("cached model unusable: %s", exc, extra={"event": "cache_unusable"})
            return None
        model, compile_job = self._with_predictor(model)
        self._swap(model)
        self._compile_later(compile_job)
        log.warning("serving cached model %s v%s", model.name, model.version, extra={"event": "serving_cache"})
        return model

    @contextlib.contextmanager
    def _cache_lock(self):
        """Held while the cache's folders and pointer change: the server processes of one
        host (STELLAR_SERVER_PROCESSES) share the cache, and swap the same version at once."""
        with open(self.cache_root / CACHE_LOCK_FILE, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _write_last_good(self, folder: Path) -> None:
        tmp = self.cache_root / (LAST_GOOD_FILE + ".tmp")
        tmp.write_text(json.dumps({"folder": folder.name, "written_at": time.time()}))
        os.replace(tmp, self.cache_root / LAST_GOOD_FILE)

    def _prune(self, keep: set[str]) -> None:
        for child in self.cache_root.iterdir():
            if child.is_dir() and child.name.startswith("v") and child.name not in keep:
                shutil.rmtree(child, ignore_errors=True)
        libraries = self.cache_root / compiled.COMPILED_DIR
        for library in (libraries.iterdir() if libraries.is_dir() else ()):
            # v<version>-<key>.so: kept with its version's bundle
            if library.name.startswith("v") and library.name.split("-")[0] not in keep:
                library.unlink(missing_ok=True)

    # -- loading and swapping -------------------------------------------------------
    def _load(self, folder: Path, meta: dict, source: str) -> LoadedModel:
        """The bundle in `folder` as a LoadedModel, or ModelRejected naming what is wrong."""
        try:
            bundle = ModelBundle.load(folder)  # checks the contract
            return self._accept(bundle, meta, source)
        except Exception as exc:
            self._count("failed")
            reason = str(exc) if isinstance(exc, ModelRejected) else f"{type(exc).__name__}: {_short(exc)}"
            # Wrong answers and a wrong contract stay wrong; anything else (a full disk, memory) may pass.
            lasting = isinstance(exc, (ModelRejected, ContractMismatch))
            raise ModelRejected(f"version {meta.get('version')} cannot be served: {reason}", lasting) from exc

    def _accept(self, bundle: ModelBundle, meta: dict, source: str) -> LoadedModel:
        # Probe objects spread over the input ranges: they prove the model answers
        # probabilities, warm it up (the first prediction allocates), and hold the
        # direct booster calls below to inplace_predict's exact answers.
        probes = _probe_features()
        _check_probabilities(np.asarray(bundle.booster.inplace_predict(probes)), len(probes), "the booster")
        tags = meta.get("tags") or {}
        card = bundle.card or {}
        window = (
            tags.get(TAG_WINDOW_FIRST) or _card_window(card, "first"),
            tags.get(TAG_WINDOW_LAST) or _card_window(card, "last"),
        )
        metrics = {k: float(v) for k, v in (card.get("metrics") or {}).items() if _is_number(v)}
        if self.config.predict_threads > 0:
            bundle.booster.set_param({"nthread": self.config.predict_threads})
        single = bundle.booster.copy()
        single.set_param({"nthread": 1})
        predict_small = DensePredictor.for_booster(single, len(CLASSES), probes)
        predict_large = DensePredictor.for_booster(bundle.booster, len(CLASSES), probes)
        _check_probabilities(predict_small(probes[:1]), 1, "the one-thread prediction")
        _check_probabilities(predict_large(probes), len(probes), "the prediction")
        kernel, kernel_note = self._tree_kernel(bundle.booster, predict_small, str(meta["version"]))
        return LoadedModel(
            name=meta.get("name", self.config.model_name), version=str(meta["version"]),
            alias=meta.get("alias", self.config.model_alias), run_id=meta.get("run_id", ""),
            bundle=bundle, loaded_at=time.time(), source=source,
            training_window=(window[0] or "", window[1] or ""), metrics=metrics,
            predict_small=predict_small, predict_large=predict_large,
            parallel_batch_min=self.config.parallel_batch_min,
            predict_kernel=kernel, kernel_note=kernel_note,
            **({"predictor": PREDICTOR_KERNEL, "predictor_note": _kernel_note(kernel)} if kernel else {}),
        )

    def _tree_kernel(self, booster, reference: Predict, version: str) -> tuple[Predict | None, str]:
        """The version's tree kernel, checked against `reference` (XGBoost); else None and why not."""
        if self.config.tree_kernel == "off":
            self._count_kernel("off")
            return None, ""
        try:
            kernel = tree_kernel.build(booster, reference, _kernel_probe_features(), self.config.compiled_compiler,
                                       threads=self.config.predict_threads or None,
                                       split_min_rows=self.config.parallel_batch_min)
        except Exception as exc:  # KernelUnavailable, or anything else: XGBoost (or tl2cgen) answers
            reason = str(exc) if isinstance(exc, tree_kernel.KernelUnavailable) else (
                f"building the tree kernel failed: {type(exc).__name__}: {_short(exc)}")
            self._count_kernel("unavailable")
            log.warning("no tree kernel for v%s: %s", version, reason,
                        extra={"event": "tree_kernel_fallback", "model_version": version})
            return None, reason
        self._count_kernel("built")
        return kernel, ""

    def _swap(self, model: LoadedModel) -> None:
        with self._swap_lock:
            self._swap_locked(model)

    def _swap_locked(self, model: LoadedModel) -> None:
        old = self._current
        self._current = model  # the atomic swap: one reference assignment
        log.info("serving %s v%s (from %s, %s predictor)%s", model.name, model.version, model.source,
                 model.predictor, f", replacing v{old.version}" if old else "",
                 extra={"event": "model_swapped", "model_version": model.version, "source": model.source,
                        "predictor": model.predictor})
        if self.metrics is not None:
            self.metrics.set_model(model.name, model.version, model.source, model.loaded_at, model.predictor)
        for listener in self._listeners:
            listener(model)

    # -- the compiled predictor -------------------------------------------------------
    def _with_predictor(self, model: LoadedModel) -> tuple[LoadedModel, Callable[[], None] | None]:
        """`model` with its compiled predictor when the cache has one; else on XGBoost, with
        the compile job to start once it serves (None: nothing to compile)."""
        if model.predict_kernel is not None:
            return model, None  # the kernel answers every request: nothing to compile
        if self.config.compiled_predictor == "off":
            self._count_compile("off")
            return replace(model, predictor_note=OFF_NOTE), None
        probes, reference = _compiled_probe_features(), model.predict_small
        try:
            model_bytes = bytes(model.bundle.booster.save_raw(raw_format="ubj"))
            prepared = compiled.prepare(model_bytes, model.version, self.cache_root, self.config.compiled_compiler,
                                        reference, probes, len(CLASSES), build=False)
        except Exception as exc:
            return replace(model, predictor_note=self._compile_failed(model.version, exc)), None
        if prepared is None:
            return replace(model, predictor_note=COMPILING_NOTE), (
                lambda: self._compile(model.version, model_bytes, reference, probes))
        self._count_compile(prepared.outcome)
        return self._compiled_copy(model, prepared.predict, prepared.note), None

    def _compiled_copy(self, model: LoadedModel, predict: Predict, note: str) -> LoadedModel:
        rows = self.config.compiled_max_rows
        return replace(model, predict_compiled=predict, compiled_max_rows=rows, predictor=PREDICTOR_COMPILED,
                       predictor_note=f"{note} answer requests of fewer than {rows} rows; XGBoost answers larger ones")

    def _compile_later(self, job: Callable[[], None] | None) -> None:
        if job is None:
            return
        with self._swap_lock:
            if self._compile_thread is None:
                # A daemon thread: a compile under way never holds up the process's exit.
                self._compile_thread = threading.Thread(target=self._run_compiles, name="stellar-compile", daemon=True)
                self._compile_thread.start()
        self._compile_jobs.put(job)

    def _run_compiles(self) -> None:
        while (job := self._compile_jobs.get()) is not None and not self._stop.is_set():
            job()

    def _compile(self, version: str, model_bytes: bytes, reference: Predict, probes: np.ndarray) -> None:
        current = self._current
        if current is None or current.version != version:
            self._count_compile("skipped")  # swapped out while queued; a new load of it queues it again
            return
        try:
            prepared = compiled.prepare(model_bytes, version, self.cache_root, self.config.compiled_compiler,
                                        reference, probes, len(CLASSES), cancel=self._stop)
        except Exception as exc:
            self.settle_predictor(version, None, self._compile_failed(version, exc))
            return
        self._count_compile(prepared.outcome)
        if self.settle_predictor(version, prepared.predict, prepared.note):
            log.info("compiled predictor serves v%s", version,
                     extra={"event": "compiled_predictor", "model_version": version, "outcome": prepared.outcome})

    def settle_predictor(self, version: str, predict: Predict | None, note: str) -> bool:
        """Swap in the outcome of `version`'s compile (its predictor, or None and why not) if that
        version is still served and still waiting for it; False (nothing changed) otherwise."""
        with self._swap_lock:
            current = self._current
            if current is None or current.version != version or current.predictor_note != COMPILING_NOTE:
                return False
            settled = (self._compiled_copy(current, predict, note) if predict is not None
                       else replace(current, predictor_note=note))
            self._swap_locked(settled)
            return True

    def _compile_failed(self, version: str, exc: Exception) -> str:
        """The note for a version left on XGBoost by `exc`; counted and logged."""
        if isinstance(exc, compiled.CompileFailed):
            reason, outcome = str(exc), exc.outcome
        else:
            reason, outcome = f"preparing the compiled predictor failed: {type(exc).__name__}: {_short(exc)}", "failed"
        self._count_compile(outcome)
        log.warning("no compiled predictor for v%s, XGBoost answers: %s", version, reason,
                    extra={"event": "compiled_predictor_fallback", "model_version": version, "outcome": outcome})
        return f"XGBoost answers every request: {reason}"

    def _count_compile(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.compiles.labels(outcome).inc()

    def _count_kernel(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.tree_kernels.labels(outcome).inc()

    def _count(self, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.reloads.labels(outcome).inc()


def _probe_features() -> np.ndarray:
    """64 objects spread over the input ranges, as float32 [64, 13] features."""
    rows = np.linspace(0.05, 0.95, 64, dtype=np.float64)[:, None]
    low = np.array([INPUT_RANGES[n][0] for n in MODEL_INPUTS])
    high = np.array([INPUT_RANGES[n][1] for n in MODEL_INPUTS])
    return derive_feature_matrix((low + rows * (high - low)).astype(np.float32))


def _compiled_probe_features() -> np.ndarray:
    """The spread probes plus 192 seeded random objects in the input ranges: more paths through the trees."""
    rng = np.random.default_rng(14)
    low = np.array([INPUT_RANGES[n][0] for n in MODEL_INPUTS])
    high = np.array([INPUT_RANGES[n][1] for n in MODEL_INPUTS])
    random = derive_feature_matrix((low + rng.random((192, len(MODEL_INPUTS))) * (high - low)).astype(np.float32))
    return np.ascontiguousarray(np.concatenate([_probe_features(), random]), dtype=np.float32)


def _kernel_probe_features() -> np.ndarray:
    """The compiled predictor's probes, and rows with missing values: every branch of the kernel's walk."""
    return np.ascontiguousarray(np.concatenate([_compiled_probe_features(), probe_features()[-16:]]))


def _kernel_note(kernel) -> str:
    return (f"the tree kernel answers every request (XGBoost's arithmetic over the trees as arrays, built at load; "
            f"largest difference from XGBoost on probe rows {kernel.probe_difference:.3g})")


def _check_probabilities(proba: np.ndarray, n: int, what: str) -> None:
    """ModelRejected unless `proba` is a finite [n, len(CLASSES)] matrix of probabilities summing to 1 per row."""
    expected = (n, len(CLASSES))
    if proba.shape != expected:
        raise ModelRejected(f"{what} answered shape {list(proba.shape)} for {n} probe objects; a model must answer "
                            f"{list(expected)}: one probability per class {list(CLASSES)} (objective multi:softprob)")
    if not np.all(np.isfinite(proba)):
        raise ModelRejected(f"{what} answered non-finite probabilities for probe objects")
    if proba.min() < 0 or proba.max() > 1:
        raise ModelRejected(f"{what} answered values outside [0, 1] ({proba.min():.6g}..{proba.max():.6g})")
    sums = proba.sum(axis=1, dtype=np.float64)
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > PROBABILITY_SUM_TOLERANCE:
        raise ModelRejected(f"{what} answered probabilities summing to {sums[worst]:.6g} (not 1) "
                            f"for probe object {worst}")


def _replace_source(model: LoadedModel, source: str) -> LoadedModel:
    from dataclasses import replace

    return replace(model, source=source)


def _card_window(card: dict, which: str) -> str:
    for key in (f"training_window_{which}_week", f"{which}_week"):
        if card.get(key):
            return str(card[key])
    window = card.get("training_window")
    if isinstance(window, dict):
        for key in (f"{which}_week", which):
            if window.get(key):
                return str(window[key])
    if isinstance(window, (list, tuple)) and len(window) == 2:
        return str(window[0 if which == "first" else 1])
    return ""


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:limit]
