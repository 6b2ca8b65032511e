"""The server as a real process: no Dagster, generated stubs, `stellar classify --csv`
through ClassifyStream, and SIGTERM draining an in-flight stream."""

from __future__ import annotations

import csv
import json
import os
import queue
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from stellar_core.contract import CLASSES, MODEL_INPUTS
from stellar_serving import cli
from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc
from tests.support import free_port

from .messages import to_objects

PACKAGE = Path(__file__).resolve().parents[2] / "stellar_serving"


def test_stellar_serving_never_imports_dagster():
    code = (
        "import sys\n"
        "import stellar_serving.server, stellar_serving.cli, stellar_api.client\n"
        "import stellar_serving.model_store, stellar_serving.servicers, stellar_api.validation\n"
        "leaked = sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster'))\n"
        "print('dagster modules:', leaked)\n"
        "sys.exit(1 if leaked else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "dagster modules: []" in done.stdout


def test_generated_stubs_are_a_package_with_relative_imports():
    generated = PACKAGE.parent / "stellar_api" / "_generated"
    for folder in (generated, generated / "stellar", generated / "stellar" / "v1", generated / "inference"):
        assert (folder / "__init__.py").is_file(), folder
    grpc_stub = (generated / "stellar" / "v1" / "classifier_pb2_grpc.py").read_text()
    assert "from . import classifier_pb2" in grpc_stub and "from stellar.v1" not in grpc_stub
    # The inference messages live in a private descriptor pool, so tritonclient (which
    # defines the same `inference.*` names) can be imported in the same process.
    import tritonclient.grpc.service_pb2  # noqa: F401

    from stellar_api._generated.inference import grpc_predict_v2_pb2 as v2

    assert v2.ModelInferRequest.DESCRIPTOR.full_name == "inference.ModelInferRequest"
    assert v2.DESCRIPTOR.pool is not tritonclient.grpc.service_pb2.DESCRIPTOR.pool


def _wait_serving(port: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    health = health_pb2_grpc.HealthStub(channel)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "server process exited early"
        try:
            if health.Check(health_pb2.HealthCheckRequest(), timeout=1).status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.2)
    pytest.fail("server did not become SERVING")


def test_serve_process_cli_csv_stream_and_sigterm_drain(registry, sample, sample_inputs, tmp_path):
    registry.set_champion("1")
    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "STELLAR_GRPC_HOST": "127.0.0.1", "STELLAR_GRPC_PORT": str(port),
           "STELLAR_METRICS_HOST": "127.0.0.1", "STELLAR_METRICS_PORT": str(metrics_port),
           "MLFLOW_TRACKING_URI": registry.tracking_uri, "STELLAR_MODEL_CACHE_DIR": str(tmp_path / "cache"),
           "STELLAR_POLL_SECONDS": "0", "STELLAR_SHUTDOWN_GRACE_SECONDS": "15"}
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "stellar_serving", "serve"], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_serving(port, proc)
        target = f"127.0.0.1:{port}"

        # `stellar classify --csv`: the real sample's rows, streamed in chunks.
        rows = sample.iloc[:700]
        csv_path, out_path = tmp_path / "objects.csv", tmp_path / "predictions.csv"
        rows.to_csv(csv_path, index=False)
        assert cli.main(["classify", "--target", target, "--csv", str(csv_path), "--output", str(out_path),
                         "--chunk-size", "128"]) == 0
        with open(out_path, newline="") as handle:
            predicted = list(csv.DictReader(handle))
        expected = registry.expected("1", rows.loc[:, list(MODEL_INPUTS)].to_numpy(dtype=np.float32))
        assert [p["client_id"] for p in predicted] == rows["spec_obj_ID"].astype(str).tolist()
        assert [p["class"] for p in predicted] == [CLASSES[k] for k in expected.argmax(axis=1)]
        assert {p["model_version"] for p in predicted} == {"1"}
        got = np.array([[float(p[f"p_{c}"]) for c in CLASSES] for p in predicted])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)  # CSV holds 6 significant digits

        # A stream in flight when SIGTERM arrives finishes normally.
        stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(target))
        feed: queue.Queue = queue.Queue()
        call = stub.ClassifyStream(iter(feed.get, None), timeout=60)
        chunks = [to_objects(sample_inputs[k:k + 10], f"m{k}") for k in range(0, 50, 10)]
        feed.put(pb.ClassifyStreamRequest(objects=chunks[0]))
        answers = [next(call)]
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)  # the server has begun draining
        for chunk in chunks[1:]:
            feed.put(pb.ClassifyStreamRequest(objects=chunk))
            answers.append(next(call))
            time.sleep(0.2)
        feed.put(None)
        assert list(call) == []
        assert call.code() == grpc.StatusCode.OK
        assert [a.results[0].client_id for a in answers] == [f"m{k}-0" for k in range(0, 50, 10)]
        assert proc.wait(timeout=30) == 0
        with pytest.raises(grpc.RpcError) as err:  # and it is gone
            stub.Classify(pb.ClassifyRequest(object=chunks[0][0]), timeout=3)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        events = [json.loads(line).get("event") for line in log_path.read_text().splitlines() if line.startswith("{")]
        assert events.index("shutdown") < events.index("stopped")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
