"""Serving benchmark: one run, one champion, the same SDSS objects everywhere.

    .venv/bin/python benchmarks/serving_benchmark.py [--rounds 5] [--json benchmarks/results/serving.json]

Builds a 400-round champion in a temporary MLflow store (as the training assets
publish one), starts `python -m stellar_serving serve` and `mlflow models serve
--env-manager local` as their own processes, and measures these paths in
interleaved rounds (every path once per round, so all see the same machine):

  floor        in-process derive_feature_matrix + booster.inplace_predict
               (the booster as trained, all cores; and a single-threaded copy)
  grpc unary   Classify, one object per call, concurrency 1 and 16
  health       grpc.health.v1 Check on the same server: the gRPC round trip with no model
  grpc batch   ClassifyBatch, 1000 objects per call
  grpc stream  ClassifyStream, 1000 objects per message
  v2           ModelInfer (tritonclient, raw contents), 1 and 1000 objects per call
  mlflow       REST /invocations, 1 object (concurrency 1 and 16) and 1000 per call

A second prediction server, pinned to one CPU (--pinned-cpus; as `taskset` or
compose's `cpuset` would pin it), answers the unary and batch paths again: on a
machine it shares with its clients, the pinned server keeps its threads and the
model's trees on one core.

Prints p50 / p99 latency per call, throughput (objects/s, median over rounds)
and ratios to the faster in-process floor of the same request size, and the
targets for each server. Timings are printed, never asserted.
"""

from __future__ import annotations

import os

# The server sets this before loading xgboost (see stellar_serving/server.py);
# the in-process floor gets the same, or it would be slowed by spinning OpenMP threads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import signal
import socket
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
#
# Other work shares this machine, and its load moves during a run. So the paths
# are measured in interleaved rounds (every path once per round, in turn), and
# a path's throughput is the median of its rounds: each comparison with the
# floor is made under the same conditions.


def timed_sequential(call, payloads: list) -> tuple[list[float], float]:
    latencies = []
    start = time.perf_counter()
    for p in payloads:
        t0 = time.perf_counter()
        call(p)
        latencies.append(time.perf_counter() - t0)
    return latencies, time.perf_counter() - start


def timed_concurrent(calls: list, payloads: list) -> tuple[list[float], float]:
    """One thread per callable (each with its own channel / session), payloads dealt round-robin."""
    threads = len(calls)
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
    return [x for part in latencies for x in part], time.perf_counter() - start


