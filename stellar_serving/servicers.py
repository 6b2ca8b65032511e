"""The two gRPC faces of the champion: stellar.v1.ClassifierService and inference.GRPCInferenceService.

Per request: read `store.current` ONCE (one immutable LoadedModel), pack the
request straight into float32 [n, 6] (no pandas), derive the 13 features with
stellar_core.features.derive_feature_matrix, call the booster's
inplace_predict, answer with that model's version. Explain asks the same
model's TreeSHAP contributions: C TreeSHAP, built in the background as each
version is swapped in, else XGBoost's `pred_contribs` (see Explainer).

Invalid input ends the call with INVALID_ARGUMENT: a readable message, and a
google.rpc.BadRequest detail listing the field violations (stellar_api.status_details).
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FutureTimeout
import threading
import time
from importlib import metadata
from typing import TYPE_CHECKING

import grpc
import numpy as np

from stellar_core.contract import CLASSES, CONTRACT_VERSION, INPUT_RANGES, MODEL_INPUTS
from stellar_core.features import FEATURE_NAMES, derive_feature_matrix

from stellar_api._generated.inference import grpc_predict_v2_pb2 as v2
from stellar_api._generated.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc
from stellar_api.status_details import FieldViolation, bad_request_trailer
from stellar_serving import treeshap, wire
from stellar_serving.batching import MicroBatcher
from stellar_serving.config import ServingConfig
from stellar_serving.metrics import ServerMetrics
from stellar_serving.model_store import LoadedModel, ModelRejected, ModelStore, NoChampion, RegistryUnavailable
from stellar_serving.request_decoder import DecodedObjects

if TYPE_CHECKING:
    from stellar_serving.peers import Peers
from stellar_api.validation import (COLOUR_TOLERANCE, OBJECTS_FIELD, SINGLE_OBJECT_FIELD, InvalidInput,
                                        bounded, check_client_id, features_to_inputs, objects_to_inputs)

log = logging.getLogger("stellar_serving.servicers")

# Open Inference Protocol tensor names, as NVIDIA Triton's FIL backend names them.
INPUT_TENSOR = "input__0"
PROBA_TENSOR = "output__0"
CLASS_TENSOR = "output__1"
N_FEATURES = len(FEATURE_NAMES)
ECHO_LIMIT = 100  # characters of a client's value that an error message repeats
# TreeSHAP costs ~10x a prediction per object (~8-20 ms for one object of a 400-round,
# depth-6 model on this 2-core machine): a bound keeps one call from holding a thread for seconds.
EXPLAIN_MAX_OBJECTS = 100
# Class name (as the model's classes) -> stellar.v1 ObjectClass value.
CLASS_ENUM = {name: pb.ObjectClass.Value(f"OBJECT_CLASS_{name}") for name in CLASSES}


def _echo(value) -> str:
    return bounded(value if isinstance(value, str) else repr(value), ECHO_LIMIT)


def _current(store: ModelStore, context: grpc.ServicerContext) -> LoadedModel:
    model = store.current
    if model is None:
        context.abort(grpc.StatusCode.UNAVAILABLE,
                      "no model loaded yet (the registry has no champion and there is no cached model)")
    return model


def _refuse(context: grpc.ServicerContext, problem: InvalidInput) -> None:
    """End the call with INVALID_ARGUMENT: the readable message, and the field violations as BadRequest."""
    message = str(problem)
    if problem.violations:
        context.set_trailing_metadata(
            (bad_request_trailer(grpc.StatusCode.INVALID_ARGUMENT, message, problem.violations),))
    context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)


def _check_deadline(context: grpc.ServicerContext) -> None:
    remaining = context.time_remaining()
    if remaining is not None and remaining <= 0:
        context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the model ran")


class _Predicting:
    """What both APIs share: the store, the settings, the metrics and ONE micro-batcher
    (stellar.v1 and v2 calls are predicted together)."""

    def __init__(self, store: ModelStore, config: ServingConfig, metrics: ServerMetrics,
                 batcher: MicroBatcher) -> None:
        self.store = store
        self.config = config
        self.metrics = metrics
        self.batcher = batcher

    def _predict(self, model: LoadedModel, inputs: np.ndarray, method: str) -> np.ndarray:
        proba = self.batcher.predict(model, inputs)
        self.metrics.batch_size_of(method).observe(len(inputs))
        self.metrics.objects_of(method).inc(len(inputs))
        return proba


class ClassifierServicer(_Predicting, pb_grpc.ClassifierServiceServicer):
    def __init__(self, store: ModelStore, config: ServingConfig, metrics: ServerMetrics,
                 batcher: MicroBatcher, peers: "Peers | None" = None) -> None:
        super().__init__(store, config, metrics, batcher)
        self.peers = peers  # the other server processes on this port (stellar_serving.processes), if any
        self.explainer = Explainer(config.compiled_compiler if config.explainer == "auto" else None)
        # Each version's C TreeSHAP is built as it is swapped in, off the request path.
        store.add_listener(self.explainer.prepare)

    # -- classification -----------------------------------------------------------
    def _inputs(self, objects, what: str, context, field: str = OBJECTS_FIELD,
                max_client_id: int | None = None) -> np.ndarray:
        try:
            # Client ids are checked as the response copies them: reading them all twice cost ~3 ms a batch.
            return objects_to_inputs(objects, self.config.max_batch_size, what, max_client_id=max_client_id,
                                     field=field)
        except InvalidInput as exc:
            _refuse(context, exc)

    def _classify(self, objects, what: str, context, method: str, field: str = OBJECTS_FIELD):
        """The objects' classifications, as (client ids, probabilities, the encoder of the model that answered)."""
        if type(objects) is DecodedObjects:  # read from the wire bytes and checked (request_decoder.py)
            _check_deadline(context)
            model = _current(self.store, context)
            return objects.client_ids, self._predict(model, objects.inputs, method), _encoder(model)
        inputs = self._inputs(objects, what, context, field)
        _check_deadline(context)
        model = _current(self.store, context)
        proba = self._predict(model, inputs, method)
        try:
            client_ids = _client_ids(objects, self.config.max_client_id_chars, what, field)
        except InvalidInput as exc:
            _refuse(context, exc)
        return client_ids, proba, _encoder(model)

    # The responses go out as wire bytes (stellar_serving.wire; the server sends bytes as they are).
    def Classify(self, request, context):
        if not request.HasField("object"):
            message = "ClassifyRequest.object is missing"
            _refuse(context, InvalidInput(message, [FieldViolation(SINGLE_OBJECT_FIELD, message)]))
        (client_id,), proba, encoder = self._classify([request.object], "request", context, "Classify",
                                                      field=SINGLE_OBJECT_FIELD)
        return encoder.single(client_id, proba)

    def ClassifyBatch(self, request, context):
        client_ids, proba, encoder = self._classify(_objects(request), "batch", context, "ClassifyBatch")
        return encoder.batch(client_ids, proba)

    def ClassifyStream(self, request_iterator, context):
        # The server's StreamGuard bounds open streams and ends idle ones.
        for index, request in enumerate(request_iterator):
            # Each message reads the current model again: a long stream picks
            # up a new champion between messages, and each response names it.
            client_ids, proba, encoder = self._classify(_objects(request), f"stream message {index}", context,
                                                        "ClassifyStream")
            yield encoder.batch(client_ids, proba)

    # -- explanation --------------------------------------------------------------------
    def Explain(self, request, context):
        if len(request.objects) > EXPLAIN_MAX_OBJECTS:
            message = (f"Explain takes at most {EXPLAIN_MAX_OBJECTS} objects per call, got {len(request.objects)}: "
                       "split the request")
            _refuse(context, InvalidInput(message, [FieldViolation(OBJECTS_FIELD, message)]))
        inputs = self._inputs(request.objects, "batch", context, max_client_id=self.config.max_client_id_chars)
        _check_deadline(context)
        model = _current(self.store, context)  # once: every explanation comes from this version
        contributions = self.explainer.contributions(model, inputs)
        self.metrics.batch_size_of("Explain").observe(len(inputs))
        self.metrics.objects_of("Explain").inc(len(inputs))
        return explain_response(request.objects, contributions, model)

    # -- model ------------------------------------------------------------------------
    def GetModelInfo(self, request, context):
        model = _current(self.store, context)
        info = model_info(model)
        info.explainer, info.explainer_note = self.explainer.describe(model)
        return info

    def ReloadModel(self, request, context):
        # The reload runs on the store's reload thread, shared with every caller
        # that arrives before it reads the alias; this call only waits, within its deadline.
        reload = self.store.request_reload(explicit=True)
        if self.peers is not None:
            self.peers.reload()  # every process looks the alias up now, not at its next poll
        remaining = context.time_remaining()
        wait = self.config.reload_timeout_seconds if remaining is None else min(remaining, self.config.reload_timeout_seconds)
        started = time.monotonic()
        try:
            outcome = reload.result(timeout=max(0.0, wait))
        except FutureTimeout:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                          f"the reload did not finish within {wait:.3g} s (the registry is slow); it goes on in "
                          f"the background; {self.store.serving_note()}")
        except CancelledError:  # a reload still queued when the server stopped
            context.abort(grpc.StatusCode.UNAVAILABLE, "the server is shutting down; retry on another replica")
        except RegistryUnavailable as exc:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}; {self.store.serving_note()}")
        except (NoChampion, ModelRejected) as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{exc}; {self.store.serving_note()}")
        if self.peers is not None:
            # Answered once every process serves the version, so the caller's next call does, on any connection.
            self.peers.wait_until_serving(outcome.current.version, max(0.0, wait - (time.monotonic() - started)))
        previous = outcome.previous.version if outcome.previous else ""
        return pb.ReloadModelResponse(previous_version=previous, version=outcome.current.version,
                                      changed=outcome.changed, source=outcome.current.source)


