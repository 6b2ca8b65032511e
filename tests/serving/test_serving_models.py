"""Model lifecycle against the real registry: health transitions, reload, polling,
atomic swaps under concurrent load, and registry outages (start-up and later)."""

from __future__ import annotations

import shutil
import threading
import time

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stellar_core.features import derive_feature_matrix
from stellar_api._generated.inference import grpc_predict_v2_pb2 as v2
from stellar_api._generated.inference import grpc_predict_v2_pb2_grpc as v2_grpc
from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc
from tests.support import free_port

from .messages import probabilities_of, to_objects

SERVICES = ("", "stellar.v1.ClassifierService", "inference.GRPCInferenceService")


class Conn:
    def __init__(self, port: int):
        self.channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.stub = pb_grpc.ClassifierServiceStub(self.channel)
        self.v2 = v2_grpc.GRPCInferenceServiceStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def statuses(self) -> set[str]:
        return {health_pb2.HealthCheckResponse.ServingStatus.Name(
            self.health.Check(health_pb2.HealthCheckRequest(service=s), timeout=5).status) for s in SERVICES}

    def version(self) -> str:
        return self.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).version


def _code(call):
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details()
    return grpc.StatusCode.OK, ""


def test_health_follows_the_model_state(make_server, registry, sample_inputs):
    registry.remove_champion()
    try:
        server = make_server()
        conn = Conn(server.port)
        assert conn.statuses() == {"NOT_SERVING"}
        assert not conn.v2.ServerReady(v2.ServerReadyRequest(), timeout=5).ready
        assert not conn.v2.ModelReady(v2.ModelReadyRequest(name="stellar-classifier"), timeout=5).ready
        assert conn.v2.ServerLive(v2.ServerLiveRequest(), timeout=5).live
        request = pb.ClassifyRequest(object=to_objects(sample_inputs[:1])[0])
        code, details = _code(lambda: conn.stub.Classify(request, timeout=5))
        assert code == grpc.StatusCode.UNAVAILABLE and "no model loaded yet" in details
        code, details = _code(lambda: conn.stub.ReloadModel(pb.ReloadModelRequest(), timeout=30))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "has no alias 'champion'" in details
    finally:
        registry.set_champion("1")
    reloaded = conn.stub.ReloadModel(pb.ReloadModelRequest(), timeout=30)
    assert (reloaded.previous_version, reloaded.version, reloaded.changed, reloaded.source) == ("", "1", True, "registry")
    assert conn.statuses() == {"SERVING"}
    assert conn.v2.ServerReady(v2.ServerReadyRequest(), timeout=5).ready
    assert conn.stub.Classify(request, timeout=5).result.model_version == "1"


def test_reload_rpc_and_alias_polling_swap_the_champion(make_server, registry):
    registry.set_champion("1")
    server = make_server()
    conn = Conn(server.port)
    registry.set_champion("2")
    response = conn.stub.ReloadModel(pb.ReloadModelRequest(), timeout=30)
    assert (response.previous_version, response.version, response.changed) == ("1", "2", True)
    assert conn.version() == "2"
    again = conn.stub.ReloadModel(pb.ReloadModelRequest(), timeout=30)
    assert (again.version, again.changed) == ("2", False)

    polling = make_server(poll_seconds=0.2, cache_dir=str(server.config.cache_dir) + "-polling")
    poll_conn = Conn(polling.port)
    assert poll_conn.version() == "2"
    registry.set_champion("1")
    deadline = time.monotonic() + 20
    while poll_conn.version() != "1" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert poll_conn.version() == "1"


# Each fast predictor in turn: the tree kernel (the default), and tl2cgen's compiled trees where it is off.
FAST_PREDICTORS = {"tree_kernel": {}, "compiled": {"tree_kernel": "off"}}