class Path_:
    """One measured path: `run(round) -> (latencies, objects, wall)`."""

    def __init__(self, name: str, group: str, run) -> None:
        self.name, self.group, self.run = name, group, run
        self.latencies: list[float] = []
        self.throughputs: list[float] = []

    def record(self, latencies: list[float], objects: int, wall: float) -> None:
        self.latencies.extend(latencies)
        self.throughputs.append(objects / wall)

    def summary(self) -> dict:
        ms = np.array(self.latencies) * 1000
        return {"name": self.name, "group": self.group, "calls": len(self.latencies),
                "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                "throughput": float(np.median(self.throughputs)),
                "throughput_per_round": [round(t, 1) for t in self.throughputs]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="interleaved measurement rounds")
    parser.add_argument("--model-rounds", type=int, default=400, help="boosting rounds of the champion")
    parser.add_argument("--single-calls", type=int, default=300, help="one-object calls per path and round")
    parser.add_argument("--mlflow-single-calls", type=int, default=60, help="the same for the slow REST server")
    parser.add_argument("--batches", type=int, default=4, help=f"{BATCH}-object calls per path and round")
    parser.add_argument("--pinned-cpus", default=str((os.cpu_count() or 1) - 1),
                        help="CPUs for the second, pinned server, e.g. 1 or 2,3 ('none': no pinned server)")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "serving.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import grpc
    import requests
    import tritonclient.grpc as triton
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from stellar_core.contract import CLASSES, MODEL_INPUTS
    from stellar_core.features import FEATURE_NAMES, build_features, derive_feature_matrix
    from stellar_core.model_bundle import CHAMPION_ALIAS, DEFAULT_MODEL_NAME
    from stellar_core.registry import get_alias_version, load_bundle
    from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
    from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc
    from mlflow.tracking import MlflowClient

    features, _ = build_features(pd.read_csv(SAMPLE))
    inputs = np.ascontiguousarray(features.loc[:, list(MODEL_INPUTS)].to_numpy(dtype=np.float32))
    feats = derive_feature_matrix(inputs)
    n = len(inputs)
    objects = [pb.SdssObject(client_id=str(k), **dict(zip(MODEL_INPUTS, map(float, row))))
               for k, row in enumerate(inputs)]
    procs: list[subprocess.Popen] = []
    work = Path(tempfile.mkdtemp(prefix="stellar-serving-bench-"))
    env_bin = str(Path(sys.executable).parent)
    R, S, SM, B = args.rounds, args.single_calls, args.mlflow_single_calls, args.batches

    def single_slice(r: int, count: int) -> range:  # different objects every round
        start = (r * count) % max(1, n - count)
        return range(start, start + count)

    def batch_slice(r: int) -> list[int]:
        return [((r * B + b) * BATCH) % (n - BATCH + 1) for b in range(B)]

    try:
        print(f"training and publishing a {args.model_rounds}-round champion in {work} ...", flush=True)
        uri = build_champion(work, features, args.model_rounds)

        # -- the two servers -----------------------------------------------------------
        port, metrics_port, rest_port = free_port(), free_port(), free_port()
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "STELLAR_GRPC_HOST": "127.0.0.1",
               "STELLAR_GRPC_PORT": str(port), "STELLAR_METRICS_HOST": "127.0.0.1",
               "STELLAR_METRICS_PORT": str(metrics_port), "STELLAR_MODEL_CACHE_DIR": str(work / "cache"),
               "STELLAR_POLL_SECONDS": "0", "STELLAR_LOG_LEVEL": "WARNING"}
        # Own process groups: stopping them takes their children (uvicorn workers) too.
        procs.append(subprocess.Popen([sys.executable, "-m", "stellar_serving", "serve"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "w"),
                                      start_new_session=True))
        pinned_cpus = sorted({int(c) for c in args.pinned_cpus.split(",")}) if args.pinned_cpus != "none" else []
        pinned_port = free_port()
        if pinned_cpus:
            # The affinity is set before the server starts a thread, as taskset would set it.
            launch = (f"import os, runpy, sys; os.sched_setaffinity(0, {set(pinned_cpus)!r}); "
                      "sys.argv = ['stellar_serving', 'serve']; runpy.run_module('stellar_serving', run_name='__main__')")
            procs.append(subprocess.Popen(
                [sys.executable, "-c", launch],
                env={**env, "STELLAR_GRPC_PORT": str(pinned_port), "STELLAR_METRICS_PORT": "-1",
                     "STELLAR_MODEL_CACHE_DIR": str(work / "cache-pinned")},
                stdout=subprocess.DEVNULL, stderr=open(work / "server-pinned.log", "w"), start_new_session=True))
        procs.append(subprocess.Popen(
            [str(Path(env_bin) / "mlflow"), "models", "serve", "-m", f"models:/{DEFAULT_MODEL_NAME}@{CHAMPION_ALIAS}",
             "--env-manager", "local", "--host", "127.0.0.1", "-p", str(rest_port), "--workers", "1"],
            env={**env, "PATH": env_bin + os.pathsep + os.environ.get("PATH", "")},
            stdout=open(work / "mlflow-serve.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
        target = f"127.0.0.1:{port}"
        base = f"http://127.0.0.1:{rest_port}"
        stub = pb_grpc.ClassifierStub(grpc.insecure_channel(target))
        wait_until(lambda: stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=1).version, "the gRPC server")
        pinned_stub = pb_grpc.ClassifierStub(grpc.insecure_channel(f"127.0.0.1:{pinned_port}"))
        if pinned_cpus:
            wait_until(lambda: pinned_stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=1).version,
                       "the pinned gRPC server")
        health_stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(target))
        health_check = health_pb2.HealthCheckRequest(service="")
        wait_until(lambda: urllib.request.urlopen(f"{base}/ping", timeout=2).status == 200, "mlflow models serve")

        # -- the floor: the same model files, in this process ---------------------------------
        mlflow_client = MlflowClient(uri, registry_uri=uri)
        bundle = load_bundle(mlflow_client, get_alias_version(mlflow_client, DEFAULT_MODEL_NAME),
                             work / "floor-model")
        single = bundle.booster.copy()
        single.set_param({"nthread": 1})
        expected = bundle.predict_proba_inputs(inputs)

        def floor_with(booster):
            return lambda rows: booster.inplace_predict(derive_feature_matrix(rows))

        # -- clients ------------------------------------------------------------------------------
        tclient = triton.InferenceServerClient(url=target)

        def v2_call(rows: np.ndarray):
            t = triton.InferInput("input__0", list(rows.shape), "FP32")
            t.set_data_from_numpy(rows)
            return tclient.infer(DEFAULT_MODEL_NAME, [t])

        session = requests.Session()

        def rest_body(rows: np.ndarray) -> bytes:
            return json.dumps({"dataframe_split": {"columns": list(FEATURE_NAMES), "data": rows.tolist()}}).encode()

        def rest_call_with(s):
            def call(body: bytes):
                r = s.post(f"{base}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=60)
                r.raise_for_status()
                return r
            return call

        rest_call = rest_call_with(session)
        grpc_c16 = [pb_grpc.ClassifierStub(grpc.insecure_channel(target)).Classify for _ in range(16)]
        pinned_c16 = [pb_grpc.ClassifierStub(grpc.insecure_channel(f"127.0.0.1:{pinned_port}")).Classify
                      for _ in range(16 if pinned_cpus else 0)]
        rest_c16 = [rest_call_with(requests.Session()) for _ in range(16)]
        classify_requests = [pb.ClassifyRequest(object=o) for o in objects]
        starts = {0} | {k for r in range(R + 1) for k in batch_slice(r)}  # rounds 0..R-1, plus warm-up
        batch_requests = {k: pb.ClassifyBatchRequest(objects=objects[k:k + BATCH]) for k in starts}
        rest_single_bodies = [rest_body(feats[k:k + 1]) for k in range(n)]
        rest_batch_bodies = {k: rest_body(feats[k:k + BATCH]) for k in batch_requests}

        def seq(call, payloads, per_call):
            latencies, wall = timed_sequential(call, payloads)
            return latencies, per_call * len(payloads), wall

        def conc(calls, payloads, per_call):
            latencies, wall = timed_concurrent(calls, payloads)
            return latencies, per_call * len(payloads), wall

        def stream_round(r):
            messages = [batch_requests[k] for k in batch_slice(r)]
            t0 = time.perf_counter()
            for _response in stub.ClassifyStream(iter(messages), timeout=120):
                pass
            wall = time.perf_counter() - t0
            return [wall], BATCH * len(messages), wall

        paths = [
            Path_("floor, 1 object, all cores", "single",
                  lambda r: seq(floor_with(bundle.booster), [inputs[k:k + 1] for k in single_slice(r, S)], 1)),
            Path_("floor, 1 object, 1 thread", "single",
                  lambda r: seq(floor_with(single), [inputs[k:k + 1] for k in single_slice(r, S)], 1)),
            Path_("grpc Classify, concurrency 1", "single",
                  lambda r: seq(lambda q: stub.Classify(q, timeout=10),
                                [classify_requests[k] for k in single_slice(r, S)], 1)),
            Path_("grpc Classify, concurrency 16", "single",
                  lambda r: conc([(lambda c: (lambda q: c(q, timeout=10)))(c) for c in grpc_c16],
                                 [classify_requests[k] for k in single_slice(r, S)], 1)),
            Path_("grpc Health.Check, concurrency 1", "single",
                  lambda r: seq(lambda q: health_stub.Check(health_check, timeout=10), list(single_slice(r, S)), 1)),
            Path_("v2 ModelInfer, 1 object", "single",
                  lambda r: seq(v2_call, [feats[k:k + 1] for k in single_slice(r, S)], 1)),
            Path_("mlflow REST, 1 object", "single",
                  lambda r: seq(rest_call, [rest_single_bodies[k] for k in single_slice(r, SM)], 1)),
            Path_("mlflow REST, 1 object, concurrency 16", "single",
                  lambda r: conc(rest_c16, [rest_single_bodies[k] for k in single_slice(r, SM * 2)], 1)),
            Path_(f"floor, {BATCH} objects, all cores", "batch",
                  lambda r: seq(floor_with(bundle.booster), [inputs[k:k + BATCH] for k in batch_slice(r)], BATCH)),
            Path_(f"floor, {BATCH} objects, 1 thread", "batch",
                  lambda r: seq(floor_with(single), [inputs[k:k + BATCH] for k in batch_slice(r)], BATCH)),
            Path_(f"grpc ClassifyBatch, {BATCH}/call", "batch",
                  lambda r: seq(lambda q: stub.ClassifyBatch(q, timeout=60),
                                [batch_requests[k] for k in batch_slice(r)], BATCH)),
            Path_(f"grpc ClassifyStream, {BATCH}/message", "batch", stream_round),
            *([Path_("pinned: grpc Classify, concurrency 1", "single",
                     lambda r: seq(lambda q: pinned_stub.Classify(q, timeout=10),
                                   [classify_requests[k] for k in single_slice(r, S)], 1)),
               Path_("pinned: grpc Classify, concurrency 16", "single",
                     lambda r: conc([(lambda c: (lambda q: c(q, timeout=10)))(c) for c in pinned_c16],
                                    [classify_requests[k] for k in single_slice(r, S)], 1)),
               Path_(f"pinned: grpc ClassifyBatch, {BATCH}/call", "batch",
                     lambda r: seq(lambda q: pinned_stub.ClassifyBatch(q, timeout=60),
                                   [batch_requests[k] for k in batch_slice(r)], BATCH))]
              if pinned_cpus else []),
            Path_(f"v2 ModelInfer, {BATCH}/call", "batch",
                  lambda r: seq(v2_call, [feats[k:k + BATCH] for k in batch_slice(r)], BATCH)),
            Path_(f"mlflow REST, {BATCH}/call", "batch",
                  lambda r: seq(rest_call, [rest_batch_bodies[k] for k in batch_slice(r)], BATCH)),
        ]

        # Same answers everywhere (and warm-up).
        got = stub.ClassifyBatch(batch_requests[0], timeout=60)
        assert np.array_equal(np.array([[x.probabilities[c] for c in CLASSES] for x in got.results], np.float32),
                              expected[:BATCH]), "stellar.v1 answers differ from the in-process floor"
        assert np.array_equal(v2_call(feats[:BATCH]).as_numpy("output__0"), expected[:BATCH])
        if pinned_cpus:
            got = pinned_stub.ClassifyBatch(batch_requests[0], timeout=60)
            assert np.array_equal(
                np.array([[x.probabilities[c] for c in CLASSES] for x in got.results], np.float32),
                expected[:BATCH]), "the pinned server's answers differ from the in-process floor"
        rest_answer = np.array(rest_call(rest_batch_bodies[0]).json()["predictions"], dtype=np.float32)
        mlflow_matches = bool(np.allclose(rest_answer, expected[:BATCH], atol=1e-6))
        for path in paths:
            path.run(R)  # warm-up round, not recorded

        loads = []
        for r in range(R):
            print(f"round {r + 1}/{R} (load average {os.getloadavg()[0]:.1f})", flush=True)
            loads.append(os.getloadavg()[0])
            for path in paths:
                path.record(*path.run(r))
        metrics_text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    # -- report --------------------------------------------------------------------------
    results = [p.summary() for p in paths]
    by = {r["name"]: r for r in results}
    floor_1 = max((r for r in results if r["name"].startswith("floor, 1 object")), key=lambda r: r["throughput"])
    floor_b = max((r for r in results if r["name"].startswith(f"floor, {BATCH}")), key=lambda r: r["throughput"])
    print(f"\n{n} SDSS objects, {args.model_rounds}-round model, {os.cpu_count()} CPUs, {R} interleaved rounds; "
          f"1-min load average during the rounds: {min(loads):.1f} .. {max(loads):.1f}")
    print("throughput = median over rounds; vs floor = against the faster in-process floor of the same size\n")
    print(f"{'path':40} {'p50 ms':>9} {'p99 ms':>9} {'objects/s':>11} {'vs floor':>9}")
    for r in results:
        reference = floor_1 if r["group"] == "single" else floor_b
        r["ratio_to_floor"] = r["throughput"] / reference["throughput"]
        print(f"{r['name']:40} {r['p50_ms']:9.3f} {r['p99_ms']:9.3f} {r['throughput']:11.0f} "
              f"{r['ratio_to_floor']:9.2f}")
    rest1, rest16 = by["mlflow REST, 1 object"], by["mlflow REST, 1 object, concurrency 16"]
    print("\nratios:")
    print(f"  health check c1 p50 (gRPC round trip, no model): {by['grpc Health.Check, concurrency 1']['p50_ms']:.3f} ms")
    print(f"  v2 batch / floor batch          : {by[f'v2 ModelInfer, {BATCH}/call']['ratio_to_floor']:.2f}")
    print(f"  mlflow REST answers match the floor (1e-6): {mlflow_matches}")
    buckets = {line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
               for line in metrics_text.splitlines() if line.startswith("stellar_booster_call_rows_bucket")}
    one = buckets.get("1.0", 0.0)
    few = buckets.get("50.0", 0.0) - one
    print(f"  server booster calls (whole run): {one:.0f} with 1 row, {few:.0f} with 2-50 rows "
          "(concurrent one-object calls predicted together)")
    servers = {"server on all CPUs": ""}
    if pinned_cpus:
        servers[f"server pinned to CPU {','.join(map(str, pinned_cpus))}"] = "pinned: "
    checks: dict[str, dict[str, bool]] = {}
    for server_name, prefix in servers.items():
        unary, unary16 = by[f"{prefix}grpc Classify, concurrency 1"], by[f"{prefix}grpc Classify, concurrency 16"]
        batch = by[f"{prefix}grpc ClassifyBatch, {BATCH}/call"]
        print(f"\n{server_name}:")
        print(f"  grpc unary c1  / mlflow REST c1   : {unary['throughput'] / rest1['throughput']:.1f}x")
        print(f"  grpc unary c16 / mlflow REST c16  : {unary16['throughput'] / rest16['throughput']:.1f}x")
        print(f"  grpc batch / floor batch          : {batch['ratio_to_floor']:.2f}")
        checks[server_name] = {
            "unary p50 <= 1 ms (concurrency 1)": unary["p50_ms"] <= 1.0,
            "unary p99 <= 3 ms (concurrency 1)": unary["p99_ms"] <= 3.0,
            "batch >= 0.5 x floor": batch["ratio_to_floor"] >= 0.5,
            "single-object >= 10 x mlflow REST (concurrency 1)": unary["throughput"] >= 10 * rest1["throughput"],
            "single-object >= 10 x mlflow REST (concurrency 16)": unary16["throughput"] >= 10 * rest16["throughput"],
        }
        if not prefix:
            stream = by[f"grpc ClassifyStream, {BATCH}/message"]
            print(f"  grpc stream / floor batch         : {stream['ratio_to_floor']:.2f}")
            checks[server_name]["stream >= 0.5 x floor"] = stream["ratio_to_floor"] >= 0.5
    for server_name, server_checks in checks.items():
        print(f"\ntargets, {server_name}:")
        for name, ok in server_checks.items():
            print(f"  [{'met' if ok else 'MISSED'}] {name}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"objects": n, "model_rounds": args.model_rounds, "cpus": os.cpu_count(),
                               "load_average_1min": loads, "results": results, "targets": checks,
                               "mlflow_matches": mlflow_matches}, indent=2))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
