"""Several server processes on one gRPC port, and the supervisor that runs them.

Why: grpcio runs every handler of a server under one interpreter lock, so one
process answers on about one core whatever its thread count.
`benchmarks/serving_concurrency.py` measured processes sharing the port at
1.4-2.2x the calls/s of one at concurrency 16 (docs/benchmarks.md).

How, as grpc's examples/python/multiprocessing does it:
- The supervisor is the `serve` command's process when STELLAR_SERVER_PROCESSES
  is not 1. It checks that the port is free, then holds it with a socket bound
  with SO_REUSEPORT that never listens.
- Each worker is a fresh interpreter (multiprocessing's spawn: no gRPC state,
  threads or locks copied from the supervisor) running a whole StellarServer:
  its own model copy, hot swaps, health, auth and limits (limits count per
  process). It loads the champion, then binds the port with SO_REUSEPORT; the
  kernel spreads connections over the workers.
- The supervisor serves /metrics: every worker's own metrics (each on a loopback
  port) summed, gauges per process (metrics.SummedProcesses).
- A ReloadModel answered by one worker makes every worker look the alias up
  (SIGUSR1, relayed by the supervisor), and is answered once all serve the
  version. `kill -USR1 <supervisor>` does the same by hand.
- A worker that dies is started again. SIGTERM or SIGINT drains every worker.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, replace

from prometheus_client import CollectorRegistry

from stellar_serving.config import ServingConfig
from stellar_serving.metrics import SummedProcesses, serve_registry, stop_serving
from stellar_serving.peers import Peers, Slots

log = logging.getLogger("stellar_serving.processes")

RESTART_LIMIT = 5  # a worker that dies this many times in a row before it joins the port stops the server
DRAIN_MARGIN_SECONDS = 10.0  # beyond the shutdown grace, before a worker that has not exited is killed
PR_SET_PDEATHSIG = 1  # linux/prctl.h


# -- the port ------------------------------------------------------------------------------------


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to host:port with SO_REUSEPORT, never listening: it holds the port (port 0:
    a free one) for the workers. A named port must be free first, or SO_REUSEPORT would share it
    with whatever already listens there."""
    address_host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            address_host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise OSError(f"cannot bind gRPC to {host}:{port}: {exc}") from None
    if port:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds
            try:
                probe.bind(address)
            except OSError as exc:
                raise OSError(f"cannot bind gRPC to {host}:{port}: {exc.strerror or exc}") from None
    reservation = socket.socket(family, kind, proto)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    reservation.bind(address)
    return reservation


# -- a worker ------------------------------------------------------------------------------------


def _run_worker(config: ServingConfig, index: int, port: int, slots: Slots, supervisor: int) -> None:
    """One server process: a StellarServer on the shared port until SIGTERM or SIGINT."""
    from stellar_serving.server import StellarServer, configure_logging

    stop, reload_asked = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    signal.signal(signal.SIGUSR1, lambda signum, frame: reload_asked.set())
    _end_with(supervisor)
    configure_logging(config.log_level, {"server_process": index})
    own = replace(config, grpc_port=port, server_processes=1, metrics_host="127.0.0.1",
                  metrics_port=0 if config.metrics_port >= 0 else -1)
    server = StellarServer(own, Peers(index, slots, supervisor)).start()
    slots.metrics_port[index] = server.metrics_port or 0
    slots.joined[index] = 1
    threading.Thread(target=_follow_reloads, args=(server, reload_asked, stop), name="stellar-peer-reloads",
                     daemon=True).start()
    while not stop.wait(0.5):
        pass
    slots.joined[index] = 0
    server.stop()


def _follow_reloads(server, asked: threading.Event, stop: threading.Event) -> None:
    """A sibling's ReloadModel (relayed as SIGUSR1): look the alias up as that call did."""
    while asked.wait() and not stop.is_set():
        asked.clear()
        server.store.request_reload(explicit=True).add_done_callback(_log_failed_reload)


def _log_failed_reload(reload) -> None:
    if not reload.cancelled() and reload.exception() is not None:
        log.warning("reload asked by another process failed: %s", reload.exception(),
                    extra={"event": "peer_reload_failed"})


