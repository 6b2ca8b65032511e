"""Serving benchmark: one run, one champion, the same SDSS objects everywhere.

    .venv/bin/python benchmarks/serving_benchmark.py [--rounds 5] [--quick] [--json benchmarks/results/serving.json]

Builds a 400-round champion in a temporary MLflow store (as the training assets
publish one), starts `python -m stellar_serving serve` (as the environment
configures it, STELLAR_SERVER_PROCESSES included), `mlflow models serve
--env-manager local` and Seldon MLServer 1.7.1 (mlserver-xgboost, on the same
model.ubj) as their own processes, and measures these paths in interleaved
rounds (every path once per round, so all see the same machine):

  floor        in-process derive_feature_matrix + the model: booster.inplace_predict
               (the booster as trained, all cores; and a single-threaded copy), the
               same trees compiled to C (stellar_serving.compiled, or tl2cgen), and the
               tree kernel the server answers with (stellar_serving.tree_kernel)
  grpc unary   Classify, one object per call, concurrency 1 and 16 (16 clients, each on its
               own connection, for every server alike)
  health       grpc.health.v1 Check on the same server: the gRPC round trip with no model
  explain      Explain, one object per call (when the server has the RPC)
  grpc batch   ClassifyBatch, 1000 objects per call
  grpc stream  ClassifyStream, 1000 objects per message
  v2           ModelInfer (tritonclient, raw contents), 1 object (concurrency 1 and 16)
               and 1000 objects per call: this server and MLServer, the same calls
  mlflow       REST /invocations, 1 object (concurrency 1 and 16) and 1000 per call

MLServer is installed by this script into its own virtualenv (default
.tools/mlserver-venv, git-ignored; reused when it holds the right versions),
never into the project's environment. It runs with `parallel_workers: 0`: its
default pool of inference worker processes crash-loops with the uvloop that
resolves today. It gets the OMP_WAIT_POLICY=PASSIVE this server sets, so
neither spins OpenMP threads on the shared cores.

A second prediction server, pinned to one CPU (--pinned-cpus; as `taskset` or
compose's `cpuset` would pin it), answers the unary and batch paths again: on a
machine it shares with its clients, the pinned server keeps its threads and the
model's trees on one core.

Prints p50 / p99 latency per call, throughput (objects/s, median over rounds),
ratios to the faster in-process floor of the same request size, and every
target of issue 14 section 5 as met or missed with its figures. Timings are
printed, never asserted.
"""

from __future__ import annotations

import os

# The server sets this before loading xgboost (see stellar_serving/server.py);
# the in-process floor gets the same, or it would be slowed by spinning OpenMP threads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import json
import re
import shutil
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
# The working tree's packages, also those an older editable install of the project does not list yet.
sys.path.insert(0, str(REPO))
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
    from stellar_mlflow.names import CHAMPION_ALIAS, SERVING_ARTIFACT_DIR, TAG_WINDOW_FIRST, TAG_WINDOW_LAST
    from stellar_core.model_bundle import DEFAULT_MODEL_NAME, ModelBundle, new_contract

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


# -- Seldon MLServer, in its own virtualenv ------------------------------------------------

MLSERVER_VERSION = "1.7.1"
MLSERVER_PACKAGES = (f"mlserver=={MLSERVER_VERSION}", f"mlserver-xgboost=={MLSERVER_VERSION}")


