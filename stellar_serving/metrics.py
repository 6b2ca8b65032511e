"""Prometheus metrics of the prediction server, on their own HTTP port.

Each server owns a CollectorRegistry (not the process-global one), so several
servers can live in one process (tests, benchmark) without clashing names.
"""

from __future__ import annotations

import threading
import urllib.request
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 50000)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "stellar_grpc_requests_total", "RPCs finished, by method and status code", ["method", "code"], registry=r)
        self.errors = Counter(
            "stellar_grpc_errors_total", "RPCs that ended with a non-OK status", ["method", "code"], registry=r)
        self.latency = Histogram(
            "stellar_grpc_request_duration_seconds", "RPC wall time in the server", ["method"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "stellar_batch_size_objects", "objects per request (per stream message for ClassifyStream)", ["method"],
            buckets=BATCH_BUCKETS, registry=r)
        self.booster_rows = Histogram(
            "stellar_booster_call_rows", "rows per booster call (concurrent small requests are predicted together)",
            buckets=BATCH_BUCKETS, registry=r)
        self.objects = Counter("stellar_objects_classified_total", "objects classified", ["method"], registry=r)
        self.model_version = Gauge(
            "stellar_model_version", "registered model version being served (0: none)", ["model"], registry=r)
        self.model_info = Gauge(
            "stellar_model_info", "1 for the model being served", ["model", "version", "source"], registry=r)
        self.model_loaded = Gauge(
            "stellar_model_loaded_timestamp_seconds", "when the current model was swapped in", registry=r)
        self.reloads = Counter(
            "stellar_model_reloads_total", "alias look-ups by outcome (swapped, unchanged, failed)", ["outcome"],
            registry=r)
        self.predictor = Gauge(
            "stellar_model_predictor", "1 for what answers the current model's requests: tree_kernel (every "
            "request), compiled (small ones) or xgboost (GetModelInfo's predictor_note says why)",
            ["model", "version", "predictor"], registry=r)
        self.tree_kernels = Counter(
            "stellar_tree_kernel_total", "tree kernels prepared at model load, by outcome (built, unavailable, off)",
            ["outcome"], registry=r)
        self.compiles = Counter(
            "stellar_compiled_predictor_total", "compiled-predictor preparations by outcome (compiled, reused, "
            "unavailable, failed, mismatch, cancelled, skipped, off)", ["outcome"], registry=r)
        # Per-call metrics, their children looked up once (labels() takes a lock and checks the values: ~2 us).
        self.requests_of = _Children(self.requests)
        self.errors_of = _Children(self.errors)
        self.latency_of = _Children(self.latency)
        self.batch_size_of = _Children(self.batch_size)
        self.objects_of = _Children(self.objects)
        self._http = None
        self.port: int | None = None
        self._info_labels: tuple | None = None
        self._predictor_labels: tuple | None = None

    def set_model(self, name: str, version: str, source: str, loaded_at: float, predictor: str = "xgboost") -> None:
        if self._info_labels is not None:
            self.model_info.remove(*self._info_labels)
        self._info_labels = (name, version, source)
        self.model_info.labels(*self._info_labels).set(1)
        if self._predictor_labels is not None:
            self.predictor.remove(*self._predictor_labels)
        self._predictor_labels = (name, version, predictor)
        self.predictor.labels(*self._predictor_labels).set(1)
        try:
            self.model_version.labels(name).set(float(version))
        except ValueError:
            self.model_version.labels(name).set(-1)
        self.model_loaded.set(loaded_at)

    def serve(self, host: str, port: int) -> int:
        """Start the /metrics HTTP endpoint; return its port (port 0: a free one)."""
        self._http = serve_registry(self.registry, host, port)
        self.port = self._http.server_address[1]
        return self.port

    def stop(self) -> None:
        if self._http is not None:
            stop_serving(self._http)
            self._http = None


def serve_registry(registry: CollectorRegistry, host: str, port: int) -> WSGIServer:
    """A /metrics HTTP endpoint of `registry` on its own thread (port 0: a free one).

    Our own WSGI server rather than prometheus_client.start_http_server: its
    serve loop polls every 0.5 s, so every shutdown took half a second."""
    httpd = make_server(host, port, make_wsgi_app(registry), _ThreadingWSGIServer, _QuietHandler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                     name="stellar-metrics-http", daemon=True).start()
    return httpd


def stop_serving(httpd: WSGIServer) -> None:
    httpd.shutdown()
    httpd.server_close()


class SummedProcesses:
    """A collector of several server processes' metrics, as one server's: what each exposes on its
    own loopback port, read at every scrape.

    Counters and histograms are summed over the processes (their `_created` time is the earliest);
    a gauge describes one process, so each keeps its own series with a `process` label (e.g. the
    version each serves while a swap goes round). `stellar_server_processes` says how many were
    started and how many answered this scrape; a process that does not answer (restarting) is left
    out of the sums until it is back."""

    def __init__(self, ports: Callable[[], list[int | None]], timeout: float = 2.0) -> None:
        self._ports = ports  # index -> metrics port of the running process (None: not running)
        self._timeout = timeout

    def collect(self):
        ports = self._ports()
        families: dict[str, Metric] = {}
        sums: dict[str, dict[tuple, float]] = {}
        answered = 0
        for index, port in enumerate(ports):
            text = self._scrape(port)
            if text is None:
                continue
            answered += 1
            for family in text_string_to_metric_families(text):
                merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type))
                series = sums.setdefault(family.name, {})
                # The text format gives a counter's or histogram's creation time as a gauge of its own.
                created = family.name.endswith("_created")
                per_process = family.type in ("gauge", "info", "stateset", "unknown") and not created
                for sample in family.samples:
                    labels = {**sample.labels, "process": str(index)} if per_process else sample.labels
                    key = (sample.name, tuple(sorted(labels.items())))
                    if key not in series:
                        series[key] = sample.value
                    elif created or sample.name.endswith("_created"):
                        series[key] = min(series[key], sample.value)
                    else:
                        series[key] += sample.value
        for name, merged in families.items():
            for (sample_name, labels), value in sums[name].items():
                merged.add_sample(sample_name, dict(labels), value)
            yield merged
        processes = GaugeMetricFamily("stellar_server_processes",
                                      "server processes: started (configured) and answering this scrape",
                                      labels=["state"])
        processes.add_metric(["configured"], len(ports))
        processes.add_metric(["answering"], answered)
        yield processes

    def _scrape(self, port: int | None) -> str | None:
        if not port:
            return None
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=self._timeout) as response:
                return response.read().decode()
        except OSError:
            return None


class _Children:
    """`metric.labels(*values)`, remembered by values: the same child object prometheus_client gives.

    Only for metrics whose children are never removed (remove() would orphan a remembered child)."""

    def __init__(self, metric) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], object] = {}

    def __call__(self, *values: str):
        child = self._children.get(values)
        if child is None:
            child = self._children.setdefault(values, self._metric.labels(*values))
        return child


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # scrapes are not worth a log line each
        pass