@pytest.mark.parametrize("fast", list(FAST_PREDICTORS))
def test_swap_under_concurrent_load_fails_nothing_and_never_mixes_models(make_server, registry, sample_inputs, fast):
    registry.set_champion("1")
    server = make_server(max_workers=12, compiled_predictor="auto", **FAST_PREDICTORS[fast])
    assert not np.allclose(registry.expected("1", sample_inputs[:200]), registry.expected("2", sample_inputs[:200]))
    stop = threading.Event()
    answers: list[tuple[str, np.ndarray, np.ndarray]] = []  # (version, inputs, probabilities)
    failures: list[str] = []
    lock = threading.Lock()

    def worker(seed: int) -> None:
        conn = Conn(server.port)
        rng = np.random.default_rng(seed)
        kind = seed % 3
        while not stop.is_set():
            rows = rng.choice(len(sample_inputs), size=1 if kind == 0 else 20, replace=False)
            inputs = sample_inputs[rows]
            try:
                if kind == 0:
                    r = conn.stub.Classify(pb.ClassifyRequest(object=to_objects(inputs)[0]), timeout=10).result
                    got = (r.model_version, np.array([probabilities_of(r)], dtype=np.float32))
                elif kind == 1:
                    b = conn.stub.ClassifyBatch(pb.ClassifyBatchRequest(objects=to_objects(inputs)), timeout=10)
                    assert {r.model_version for r in b.results} == {b.model_version}
                    got = (b.model_version, np.array([probabilities_of(r) for r in b.results], dtype=np.float32))
                else:
                    features = derive_feature_matrix(inputs)
                    response = conn.v2.ModelInfer(v2.ModelInferRequest(
                        model_name="stellar-classifier", raw_input_contents=[features.tobytes()],
                        inputs=[v2.ModelInferRequest.InferInputTensor(name="input__0", datatype="FP32",
                                                                      shape=list(features.shape))]), timeout=10)
                    got = (response.model_version,
                           np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(-1, 3))
            except Exception as exc:  # a failed call is the defect this test looks for
                with lock:
                    failures.append(repr(exc))
                continue
            with lock:
                answers.append((got[0], inputs, got[1]))

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
    for t in threads:
        t.start()
    conn = Conn(server.port)
    swaps = []
    for version in ("2", "1", "2", "1", "2"):
        time.sleep(0.3)
        registry.set_champion(version)
        swaps.append(conn.stub.ReloadModel(pb.ReloadModelRequest(), timeout=30).version)
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(timeout=30)

    assert swaps == ["2", "1", "2", "1", "2"]
    assert failures == []
    assert {version for version, _, _ in answers} == {"1", "2"}
    assert len(answers) > 50
    for version, inputs, probabilities in answers:
        # Each answer is what the version it names computes for its objects: XGBoost's bits (the tree
        # kernel's are the same), or the compiled trees' (within 1e-5 of them) once they are ready; the
        # versions differ far more.
        assert np.abs(probabilities - registry.expected(version, inputs)).max() <= 1e-5

    # Every version served, with its fast predictor ready, answers as its XGBoost model does.
    for version in ("1", "2"):
        registry.set_champion(version)
        assert conn.stub.ReloadModel(pb.ReloadModelRequest(), timeout=30).version == version
        deadline = time.monotonic() + 300  # a compile on a busy 2-core machine; only to detect a hang
        while server.store.current.predictor_note.startswith("compiling") and time.monotonic() < deadline:
            time.sleep(0.1)
        model = server.store.current
        assert (model.version, model.predictor) == (version, fast), model.predictor_note
        predict = model.predict_kernel if fast == "tree_kernel" else model.predict_compiled
        for rows in (1, 7, 64, 1000):
            inputs = sample_inputs[300:300 + rows]
            got = predict(derive_feature_matrix(inputs))
            if fast == "tree_kernel":
                np.testing.assert_array_equal(got, registry.expected(version, inputs))
            else:
                assert np.abs(got - registry.expected(version, inputs)).max() <= 1e-5
        inputs = sample_inputs[:7]
        batch = conn.stub.ClassifyBatch(pb.ClassifyBatchRequest(objects=to_objects(inputs)), timeout=10)
        answered = np.array([probabilities_of(r) for r in batch.results], dtype=np.float32)
        assert batch.model_version == version
        assert answered.tolist() == predict(derive_feature_matrix(inputs)).tolist()
        assert np.abs(answered - registry.expected(version, inputs)).max() <= 1e-5
    registry.set_champion("1")


def test_registry_down_at_start_up_serves_the_cached_model(make_server, registry, sample_inputs, tmp_path):
    registry.set_champion("1")
    cache = str(tmp_path / "shared-cache")
    first = make_server(cache_dir=cache)
    assert Conn(first.port).version() == "1"
    first.stop(grace=0.5)

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    server = make_server(cache_dir=cache, tracking_uri=dead)
    conn = Conn(server.port)
    info = conn.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    assert (info.version, info.source) == ("1", "cache")
    assert conn.statuses() == {"SERVING"}
    inputs = sample_inputs[:30]
    batch = conn.stub.ClassifyBatch(pb.ClassifyBatchRequest(objects=to_objects(inputs)), timeout=10)
    assert [probabilities_of(r) for r in batch.results] == registry.expected("1", inputs).tolist()
    code, details = _code(lambda: conn.stub.ReloadModel(pb.ReloadModelRequest(), timeout=60))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert f"model registry at {dead} unreachable" in details and "still serving the previous model" in details

    # No registry and no cache: up, but not serving.
    empty = make_server(cache_dir=str(tmp_path / "empty-cache"), tracking_uri=dead)
    assert Conn(empty.port).statuses() == {"NOT_SERVING"}