def _end_with(supervisor: int) -> None:
    """SIGTERM this worker when the supervisor dies, even by SIGKILL: no orphan keeps the port."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's own exit path still stops it
        return
    if os.getppid() != supervisor:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


# -- the supervisor ------------------------------------------------------------------------------


@dataclass
class _Worker:
    process: multiprocessing.process.BaseProcess
    started_at: float
    failures: int = 0  # deaths in a row before joining the port


def supervise(config: ServingConfig) -> int:
    """Run config.processes workers on one port until SIGTERM or SIGINT; 0 when all drained cleanly."""
    from stellar_serving.server import configure_logging

    configure_logging(config.log_level, {"server_process": "supervisor"})
    count = config.processes
    reservation = reserve_port(config.grpc_host, config.grpc_port)
    port = reservation.getsockname()[1]
    context = multiprocessing.get_context("spawn")
    slots = Slots(context, count)
    metrics_http = None
    if config.metrics_port >= 0:
        registry = CollectorRegistry()
        registry.register(SummedProcesses(lambda: [slots.metrics_port[i] if slots.joined[i] else None
                                                   for i in range(count)]))
        metrics_http = serve_registry(registry, config.metrics_host, config.metrics_port)

    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    asked: dict[str, int | None] = {"stop": None, "reload": None}

    def on_signal(signum, frame):
        asked["reload" if signum == signal.SIGUSR1 else "stop"] = signum
        os.write(wake_write, b"!")

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        signal.signal(signum, on_signal)

    def start(index: int, failures: int = 0) -> _Worker:
        process = context.Process(target=_run_worker, args=(config, index, port, slots, os.getpid()),
                                  name=f"stellar-server-{index}")
        process.start()
        log.info("worker %d started (pid %d)", index, process.pid,
                 extra={"event": "worker_started", "worker": index, "pid": process.pid})
        return _Worker(process, time.monotonic(), failures)

    workers = [start(index) for index in range(count)]
    log.info("listening", extra={"event": "listening", "grpc_port": port, "processes": count,
                                 "metrics_port": metrics_http.server_address[1] if metrics_http else None,
                                 "tls": config.tls_enabled, "auth": bool(config.auth_token)})
    ever_joined = [False] * count
    code = 0
    while asked["stop"] is None:
        multiprocessing.connection.wait([w.process.sentinel for w in workers] + [wake_read], timeout=1.0)
        _drain_pipe(wake_read)
        if asked["reload"] is not None:
            asked["reload"] = None
            for index, worker in enumerate(workers):
                if slots.joined[index] and worker.process.is_alive():
                    os.kill(worker.process.pid, signal.SIGUSR1)
        for index, worker in enumerate(workers):
            ever_joined[index] = ever_joined[index] or bool(slots.joined[index])
            if worker.process.is_alive() or asked["stop"] is not None:
                continue
            joined, slots.joined[index] = bool(slots.joined[index]), 0
            failures = 0 if joined else worker.failures + 1
            log.error("worker %d (pid %d) exited with code %s%s", index, worker.process.pid, worker.process.exitcode,
                      "" if joined else " before it joined the port",
                      extra={"event": "worker_exited", "worker": index, "pid": worker.process.pid,
                             "exit_code": worker.process.exitcode})
            if not ever_joined[index] or failures >= RESTART_LIMIT:
                log.error("worker %d cannot start: stopping the server (its log lines above say why)", index,
                          extra={"event": "worker_cannot_start", "worker": index})
                asked["stop"], code = -1, 1
                break
            time.sleep(min(1.0, 0.1 * 2 ** failures))  # a crash loop does not spin
            if asked["stop"] is not None:  # asked to stop during the back-off: start nothing
                break
            workers[index] = start(index, failures)
    if asked["stop"] in (signal.SIGTERM, signal.SIGINT):
        log.info("signal %s: draining %d processes", signal.Signals(asked["stop"]).name, count,
                 extra={"event": "shutdown"})
    code = max(code, _stop_all(workers, slots, config.shutdown_grace_seconds + DRAIN_MARGIN_SECONDS))
    reservation.close()
    if metrics_http is not None:
        stop_serving(metrics_http)
    os.close(wake_read)
    os.close(wake_write)
    log.info("stopped", extra={"event": "stopped", "exit_code": code})
    return code


def _stop_all(workers: list[_Worker], slots: Slots, timeout: float) -> int:
    """SIGTERM every worker (each drains its calls), wait, kill what is left; 1 if any did not exit cleanly."""
    for worker in workers:
        if worker.process.is_alive():
            os.kill(worker.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    code = 0
    for index, worker in enumerate(workers):
        worker.process.join(max(0.0, deadline - time.monotonic()))
        if worker.process.is_alive():
            log.error("worker %d (pid %d) did not drain within %.0f s: killed", index, worker.process.pid, timeout,
                      extra={"event": "worker_killed", "worker": index, "pid": worker.process.pid})
            worker.process.kill()
            worker.process.join()
        slots.joined[index] = 0
        # -SIGTERM: a process still starting when asked to stop, before its handler was in place.
        if worker.process.exitcode not in (0, -signal.SIGTERM):
            code = 1
    return code


def _drain_pipe(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass
