"""Several server processes on one port (STELLAR_SERVER_PROCESSES): real supervisors as `serve`
processes against the test registry, each worker a whole server; what a client and an operator see
must be what one process gives them."""

from __future__ import annotations

import json
import multiprocessing
import os
import queue
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc
from stellar_serving import cli, peers, processes
from stellar_serving.config import ServingConfig, usable_cpus
from stellar_serving.metrics import ServerMetrics, SummedProcesses
from tests.support import free_port

from .messages import probabilities_of, to_objects

OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]  # a channel of its own TCP connection
TOKEN = "s3cret-token"


class Supervisor:
    """`python -m stellar_serving serve` with STELLAR_SERVER_PROCESSES, its ports and its JSON log."""

    def __init__(self, registry, tmp_path, count: int = 2, **env: str) -> None:
        self.port, self.metrics_port = free_port(), free_port()
        self.log_path = tmp_path / "server.log"
        environment = {**os.environ, "STELLAR_SERVER_PROCESSES": str(count), "STELLAR_GRPC_HOST": "127.0.0.1",
                       "STELLAR_GRPC_PORT": str(self.port), "STELLAR_METRICS_HOST": "127.0.0.1",
                       "STELLAR_METRICS_PORT": str(self.metrics_port), "MLFLOW_TRACKING_URI": registry.tracking_uri,
                       "STELLAR_MODEL_CACHE_DIR": str(tmp_path / "cache"), "STELLAR_POLL_SECONDS": "0",
                       "STELLAR_SHUTDOWN_GRACE_SECONDS": "10", "STELLAR_COMPILED_PREDICTOR": "off", **env}
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "stellar_serving", "serve"], env=environment,
                                         stdout=log, stderr=subprocess.STDOUT)
        self.count = count
        self.token = env.get("STELLAR_AUTH_TOKEN")

    def events(self, name: str) -> list[dict]:
        lines = [line for line in self.log_path.read_text().splitlines() if line.startswith("{")]
        return [doc for doc in map(json.loads, lines) if doc.get("event") == name]

    def metrics(self) -> dict[tuple, float]:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).read().decode()
        return _samples(text)

    def wait_until_answering(self, count: int | None = None, timeout: float = 120) -> None:
        count = self.count if count is None else count
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"supervisor exited early:\n{self.log_path.read_text()[-3000:]}"
            try:
                if self.metrics().get(("stellar_server_processes", (("state", "answering"),))) == count:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"{count} server processes never answered:\n{self.log_path.read_text()[-3000:]}")

    def stubs(self, count: int) -> list:
        return [pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{self.port}", options=OWN_CONNECTION))
                for _ in range(count)]

    @property
    def auth(self) -> list[tuple[str, str]] | None:
        return [("authorization", f"Bearer {self.token}")] if self.token else None

    def worker_pids(self) -> dict[int, int]:
        """index -> pid of the latest start of each worker."""
        return {doc["worker"]: doc["pid"] for doc in self.events("worker_started")}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.worker_pids().values():  # never leave a worker behind (they end with the supervisor)
            _wait_gone(pid, 10)


def _samples(text: str) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie has exited; its parent has not reaped it yet
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


@pytest.fixture
def supervisor(registry, tmp_path):
    started: list[Supervisor] = []

    def start(**env) -> Supervisor:
        server = Supervisor(registry, tmp_path / f"s{len(started)}", **env)
        started.append(server)
        return server

    (tmp_path / "s0").mkdir()
    (tmp_path / "s1").mkdir()
    yield start
    for server in started:
        server.stop()