def throwaway_venv(venv: Path, packages: list[str], probe: str, wanted: str) -> Path:
    """The python of `venv`, a virtualenv of its own (never the project's) holding `packages`:
    made and filled by pip unless running `probe` there already prints `wanted` (minutes, once)."""
    python = venv / "bin" / "python"
    if python.exists():
        found = subprocess.run([str(python), "-c", probe], capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == wanted:
            return python
    print(f"installing {' '.join(packages)} into {venv} (its own virtualenv) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                           *packages], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"pip could not install {' '.join(packages)} into {venv}:\n{done.stderr[-2000:]}")
    return python


def mlserver_venv(venv: Path) -> Path:
    """The `mlserver` command of `venv`, installing MLServer there first if needed."""
    probe = "import importlib.metadata as m; print(m.version('mlserver'), m.version('mlserver-xgboost'))"
    throwaway_venv(venv, list(MLSERVER_PACKAGES), probe, f"{MLSERVER_VERSION} {MLSERVER_VERSION}")
    return venv / "bin" / "mlserver"


def write_mlserver_repository(root: Path, model_file: Path, model_name: str, grpc_port: int, http_port: int,
                              metrics_port: int) -> Path:
    """settings.json and <model>/model-settings.json for MLServer's XGBoost runtime on `model_file`."""
    root.mkdir(parents=True, exist_ok=True)
    # parallel_workers 0: inference in the server process (the default worker pool crash-loops with today's uvloop).
    (root / "settings.json").write_text(json.dumps({
        "parallel_workers": 0, "host": "127.0.0.1", "grpc_port": grpc_port, "http_port": http_port,
        "metrics_port": metrics_port, "debug": False}, indent=2))
    model_dir = root / model_name
    model_dir.mkdir()
    shutil.copyfile(model_file, model_dir / "model.ubj")
    (model_dir / "model-settings.json").write_text(json.dumps({
        "name": model_name, "implementation": "mlserver_xgboost.XGBoostModel",
        "parameters": {"uri": "./model.ubj"}}, indent=2))
    return root


def mlserver_env(venv: Path) -> dict:
    """This process's environment without the project's virtualenv, MLServer's first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env["PATH"] = str(venv / "bin") + os.pathsep + env.get("PATH", "")
    return env


# -- the compiled floor ----------------------------------------------------------------------


def compiled_floor(model_file: Path, folder: Path, reference, probe: np.ndarray, n_outputs: int):
    """(features -> probabilities, how it was built), or (None, why not): the model's trees compiled to C."""
    folder.mkdir(parents=True, exist_ok=True)
    library = folder / "model.so"
    try:
        from stellar_serving import compiled
    except ImportError:
        compiled = None
    try:
        if compiled is not None:
            compiled.compile_library(model_file.read_bytes(), library, "gcc")
            predict, how = compiled.CompiledPredictor(library, probe.shape[1], n_outputs), "stellar_serving.compiled"
        else:
            predict, how = _tl2cgen_predictor(model_file, library, n_outputs), "tl2cgen directly"
    except Exception as exc:  # a missing tl2cgen or compiler, a compile error: the row is left out, said why
        return None, f"{type(exc).__name__}: {str(exc).strip()[:200]}"
    worst = float(np.abs(predict(probe).astype(np.float64) - reference(probe)).max())
    if not worst <= 1e-5:
        return None, f"compiled trees differ from XGBoost by {worst:.3g} on the probe rows"
    return predict, f"{how}, max difference from XGBoost {worst:.2g}"


def kernel_floor(booster, reference, probe: np.ndarray):
    """(features -> probabilities, how it was built), or (None, why not): the tree kernel, as the server builds it."""
    try:
        from stellar_serving import tree_kernel
    except ImportError:
        return None, "no stellar_serving.tree_kernel in this checkout"
    try:
        predict = tree_kernel.build(booster, reference, probe)
    except Exception as exc:  # no compiler, a model it cannot take: the row is left out, said why
        return None, f"{type(exc).__name__}: {str(exc).strip()[:200]}"
    return predict, f"stellar_serving.tree_kernel, max difference from XGBoost {predict.probe_difference:.2g}"


def _tl2cgen_predictor(model_file: Path, library: Path, n_outputs: int):
    import tl2cgen
    import treelite

    threads = os.cpu_count() or 1
    model = treelite.frontend.from_xgboost_ubjson(model_file.read_bytes())
    tl2cgen.export_lib(model, toolchain="gcc", libpath=str(library), params={"parallel_comp": threads},
                       nthread=threads)
    predictor = tl2cgen.Predictor(str(library), nthread=1)
    return lambda features: np.asarray(predictor.predict(tl2cgen.DMatrix(features)),
                                       dtype=np.float32).reshape(len(features), n_outputs)


def own_connections(target: str, count: int, grpc) -> list:
    """`count` channels to `target`, each its own TCP connection, as `count` separate clients would have.

    Channels with the same options share one connection (gRPC's global subchannel pool): the
    kernel spreads connections, not calls, over a server's processes (STELLAR_SERVER_PROCESSES)."""
    return [grpc.insecure_channel(target, options=OWN_CONNECTION) for _ in range(count)]


OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
TRITON_OWN_CONNECTION = [("grpc.max_send_message_length", 2**31 - 1), ("grpc.max_receive_message_length", 2**31 - 1),
                         *OWN_CONNECTION]


def wait_for_predictor(stubs: list, pb, timeout: float) -> tuple[str, str]:
    """(predictor, note) from GetModelInfo once the server stops compiling, or at `timeout`.

    A server that compiles its trees, then builds its C TreeSHAP, in the background
    answers from XGBoost meanwhile; the benchmark measures what it serves once both
    are settled (a build still running would also take a core from the first rounds).
    Asked on each of `stubs`' connections, which reach each of the server's processes."""
    deadline = time.monotonic() + timeout
    while True:
        answers = [stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=5) for stub in stubs]
        settled = []
        for info in answers:
            predictor, note = getattr(info, "predictor", "") or "xgboost", getattr(info, "predictor_note", "")
            compiling = "compil" in note.lower() and "compiled" not in predictor.lower()
            explainer_note = getattr(info, "explainer_note", "").lower()
            preparing = "being prepared" in explainer_note or "once its compiled predictor" in explainer_note
            settled.append(not (compiling or preparing))
        if all(settled) or time.monotonic() > deadline:
            return predictor, note
        time.sleep(1)


# -- the targets of issue 14, section 5 ---------------------------------------------------------


def target(ok: bool | None, name: str, figures: str) -> dict:
    """One target's outcome; `ok` None: not measured (`figures` says why)."""
    return {"target": name, "met": ok, "figures": figures}


def section5_targets(by: dict, floor_batch: dict | None, prefix: str = "") -> list[dict]:
    """Every target of issue 14 section 5 for the server whose path names start with `prefix`.

    For the main server (no prefix), a target whose paths were not measured (left out by --only, or
    MLServer did not run) says so; a prefixed server lists only the targets it has paths for."""
    unary, health = by.get(f"{prefix}grpc Classify, concurrency 1"), by.get(f"{prefix}grpc Health.Check, concurrency 1")
    unary16, batch = by.get(f"{prefix}grpc Classify, concurrency 16"), by.get(f"{prefix}grpc ClassifyBatch, {BATCH}/call")
    rest16 = by.get("mlflow REST, 1 object, concurrency 16")
    ml16, ml_batch = by.get("mlserver v2 ModelInfer, 1 object, concurrency 16"), by.get(f"mlserver v2 ModelInfer, {BATCH}/call")
    v2_16, v2_batch = by.get(f"{prefix}v2 ModelInfer, 1 object, concurrency 16"), by.get(f"{prefix}v2 ModelInfer, {BATCH}/call")
    explain = by.get(f"{prefix}grpc Explain, 1 object, concurrency 1")
    out = []
    name = "Classify c1 p50 <= 1.2 x grpc.health Check p50"
    if unary and health:
        ratio = unary["p50_ms"] / health["p50_ms"]
        out.append(target(ratio <= 1.2, name, f"{unary['p50_ms']:.3f} ms vs {health['p50_ms']:.3f} ms: {ratio:.2f}x"))
    elif not prefix:
        out.append(target(None, name, _not_measured()))
    name = "c16 calls/s >= 2.5 x MLServer (v2 ModelInfer, same tritonclient calls)"
    if ml16 and v2_16:
        ratio = v2_16["throughput"] / ml16["throughput"]
        also = (f" (Classify c16 {unary16['throughput']:.0f}: {unary16['throughput'] / ml16['throughput']:.2f}x)"
                if unary16 else "")
        out.append(target(ratio >= 2.5, name, f"{v2_16['throughput']:.0f} vs {ml16['throughput']:.0f} calls/s: "
                                              f"{ratio:.2f}x{also}"))
    elif not prefix:
        out.append(target(None, name, _not_measured(why=NO_MLSERVER if not ml16 else "")))
    name = "c16 calls/s >= 10 x mlflow models serve (Classify vs REST /invocations)"
    if unary16 and rest16:
        ratio = unary16["throughput"] / rest16["throughput"]
        out.append(target(ratio >= 10, name,
                          f"{unary16['throughput']:.0f} vs {rest16['throughput']:.0f} calls/s: {ratio:.1f}x"))
    elif not prefix:
        out.append(target(None, name, _not_measured()))
    name = f"v2 {BATCH}-row batches rows/s >= 1.5 x MLServer"
    if ml_batch and v2_batch:
        ratio = v2_batch["throughput"] / ml_batch["throughput"]
        out.append(target(ratio >= 1.5, name,
                          f"{v2_batch['throughput']:.0f} vs {ml_batch['throughput']:.0f} rows/s: {ratio:.2f}x"))
    elif not prefix:
        out.append(target(None, name, _not_measured(why=NO_MLSERVER if not ml_batch else "")))
    name = "ClassifyBatch rows/s >= 0.8 x the in-process floor"
    if batch and floor_batch:
        ratio = batch["throughput"] / floor_batch["throughput"]
        out.append(target(ratio >= 0.8, name, f"{batch['throughput']:.0f} vs {floor_batch['throughput']:.0f} rows/s "
                                              f"({floor_batch['name']}): {ratio:.2f}x"))
    elif not prefix:
        out.append(target(None, name, _not_measured()))
    name = "Explain p50 for one object <= 3 ms"
    if explain:
        out.append(target(explain["p50_ms"] <= 3.0, name,
                          f"{explain['p50_ms']:.3f} ms (p99 {explain['p99_ms']:.3f} ms)"))
    elif not prefix:
        out.append(target(None, name, "not measured: no Explain RPC, or the path was left out (--only)"))
    return out


NO_MLSERVER = "MLServer did not run, or its paths were left out (--only)"


def _not_measured(why: str = "") -> str:
    """Why a target has no figures: `why`, or a path it compares was left out."""
    return f"not measured: {why or 'a path it compares was left out (--only)'}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, help="interleaved measurement rounds (5; --quick 3)")
    parser.add_argument("--model-rounds", type=int, default=400, help="boosting rounds of the champion")
    parser.add_argument("--single-calls", type=int, help="one-object calls per path and round (300; --quick 100)")
    parser.add_argument("--mlflow-single-calls", type=int,
                        help="the same for the slow REST server (60; --quick 20)")
    parser.add_argument("--batches", type=int, help=f"{BATCH}-object calls per path and round (4; --quick 2)")
    parser.add_argument("--pinned-cpus",
                        help="CPUs for the second, pinned server, e.g. 1 or 2,3 ('none': no pinned server; "
                             "default: the last CPU, --quick: none)")
    parser.add_argument("--mlserver-venv", default=str(REPO / ".tools" / "mlserver-venv"),
                        help="virtualenv for MLServer (made and filled by this script when it lacks the versions)")
    parser.add_argument("--no-mlserver", action="store_true", help="leave MLServer out")
    parser.add_argument("--compile-wait", type=float, default=120,
                        help="seconds to wait for the server to finish compiling its trees before measuring")
    parser.add_argument("--quick", action="store_true",
                        help="smaller defaults: 3 rounds, 100 single calls, 2 batches, no pinned server")
    parser.add_argument("--only", action="append", metavar="TEXT",
                        help="measure only the paths whose name contains TEXT (repeatable, e.g. --only Classify "
                             "--only Health); targets whose paths are left out print as not measured")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "serving.json"))
    args = parser.parse_args(argv)
    quick = args.quick
    args.rounds = args.rounds or (3 if quick else 5)
    args.single_calls = args.single_calls or (100 if quick else 300)
    args.mlflow_single_calls = args.mlflow_single_calls or (20 if quick else 60)
    args.batches = args.batches or (2 if quick else 4)
    args.pinned_cpus = args.pinned_cpus or ("none" if quick else str((os.cpu_count() or 1) - 1))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    import grpc
    import requests
    import tritonclient.grpc as triton
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from stellar_core.contract import CLASSES, MODEL_INPUTS
    from stellar_core.features import FEATURE_NAMES, build_features, derive_feature_matrix
    from stellar_mlflow.names import CHAMPION_ALIAS
    from stellar_core.model_bundle import BOOSTER_FILE, DEFAULT_MODEL_NAME, ModelBundle
    from stellar_mlflow.registry import download_bundle, get_alias_version
    from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
    from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc
    from mlflow.tracking import MlflowClient

    mlserver_bin = None if args.no_mlserver else mlserver_venv(Path(args.mlserver_venv).resolve())
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
    has_explain = hasattr(pb, "ExplainRequest")

    def single_slice(r: int, count: int) -> range:  # different objects every round
        start = (r * count) % max(1, n - count)
        return range(start, start + count)

    def batch_slice(r: int) -> list[int]:
        return [((r * B + b) * BATCH) % (n - BATCH + 1) for b in range(B)]

    try:
        print(f"training and publishing a {args.model_rounds}-round champion in {work} ...", flush=True)
        uri = build_champion(work, features, args.model_rounds)
        mlflow_client = MlflowClient(uri, registry_uri=uri)
        bundle_dir = download_bundle(mlflow_client, get_alias_version(mlflow_client, DEFAULT_MODEL_NAME),
                                     work / "floor-model")
        bundle = ModelBundle.load(bundle_dir)
        model_file = Path(bundle_dir) / BOOSTER_FILE  # the file every server loads

        # -- the servers -----------------------------------------------------------------
        port, metrics_port, rest_port = free_port(), free_port(), free_port()
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "STELLAR_GRPC_HOST": "127.0.0.1",
               "STELLAR_GRPC_PORT": str(port), "STELLAR_METRICS_HOST": "127.0.0.1",
               "STELLAR_METRICS_PORT": str(metrics_port), "STELLAR_MODEL_CACHE_DIR": str(work / "cache"),
               "STELLAR_POLL_SECONDS": "0", "STELLAR_LOG_LEVEL": "WARNING"}
        # Own process groups: stopping them takes their children (uvicorn workers) too.
        procs.append(subprocess.Popen([sys.executable, "-m", "stellar_serving", "serve"], env=env, cwd=REPO,
                                      stdout=subprocess.DEVNULL, stderr=open(work / "server.log", "w"),
                                      start_new_session=True))
        pinned_cpus = sorted({int(c) for c in args.pinned_cpus.split(",")}) if args.pinned_cpus != "none" else []
        pinned_port = free_port()
        if pinned_cpus:
            # The affinity is set before the server starts a thread, as taskset would set it.
            launch = (f"import os, runpy, sys; os.sched_setaffinity(0, {set(pinned_cpus)!r}); "
                      "sys.argv = ['stellar_serving', 'serve']; runpy.run_module('stellar_serving', run_name='__main__')")
            procs.append(subprocess.Popen(
                [sys.executable, "-c", launch], cwd=REPO,
                env={**env, "STELLAR_GRPC_PORT": str(pinned_port), "STELLAR_METRICS_PORT": "-1",
                     "STELLAR_MODEL_CACHE_DIR": str(work / "cache-pinned")},
                stdout=subprocess.DEVNULL, stderr=open(work / "server-pinned.log", "w"), start_new_session=True))
        procs.append(subprocess.Popen(
            [str(Path(env_bin) / "mlflow"), "models", "serve", "-m", f"models:/{DEFAULT_MODEL_NAME}@{CHAMPION_ALIAS}",
             "--env-manager", "local", "--host", "127.0.0.1", "-p", str(rest_port), "--workers", "1"],
            env={**env, "PATH": env_bin + os.pathsep + os.environ.get("PATH", "")},
            stdout=open(work / "mlflow-serve.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
        ml_port = free_port()
        if mlserver_bin is not None:
            repository = write_mlserver_repository(work / "mlserver", model_file, DEFAULT_MODEL_NAME, ml_port,
                                                   free_port(), free_port())
            procs.append(subprocess.Popen([str(mlserver_bin), "start", str(repository)], cwd=repository,
                                          env=mlserver_env(Path(args.mlserver_venv).resolve()),
                                          stdout=open(work / "mlserver.log", "w"), stderr=subprocess.STDOUT,
                                          start_new_session=True))
        target_addr = f"127.0.0.1:{port}"
        base = f"http://127.0.0.1:{rest_port}"
        stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(target_addr))
        wait_until(lambda: stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=1).version, "the gRPC server")
        pinned_stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{pinned_port}"))
        if pinned_cpus:
            wait_until(lambda: pinned_stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=1).version,
                       "the pinned gRPC server")
        health_stub = health_pb2_grpc.HealthStub(grpc.insecure_channel(target_addr))
        health_check = health_pb2.HealthCheckRequest(service="")
        wait_until(lambda: urllib.request.urlopen(f"{base}/ping", timeout=2).status == 200, "mlflow models serve")
        ml_client = triton.InferenceServerClient(url=f"127.0.0.1:{ml_port}") if mlserver_bin else None
        if ml_client is not None:
            wait_until(lambda: ml_client.is_model_ready(DEFAULT_MODEL_NAME), f"MLServer (log: {work / 'mlserver.log'})")

        # -- the floor: the same model files, in this process ---------------------------------
        single = bundle.booster.copy()
        single.set_param({"nthread": 1})
        expected = bundle.predict_proba_inputs(inputs)
        print("compiling the floor's trees ...", flush=True)
        compiled_predict, compiled_how = compiled_floor(model_file, work / "floor-compiled",
                                                        lambda x: single.inplace_predict(x), feats[:256], len(CLASSES))
        kernel_predict, kernel_how = kernel_floor(bundle.booster, lambda x: single.inplace_predict(x), feats[:256])
        predictors = {"server": wait_for_predictor(
            [pb_grpc.ClassifierServiceStub(c) for c in own_connections(target_addr, 8, grpc)], pb, args.compile_wait)}
        if pinned_cpus:
            predictors["pinned server"] = wait_for_predictor(
                [pb_grpc.ClassifierServiceStub(c) for c in own_connections(f"127.0.0.1:{pinned_port}", 8, grpc)],
                pb, args.compile_wait)

        def floor_with(predict):
            return lambda rows: predict(derive_feature_matrix(rows))

        # -- clients ------------------------------------------------------------------------------
        def v2_call_with(client):
            def call(rows: np.ndarray):
                t = triton.InferInput("input__0", list(rows.shape), "FP32")
                t.set_data_from_numpy(rows)
                return client.infer(DEFAULT_MODEL_NAME, [t])
            return call

        v2_call = v2_call_with(triton.InferenceServerClient(url=target_addr))
        # Concurrency 16 is 16 clients, each on its own connection, for every server alike.
        v2_c16 = [v2_call_with(triton.InferenceServerClient(url=target_addr, channel_args=TRITON_OWN_CONNECTION))
                  for _ in range(16)]
        ml_call = v2_call_with(ml_client) if ml_client else None
        ml_c16 = [v2_call_with(triton.InferenceServerClient(url=f"127.0.0.1:{ml_port}",
                                                            channel_args=TRITON_OWN_CONNECTION))
                  for _ in range(16 if ml_client else 0)]
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
        grpc_c16 = [pb_grpc.ClassifierServiceStub(c).Classify for c in own_connections(target_addr, 16, grpc)]
        pinned_c16 = [pb_grpc.ClassifierServiceStub(c).Classify
                      for c in own_connections(f"127.0.0.1:{pinned_port}", 16 if pinned_cpus else 0, grpc)]
        rest_c16 = [rest_call_with(requests.Session()) for _ in range(16)]
        classify_requests = [pb.ClassifyRequest(object=o) for o in objects]
        explain_requests = [pb.ExplainRequest(objects=[o]) for o in objects] if has_explain else []
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

        def with_timeout(calls, seconds):
            return [(lambda c: (lambda q: c(q, timeout=seconds)))(c) for c in calls]

        def stream_round(r):
            messages = [batch_requests[k] for k in batch_slice(r)]
            t0 = time.perf_counter()
            for _response in stub.ClassifyStream(iter(messages), timeout=120):
                pass
            wall = time.perf_counter() - t0
            return [wall], BATCH * len(messages), wall

        def singles(r, payloads, count=S):
            return [payloads[k] for k in single_slice(r, count)]

        def batches(r, payloads):
            return [payloads[k] for k in batch_slice(r)]

        feature_rows = [feats[k:k + 1] for k in range(n)]
        input_rows = [inputs[k:k + 1] for k in range(n)]
        feature_batches = {k: feats[k:k + BATCH] for k in batch_requests}
        input_batches = {k: inputs[k:k + BATCH] for k in batch_requests}
        paths = [
            Path_("floor, 1 object, all cores", "single",
                  lambda r: seq(floor_with(bundle.booster.inplace_predict), singles(r, input_rows), 1)),
            Path_("floor, 1 object, 1 thread", "single",
                  lambda r: seq(floor_with(single.inplace_predict), singles(r, input_rows), 1)),
            *([Path_("floor, 1 object, compiled", "single",
                     lambda r: seq(floor_with(compiled_predict), singles(r, input_rows), 1))]
              if compiled_predict else []),
            *([Path_("floor, 1 object, tree kernel", "single",
                     lambda r: seq(floor_with(kernel_predict), singles(r, input_rows), 1))]
              if kernel_predict else []),
            Path_("grpc Classify, concurrency 1", "single",
                  lambda r: seq(lambda q: stub.Classify(q, timeout=10), singles(r, classify_requests), 1)),
            Path_("grpc Classify, concurrency 16", "single",
                  lambda r: conc(with_timeout(grpc_c16, 10), singles(r, classify_requests), 1)),
            Path_("grpc Health.Check, concurrency 1", "single",
                  lambda r: seq(lambda q: health_stub.Check(health_check, timeout=10), list(single_slice(r, S)), 1)),
            *([Path_("grpc Explain, 1 object, concurrency 1", "single",
                     lambda r: seq(lambda q: stub.Explain(q, timeout=10), singles(r, explain_requests), 1))]
              if has_explain else []),
            Path_("v2 ModelInfer, 1 object", "single", lambda r: seq(v2_call, singles(r, feature_rows), 1)),
            Path_("v2 ModelInfer, 1 object, concurrency 16", "single",
                  lambda r: conc(v2_c16, singles(r, feature_rows), 1)),
            *([Path_("mlserver v2 ModelInfer, 1 object", "single",
                     lambda r: seq(ml_call, singles(r, feature_rows), 1)),
               Path_("mlserver v2 ModelInfer, 1 object, concurrency 16", "single",
                     lambda r: conc(ml_c16, singles(r, feature_rows), 1))] if ml_call else []),
            Path_("mlflow REST, 1 object", "single", lambda r: seq(rest_call, singles(r, rest_single_bodies, SM), 1)),
            Path_("mlflow REST, 1 object, concurrency 16", "single",
                  lambda r: conc(rest_c16, singles(r, rest_single_bodies, SM * 2), 1)),
            Path_(f"floor, {BATCH} objects, all cores", "batch",
                  lambda r: seq(floor_with(bundle.booster.inplace_predict), batches(r, input_batches), BATCH)),
            Path_(f"floor, {BATCH} objects, 1 thread", "batch",
                  lambda r: seq(floor_with(single.inplace_predict), batches(r, input_batches), BATCH)),
            *([Path_(f"floor, {BATCH} objects, compiled", "batch",
                     lambda r: seq(floor_with(compiled_predict), batches(r, input_batches), BATCH))]
              if compiled_predict else []),
            *([Path_(f"floor, {BATCH} objects, tree kernel", "batch",
                     lambda r: seq(floor_with(kernel_predict), batches(r, input_batches), BATCH))]
              if kernel_predict else []),
            Path_(f"grpc ClassifyBatch, {BATCH}/call", "batch",
                  lambda r: seq(lambda q: stub.ClassifyBatch(q, timeout=60), batches(r, batch_requests), BATCH)),
            Path_(f"grpc ClassifyStream, {BATCH}/message", "batch", stream_round),
            *([Path_("pinned: grpc Classify, concurrency 1", "single",
                     lambda r: seq(lambda q: pinned_stub.Classify(q, timeout=10), singles(r, classify_requests), 1)),
               Path_("pinned: grpc Classify, concurrency 16", "single",
                     lambda r: conc(with_timeout(pinned_c16, 10), singles(r, classify_requests), 1)),
               Path_(f"pinned: grpc ClassifyBatch, {BATCH}/call", "batch",
                     lambda r: seq(lambda q: pinned_stub.ClassifyBatch(q, timeout=60), batches(r, batch_requests),
                                   BATCH))]
              if pinned_cpus else []),
            Path_(f"v2 ModelInfer, {BATCH}/call", "batch", lambda r: seq(v2_call, batches(r, feature_batches), BATCH)),
            *([Path_(f"mlserver v2 ModelInfer, {BATCH}/call", "batch",
                     lambda r: seq(ml_call, batches(r, feature_batches), BATCH))] if ml_call else []),
            Path_(f"mlflow REST, {BATCH}/call", "batch",
                  lambda r: seq(rest_call, batches(r, rest_batch_bodies), BATCH)),
        ]

        if args.only:
            paths = [p for p in paths if any(text in p.name for text in args.only)]
            if not paths:
                raise SystemExit(f"--only {args.only} selects no path")

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
        # MLServer loads a softprob booster as an XGBRegressor: its "predict" output is the probabilities.
        mlserver_matches = (bool(np.allclose(ml_call(feats[:BATCH]).as_numpy("predict"), expected[:BATCH],
                                             atol=1e-6)) if ml_call else None)
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
        stop_all(procs)

    report(args, paths, n, loads, metrics_text, predictors, f"{compiled_how}; tree kernel floor: {kernel_how}",
           mlflow_matches, mlserver_matches, pinned_cpus)
    return 0


