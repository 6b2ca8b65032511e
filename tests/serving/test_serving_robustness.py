"""The server cannot be frozen or crashed by its callers (issue 11): undecodable
requests, idle streams, a champion that fails at prediction time, reload bursts
against a hanging registry, huge client ids, cancellations, bad settings, the drain."""

from __future__ import annotations

import logging
import socket
import threading
import time
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from stellar_core.model_bundle import DEFAULT_MODEL_NAME
from stellar_serving._generated.stellar.v1 import classifier_pb2 as pb
from stellar_serving._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc
from stellar_serving.config import ServingConfig

from .conftest import to_objects

TOKEN = "s3cret-token"
CLASSIFY = "/stellar.v1.Classifier/Classify"
NOT_A_MESSAGE = b"\xff\xff\xff\xff"  # field 31, wire type 7: no protobuf message parses it


def _outcome(call):
    try:
        call()
    except grpc.RpcError as err:
        return err.code(), err.details()
    return grpc.StatusCode.OK, ""


def _classify_request(sample_inputs, client_id="obj-0"):
    obj = to_objects(sample_inputs[:1])[0]
    obj.client_id = client_id
    return pb.ClassifyRequest(object=obj)


# -- 1: undecodable requests --------------------------------------------------------------


@pytest.mark.parametrize("token", ["", TOKEN])
def test_undecodable_requests_answer_invalid_argument_and_give_back_their_slot(
        make_server, registry, sample_inputs, token):
    registry.set_champion("1")
    server = make_server(max_concurrent_rpcs=8, auth_token=token)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    raw = channel.unary_unary(CLASSIFY, request_serializer=None, response_deserializer=None)
    good = (("authorization", f"Bearer {TOKEN}"),) if token else ()
    # Three times the concurrency limit, without a token: before the fix the 9th was refused.
    anonymous = {_outcome(lambda: raw(NOT_A_MESSAGE, timeout=5))[0] for _ in range(24)}
    assert anonymous == {grpc.StatusCode.UNAUTHENTICATED if token else grpc.StatusCode.INVALID_ARGUMENT}
    code, details = _outcome(lambda: raw(NOT_A_MESSAGE, metadata=good, timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("request is not a valid Classify message: DecodeError")
    stream = channel.stream_stream("/stellar.v1.Classifier/ClassifyStream",
                                   request_serializer=None, response_deserializer=None)
    code, details = _outcome(lambda: list(stream(iter([NOT_A_MESSAGE]), metadata=good, timeout=5)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid ClassifyStream message" in details
    stub = pb_grpc.ClassifierStub(channel)
    for _ in range(10):  # more good calls than the limit: every slot came back
        assert stub.Classify(_classify_request(sample_inputs), metadata=good, timeout=5).result.model_version == "1"


# -- 2: idle streams -----------------------------------------------------------------------


def test_idle_streams_cannot_starve_unary_calls_health_or_later_streams(make_server, registry, sample_inputs):
    registry.set_champion("1")
    # 2 + 2 + 2 threads; 12 idle streams are twice as many.
    server = make_server(max_workers=2, max_concurrent_streams=2, max_open_streams=2, stream_idle_seconds=2.0)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = pb_grpc.ClassifierStub(channel)
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    release = threading.Event()

    def silence():
        release.wait(60)
        return
        yield  # a request iterator that never sends anything

    try:
        reflections = [reflection.ServerReflectionInfo(silence(), timeout=30) for _ in range(8)]
        classify_streams = [stub.ClassifyStream(silence(), timeout=30) for _ in range(4)]
        time.sleep(0.5)  # the streams have reached the server
        for _ in range(5):
            assert stub.Classify(_classify_request(sample_inputs), timeout=5).result.model_version == "1"
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
                health_pb2.HealthCheckResponse.SERVING
        reflection_codes = sorted(call.code().name for call in reflections)  # code() waits for the end
        stream_codes = sorted(call.code().name for call in classify_streams)
    finally:
        release.set()
    assert reflection_codes == ["DEADLINE_EXCEEDED"] * 2 + ["RESOURCE_EXHAUSTED"] * 6
    assert stream_codes == ["DEADLINE_EXCEEDED"] * 2 + ["RESOURCE_EXHAUSTED"] * 2
    ended = next(call for call in classify_streams if call.code() == grpc.StatusCode.DEADLINE_EXCEEDED)
    assert "stream idle for 2 s (STELLAR_STREAM_IDLE_SECONDS)" in ended.details()
    refused = next(call for call in reflections if call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "too many concurrent ServerReflectionInfo calls (limit 2): STELLAR_MAX_OPEN_STREAMS" in refused.details()
    # The slots are free again.
    listing = next(reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    assert "stellar.v1.Classifier" in {s.name for s in listing.list_services_response.service}
    assert server.metrics.registry.get_sample_value(
        "stellar_grpc_errors_total", {"method": "ClassifyStream", "code": "DEADLINE_EXCEEDED"}) == 2


def test_unary_calls_whose_message_never_arrives_are_ended(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server(max_workers=2, max_concurrent_streams=1, max_open_streams=1, stream_idle_seconds=2.0)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    # A client can open a unary call and never send its message: each used to hold a thread for ever.
    half_open = channel.stream_unary("/stellar.v1.Classifier/GetModelInfo",
                                     request_serializer=None, response_deserializer=None)
    release = threading.Event()

    def silence():
        release.wait(60)
        return
        yield

    try:
        calls = [half_open.future(silence(), timeout=30) for _ in range(8)]  # twice the 4 threads
        stub = pb_grpc.ClassifierStub(channel)
        assert stub.Classify(_classify_request(sample_inputs), timeout=15).result.model_version == "1"
        errors = [call.exception(timeout=30) for call in calls]
    finally:
        release.set()
    assert {(e.code(), e.details()) for e in errors} == {
        (grpc.StatusCode.DEADLINE_EXCEEDED, "no request message arrived within 2 s (STELLAR_STREAM_IDLE_SECONDS)")}


# -- 3: a champion that loads but cannot predict ----------------------------------------------


@pytest.fixture
def binary_champion(registry, sample):
    """A binary:logistic booster with the right features and contract, published as a new version."""
    import xgboost as xgb

    from stellar_core.features import FEATURE_NAMES, build_features, feature_matrix, label_indices

    from .conftest import publish

    features, _ = build_features(sample)
    matrix = xgb.DMatrix(feature_matrix(features), label=(label_indices(features["label"]) == 0).astype(float),
                         feature_names=list(FEATURE_NAMES))
    booster = xgb.train({"objective": "binary:logistic", "nthread": 2}, matrix, 5)
    experiment = registry.client().get_experiment_by_name("stellar-serving-tests").experiment_id
    version = publish(registry.tracking_uri, experiment, booster, ("2014-01-05", "2016-12-25"), {"accuracy": 0.5})
    yield version
    registry.set_champion("1")


def test_a_champion_that_cannot_predict_is_refused_and_the_last_good_model_serves(
        make_server, registry, sample_inputs, binary_champion):
    registry.set_champion("1")
    server = make_server()
    stub = pb_grpc.ClassifierStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    registry.set_champion(binary_champion)
    code, details = _outcome(lambda: stub.ReloadModel(pb.ReloadModelRequest(), timeout=60))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert f"version {binary_champion} cannot be served: the booster answered shape [64] for 64 probe objects" \
        in details
    assert details.endswith("still serving the previous model (version 1)")
    assert stub.Classify(_classify_request(sample_inputs), timeout=5).result.model_version == "1"
    server.stop(grace=0.5)

    # A restart while the bad champion is named serves the cached last good model.
    restarted = make_server()
    stub = pb_grpc.ClassifierStub(grpc.insecure_channel(f"127.0.0.1:{restarted.port}"))
    info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5)
    assert (info.version, info.source) == ("1", "cache")
    assert stub.Classify(_classify_request(sample_inputs), timeout=5).result.model_version == "1"


# -- 4: reload bursts against a hanging registry -----------------------------------------------


class HangingRegistry:
    """A real TCP server on loopback that accepts HTTP connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()


def test_reload_burst_against_a_hanging_registry_is_one_reload_off_the_request_threads(
        make_server, registry, sample_inputs, tmp_path, monkeypatch):
    registry.set_champion("1")
    cache = str(tmp_path / "cache")
    make_server(cache_dir=cache).stop(grace=0.5)  # leaves version 1 in the cache
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    hanging = HangingRegistry()
    try:
        server = make_server(cache_dir=cache, tracking_uri=hanging.url, max_workers=2, max_concurrent_streams=1)
        stub = pb_grpc.ClassifierStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
        assert stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).source == "cache"
        before = len(hanging.connections)
        with futures.ThreadPoolExecutor(12) as pool:
            reloads = [pool.submit(_outcome, lambda: stub.ReloadModel(pb.ReloadModelRequest(), timeout=30))
                       for _ in range(12)]
            classified = [stub.Classify(_classify_request(sample_inputs), timeout=5).result.model_version
                          for _ in range(20)]
            outcomes = [r.result() for r in reloads]
        registry_requests = len(hanging.connections) - before
    finally:
        hanging.close()
    assert classified == ["1"] * 20
    assert {code for code, _ in outcomes} == {grpc.StatusCode.UNAVAILABLE}
    assert all(details.endswith("still serving the previous model (version 1)") for _, details in outcomes)
    assert 1 <= registry_requests <= 2  # one shared reload (two if a caller came just after it ended)


# -- 5: client ids are bounded -----------------------------------------------------------------


def test_long_client_ids_are_refused_or_cut_in_messages_and_logs(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server()
    stub = pb_grpc.ClassifierStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("stellar_serving")
    logger.addHandler(handler)
    try:
        huge = _classify_request(sample_inputs, "x" * 12_000)
        code, details = _outcome(lambda: stub.Classify(huge, timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == (f"object 0: client_id '{'x' * 64}…(12000 chars)' is too long: 12000 characters; "
                           "the maximum is 256")
        invalid = _classify_request(sample_inputs, "y" * 200)
        invalid.object.ClearField("redshift")
        code, details = _outcome(lambda: stub.Classify(invalid, timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == f"object 0 (client_id '{'y' * 64}…(200 chars)'): field 'redshift' is missing"
    finally:
        logger.removeHandler(handler)
    assert len(records) == 2 and all(len(r.getMessage()) < 300 for r in records)


def test_long_names_in_v2_requests_are_cut_in_messages(make_server, registry):
    from stellar_serving._generated.inference import grpc_predict_v2_pb2 as v2
    from stellar_serving._generated.inference import grpc_predict_v2_pb2_grpc as v2_grpc

    registry.set_champion("1")
    server = make_server()
    stub = v2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    code, details = _outcome(lambda: stub.ModelInfer(v2.ModelInferRequest(model_name="m" * 20_000), timeout=5))
    assert code == grpc.StatusCode.NOT_FOUND
    assert details == f"unknown model '{'m' * 99}…(20002 chars); this server serves {DEFAULT_MODEL_NAME!r}"
    wide = v2.ModelInferRequest(model_name=DEFAULT_MODEL_NAME, inputs=[v2.ModelInferRequest.InferInputTensor(
        name="input__0", datatype="FP32", shape=[1] * 5000)])
    code, details = _outcome(lambda: stub.ModelInfer(wide, timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("input__0 has shape [1, 1, ") and "…(15000 chars); expected [n, 13]" in details


# -- 6: cancellations -------------------------------------------------------------------------


def test_a_cancelled_stream_is_counted_as_cancelled_not_as_an_error(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server()
    stub = pb_grpc.ClassifierStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("stellar_serving")
    logger.addHandler(handler)
    release = threading.Event()

    def one_then_wait():
        yield pb.ClassifyBatchRequest(objects=to_objects(sample_inputs[:2]))
        release.wait(30)

    try:
        call = stub.ClassifyStream(one_then_wait(), timeout=30)
        assert len(next(call).results) == 2
        time.sleep(0.5)  # the server now waits in the request iterator, where cancellations used to raise
        call.cancel()
        count = None
        for _ in range(100):  # the server records the call when it notices
            count = server.metrics.registry.get_sample_value(
                "stellar_grpc_errors_total", {"method": "ClassifyStream", "code": "CANCELLED"})
            if count:
                break
            time.sleep(0.1)
    finally:
        release.set()
        logger.removeHandler(handler)
    assert count == 1
    assert server.metrics.registry.get_sample_value(
        "stellar_grpc_errors_total", {"method": "ClassifyStream", "code": "UNKNOWN"}) is None
    assert [r.levelname for r in records if r.levelno >= logging.WARNING] == []


# -- 7: settings are checked at start-up ---------------------------------------------------------


@pytest.mark.parametrize("env, message", [
    ({"STELLAR_MAX_CONCURRENT_RPCS": "0"}, "STELLAR_MAX_CONCURRENT_RPCS must be at least 1, got 0"),
    ({"STELLAR_MAX_CONCURRENT_RPCS": "-1"}, "STELLAR_MAX_CONCURRENT_RPCS must be at least 1, got -1"),
    ({"STELLAR_GRPC_PORT": "70000"}, "STELLAR_GRPC_PORT must be at most 65535, got 70000"),
    ({"STELLAR_METRICS_PORT": "-2"}, "STELLAR_METRICS_PORT must be at least -1, got -2"),
    ({"STELLAR_AUTH_TOKEN": "abc\n"}, "STELLAR_AUTH_TOKEN must be printable ASCII without surrounding spaces"),
    ({"STELLAR_AUTH_TOKEN": "a\tb"}, "STELLAR_AUTH_TOKEN must be printable ASCII without surrounding spaces"),
    ({"STELLAR_STREAM_IDLE_SECONDS": "0"}, "STELLAR_STREAM_IDLE_SECONDS must be at least 0.001, got 0.0"),
    ({"STELLAR_MAX_OPEN_STREAMS": "0"}, "STELLAR_MAX_OPEN_STREAMS must be at least 1, got 0"),
    ({"STELLAR_LOG_LEVEL": "LOUD"}, "STELLAR_LOG_LEVEL must be one of"),
])
def test_each_bad_setting_is_refused_at_start_up_naming_its_variable(env, message):
    with pytest.raises(ValueError) as err:
        ServingConfig.from_env(env)
    assert message in str(err.value)


def test_a_certificate_or_key_that_is_not_pem_is_refused_at_start_up(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    key.write_text("not a key")
    with pytest.raises(ValueError) as err:
        ServingConfig.from_env({"STELLAR_TLS_CERT": str(cert), "STELLAR_TLS_KEY": str(key)})
    assert (f"STELLAR_TLS_CERT={str(cert)!r} and STELLAR_TLS_KEY={str(key)!r} are not a PEM certificate chain "
            "and its private key") in str(err.value)


# -- 8: the drain, and reloads with nothing loaded ------------------------------------------------


def test_health_answers_not_serving_while_a_stream_drains(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub, health = pb_grpc.ClassifierStub(channel), health_pb2_grpc.HealthStub(channel)
    feed: list = [pb.ClassifyBatchRequest(objects=to_objects(sample_inputs[:1], "a"))]
    more = threading.Event()

    def requests():
        yield feed[0]
        more.wait(30)
        yield pb.ClassifyBatchRequest(objects=to_objects(sample_inputs[1:2], "b"))

    call = stub.ClassifyStream(requests(), timeout=30)
    assert next(call).results[0].client_id == "a-0"
    stopping = threading.Thread(target=server.stop, kwargs={"grace": 20})
    stopping.start()
    try:
        statuses = set()
        for _ in range(50):
            status = health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            statuses.add(status)
            if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                break
            time.sleep(0.1)
        assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses
    finally:
        more.set()
    assert next(call).results[0].client_id == "b-0"  # the in-flight stream finishes
    assert list(call) == [] and call.code() == grpc.StatusCode.OK
    stopping.join(timeout=30)
    assert not stopping.is_alive()


def test_reload_with_no_model_loaded_does_not_claim_a_previous_model(make_server, registry):
    registry.remove_champion()
    try:
        server = make_server()
        stub = pb_grpc.ClassifierStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
        code, details = _outcome(lambda: stub.ReloadModel(pb.ReloadModelRequest(), timeout=30))
    finally:
        registry.set_champion("1")
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details == (f"registered model {DEFAULT_MODEL_NAME!r} has no alias 'champion'; no model is loaded")
