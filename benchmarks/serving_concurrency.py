"""Which gRPC server design uses the cores: threaded, grpc.aio or several processes.

    .venv/bin/python benchmarks/serving_concurrency.py [--rounds 5] [--quick]

Issue 14 section 2, the measurement. Trains the serving benchmark's champion
(400 rounds, multi:softprob) on the SDSS sample, compiles its trees
(stellar_serving.compiled, or tl2cgen directly; XGBoost on one thread when no
compiler works) and starts three minimal prototype servers, each answering one
unary call, stellar.v1 ClassifierService/Classify (one object in, its class
and probabilities out), on the same model:

  threaded      grpc.server on a ThreadPoolExecutor (16 threads): today's design
  aio           grpc.aio.server, the handler run on the event loop
  multiprocess  N processes (--processes, default one per CPU) forked before any
                gRPC server exists, each a threaded server on the same port with
                SO_REUSEPORT, as grpc's examples/python/multiprocessing does; the
                kernel spreads connections over them
  multiprocess-aio  the same, each process a grpc.aio server

and the production server itself, `python -m stellar_serving serve` on a
registry holding the same model (its tree kernel answers), twice:

  server 1 proc    STELLAR_SERVER_PROCESSES=1: one threaded process
  server N procs   STELLAR_SERVER_PROCESSES=N (--processes): the supervisor and
                   its N processes (stellar_serving.processes)

The prototypes do only the call's work (decode, features, predict, encode):
none of the real server's interceptors, validation, metrics or micro-batching,
so the comparison is of the designs. Each server runs in its own process
group; the clients run in this process: concurrency 1 is one blocking stub,
concurrency 16 is 16 grpc.aio calls in flight on 16 channels, each its own TCP
connection (a local subchannel pool), so a multi-process server sees several.

Rounds are interleaved (every design and concurrency once per round); prints
p50 / p99 latency, calls/s (median over rounds), the ratio of each design to
the threaded baseline of the same round set, and which design wins at each
concurrency. On a 2-core machine the clients share the cores with the
servers. Timings are printed, never asserted.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the server sets it before loading xgboost

import argparse
import asyncio
import json
import multiprocessing
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# The working tree's packages, also those an older editable install of the project does not list yet.
sys.path.insert(0, str(REPO))
SAMPLE = REPO.parent / "shared" / "data" / "sdss17_sample.csv.gz"
DESIGNS = ("threaded", "aio", "multiprocess", "multiprocess-aio")  # the prototypes
SERVER_DESIGNS = ("server 1 proc", "server N procs")  # the production server, with 1 and --processes processes
MEASURED = DESIGNS + SERVER_DESIGNS
CONCURRENCIES = (1, 16)
THREADS = 16  # today's STELLAR_MAX_WORKERS
SERVICE = "stellar.v1.ClassifierService"
LIBRARY = "model.so"
BOOSTER = "model.ubj"
CLEAR_MARGIN = 1.05  # a design wins only with at least this median ratio to threaded, ahead in most rounds
PROBE_TOLERANCE = 1e-5  # as stellar_serving.compiled checks a compiled predictor against XGBoost


# -- the model and its predictor ------------------------------------------------------------


def train(model_rounds: int, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Train the champion on the SDSS sample, save it as folder/model.ubj; return (inputs [n, 6], probabilities)."""
    import pandas as pd
    import xgboost as xgb

    from stellar_core.contract import MODEL_INPUTS
    from stellar_core.features import FEATURE_NAMES, build_features, feature_matrix, label_indices

    features, _ = build_features(pd.read_csv(SAMPLE))
    matrix = xgb.DMatrix(feature_matrix(features), label=label_indices(features["label"]),
                         feature_names=list(FEATURE_NAMES))
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "tree_method": "hist", "max_depth": 6,
                         "eta": 0.1, "seed": 0}, matrix, model_rounds)
    booster.save_model(str(folder / BOOSTER))
    inputs = np.ascontiguousarray(features.loc[:, list(MODEL_INPUTS)].to_numpy(dtype=np.float32))
    return inputs, np.asarray(booster.inplace_predict(feature_matrix(features)), dtype=np.float32)


def compile_trees(folder: Path) -> str:
    """Compile folder/model.ubj to folder/model.so; return how, or raise saying why not."""
    model_bytes = (folder / BOOSTER).read_bytes()
    try:
        from stellar_serving import compiled
    except ImportError:
        compiled = None
    if compiled is not None:
        compiled.compile_library(model_bytes, folder / LIBRARY, "gcc")
        return "stellar_serving.compiled"
    import tl2cgen
    import treelite

    threads = os.cpu_count() or 1
    tl2cgen.export_lib(treelite.frontend.from_xgboost_ubjson(model_bytes), toolchain="gcc",
                       libpath=str(folder / LIBRARY), params={"parallel_comp": threads}, nthread=threads)
    return "tl2cgen directly"