def stop_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def report(args, paths: list, n: int, loads: list[float], metrics_text: str, predictors: dict, compiled_how: str,
           mlflow_matches: bool, mlserver_matches: bool | None, pinned_cpus: list[int]) -> None:
    results = [p.summary() for p in paths]
    by = {r["name"]: r for r in results}
    floor_1 = max((r for r in results if r["name"].startswith("floor, 1 object")), key=lambda r: r["throughput"],
                  default=None)
    floor_b = max((r for r in results if r["name"].startswith(f"floor, {BATCH}")), key=lambda r: r["throughput"],
                  default=None)
    print(f"\n{n} SDSS objects, {args.model_rounds}-round model, {os.cpu_count()} CPUs, {args.rounds} interleaved "
          f"rounds; 1-min load average during the rounds: {min(loads):.1f} .. {max(loads):.1f}")
    configured = re.search(r'^stellar_server_processes\{state="configured"\} (\S+)$', metrics_text, re.M)
    print(f"server processes (STELLAR_SERVER_PROCESSES): {int(float(configured.group(1))) if configured else 1}")
    for name, (predictor, note) in predictors.items():
        print(f"{name} predictor (GetModelInfo): {predictor}" + (f" -- {note}" if note else ""))
    print(f"compiled floor: {compiled_how}")
    print("throughput = median over rounds; vs floor = against the faster in-process floor of the same size\n")
    print(f"{'path':48} {'p50 ms':>9} {'p99 ms':>9} {'objects/s':>11} {'vs floor':>9}")
    for r in results:
        reference = floor_1 if r["group"] == "single" else floor_b
        r["ratio_to_floor"] = r["throughput"] / reference["throughput"] if reference else None
        vs_floor = f"{r['ratio_to_floor']:9.2f}" if reference else f"{'-':>9}"
        print(f"{r['name']:48} {r['p50_ms']:9.3f} {r['p99_ms']:9.3f} {r['throughput']:11.0f} {vs_floor}")
    print("\nanswers: mlflow REST matches the floor (1e-6): "
          f"{mlflow_matches}; MLServer matches: {'not run' if mlserver_matches is None else mlserver_matches}")
    buckets = {line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
               for line in metrics_text.splitlines() if line.startswith("stellar_booster_call_rows_bucket")}
    one = buckets.get("1.0", 0.0)
    few = buckets.get("50.0", 0.0) - one
    print(f"server booster calls (whole run): {one:.0f} with 1 row, {few:.0f} with 2-50 rows "
          "(concurrent one-object calls predicted together)")
    servers = {"server on all CPUs": ""}
    if pinned_cpus:
        servers[f"server pinned to CPU {','.join(map(str, pinned_cpus))}"] = "pinned: "
    checks = {}
    for server_name, prefix in servers.items():
        checks[server_name] = section5_targets(by, floor_b, prefix)
        print(f"\nissue 14 section 5 targets, {server_name}:")
        for t in checks[server_name]:
            mark = "not measured" if t["met"] is None else "met" if t["met"] else "MISSED"
            print(f"  [{mark}] {t['target']}: {t['figures']}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"objects": n, "model_rounds": args.model_rounds, "cpus": os.cpu_count(),
                               "load_average_1min": loads, "predictors": predictors, "compiled_floor": compiled_how,
                               "results": results, "targets": checks, "mlflow_matches": mlflow_matches,
                               "mlserver_matches": mlserver_matches}, indent=2))
    print(f"\nwritten {out}")


if __name__ == "__main__":
    sys.exit(main())