def _objects(request):
    """A batch or stream message's objects: read from its bytes (DecodedObjects) when it was plainly valid,
    else the message's repeated field."""
    return request if type(request) is DecodedObjects else request.objects


def _client_ids(objects, max_client_id: int, what: str, field: str = OBJECTS_FIELD) -> list[str]:
    """The objects' client ids, read once; InvalidInput naming the first one longer than `max_client_id`."""
    client_ids = [obj.client_id for obj in objects]
    if max(map(len, client_ids)) > max_client_id:
        index = next(k for k, client_id in enumerate(client_ids) if len(client_id) > max_client_id)
        check_client_id(client_ids[index], index, max_client_id, what, field)
    return client_ids


def _encoder(model: LoadedModel) -> wire.ResultEncoder:
    classes = tuple(model.classes)
    return wire.encoder_for(classes, tuple(CLASS_ENUM[label] for label in classes), model.version)


class Explainer:
    """TreeSHAP contributions of a model: C TreeSHAP (treeshap.py) once ready, else XGBoost `pred_contribs`.

    `prepare(model)` runs as each version is swapped in (a ModelStore listener):
    the C explainer of the newest version is built in a background thread (flat
    arrays, a compile, a check against pred_contribs on probe rows: about 2 s for
    400 rounds), after that version's compiled predictor has settled so a
    version's two compiles do not compete for the cores. XGBoost answers until then, and for good if
    the build fails (`describe` says why). One thread builds, one version at a
    time; when it finishes it builds the newest version prepared meanwhile, so a
    swap during a build never loses the newer build. Explainers are keyed by the
    model's booster (a version's compiled-predictor copy shares it: built once),
    which a request reads once with its model: contributions always come from the
    version that answers, across hot swaps.

    XGBoost's small requests use a single-threaded copy of the booster, made once
    per booster (as LoadedModel's small predictions do) and shared with the build's
    check: an OpenMP team for one row costs more than it saves, and stalls on a
    busy machine. Larger ones use the booster itself. Booster.predict is
    thread-safe; the copy is never changed after it is made.
    """

    C_TREESHAP, XGBOOST = "c_treeshap", "xgboost"
    OFF_NOTE = "STELLAR_EXPLAINER=xgboost: XGBoost pred_contribs explains"
    PREPARING_NOTE = "C TreeSHAP is being prepared; XGBoost pred_contribs answers until it is ready"

    def __init__(self, compiler: str | None = "gcc") -> None:
        """`compiler`: the C compiler for C TreeSHAP; None: XGBoost explains every model."""
        self._lock = threading.Lock()
        self._compiler = compiler
        # (booster, its single-threaded copy): keyed by the booster, which a model's copies
        # (the same version with another predictor) share.
        self._single: tuple[object, object] | None = None
        # (booster, its C explainer or None when it could not be built, why): the last one settled.
        self._c_treeshap: tuple[object, treeshap.TreeShap | None, str] | None = None
        self._wanted: tuple[object, str] | None = None  # (booster, version): the newest version to build
        self._building: object | None = None  # the booster the build thread works on; None: no thread

    def prepare(self, model: LoadedModel) -> None:
        """Build `model`'s C explainer in the background unless it is built, under way or off.

        Quick and never raises: it runs as the store swaps a version in. A version still
        waiting for its compiled predictor waits: its settled copy is prepared in turn."""
        if self._compiler is None:
            return
        booster = model.bundle.booster
        with self._lock:
            # Older versions are never built once a newer one is swapped in.
            self._wanted = None if model.compiling else (booster, model.version)
            if self._wanted is None or self._building is not None or self._settled(booster):
                return  # a running build thread takes the newest wanted version when it ends
            self._building = booster
        try:
            threading.Thread(target=self._build_newest, daemon=True, name="stellar-treeshap").start()
        except RuntimeError as exc:  # no thread to be had: XGBoost explains, the next swap tries again
            with self._lock:
                self._building = None
            log.warning("C TreeSHAP build not started for v%s: %s", model.version, exc,
                        extra={"event": "treeshap_fallback", "model_version": model.version})

    def contributions(self, model: LoadedModel, inputs: np.ndarray) -> np.ndarray:
        """float32 [n, 6] inputs -> float32 [n, classes, features + 1]; the last column is the bias."""
        features = derive_feature_matrix(inputs)
        explain = self.c_explainer(model)
        if explain is not None:
            return explain(features).astype(np.float32)
        return self._xgboost(model, features)

    def c_explainer(self, model: LoadedModel) -> treeshap.TreeShap | None:
        """The model's checked C explainer; None until it is built, or if it cannot be."""
        with self._lock:
            settled = self._c_treeshap
            return settled[1] if self._settled(model.bundle.booster) else None

    def describe(self, model: LoadedModel) -> tuple[str, str]:
        """(which explainer answers `model`'s Explain calls now, why): for GetModelInfo."""
        booster = model.bundle.booster
        with self._lock:
            settled, wanted = self._c_treeshap, self._wanted
            if self._settled(booster):
                return (self.C_TREESHAP if settled[1] is not None else self.XGBOOST), settled[2]
            if self._compiler is None:
                return self.XGBOOST, self.OFF_NOTE
            if booster is self._building or (wanted is not None and wanted[0] is booster):
                return self.XGBOOST, self.PREPARING_NOTE
        if model.compiling:
            return self.XGBOOST, (f"C TreeSHAP for v{model.version} is prepared once its compiled predictor "
                                  "is ready; XGBoost pred_contribs answers until then")
        return self.XGBOOST, (f"C TreeSHAP is prepared for the newest version only; XGBoost pred_contribs "
                              f"explains v{model.version}")

    def _settled(self, booster) -> bool:
        """Whether `booster`'s build has settled (built or failed); under the lock."""
        return self._c_treeshap is not None and self._c_treeshap[0] is booster

    def _build_newest(self) -> None:
        """The build thread: builds the newest wanted version until it has settled."""
        while True:
            with self._lock:
                wanted = self._wanted
                if wanted is None or self._settled(wanted[0]):
                    self._building = None
                    return
                self._building = wanted[0]
            settled = self._build(*wanted)
            with self._lock:
                self._c_treeshap = settled

    def _build(self, booster, version: str) -> tuple[object, treeshap.TreeShap | None, str]:
        try:
            # One thread: the check's pred_contribs must not take the request threads' cores.
            explain = treeshap.build(self._single_threaded(booster), treeshap.probe_features(), self._compiler)
            note = (f"C TreeSHAP (within {treeshap.PROBE_TOLERANCE:g} of XGBoost pred_contribs on probe rows) "
                    f"explains v{version}")
            log.info("C TreeSHAP explains v%s", version, extra={"event": "treeshap_ready", "model_version": version})
        except Exception as exc:  # the build's own failures are ExplainerUnavailable; anything else falls back too
            explain, note = None, f"XGBoost pred_contribs explains v{version}: {exc}"
            log.warning("no C TreeSHAP for v%s, XGBoost explains: %s", version, exc,
                        extra={"event": "treeshap_fallback", "model_version": version})
        return booster, explain, note

    def _xgboost(self, model: LoadedModel, features: np.ndarray) -> np.ndarray:
        import xgboost as xgb

        booster = model.bundle.booster
        if len(features) < model.parallel_batch_min:
            booster = self._single_threaded(booster)
        matrix = xgb.DMatrix(features, feature_names=booster.feature_names, nthread=1)
        out = booster.predict(matrix, pred_contribs=True, strict_shape=True)
        return np.asarray(out, dtype=np.float32).reshape(len(features), len(model.classes), len(FEATURE_NAMES) + 1)

    def _single_threaded(self, booster):
        """`booster`'s single-threaded copy, made once (the last booster asked keeps its copy)."""
        with self._lock:
            if self._single is not None and self._single[0] is booster:
                return self._single[1]
        # Copied outside the lock (tens of ms for 400 rounds): Explain calls never wait for it.
        single = booster.copy()
        single.set_param({"nthread": 1})
        with self._lock:
            if self._single is None or self._single[0] is not booster:
                self._single = (booster, single)  # two first callers: the first copy stays
            return self._single[1]