def load_predictor(folder: Path, kind: str):
    """features float32 [n, 13] -> probabilities float32 [n, 3], from the compiled library or the booster."""
    from stellar_core.contract import CLASSES
    from stellar_core.features import FEATURE_NAMES

    if kind == "compiled":
        try:
            from stellar_serving.compiled import CompiledPredictor

            return CompiledPredictor(folder / LIBRARY, len(FEATURE_NAMES), len(CLASSES))
        except ImportError:
            import tl2cgen

            predictor = tl2cgen.Predictor(str(folder / LIBRARY), nthread=1)
            return lambda x: np.asarray(predictor.predict(tl2cgen.DMatrix(x)), np.float32).reshape(len(x), -1)
    import xgboost as xgb

    booster = xgb.Booster(model_file=str(folder / BOOSTER))
    booster.set_param({"nthread": 1})  # as the server's small requests: concurrency from its threads
    return lambda x: np.asarray(booster.inplace_predict(x), dtype=np.float32)


# -- the prototype servers (run as `--serve DESIGN`) ---------------------------------------------


def classify_handler(predict):
    """ClassifyRequest -> ClassifyResponse with `predict`: the work every design does per call."""
    from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
    from stellar_core.contract import CLASSES, MODEL_INPUTS
    from stellar_core.features import derive_feature_matrix

    labels = [pb.ObjectClass.Value(f"OBJECT_CLASS_{name}") for name in CLASSES]
    # The answering process, so the client sees how a multi-process server spread its calls.
    answered_by = str(os.getpid())

    def classify(request, context=None):
        obj = request.object
        row = np.array([[getattr(obj, name) for name in MODEL_INPUTS]], dtype=np.float32)
        proba = predict(derive_feature_matrix(row))[0].tolist()
        best = max(range(len(proba)), key=proba.__getitem__)
        result = pb.Classification(client_id=obj.client_id, predicted_class=labels[best], model_version=answered_by)
        for name, p in zip(CLASSES, proba):
            result.probabilities[name] = p
        return pb.ClassifyResponse(result=result)

    return classify


def rpc_handlers(behaviour):
    import grpc

    from stellar_api._generated.stellar.v1 import classifier_pb2 as pb

    method = grpc.unary_unary_rpc_method_handler(behaviour, request_deserializer=pb.ClassifyRequest.FromString,
                                                 response_serializer=pb.ClassifyResponse.SerializeToString)
    return grpc.method_handlers_generic_handler(SERVICE, {"Classify": method})


def serve_threaded(port: int, folder: Path, kind: str, reuse_port: bool = False, ready=None) -> None:
    import grpc

    classify = classify_handler(load_predictor(folder, kind))
    options = [("grpc.so_reuseport", 1 if reuse_port else 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=THREADS), options=options)
    server.add_generic_rpc_handlers((rpc_handlers(classify),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    (ready or announce)()
    server.wait_for_termination()


def serve_aio(port: int, folder: Path, kind: str, reuse_port: bool = False, ready=None) -> None:
    import grpc

    classify = classify_handler(load_predictor(folder, kind))

    async def classify_async(request, context):
        # A compiled prediction takes tens of microseconds: handing it to a thread would cost more.
        return classify(request)

    async def run() -> None:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 1 if reuse_port else 0)])
        server.add_generic_rpc_handlers((rpc_handlers(classify_async),))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        (ready or announce)()
        await server.wait_for_termination()

    asyncio.run(run())


