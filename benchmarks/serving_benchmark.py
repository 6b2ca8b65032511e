"""Serving benchmark: one run, one champion, the same SDSS objects everywhere.

    .venv/bin/python benchmarks/serving_benchmark.py [--unary-calls 2000] [--json benchmarks/results/serving.json]

Builds a 400-round champion in a temporary MLflow store (as the training assets
publish one), starts `python -m stellar_serving serve` as its own process, and
measures, in this order:

  floor        in-process derive_feature_matrix + booster.inplace_predict
  grpc unary   Classify, concurrency 1 and 16
  grpc batch   ClassifyBatch, 1000 objects per call
  grpc stream  ClassifyStream, 1000 objects per message
  v2 unary     ModelInfer (tritonclient, raw contents), 1 object per call
  v2 batch     ModelInfer, 1000 objects per call
  mlflow       `mlflow models serve --env-manager local` (REST), 1 object and 1000 per call

Prints p50 / p99 latency per call and throughput (objects/s), and ratios to the
in-process floor measured in the same run. Timings are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO.parent / "shared" / "data" / "sdss17_sample.csv.gz"
BATCH = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_champion(root: Path, features: pd.DataFrame, rounds: int) -> str:
    """Train and publish a champion the way the training assets do; return the tracking URI."""
    import mlflow
    import xgboost as xgb
    from mlflow.models import infer_signature
    from mlflow.tracking import MlflowClient

    from stellar_core.features import FEATURE_NAMES, feature_matrix, label_indices
    from stellar_core.model_bundle import (CHAMPION_ALIAS, DEFAULT_MODEL_NAME, SERVING_ARTIFACT_DIR,
                                           TAG_WINDOW_FIRST, TAG_WINDOW_LAST, ModelBundle, new_contract)

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.create_experiment("serving-benchmark", artifact_location=(root / "artifacts").as_uri())
    matrix = xgb.DMatrix(feature_matrix(features), label=label_indices(features["label"]),
                         feature_names=list(FEATURE_NAMES))
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "tree_method": "hist", "max_depth": 6,
                         "eta": 0.1, "seed": 0}, matrix, rounds)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    example = pd.DataFrame(feature_matrix(features.iloc[:5]), columns=list(FEATURE_NAMES))
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.xgboost.log_model(booster, name="model", input_example=example,
                                 signature=infer_signature(example, booster.inplace_predict(example.to_numpy())),
                                 pip_requirements=["xgboost"])
        with tempfile.TemporaryDirectory() as tmp:
            card = {"training_window": {"first_week": "2000-03-05", "last_week": "2020-03-22"}, "metrics": {}}
            ModelBundle(booster, new_contract(), card).save(Path(tmp) / SERVING_ARTIFACT_DIR)
            mlflow.log_artifacts(str(Path(tmp) / SERVING_ARTIFACT_DIR), artifact_path=SERVING_ARTIFACT_DIR)
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", DEFAULT_MODEL_NAME).version
    client.set_model_version_tag(DEFAULT_MODEL_NAME, version, TAG_WINDOW_FIRST, "2000-03-05")
    client.set_model_version_tag(DEFAULT_MODEL_NAME, version, TAG_WINDOW_LAST, "2020-03-22")
    client.set_registered_model_alias(DEFAULT_MODEL_NAME, CHAMPION_ALIAS, version)
    return uri


def wait_until(check, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.25)
    raise SystemExit(f"timed out waiting for {what}")


# -- measurement ------------------------------------------------------------------------


def summary(name: str, latencies: list[float], objects: int, wall: float) -> dict:
    ms = np.array(latencies) * 1000
    return {"name": name, "calls": len(latencies), "objects": objects,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "throughput": objects / wall}


def run_sequential(name: str, call, payloads: list, objects_per_call: int, warmup: int = 20) -> dict:
    for p in payloads[:warmup]:
        call(p)
    latencies = []
    start = time.perf_counter()
    for p in payloads:
        t0 = time.perf_counter()
        call(p)
        latencies.append(time.perf_counter() - t0)
    wall = time.perf_counter() - start
    return summary(name, latencies, objects_per_call * len(payloads), wall)


def run_concurrent(name: str, make_call, payloads: list, threads: int) -> dict:
    """`make_call()` gives each thread its own callable (its own channel)."""
    calls = [make_call() for _ in range(threads)]
    for call in calls:
        for p in payloads[:10]:
            call(p)
    shards = [payloads[k::threads] for k in range(threads)]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def work(k: int) -> None:
        barrier.wait()
        for p in shards[k]:
            t0 = time.perf_counter()
            calls[k](p)
            latencies[k].append(time.perf_counter() - t0)

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    start = time.perf_counter()
    for w in workers:
        w.join()
    wall = time.perf_counter() - start
    flat = [x for part in latencies for x in part]
    return summary(name, flat, len(flat), wall)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--unary-calls", type=int, default=2000)
    parser.add_argument("--mlflow-calls", type=int, default=300)
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "serving.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import grpc
    import tritonclient.grpc as triton

    from stellar_core.contract import MODEL_INPUTS
    from stellar_core.features import FEATURE_NAMES, build_features, derive_feature_matrix
    from stellar_core.model_bundle import ModelBundle
    from stellar_serving._generated.stellar.v1 import classifier_pb2 as pb
    from stellar_serving._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc

    features, _ = build_features(pd.read_csv(SAMPLE))
    inputs = np.ascontiguousarray(features.loc[:, list(MODEL_INPUTS)].to_numpy(dtype=np.float32))
    n = len(inputs)
    objects = [pb.SdssObject(client_id=str(k), **dict(zip(MODEL_INPUTS, map(float, row))))
               for k, row in enumerate(inputs)]
    singles = list(range(min(args.unary_calls, n)))
    batches = [objects[k:k + BATCH] for k in range(0, n, BATCH)]
    results: list[dict] = []
    procs: list[subprocess.Popen] = []
    work = Path(tempfile.mkdtemp(prefix="stellar-serving-bench-"))
    env_bin = str(Path(sys.executable).parent)
    try:
        print(f"training and publishing a {args.rounds}-round champion in {work} ...", flush=True)
        uri = build_champion(work, features, args.rounds)

        # -- server process ---------------------------------------------------------
        port, metrics_port = free_port(), free_port()
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "STELLAR_GRPC_HOST": "127.0.0.1",
               "STELLAR_GRPC_PORT": str(port), "STELLAR_METRICS_HOST": "127.0.0.1",
               "STELLAR_METRICS_PORT": str(metrics_port), "STELLAR_MODEL_CACHE_DIR": str(work / "cache"),
               "STELLAR_POLL_SECONDS": "0", "STELLAR_LOG_LEVEL": "WARNING"}
        procs.append(subprocess.Popen([sys.executable, "-m", "stellar_serving", "serve"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "w")))
        target = f"127.0.0.1:{port}"
        channel = grpc.insecure_channel(target)
        stub = pb_grpc.ClassifierStub(channel)
        wait_until(lambda: stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=1).version, "the gRPC server")

        # -- floor: in-process, same model files the server loaded -------------------
        from stellar_core.registry import load_bundle
        from mlflow.tracking import MlflowClient

        mlflow_client = MlflowClient(uri, registry_uri=uri)
        from stellar_core.registry import get_alias_version

        bundle: ModelBundle = load_bundle(mlflow_client, get_alias_version(mlflow_client, "stellar-classifier"),
                                          work / "floor-model")
        # The floor is the better of the booster as trained (all cores) and a
        # single-threaded copy, for each request size.
        single = bundle.booster.copy()
        single.set_param({"nthread": 1})

        def floor_with(booster):
            return lambda rows: booster.inplace_predict(derive_feature_matrix(rows))

        print("measuring the in-process floor ...", flush=True)
        for label, booster in (("all cores", bundle.booster), ("1 thread", single)):
            one = run_sequential(f"floor: 1 object ({label})", floor_with(booster),
                                 [inputs[k:k + 1] for k in singles], 1)
            many = run_sequential(f"floor: {BATCH} objects ({label})", floor_with(booster),
                                  [inputs[k:k + BATCH] for k in range(0, n, BATCH)], BATCH, warmup=2)
            results.extend([one, many])
        expected = bundle.predict_proba_inputs(inputs)

        # -- stellar.v1 ---------------------------------------------------------------
        print("measuring stellar.v1 ...", flush=True)
        requests_1 = [pb.ClassifyRequest(object=objects[k]) for k in singles]
        results.append(run_sequential("grpc Classify, concurrency 1", lambda r: stub.Classify(r, timeout=10),
                                      requests_1, 1))

        def per_thread_stub():
            s = pb_grpc.ClassifierStub(grpc.insecure_channel(target))
            return lambda r: s.Classify(r, timeout=10)

        results.append(run_concurrent("grpc Classify, concurrency 16", per_thread_stub, requests_1, 16))
        batch_requests = [pb.ClassifyBatchRequest(objects=b) for b in batches]
        answers = []
        results.append(run_sequential(f"grpc ClassifyBatch, {BATCH}/call",
                                      lambda r: answers.append(stub.ClassifyBatch(r, timeout=30)),
                                      batch_requests, BATCH, warmup=2))
        got = np.array([[res.probabilities[c] for c in ("GALAXY", "QSO", "STAR")]
                        for a in answers[-len(batches):] for res in a.results], dtype=np.float32)
        assert np.array_equal(got, expected), "server answers differ from the in-process floor"

        def stream_all(_):
            for _response in stub.ClassifyStream(iter(batch_requests), timeout=120):
                pass

        list(stub.ClassifyStream(iter(batch_requests[:2]), timeout=60))  # warm-up
        t0 = time.perf_counter()
        stream_all(None)
        wall = time.perf_counter() - t0
        results.append(summary(f"grpc ClassifyStream, {BATCH}/message", [wall], n, wall))

        # -- Open Inference Protocol (tritonclient) ------------------------------------
        print("measuring the Open Inference Protocol path ...", flush=True)
        tclient = triton.InferenceServerClient(url=target)
        feats = derive_feature_matrix(inputs)

        def v2_inputs(rows: np.ndarray):
            t = triton.InferInput("input__0", list(rows.shape), "FP32")
            t.set_data_from_numpy(rows)
            return [t]

        v2_single = [v2_inputs(feats[k:k + 1]) for k in singles]
        results.append(run_sequential("v2 ModelInfer, 1 object", lambda i: tclient.infer("stellar-classifier", i),
                                      v2_single, 1))
        v2_batches = [v2_inputs(feats[k:k + BATCH]) for k in range(0, n, BATCH)]
        results.append(run_sequential(f"v2 ModelInfer, {BATCH}/call",
                                      lambda i: tclient.infer("stellar-classifier", i), v2_batches, BATCH, warmup=2))
        check = tclient.infer("stellar-classifier", v2_batches[0]).as_numpy("output__0")
        assert np.array_equal(check, expected[:BATCH])

        # -- mlflow models serve ---------------------------------------------------------
        print("starting `mlflow models serve` ...", flush=True)
        rest_port = free_port()
        rest_env = {**env, "PATH": env_bin + os.pathsep + os.environ.get("PATH", "")}
        procs.append(subprocess.Popen(
            [str(Path(env_bin) / "mlflow"), "models", "serve", "-m", "models:/stellar-classifier@champion",
             "--env-manager", "local", "--host", "127.0.0.1", "-p", str(rest_port), "--workers", "1"],
            env=rest_env, stdout=open(work / "mlflow-serve.log", "w"), stderr=subprocess.STDOUT))
        base = f"http://127.0.0.1:{rest_port}"
        wait_until(lambda: urllib.request.urlopen(f"{base}/ping", timeout=2).status == 200, "mlflow models serve")
        import requests

        session = requests.Session()
        columns = list(FEATURE_NAMES)

        def rest_body(rows: np.ndarray) -> bytes:
            return json.dumps({"dataframe_split": {"columns": columns, "data": rows.tolist()}}).encode()

        def rest_call(body: bytes):
            r = session.post(f"{base}/invocations", data=body, headers={"Content-Type": "application/json"},
                             timeout=60)
            r.raise_for_status()
            return r

        rest_single = [rest_body(feats[k:k + 1]) for k in singles[: args.mlflow_calls]]
        print("measuring mlflow models serve ...", flush=True)
        results.append(run_sequential("mlflow REST, 1 object", rest_call, rest_single, 1, warmup=10))

        def per_thread_session():
            own = requests.Session()
            return lambda body: own.post(f"{base}/invocations", data=body,
                                         headers={"Content-Type": "application/json"}, timeout=60).raise_for_status()

        results.append(run_concurrent("mlflow REST, 1 object, concurrency 16", per_thread_session,
                                      rest_single, 16))
        rest_batches = [rest_body(feats[k:k + BATCH]) for k in range(0, min(n, 10 * BATCH), BATCH)]
        results.append(run_sequential(f"mlflow REST, {BATCH}/call", rest_call, rest_batches, BATCH, warmup=1))
        rest_answer = np.array(rest_call(rest_batches[0]).json()["predictions"], dtype=np.float32)
        mlflow_matches = bool(np.allclose(rest_answer, expected[:BATCH], atol=1e-6))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    # -- report --------------------------------------------------------------------------
    by = {r["name"]: r for r in results}
    floor_1 = max((r for r in results if r["name"].startswith("floor: 1 object")), key=lambda r: r["throughput"])
    floor_b = max((r for r in results if r["name"].startswith(f"floor: {BATCH}")), key=lambda r: r["throughput"])
    load = os.getloadavg()
    print(f"\n{n} SDSS objects, {args.rounds}-round model, {os.cpu_count()} CPUs, "
          f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)\n")
    print(f"{'path':36} {'p50 ms':>9} {'p99 ms':>9} {'objects/s':>12} {'vs floor':>9}")
    for r in results:
        reference = floor_1 if ("1 object" in r["name"] or "Classify," in r["name"]) else floor_b
        r["ratio_to_floor"] = r["throughput"] / reference["throughput"]
        print(f"{r['name']:36} {r['p50_ms']:9.3f} {r['p99_ms']:9.3f} {r['throughput']:12.0f} "
              f"{r['ratio_to_floor']:9.2f}")
    unary = by["grpc Classify, concurrency 1"]
    unary16 = by["grpc Classify, concurrency 16"]
    rest1 = by["mlflow REST, 1 object"]
    checks = {
        "unary p50 <= 1 ms (concurrency 1)": unary["p50_ms"] <= 1.0,
        "unary p99 <= 3 ms (concurrency 1)": unary["p99_ms"] <= 3.0,
        "batch >= 0.5 x floor": by[f"grpc ClassifyBatch, {BATCH}/call"]["throughput"] >= 0.5 * floor_b["throughput"],
        "stream >= 0.5 x floor": by[f"grpc ClassifyStream, {BATCH}/message"]["throughput"]
        >= 0.5 * floor_b["throughput"],
        "single-object >= 10 x mlflow REST (concurrency 1)": unary["throughput"] >= 10 * rest1["throughput"],
    }
    print("\nratios:")
    print(f"  grpc unary c1 / mlflow REST single : {unary['throughput'] / rest1['throughput']:.1f}x")
    rest16 = by["mlflow REST, 1 object, concurrency 16"]
    print(f"  grpc unary c16 / mlflow REST c16   : {unary16['throughput'] / rest16['throughput']:.1f}x")
    print(f"  grpc unary c16 / mlflow REST c1    : {unary16['throughput'] / rest1['throughput']:.1f}x")
    print(f"  grpc batch / floor batch           : {by[f'grpc ClassifyBatch, {BATCH}/call']['ratio_to_floor']:.2f}")
    print(f"  grpc stream / floor batch          : "
          f"{by[f'grpc ClassifyStream, {BATCH}/message']['ratio_to_floor']:.2f}")
    print(f"  mlflow REST answers match the floor: {mlflow_matches}")
    print("\ntargets:")
    for name, ok in checks.items():
        print(f"  [{'met' if ok else 'MISSED'}] {name}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"objects": n, "rounds": args.rounds, "cpus": os.cpu_count(), "load_average": load,
                               "results": results,
                               "targets": checks, "mlflow_matches": mlflow_matches}, indent=2))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