def explain_response(objects, contributions: np.ndarray, model: LoadedModel) -> pb.ExplainResponse:
    """contributions [n, classes, features + 1] -> ExplainResponse, objects in order."""
    classes = [CLASS_ENUM[label] for label in model.classes]
    margins = contributions.sum(axis=2, dtype=np.float64)
    best = margins.argmax(axis=1).tolist()
    response = pb.ExplainResponse(model_version=model.version, feature_names=FEATURE_NAMES)
    add = response.explanations.add
    for obj, k, rows, sums in zip(objects, best, contributions.tolist(), margins.tolist()):
        explanation = add(client_id=obj.client_id, predicted_class=classes[k])
        for object_class, row, margin in zip(classes, rows, sums):
            explanation.class_contributions.add(object_class=object_class, contributions=row[:-1], bias=row[-1],
                                                margin=margin)
    return response


def model_info(model: LoadedModel) -> pb.GetModelInfoResponse:
    contract = model.contract
    ranges = contract.get("input_ranges", {k: list(v) for k, v in INPUT_RANGES.items()})
    info = pb.GetModelInfoResponse(
        name=model.name, version=model.version, alias=model.alias, run_id=model.run_id,
        training_window_first_week=model.training_window[0], training_window_last_week=model.training_window[1],
        metrics=model.metrics, source=model.source,
        # The model store names its predictor once it can choose one (XGBoost until then).
        predictor=getattr(model, "predictor", "xgboost"), predictor_note=getattr(model, "predictor_account", ""),
        contract=pb.FeatureContract(
            contract_version=int(contract.get("contract_version", CONTRACT_VERSION)),
            inputs=contract.get("inputs", list(MODEL_INPUTS)),
            input_ranges=[pb.InputRange(name=k, min=float(v[0]), max=float(v[1])) for k, v in ranges.items()],
            features=contract.get("features", list(FEATURE_NAMES)),
            classes=list(model.classes),
            dtype=contract.get("dtype", "float32"),
        ),
    )
    info.loaded_at.FromNanoseconds(int(model.loaded_at * 1e9))
    return info