def test_processes_answer_alike_with_auth_and_limits_and_their_metrics_are_summed(supervisor, registry,
                                                                                  sample_inputs):
    server = supervisor(STELLAR_AUTH_TOKEN=TOKEN, STELLAR_MAX_BATCH_SIZE="5")
    server.wait_until_answering()
    pids = server.worker_pids()
    assert len(set(pids.values())) == 2 and all(_alive(pid) for pid in pids.values())

    # 40 clients, each on its own connection: every answer is the champion's, whichever process took it.
    stubs = server.stubs(40)
    rows = sample_inputs[:40]
    expected = registry.expected("1", rows)
    for k, stub in enumerate(stubs):
        answer = stub.Classify(pb.ClassifyRequest(object=to_objects(rows[k:k + 1], "c")[0]), metadata=server.auth,
                               timeout=10)
        assert answer.result.model_version == "1"
        np.testing.assert_array_equal(np.float32(probabilities_of(answer.result)), expected[k])

    # Auth and limits hold in every process: no token is refused, a batch over the limit is refused by name.
    for stub in stubs[:8]:
        with pytest.raises(grpc.RpcError) as err:
            stub.Classify(pb.ClassifyRequest(object=to_objects(rows[:1])[0]), timeout=10)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as err:
            stub.ClassifyBatch(pb.ClassifyBatchRequest(objects=to_objects(rows[:6])), metadata=server.auth,
                               timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "has 6 objects; the maximum is 5" in err.value.details()

    # The supervisor's /metrics is the sum of the processes' own, and both took calls.
    own = {doc["server_process"]: doc["metrics_port"] for doc in server.events("listening")
           if isinstance(doc.get("server_process"), int)}
    assert sorted(own) == [0, 1]
    classify_ok = ("stellar_grpc_requests_total", (("code", "OK"), ("method", "Classify")))
    per_process = [_samples(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
                   for port in own.values()]
    summed = server.metrics()
    counts = [samples.get(classify_ok, 0) for samples in per_process]
    assert sum(counts) == 40 and min(counts) > 0, counts  # 40 connections never all land on one of two
    assert summed[classify_ok] == 40
    refused = ("stellar_grpc_requests_total", (("code", "UNAUTHENTICATED"), ("method", "Classify")))
    assert summed[refused] == 8
    assert summed[("stellar_grpc_request_duration_seconds_count", (("method", "Classify"),))] == 48
    for index in ("0", "1"):  # gauges stay per process
        assert summed[("stellar_model_version", (("model", "stellar-classifier"), ("process", index)))] == 1
    assert summed[("stellar_server_processes", (("state", "configured"),))] == 2


def test_reload_model_on_one_process_swaps_every_process(supervisor, registry, sample_inputs):
    registry.set_champion("1")
    server = supervisor()
    try:
        server.wait_until_answering()
        registry.set_champion("2")
        # STELLAR_POLL_SECONDS=0: only the ReloadModel call tells the processes.
        answer = server.stubs(1)[0].ReloadModel(pb.ReloadModelRequest(), timeout=60)
        assert (answer.previous_version, answer.version, answer.changed) == ("1", "2", True)
        # Answered once every process serves 2: the next call on any connection gets version 2.
        rows = sample_inputs[:24]
        for k, stub in enumerate(server.stubs(24)):
            result = stub.Classify(pb.ClassifyRequest(object=to_objects(rows[k:k + 1])[0]), timeout=10).result
            assert result.model_version == "2"
        np.testing.assert_array_equal(
            np.float32(probabilities_of(result)), registry.expected("2", rows[-1:])[0])
        summed = server.metrics()
        for index in ("0", "1"):
            assert summed[("stellar_model_version", (("model", "stellar-classifier"), ("process", index)))] == 2
        # Both processes looked the alias up and swapped; neither failed.
        assert summed[("stellar_model_reloads_total", (("outcome", "swapped"),))] == 4  # load, then reload, each
        assert summed.get(("stellar_model_reloads_total", (("outcome", "failed"),)), 0) == 0
    finally:
        registry.set_champion("1")


def test_a_dead_process_is_replaced_and_sigterm_drains_every_process(supervisor, sample_inputs):
    server = supervisor()
    server.wait_until_answering()
    first = server.worker_pids()
    os.kill(first[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while server.worker_pids()[0] == first[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    replaced = server.worker_pids()
    assert replaced[0] != first[0] and replaced[1] == first[1]
    exited = server.events("worker_exited")
    assert [(doc["worker"], doc["pid"], doc["exit_code"]) for doc in exited] == [(0, first[0], -signal.SIGKILL)]
    server.wait_until_answering()
    request = pb.ClassifyRequest(object=to_objects(sample_inputs[:1])[0])
    assert all(s.Classify(request, timeout=10).result.model_version == "1" for s in server.stubs(8))

    # SIGTERM: a stream in flight finishes on whichever process holds it; every process exits; exit code 0.
    stub = server.stubs(1)[0]
    feed: queue.Queue = queue.Queue()
    call = stub.ClassifyStream(iter(feed.get, None), timeout=60)
    chunks = [to_objects(sample_inputs[k:k + 10], f"m{k}") for k in range(0, 40, 10)]
    feed.put(pb.ClassifyStreamRequest(objects=chunks[0]))
    answers = [next(call)]
    server.proc.send_signal(signal.SIGTERM)
    time.sleep(1.0)
    for chunk in chunks[1:]:
        feed.put(pb.ClassifyStreamRequest(objects=chunk))
        answers.append(next(call))
    feed.put(None)
    assert list(call) == [] and call.code() == grpc.StatusCode.OK
    assert [a.results[0].client_id for a in answers] == [f"m{k}-0" for k in range(0, 40, 10)]
    assert server.proc.wait(timeout=40) == 0
    assert not any(_alive(pid) for pid in replaced.values())
    assert [doc["server_process"] for doc in server.events("stopped")].count("supervisor") == 1
    assert sorted(doc["server_process"] for doc in server.events("stopped") if doc["server_process"] != "supervisor") \
        == [0, 1]


def test_sigterm_while_the_processes_start_is_a_clean_stop(supervisor):
    server = supervisor()
    deadline = time.monotonic() + 30
    while len(server.worker_pids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.events("worker_exited")  # still importing: none has installed its handlers yet
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0  # stopped as asked: not a failure
    assert not any(_alive(pid) for pid in server.worker_pids().values())
    assert not server.events("worker_exited") and not server.events("worker_started")[2:]  # none restarted


def test_the_processes_end_with_a_killed_supervisor(supervisor):
    server = supervisor()
    server.wait_until_answering()
    pids = server.worker_pids()
    server.proc.kill()
    server.proc.wait()
    assert all(_wait_gone(pid, 20) for pid in pids.values())  # none keeps the port without its supervisor
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", server.port))


def test_a_busy_port_is_refused_before_any_process_starts(supervisor):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        server = supervisor(STELLAR_GRPC_PORT=str(port))
        assert server.proc.wait(timeout=60) == cli.EXIT_ERROR
        output = server.log_path.read_text()
        assert f"error: cannot bind gRPC to 127.0.0.1:{port}: Address already in use" in output
        assert not server.events("worker_started")


def test_a_process_that_cannot_start_stops_the_server(supervisor, tmp_path):
    # Every setting is checked before a worker starts; what is left is a worker's own interpreter
    # failing, as a broken install would: a sitecustomize that exits in spawned processes only.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\nif '--multiprocessing-fork' in sys.argv:\n    sys.exit(3)\n")
    server = supervisor(PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]))
    assert server.proc.wait(timeout=120) == 1
    exits = server.events("worker_exited")
    assert exits and all(doc["exit_code"] == 1 for doc in exits)  # Python: "Failed to import the site module"
    assert [doc["worker"] for doc in server.events("worker_cannot_start")] == [exits[0]["worker"]]
    assert not any(_alive(pid) for pid in server.worker_pids().values())


# -- the parts, in this process ---------------------------------------------------------------------


def test_process_count_setting(tmp_path):
    assert ServingConfig(server_processes=0).processes == usable_cpus()
    cpus = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    for text, expected in (("max 100000\n", cpus), ("150000 100000\n", min(cpus, 2)), ("50000 100000\n", 1),
                           ("garbled\n", cpus)):
        cpu_max.write_text(text)
        assert usable_cpus(cpu_max) == expected, text
    assert usable_cpus(tmp_path / "absent") == cpus
    assert ServingConfig(server_processes=3).processes == 3
    with pytest.raises(ValueError, match="STELLAR_SERVER_PROCESSES must be at least 0, got -1"):
        ServingConfig(server_processes=-1)
    with pytest.raises(ValueError, match="STELLAR_SERVER_PROCESSES=.two. is not a valid int"):
        ServingConfig.from_env({"STELLAR_SERVER_PROCESSES": "two"})


def test_reserve_port_refuses_a_busy_port_and_holds_a_free_one():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(OSError, match=f"cannot bind gRPC to 127.0.0.1:{busy.getsockname()[1]}"):
            processes.reserve_port("127.0.0.1", busy.getsockname()[1])
    reservation = processes.reserve_port("127.0.0.1", 0)
    try:
        port = reservation.getsockname()[1]
        assert port > 0
        with socket.socket() as other, pytest.raises(OSError):  # held: a socket without SO_REUSEPORT cannot bind
            other.bind(("127.0.0.1", port))
        with socket.socket() as worker:  # a worker, with SO_REUSEPORT, can
            worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            worker.bind(("127.0.0.1", port))
    finally:
        reservation.close()


def test_summed_metrics_add_counters_and_histograms_and_keep_gauges_per_process():
    first, second = ServerMetrics(), ServerMetrics()
    for metrics, calls, version in ((first, 3, "4"), (second, 5, "5")):
        for _ in range(calls):
            metrics.requests_of("Classify", "OK").inc()
            metrics.latency_of("Classify").observe(0.0007)
        metrics.set_model("m", version, "registry", 100.0, "tree_kernel")
    ports = [first.serve("127.0.0.1", 0), None, second.serve("127.0.0.1", 0), free_port()]  # one down, one gone
    try:
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry()
        registry.register(SummedProcesses(lambda: ports))
        summed = _samples(generate_latest(registry).decode())
    finally:
        first.stop()
        second.stop()
    assert summed[("stellar_grpc_requests_total", (("code", "OK"), ("method", "Classify")))] == 8
    assert summed[("stellar_grpc_request_duration_seconds_bucket", (("le", "0.001"), ("method", "Classify")))] == 8
    assert summed[("stellar_grpc_request_duration_seconds_bucket", (("le", "0.0005"), ("method", "Classify")))] == 0
    assert summed[("stellar_grpc_request_duration_seconds_sum", (("method", "Classify"),))] == pytest.approx(0.0056)
    assert summed[("stellar_model_version", (("model", "m"), ("process", "0")))] == 4
    assert summed[("stellar_model_version", (("model", "m"), ("process", "2")))] == 5
    assert not any(labels and dict(labels).get("process") == "1" for _, labels in summed)
    created = [key for key in summed if key[0] == "stellar_grpc_requests_created"]
    assert len(created) == 1 and "process" not in dict(created[0][1])  # the earliest of the two
    assert summed[("stellar_server_processes", (("state", "configured"),))] == 4
    assert summed[("stellar_server_processes", (("state", "answering"),))] == 2


def test_peers_wait_until_every_joined_process_serves_the_version():
    slots = peers.Slots(multiprocessing.get_context("spawn"), 3)
    me = peers.Peers(0, slots, os.getpid())
    me.served("7")
    slots.joined[0] = slots.joined[1] = 1
    slots.version[1] = 6
    # slot 2 has not joined (starting, or restarting): it reads the alias when it loads.
    assert not me.wait_until_serving("7", timeout=0.05)
    slots.version[1] = 7
    assert me.wait_until_serving("7", timeout=0.05)
    assert peers.version_number("12") == 12 and peers.version_number("v2") == peers.NO_VERSION