def test_registry_lost_while_serving_keeps_the_current_model(make_server, registry, sample_inputs, tmp_path):
    registry.set_champion("2")
    copy = tmp_path / "registry-copy"
    shutil.copytree(registry.root, copy)  # artifacts stay where the runs say (absolute paths)
    db = copy / "mlflow.db"
    server = make_server(tracking_uri=f"sqlite:///{db}", poll_seconds=0.2)
    conn = Conn(server.port)
    assert conn.version() == "2"
    registry.set_champion("1")

    with open(db, "r+b") as handle:  # the store becomes unreadable: a real outage of the SQLite registry
        handle.write(b"this is no longer a database" * 4096)
    time.sleep(0.6)  # a few failed polls
    code, details = _code(lambda: conn.stub.ReloadModel(pb.ReloadModelRequest(), timeout=60))
    assert code == grpc.StatusCode.UNAVAILABLE and "unreachable" in details
    inputs = sample_inputs[:40]
    batch = conn.stub.ClassifyBatch(pb.ClassifyBatchRequest(objects=to_objects(inputs)), timeout=10)
    assert batch.model_version == "2"
    assert [probabilities_of(r) for r in batch.results] == registry.expected("2", inputs).tolist()
    assert conn.statuses() == {"SERVING"}
    assert server.metrics.reloads.labels("failed")._value.get() >= 2


def test_micro_batcher_predicts_queued_requests_together_per_model(registry, sample_inputs):
    from stellar_serving.batching import MicroBatcher
    from stellar_serving.model_store import LoadedModel

    models = {v: LoadedModel(name="stellar-classifier", version=v, alias="champion", run_id="", bundle=b,
                             loaded_at=0.0, source="registry") for v, b in registry.bundles.items()}
    calls: list[int] = []
    batcher = MicroBatcher(max_rows=64, observe=calls.append)
    with batcher._cv:
        batcher._busy = True  # as if a prediction were running: arrivals must queue
    jobs = [("1", sample_inputs[0:1]), ("2", sample_inputs[1:3]), ("1", sample_inputs[3:4]), ("2", sample_inputs[4:5])]
    results: dict[int, np.ndarray] = {}

    def call(k: int) -> None:
        version, inputs = jobs[k]
        results[k] = batcher.predict(models[version], inputs)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while len(batcher._queue) < len(jobs) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(batcher._queue) == len(jobs)  # all four wait for one turn
    with batcher._cv:
        batcher._busy = False
        batcher._cv.notify_all()
    for t in threads:
        t.join(timeout=10)
    for k, (version, inputs) in enumerate(jobs):
        assert results[k].tolist() == registry.expected(version, inputs).tolist()
    assert batcher._queue == [] and not batcher._busy
    assert sorted(calls) == [2, 3]  # one booster call per model: 1 + 1 rows for v1, 2 + 1 for v2


def test_real_mlflow_server_then_stopped(make_server, registry, mlflow_http_server, sample_inputs):
    """The registry over HTTP (a real `mlflow server` on the test store), then that server stopped."""
    import urllib.request

    registry.set_champion("2")
    process, url = mlflow_http_server["process"], mlflow_http_server["url"]
    deadline = time.monotonic() + 120
    while True:
        assert process.poll() is None, mlflow_http_server["log"].read_text()[-2000:]
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "mlflow server did not start"
        time.sleep(0.3)
    try:
        server = make_server(tracking_uri=url)
        conn = Conn(server.port)
        info = conn.stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
        assert (info.version, info.source) == ("2", "registry")
    finally:
        mlflow_http_server["stop"]()  # the outage: the whole server process group goes
    assert process.poll() is not None
    code, details = _code(lambda: conn.stub.ReloadModel(pb.ReloadModelRequest(), timeout=60))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert f"model registry at {url} unreachable" in details
    inputs = sample_inputs[:40]
    batch = conn.stub.ClassifyBatch(pb.ClassifyBatchRequest(objects=to_objects(inputs)), timeout=10)
    assert [probabilities_of(r) for r in batch.results] == registry.expected("2", inputs).tolist()
    assert conn.statuses() == {"SERVING"}
    registry.set_champion("1")
