"""The server cannot be frozen or crashed by its callers (issue 11): undecodable
requests, idle streams, a champion that fails at prediction time, reload bursts
against a hanging registry, huge client ids, cancellations, bad settings, the drain."""

from __future__ import annotations

import gc
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
from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc
from stellar_serving.config import ServingConfig
from stellar_serving.model_store import ModelRejected

from .messages import to_objects

TOKEN = "s3cret-token"
CLASSIFY = "/stellar.v1.ClassifierService/Classify"
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
    stream = channel.stream_stream("/stellar.v1.ClassifierService/ClassifyStream",
                                   request_serializer=None, response_deserializer=None)
    code, details = _outcome(lambda: list(stream(iter([NOT_A_MESSAGE]), metadata=good, timeout=5)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid ClassifyStream message" in details
    stub = pb_grpc.ClassifierServiceStub(channel)
    for _ in range(10):  # more good calls than the limit: every slot came back
        assert stub.Classify(_classify_request(sample_inputs), metadata=good, timeout=5).result.model_version == "1"


# -- 2: idle streams -----------------------------------------------------------------------


def test_idle_streams_cannot_starve_unary_calls_health_or_later_streams(make_server, registry, sample_inputs):
    registry.set_champion("1")
    # 2 + 2 + 2 (+ 1 Watch) threads; 12 idle streams are twice as many.
    server = make_server(max_workers=2, max_concurrent_streams=2, max_open_streams=2, max_watch_streams=1,
                         stream_idle_seconds=4.0)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = pb_grpc.ClassifierServiceStub(channel)
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
            # The streams holding their slots are still open: the calls below ran beside them.
            assert sum(not call.done() for call in reflections) == 2
            assert sum(not call.done() for call in classify_streams) == 2
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
    assert "stream idle for 4 s (STELLAR_STREAM_IDLE_SECONDS)" in ended.details()
    refused = next(call for call in reflections if call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED)
    assert "too many concurrent ServerReflectionInfo calls (limit 2): STELLAR_MAX_OPEN_STREAMS" in refused.details()
    # The slots are free again.
    listing = next(reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    assert "stellar.v1.ClassifierService" in {s.name for s in listing.list_services_response.service}
    assert server.metrics.registry.get_sample_value(
        "stellar_grpc_errors_total", {"method": "ClassifyStream", "code": "DEADLINE_EXCEEDED"}) == 2


def _silence(release: threading.Event):
    release.wait(60)
    return
    yield  # a request iterator that never sends anything


def test_unary_calls_whose_message_never_arrives_are_ended(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server(max_workers=2, max_concurrent_streams=1, max_open_streams=1, max_watch_streams=1,
                         first_message_seconds=1.0)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    # A client can open a unary call and never send its message: each used to hold a thread for ever.
    half_open = channel.stream_unary("/stellar.v1.ClassifierService/GetModelInfo",
                                     request_serializer=None, response_deserializer=None)
    release = threading.Event()

    def silence():
        release.wait(60)
        return
        yield

    try:
        calls = [half_open.future(silence(), timeout=30) for _ in range(10)]  # twice the 5 threads
        stub = pb_grpc.ClassifierServiceStub(channel)
        assert stub.Classify(_classify_request(sample_inputs), timeout=15).result.model_version == "1"
        errors = [call.exception(timeout=30) for call in calls]
    finally:
        release.set()
    assert {(e.code(), e.details()) for e in errors} == {
        (grpc.StatusCode.DEADLINE_EXCEEDED,
         "no request message arrived within 1 s (STELLAR_FIRST_MESSAGE_SECONDS, or the call's deadline)")}


def test_calls_that_never_send_cannot_starve_health_checks_or_classify(make_server, registry, sample_inputs):
    registry.set_champion("1")
    # 2 + 1 + 1 + 1 threads; the default STELLAR_FIRST_MESSAGE_SECONDS (2 s), a long idle limit.
    server = make_server(max_workers=2, max_concurrent_streams=1, max_open_streams=1, max_watch_streams=1)
    assert server.config.first_message_seconds == 2.0 and server.config.stream_idle_seconds == 60.0
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    half_open = channel.stream_unary(CLASSIFY, request_serializer=None, response_deserializer=None)
    release = threading.Event()
    try:
        calls = [half_open.future(_silence(release), timeout=60) for _ in range(10)]  # twice the threads
        time.sleep(0.5)  # every thread now waits for a message
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING
        stub = pb_grpc.ClassifierServiceStub(channel)
        assert stub.Classify(_classify_request(sample_inputs), timeout=15).result.model_version == "1"
        codes = {call.exception(timeout=30).code() for call in calls}
    finally:
        release.set()
    assert codes == {grpc.StatusCode.DEADLINE_EXCEEDED}


def test_a_call_refused_for_its_token_is_refused_without_waiting_for_its_message(make_server, registry):
    registry.set_champion("1")
    server = make_server(auth_token=TOKEN, first_message_seconds=30.0)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    half_open = channel.stream_unary(CLASSIFY, request_serializer=None, response_deserializer=None)
    release = threading.Event()
    try:
        code, details = _outcome(lambda: half_open(_silence(release), timeout=10))
    finally:
        release.set()
    assert (code, details) == (grpc.StatusCode.UNAUTHENTICATED, "missing 'authorization: Bearer <token>' metadata")


def test_health_watch_has_its_own_slots_and_is_not_ended_for_idleness(make_server, registry):
    registry.set_champion("1")
    server = make_server(max_open_streams=2, stream_idle_seconds=1.0)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    release = threading.Event()
    try:
        reflections = [reflection.ServerReflectionInfo(_silence(release), timeout=30) for _ in range(2)]
        time.sleep(0.3)  # both open-stream slots are taken
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        assert {call.code() for call in reflections} == {grpc.StatusCode.DEADLINE_EXCEEDED}  # ended idle after 1 s
        time.sleep(1.5)  # the watchdog has looked at the quiet Watch several times
        server.health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING  # still open
    finally:
        release.set()
    watch.cancel()


# -- 3: a champion that loads but cannot predict ----------------------------------------------


@pytest.fixture
def binary_champion(registry, sample):
    """A binary:logistic booster with the right features and contract, published as a new version."""
    import xgboost as xgb

    from stellar_core.features import FEATURE_NAMES, build_features, feature_matrix, label_indices

    from tests.support import publish_by_hand

    features, _ = build_features(sample)
    matrix = xgb.DMatrix(feature_matrix(features), label=(label_indices(features["label"]) == 0).astype(float),
                         feature_names=list(FEATURE_NAMES))
    booster = xgb.train({"objective": "binary:logistic", "nthread": 2}, matrix, 5)
    experiment = registry.client().get_experiment_by_name("stellar-serving-tests").experiment_id
    version = publish_by_hand(registry.tracking_uri, experiment, booster, ("2014-01-05", "2016-12-25"),
                              {"accuracy": 0.5})
    yield version
    registry.set_champion("1")


def test_a_champion_that_cannot_predict_is_refused_and_the_last_good_model_serves(
        make_server, registry, sample_inputs, binary_champion):
    registry.set_champion("1")
    server = make_server()
    stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
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
    stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{restarted.port}"))
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
        stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
        assert stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5).source == "cache"
        reloads_before = _failed_reloads(server)
        with futures.ThreadPoolExecutor(12) as pool:
            reloads = [pool.submit(_outcome, lambda: stub.ReloadModel(pb.ReloadModelRequest(), timeout=30))
                       for _ in range(12)]
            classified = [stub.Classify(_classify_request(sample_inputs), timeout=5).result.model_version
                          for _ in range(20)]
            outcomes = [r.result() for r in reloads]
        registry_reloads = _failed_reloads(server) - reloads_before
    finally:
        hanging.close()
    assert classified == ["1"] * 20
    assert {code for code, _ in outcomes} == {grpc.StatusCode.UNAVAILABLE}
    assert all(details.endswith("still serving the previous model (version 1)") for _, details in outcomes)
    # Every reload runs on the one reload thread and counts one outcome: the 12 calls shared the running
    # reload's follow-up (plus the running one itself if the first callers came before it started).
    assert 1 <= registry_reloads <= 2


def _failed_reloads(server) -> float:
    return server.metrics.registry.get_sample_value("stellar_model_reloads_total", {"outcome": "failed"}) or 0.0


# -- 5: client ids are bounded -----------------------------------------------------------------


def test_long_client_ids_are_refused_or_cut_in_messages_and_logs(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server()
    stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
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
        batch = to_objects(sample_inputs[:20])
        batch[12].client_id = "z" * 300  # past the one-object fast path: checked as the response copies ids
        code, details = _outcome(lambda: stub.ClassifyBatch(pb.ClassifyBatchRequest(objects=batch), timeout=5))
        assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT, f"object 12: client_id '{'z' * 64}…(300 chars)' "
                                                                     "is too long: 300 characters; the maximum is 256")
        code, details = _outcome(lambda: list(stub.ClassifyStream(iter([pb.ClassifyStreamRequest(objects=batch)]),
                                                                  timeout=5)))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details.startswith("stream message 0, object 12: client_id 'zzz")
        invalid = _classify_request(sample_inputs, "y" * 200)
        invalid.object.ClearField("redshift")
        code, details = _outcome(lambda: stub.Classify(invalid, timeout=5))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
        assert details == f"object 0 (client_id '{'y' * 64}…(200 chars)'): field 'redshift' is missing"
    finally:
        logger.removeHandler(handler)
    assert len(records) == 4 and all(len(r.getMessage()) < 300 for r in records)


def test_long_names_in_v2_requests_are_cut_in_messages(make_server, registry):
    from stellar_api._generated.inference import grpc_predict_v2_pb2 as v2
    from stellar_api._generated.inference import grpc_predict_v2_pb2_grpc as v2_grpc

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
    stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("stellar_serving")
    logger.addHandler(handler)
    release = threading.Event()

    def one_then_wait():
        yield pb.ClassifyStreamRequest(objects=to_objects(sample_inputs[:2]))
        release.wait(30)

    try:
        call = stub.ClassifyStream(one_then_wait(), timeout=30)
        assert len(next(call).results) == 2
        time.sleep(0.5)  # the server now waits in the request iterator, where cancellations used to raise
        call.cancel()
        count = None
        for _ in range(200):  # the server records the call when it notices
            count = server.metrics.registry.get_sample_value(
                "stellar_grpc_errors_total", {"method": "ClassifyStream", "code": "CANCELLED"})
            if count:
                break
            # gRPC may drop the handler's generator at a `yield` instead of closing it; then only a
            # garbage collection (which a busy server runs all the time) closes it. Run one here.
            gc.collect()
            time.sleep(0.1)
    finally:
        release.set()
        logger.removeHandler(handler)
    recorded = {sample.labels["code"]: sample.value for metric in server.metrics.registry.collect()
                if metric.name == "stellar_grpc_requests" for sample in metric.samples
                if sample.labels.get("method") == "ClassifyStream" and sample.name.endswith("_total")}
    assert count == 1, f"ClassifyStream calls recorded by code: {recorded}"
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


def test_the_drain_refuses_new_calls_answers_health_and_lets_a_stream_in_flight_finish(
        make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub, health = pb_grpc.ClassifierServiceStub(channel), health_pb2_grpc.HealthStub(channel)
    feed: list = [pb.ClassifyStreamRequest(objects=to_objects(sample_inputs[:1], "a"))]
    more = threading.Event()

    def requests():
        yield feed[0]
        more.wait(30)
        yield pb.ClassifyStreamRequest(objects=to_objects(sample_inputs[1:2], "b"))

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
        # New served calls are refused (under steady traffic the drain would otherwise never end);
        # reflection still answers.
        code, details = _outcome(lambda: stub.Classify(_classify_request(sample_inputs), timeout=5))
        assert (code, details) == (grpc.StatusCode.UNAVAILABLE,
                                   "the server is shutting down; retry on another replica")
        code, _ = _outcome(lambda: list(stub.ClassifyStream(iter(feed), timeout=5)))
        assert code == grpc.StatusCode.UNAVAILABLE
        listing = next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
        assert "stellar.v1.ClassifierService" in {s.name for s in listing.list_services_response.service}
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
        stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
        code, details = _outcome(lambda: stub.ReloadModel(pb.ReloadModelRequest(), timeout=30))
    finally:
        registry.set_champion("1")
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details == (f"registered model {DEFAULT_MODEL_NAME!r} has no alias 'champion'; no model is loaded")


# -- 9: reloads answer what the registry says after they were asked ---------------------------------


def test_a_reload_asked_after_the_alias_moved_reports_the_new_version(make_server, registry, monkeypatch):
    import stellar_mlflow.registry as core_registry

    registry.set_champion("1")
    server = make_server()
    stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    read_alias = core_registry.get_alias_version
    alias_read, release = threading.Event(), threading.Event()

    def slow_after_first_read(*args, **kwargs):
        version = read_alias(*args, **kwargs)
        if not alias_read.is_set():  # the first refresh has read the alias, then is slow to finish
            alias_read.set()
            release.wait(30)
        return version

    monkeypatch.setattr(core_registry, "get_alias_version", slow_after_first_read)
    try:
        polled = server.store.request_reload()  # the poller's refresh
        assert alias_read.wait(30)
        registry.set_champion("2")
        with futures.ThreadPoolExecutor(1) as pool:
            reload = pool.submit(stub.ReloadModel, pb.ReloadModelRequest(), timeout=60)
            for _ in range(50):  # until the call has chosen its reload (a private detail, read only here)
                if server.store._reload is not polled:
                    break
                time.sleep(0.1)
            release.set()
            answer = reload.result()
    finally:
        release.set()
        registry.set_champion("1")
    assert polled.result(timeout=30).current.version == "1"  # what the alias said when it was read
    assert (answer.previous_version, answer.version, answer.changed) == ("1", "2", True)


def test_a_load_that_failed_for_a_passing_fault_is_tried_again(make_server, registry, sample_inputs, monkeypatch):
    from stellar_serving import model_store

    registry.set_champion("1")
    server = make_server()
    stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    load_bundle = model_store.ModelBundle.load
    faults = [OSError(28, "No space left on device")]

    def load_failing_once(folder):
        if faults:
            raise faults.pop()
        return load_bundle(folder)

    monkeypatch.setattr(model_store.ModelBundle, "load", staticmethod(load_failing_once))
    try:
        registry.set_champion("2")
        code, details = _outcome(lambda: stub.ReloadModel(pb.ReloadModelRequest(), timeout=60))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
        assert "version 2 cannot be served: OSError: [Errno 28] No space left on device" in details
        answer = stub.ReloadModel(pb.ReloadModelRequest(), timeout=60)  # the fault has passed
    finally:
        registry.set_champion("1")
    assert (answer.version, answer.changed) == ("2", True)
    assert stub.Classify(_classify_request(sample_inputs), timeout=5).result.model_version == "2"


def test_an_explicit_reload_tries_a_refused_version_again_and_the_poller_does_not(
        make_server, registry, binary_champion):
    registry.set_champion("1")
    server = make_server()
    stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    registry.set_champion(binary_champion)
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("stellar_serving")
    logger.addHandler(handler)
    try:
        outcomes = [_outcome(lambda: stub.ReloadModel(pb.ReloadModelRequest(), timeout=60))]
        with pytest.raises(ModelRejected) as polled:  # the poller's reload: the version is remembered
            server.store.request_reload(explicit=False).result(timeout=60)
        outcomes.append(_outcome(lambda: stub.ReloadModel(pb.ReloadModelRequest(), timeout=60)))
    finally:
        logger.removeHandler(handler)
    assert {code for code, _ in outcomes} == {grpc.StatusCode.FAILED_PRECONDITION}
    assert all("answered shape [64] for 64 probe objects" in details for _, details in outcomes)
    assert "answered shape [64]" in str(polled.value)
    probed = [r for r in records if getattr(r, "event", None) == "model_refused"]
    assert len(probed) == 2  # each ReloadModel probed the version; the poller did not download it


# -- 10: deadlines, TLS keys, the watchdog's way of ending calls ------------------------------------


def test_a_stream_whose_client_deadline_passes_is_counted_as_deadline_exceeded(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server()
    stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    release = threading.Event()

    def one_then_wait():
        yield pb.ClassifyStreamRequest(objects=to_objects(sample_inputs[:2]))
        release.wait(30)

    try:
        call = stub.ClassifyStream(one_then_wait(), timeout=1.5)
        assert len(next(call).results) == 2
        assert call.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # waits for the end
        count = None
        for _ in range(100):  # the server records the call when it notices
            count = server.metrics.registry.get_sample_value(
                "stellar_grpc_errors_total", {"method": "ClassifyStream", "code": "DEADLINE_EXCEEDED"})
            if count:
                break
            time.sleep(0.1)
    finally:
        release.set()
    recorded = {s.labels["code"]: s.value for m in server.metrics.registry.collect() for s in m.samples
                if s.name == "stellar_grpc_requests_total" and s.labels["method"] == "ClassifyStream"}
    assert recorded == {"DEADLINE_EXCEEDED": 1.0}


@pytest.mark.timeout(60)
def test_an_encrypted_tls_key_is_refused_at_start_up_without_asking_for_a_pass_phrase(tmp_path):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.BestAvailableEncryption(b"pass phrase")))
    with pytest.raises(ValueError) as err:
        ServingConfig.from_env({"STELLAR_TLS_CERT": str(cert_path), "STELLAR_TLS_KEY": str(key_path)})
    assert f"STELLAR_TLS_KEY={str(key_path)!r} is encrypted (it needs a pass phrase)" in str(err.value)


def test_the_private_call_cancel_the_watchdog_uses_exists_in_this_grpcio():
    """The watchdog ends calls through context._rpc_event.call.cancel(code, details): the public
    cancel() only says CANCELLED. A grpcio that moves it must fail here, not quietly fall back."""
    from stellar_serving.server import _end_call

    contexts: list = []
    entered, release = threading.Event(), threading.Event()

    def hold(request, context):
        contexts.append(context)
        entered.set()
        release.wait(10)
        return b""

    server = grpc.server(futures.ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "test.Hold", {"Hold": grpc.unary_unary_rpc_method_handler(hold)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        call = grpc.insecure_channel(f"127.0.0.1:{port}").unary_unary("/test.Hold/Hold").future(b"", timeout=10)
        assert entered.wait(10)
        assert callable(contexts[0]._rpc_event.call.cancel)
        _end_call(contexts[0], grpc.StatusCode.DEADLINE_EXCEEDED, "ended by the watchdog")
        error = call.exception(timeout=10)
    finally:
        release.set()
        server.stop(0)
    assert (error.code(), error.details()) == (grpc.StatusCode.DEADLINE_EXCEEDED, "ended by the watchdog")