def serve_processes(port: int, folder: Path, kind: str, processes: int, server=serve_threaded) -> None:
    """`processes` servers (`server`: serve_threaded or serve_aio) sharing `port`, forked before any gRPC
    server exists in this process."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        # Bound (not listening) with SO_REUSEPORT: holds the port for the workers while they start.
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", port))
        fork = multiprocessing.get_context("fork")
        ready = fork.Queue()
        workers = [fork.Process(target=server, args=(port, folder, kind, True, lambda: ready.put(os.getpid())),
                                daemon=True) for _ in range(processes)]
        for worker in workers:
            worker.start()
        for _ in workers:
            ready.get(timeout=120)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # daemon workers end with this process
    announce()
    for worker in workers:
        worker.join()


def announce() -> None:
    print("READY", flush=True)


def serve(args: argparse.Namespace) -> int:
    folder = Path(args.model_dir)
    if args.serve == "threaded":
        serve_threaded(args.port, folder, args.predictor)
    elif args.serve == "aio":
        serve_aio(args.port, folder, args.predictor)
    else:
        serve_processes(args.port, folder, args.predictor, args.processes,
                        serve_aio if args.serve == "multiprocess-aio" else serve_threaded)
    return 0


# -- the clients --------------------------------------------------------------------------------


CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]  # one TCP connection per channel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sequential(stub, requests: list) -> tuple[list[float], float]:
    latencies = []
    start = time.perf_counter()
    for request in requests:
        t0 = time.perf_counter()
        stub.Classify(request, timeout=10)
        latencies.append(time.perf_counter() - t0)
    return latencies, time.perf_counter() - start


async def run_concurrent(stubs: list, requests: list) -> tuple[list[float], float, set[str]]:
    """One task per stub (each its own channel), requests dealt round-robin; also the answering processes."""
    latencies: list[float] = []
    processes: set[str] = set()

    async def work(stub, share: list) -> None:
        for request in share:
            t0 = time.perf_counter()
            response = await stub.Classify(request, timeout=10)
            latencies.append(time.perf_counter() - t0)
            processes.add(response.result.model_version)

    start = time.perf_counter()
    await asyncio.gather(*(work(stub, requests[k::len(stubs)]) for k, stub in enumerate(stubs)))
    return latencies, time.perf_counter() - start, processes


class Measured:
    """One (design, concurrency): latencies over all rounds, calls/s per round."""

    def __init__(self, design: str, concurrency: int) -> None:
        self.design, self.concurrency = design, concurrency
        self.latencies: list[float] = []
        self.rates: list[float] = []
        self.processes: set[str] = set()

    def record(self, latencies: list[float], wall: float, processes: set[str] = frozenset()) -> None:
        self.latencies.extend(latencies)
        self.rates.append(len(latencies) / wall)
        self.processes |= processes

    def summary(self) -> dict:
        ms = np.array(self.latencies) * 1000
        return {"design": self.design, "concurrency": self.concurrency, "calls": len(self.latencies),
                "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
                "calls_per_s": float(np.median(self.rates)), "calls_per_s_per_round": [round(r, 1) for r in self.rates],
                "answering_processes": len(self.processes)}


def start_server(design: str, folder: Path, kind: str, processes: int, log: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    command = [sys.executable, __file__, "--serve", design, "--port", str(port), "--model-dir", str(folder),
               "--predictor", kind, "--processes", str(processes)]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=open(log, "w"), text=True,
                            start_new_session=True)
    line = proc.stdout.readline()
    if line.strip() != "READY":
        raise SystemExit(f"the {design} server did not start (see {log})")
    return proc, port


def start_production_server(processes: int, uri: str, work: Path) -> tuple[subprocess.Popen, int]:
    """`python -m stellar_serving serve` with `processes` processes; (process, port) once every process serves."""
    import urllib.request

    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "STELLAR_GRPC_HOST": "127.0.0.1", "STELLAR_GRPC_PORT": str(port),
           "STELLAR_METRICS_HOST": "127.0.0.1", "STELLAR_METRICS_PORT": str(metrics_port),
           "STELLAR_MODEL_CACHE_DIR": str(work / f"cache-{processes}"), "STELLAR_POLL_SECONDS": "0",
           "STELLAR_LOG_LEVEL": "WARNING", "STELLAR_SERVER_PROCESSES": str(processes),
           # Not measured here; their background C builds would take a core from the first rounds.
           "STELLAR_EXPLAINER": "xgboost", "STELLAR_REQUEST_DECODER": "off"}
    log = work / f"server-{processes}.log"
    proc = subprocess.Popen([sys.executable, "-m", "stellar_serving", "serve"], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server with {processes} processes exited (see {log})")
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read().decode()
        except OSError:
            text = ""
        # One stellar_model_version series per process once it has loaded the model (and built its kernel).
        if sum(line.startswith("stellar_model_version{") and not line.endswith(" 0.0")
               for line in text.splitlines()) == processes:
            return proc, port
        time.sleep(0.5)
    raise SystemExit(f"the server with {processes} processes did not load the model in 180 s (see {log})")


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def check_answers(stub, requests: list, expected: np.ndarray, design: str) -> None:
    from stellar_core.contract import CLASSES

    got = np.array([[stub.Classify(r, timeout=10).result.probabilities[c] for c in CLASSES] for r in requests])
    worst = float(np.abs(got - expected[:len(requests)]).max())
    if not worst <= PROBE_TOLERANCE:
        raise SystemExit(f"the {design} server's probabilities differ from XGBoost's by {worst:.3g}")


def measure(args: argparse.Namespace) -> int:
    import grpc

    from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
    from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc
    from stellar_core.contract import MODEL_INPUTS

    work = Path(tempfile.mkdtemp(prefix="stellar-concurrency-bench-"))
    print(f"training a {args.model_rounds}-round champion in {work} ...", flush=True)
    inputs, expected = train(args.model_rounds, work)
    kind = "xgboost"
    try:
        print("compiling its trees ...", flush=True)
        how = compile_trees(work)
        kind = "compiled"
    except Exception as exc:  # no tl2cgen, no compiler: the designs are compared on XGBoost
        how = f"not compiled ({type(exc).__name__}: {str(exc).strip()[:200]}); XGBoost, one thread"
    requests = [pb.ClassifyRequest(object=pb.SdssObject(client_id=str(k), **dict(zip(MODEL_INPUTS, map(float, row)))))
                for k, row in enumerate(inputs)]
    n, per_round = len(requests), args.calls
    procs: list[subprocess.Popen] = []
    try:
        ports = {}
        for design in DESIGNS:
            proc, ports[design] = start_server(design, work, kind, args.processes, work / f"{design}.log")
            procs.append(proc)
        print("publishing the same model to a registry for the production server ...", flush=True)
        import pandas as pd

        from benchmarks.serving_benchmark import build_champion
        from stellar_core.features import build_features

        uri = build_champion(work / "registry", build_features(pd.read_csv(SAMPLE))[0], args.model_rounds)
        for design, count in zip(SERVER_DESIGNS, (1, args.processes)):
            proc, ports[design] = start_production_server(count, uri, work)
            procs.append(proc)
        sync_stubs = {d: pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{p}", CHANNEL_OPTIONS))
                      for d, p in ports.items()}
        for design, stub in sync_stubs.items():
            check_answers(stub, requests[:64], expected, design)
        results = asyncio.run(measure_rounds(args, ports, sync_stubs, requests, n, per_round))
    finally:
        stop(procs)
    report(args, results, how, kind)
    return 0


async def measure_rounds(args, ports: dict, sync_stubs: dict, requests: list, n: int, per_round: int) -> list:
    import grpc

    from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc

    channels = {d: [grpc.aio.insecure_channel(f"127.0.0.1:{p}", CHANNEL_OPTIONS) for _ in range(max(CONCURRENCIES))]
                for d, p in ports.items()}
    stubs = {d: [pb_grpc.ClassifierServiceStub(c) for c in cs] for d, cs in channels.items()}
    measured = {(d, c): Measured(d, c) for d in MEASURED for c in CONCURRENCIES}

    async def one(design: str, concurrency: int, r: int):
        start = (r * per_round) % max(1, n - per_round)
        batch = requests[start:start + per_round]
        if concurrency == 1:
            # A blocking stub, as a simple client calls; off the loop so the aio channels stay served.
            return await asyncio.to_thread(run_sequential, sync_stubs[design], batch)
        return await run_concurrent(stubs[design][:concurrency], batch)

    for design in MEASURED:  # warm-up: connections opened, first calls made
        for concurrency in CONCURRENCIES:
            await one(design, concurrency, args.rounds)
    args.loads = []
    for r in range(args.rounds):
        args.loads.append(os.getloadavg()[0])
        print(f"round {r + 1}/{args.rounds} (load average {args.loads[-1]:.1f})", flush=True)
        # Alternate the order so no design always follows the same one.
        for design in MEASURED if r % 2 == 0 else tuple(reversed(MEASURED)):
            for concurrency in CONCURRENCIES:
                measured[design, concurrency].record(*await one(design, concurrency, r))
    for cs in channels.values():
        for channel in cs:
            await channel.close()
    return [m.summary() for m in measured.values()]


def report(args, results: list[dict], how: str, kind: str) -> None:
    by = {(r["design"], r["concurrency"]): r for r in results}
    print(f"\n{args.model_rounds}-round model, predictor: {kind} ({how}); {os.cpu_count()} CPUs; "
          f"{args.rounds} interleaved rounds of {args.calls} calls per design and concurrency; "
          f"multiprocess = {args.processes} processes x {THREADS} threads; 1-min load average during the rounds "
          f"{min(args.loads):.1f} .. {max(args.loads):.1f}")
    print("calls/s = median over rounds; x threaded = median over rounds of the ratio to the threaded server "
          "in the same round; ahead = rounds in which the design answered more calls/s than threaded\n")
    print(f"{'design':16} {'conc':>4} {'p50 ms':>8} {'p99 ms':>8} {'calls/s':>9} {'min..max':>11} "
          f"{'x threaded':>10} {'x p50':>6} {'ahead':>6} {'procs':>5}")
    for concurrency in CONCURRENCIES:
        base = by["threaded", concurrency]
        for design in MEASURED:
            r = by[design, concurrency]
            paired = np.array(r["calls_per_s_per_round"]) / np.array(base["calls_per_s_per_round"])
            r["calls_ratio"] = float(np.median(paired))
            r["rounds_ahead"] = int((paired > 1).sum())
            r["p50_ratio"] = r["p50_ms"] / base["p50_ms"]
            spread = f"{min(r['calls_per_s_per_round']):.0f}..{max(r['calls_per_s_per_round']):.0f}"
            procs = str(r["answering_processes"]) if concurrency > 1 and design in DESIGNS else "-"
            ahead = f"{r['rounds_ahead']}/{len(paired)}" if design != "threaded" else "-"
            print(f"{design:16} {concurrency:4d} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['calls_per_s']:9.0f} "
                  f"{spread:>11} {r['calls_ratio']:10.2f} {r['p50_ratio']:6.2f} {ahead:>6} {procs:>5}")
    print()
    winners = {}
    for concurrency in CONCURRENCIES:
        best = max(DESIGNS, key=lambda d: by[d, concurrency]["calls_ratio"])
        r = by[best, concurrency]
        figures = (f"{r['calls_ratio']:.2f}x threaded calls/s, ahead in {r['rounds_ahead']} of {args.rounds} rounds, "
                   f"p50 {r['p50_ms']:.3f} ms = {r['p50_ratio']:.2f}x threaded")
        # A win is a clear margin in most rounds: this machine's load moves more than a few percent.
        clear = best != "threaded" and r["calls_ratio"] >= CLEAR_MARGIN and r["rounds_ahead"] > args.rounds / 2
        winners[concurrency] = best if clear else "threaded"
        if clear:
            print(f"concurrency {concurrency:2d}: {best} wins: {figures}")
        elif best == "threaded":
            print(f"concurrency {concurrency:2d}: threaded wins: no design beat it in the median of the rounds")
        else:
            print(f"concurrency {concurrency:2d}: no clear winner, threaded stays (best: {best}, {figures}; a win "
                  f"needs >= {CLEAR_MARGIN:.2f}x and most rounds ahead)")
    print()
    for concurrency in CONCURRENCIES:  # the production server: what STELLAR_SERVER_PROCESSES should default to
        one, several = by[SERVER_DESIGNS[0], concurrency], by[SERVER_DESIGNS[1], concurrency]
        paired = np.array(several["calls_per_s_per_round"]) / np.array(one["calls_per_s_per_round"])
        ratio, ahead = float(np.median(paired)), int((paired > 1).sum())
        several["x_one_process"], several["rounds_ahead_of_one_process"] = ratio, ahead
        verdict = ("several processes win" if ratio >= CLEAR_MARGIN and ahead > args.rounds / 2 else
                   "one process wins" if ratio <= 1 / CLEAR_MARGIN and ahead < args.rounds / 2 else "no clear winner")
        print(f"production server, concurrency {concurrency:2d}: {args.processes} processes {several['calls_per_s']:.0f} "
              f"vs 1 process {one['calls_per_s']:.0f} calls/s: {ratio:.2f}x, ahead in {ahead} of {args.rounds} "
              f"rounds: {verdict}")
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model_rounds": args.model_rounds, "predictor": kind, "compiled": how,
                               "cpus": os.cpu_count(), "processes": args.processes, "threads": THREADS,
                               "load_average_1min": args.loads, "results": results, "winners": winners}, indent=2))
    print(f"\nwritten {out}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, help="interleaved measurement rounds (5; --quick 3)")
    parser.add_argument("--calls", type=int, help="calls per design, concurrency and round (1000; --quick 300)")
    parser.add_argument("--model-rounds", type=int, default=400, help="boosting rounds of the champion")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1,
                        help="processes of the multi-process server")
    parser.add_argument("--quick", action="store_true", help="smaller defaults: 3 rounds of 300 calls")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "serving_concurrency.json"))
    # A prototype server, started by the benchmark itself.
    parser.add_argument("--serve", choices=DESIGNS, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--predictor", choices=("compiled", "xgboost"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (3 if args.quick else 5)
    args.calls = args.calls or (300 if args.quick else 1000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return serve(args) if args.serve else measure(args)


if __name__ == "__main__":
    sys.exit(main())