# ---------------------------------------------------------------------------------
# Open Inference Protocol (KServe v2)
# ---------------------------------------------------------------------------------


def _server_version() -> str:
    try:
        return metadata.version("stellar")
    except metadata.PackageNotFoundError:
        return "0"


class InferenceServicer(_Predicting, v2_grpc.GRPCInferenceServiceServicer):
    """`stellar-classifier` as an Open Inference Protocol model, tensors named as Triton FIL names them.

    input__0  FP32 [-1, 13]: the booster's features in FEATURE_NAMES order (the
              six raw inputs, then seven colours), exactly what Triton FIL
              serving the same model.ubj takes;
    output__0 FP32 [-1, 3]: class probabilities (GALAXY, QSO, STAR);
    output__1 INT64 [-1]: index of the most probable class.
    """

    def __init__(self, store: ModelStore, config: ServingConfig, metrics: ServerMetrics,
                 batcher: MicroBatcher) -> None:
        super().__init__(store, config, metrics, batcher)
        self.version = _server_version()

    def ServerLive(self, request, context):
        return v2.ServerLiveResponse(live=True)

    def ServerReady(self, request, context):
        return v2.ServerReadyResponse(ready=self.store.current is not None)

    def ServerMetadata(self, request, context):
        return v2.ServerMetadataResponse(name="stellar", version=self.version, extensions=[])

    def _check_name(self, name: str, context) -> None:
        if name != self.config.model_name:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"unknown model {_echo(repr(name))}; this server serves {self.config.model_name!r}")

    def _model_for(self, name: str, version: str, context) -> LoadedModel:
        self._check_name(name, context)
        model = _current(self.store, context)
        if version and version != model.version:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"model {name!r} version {_echo(repr(version))} is not being served; "
                          f"current version is {model.version!r} (leave the version empty to use it)")
        return model

    def ModelReady(self, request, context):
        self._check_name(request.name, context)
        model = self.store.current
        ready = model is not None and (not request.version or request.version == model.version)
        return v2.ModelReadyResponse(ready=ready)

    def ModelMetadata(self, request, context):
        model = self._model_for(request.name, request.version, context)
        tensor = v2.ModelMetadataResponse.TensorMetadata
        return v2.ModelMetadataResponse(
            name=model.name, versions=[model.version], platform="xgboost",
            inputs=[tensor(name=INPUT_TENSOR, datatype="FP32", shape=[-1, N_FEATURES])],
            outputs=[tensor(name=PROBA_TENSOR, datatype="FP32", shape=[-1, len(model.classes)]),
                     tensor(name=CLASS_TENSOR, datatype="INT64", shape=[-1])],
            properties={
                f"{INPUT_TENSOR}.columns": ",".join(FEATURE_NAMES),
                f"{PROBA_TENSOR}.columns": ",".join(model.classes),
                f"{CLASS_TENSOR}.labels": ",".join(f"{k}={c}" for k, c in enumerate(model.classes)),
                "raw_inputs": ",".join(MODEL_INPUTS),
                "input_ranges": json.dumps(model.contract.get("input_ranges", {})),
                "colour_tolerance": str(COLOUR_TOLERANCE),
                "max_batch_size": str(self.config.max_batch_size),
                "training_window": f"{model.training_window[0]}..{model.training_window[1]}",
                "alias": model.alias,
            },
        )

    def ModelInfer(self, request, context):
        self._check_name(request.model_name, context)
        matrix = _input_matrix(request, context)
        requested = [o.name for o in request.outputs] or [PROBA_TENSOR, CLASS_TENSOR]
        unknown = [name for name in requested if name not in (PROBA_TENSOR, CLASS_TENSOR)]
        if unknown:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"unknown output tensor(s) {_echo(unknown)}; outputs are {PROBA_TENSOR!r} and {CLASS_TENSOR!r}")
        try:
            inputs = features_to_inputs(matrix, self.config.max_batch_size)
        except InvalidInput as exc:
            _refuse(context, exc)
        _check_deadline(context)
        model = self._model_for(request.model_name, request.model_version, context)
        proba = self._predict(model, inputs, "ModelInfer")
        n = len(inputs)
        response = v2.ModelInferResponse(model_name=model.name, model_version=model.version, id=request.id)
        for name in requested:
            if name == PROBA_TENSOR:
                response.outputs.add(name=name, datatype="FP32", shape=list(proba.shape))
                response.raw_output_contents.append(proba.astype("<f4", copy=False).tobytes())
            else:
                index = proba.argmax(axis=1).astype("<i8")
                response.outputs.add(name=name, datatype="INT64", shape=[n])
                response.raw_output_contents.append(index.tobytes())
        return response


def _input_matrix(request, context) -> np.ndarray:
    abort = context.abort
    if len(request.inputs) != 1 or request.inputs[0].name != INPUT_TENSOR:
        names = [t.name for t in request.inputs]
        abort(grpc.StatusCode.INVALID_ARGUMENT,
              f"expected exactly one input tensor {INPUT_TENSOR!r} (FP32 [n, {N_FEATURES}]), got {_echo(names)}")
    tensor = request.inputs[0]
    if tensor.datatype != "FP32":
        abort(grpc.StatusCode.INVALID_ARGUMENT, f"{INPUT_TENSOR} has datatype {_echo(tensor.datatype) or '(none)'}; expected FP32")
    shape = list(tensor.shape)
    if len(shape) != 2 or shape[1] != N_FEATURES or shape[0] < 0:
        abort(grpc.StatusCode.INVALID_ARGUMENT,
              f"{INPUT_TENSOR} has shape {_echo(shape)}; expected [n, {N_FEATURES}] with columns {', '.join(FEATURE_NAMES)}")
    n_values = shape[0] * shape[1]
    if request.raw_input_contents:
        if tensor.HasField("contents"):
            abort(grpc.StatusCode.INVALID_ARGUMENT,
                  f"{INPUT_TENSOR} has both typed contents and raw_input_contents; send one")
        if len(request.raw_input_contents) != 1:
            abort(grpc.StatusCode.INVALID_ARGUMENT,
                  f"raw_input_contents has {len(request.raw_input_contents)} entries for 1 input tensor")
        raw = request.raw_input_contents[0]
        if len(raw) != n_values * 4:
            abort(grpc.StatusCode.INVALID_ARGUMENT,
                  f"{INPUT_TENSOR} raw contents hold {len(raw)} bytes; shape {shape} FP32 needs {n_values * 4}")
        return np.frombuffer(raw, dtype="<f4").reshape(shape[0], shape[1])
    values = tensor.contents.fp32_contents
    if len(values) != n_values:
        other = [f.name for f, _ in tensor.contents.ListFields() if f.name != "fp32_contents"]
        hint = f" (contents carry {other}; FP32 data goes in fp32_contents)" if other else ""
        abort(grpc.StatusCode.INVALID_ARGUMENT,
              f"{INPUT_TENSOR} has {len(values)} fp32 values; shape {shape} needs {n_values}{hint}")
    return np.array(values, dtype=np.float32).reshape(shape[0], shape[1])
