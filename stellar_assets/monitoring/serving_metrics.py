"""The prediction server's Prometheus text, turned into a week's figures.

Metric names are those of stellar_serving/metrics.py. Counters are cumulative
since the server started, so a week's figures are the difference to the
previous week's snapshot; a counter that went down means the server restarted,
and the current totals are taken as they are (the report says so).
"""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

REQUESTS = "stellar_grpc_requests_total"
ERRORS = "stellar_grpc_errors_total"
LATENCY = "stellar_grpc_request_duration_seconds"
OBJECTS = "stellar_objects_classified_total"
MODEL_INFO = "stellar_model_info"
# Health checks and reflection are not traffic; the classification API and the admin RPC are.
IGNORED_METHOD_PREFIXES = ("/grpc.health", "/grpc.reflection")


def _counted(method: str) -> bool:
    return not method.startswith(IGNORED_METHOD_PREFIXES)


def parse_metrics(text: str) -> dict:
    """Cumulative counters, latency buckets and the served model, from one scrape."""
    snapshot = {"requests": 0.0, "errors": 0.0, "objects": 0.0, "buckets": {}, "latency_count": 0.0,
                "model_versions": []}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            method = sample.labels.get("method", "")
            if sample.name == REQUESTS and _counted(method):
                snapshot["requests"] += sample.value
            elif sample.name == ERRORS and _counted(method):
                snapshot["errors"] += sample.value
            elif sample.name == OBJECTS:
                snapshot["objects"] += sample.value
            elif sample.name == LATENCY + "_bucket" and _counted(method):
                le = sample.labels["le"]
                snapshot["buckets"][le] = snapshot["buckets"].get(le, 0.0) + sample.value
            elif sample.name == LATENCY + "_count" and _counted(method):
                snapshot["latency_count"] += sample.value
            elif sample.name == MODEL_INFO and sample.value == 1:
                snapshot["model_versions"].append(sample.labels.get("version", ""))
    return snapshot


def _bound(le: str) -> float:
    return math.inf if le in ("+Inf", "inf") else float(le)


def percentile_ms(buckets: dict[str, float], q: float) -> float | None:
    """The q-quantile from cumulative histogram buckets, linear within a bucket (as Prometheus does)."""
    ordered = sorted(((_bound(le), count) for le, count in buckets.items()), key=lambda x: x[0])
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return round(lower_bound * 1000, 3)
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return round((lower_bound + share * (bound - lower_bound)) * 1000, 3)
        lower_bound, lower_count = bound, count
    return None


def week_figures(current: dict, previous: dict | None) -> dict:
    restarted = previous is not None and (current["requests"] < previous["requests"]
                                          or current["latency_count"] < previous["latency_count"])
    base = previous if previous is not None and not restarted else None
    if base is None:
        counting = "since the server started" + (" (it restarted after the previous snapshot)" if restarted else "")
    else:
        counting = "since the previous week's snapshot"

    def delta(key: str) -> float:
        return current[key] - (base[key] if base else 0.0)

    buckets = {le: count - ((base or {}).get("buckets", {}).get(le, 0.0)) for le, count in current["buckets"].items()}
    requests, errors = delta("requests"), delta("errors")
    versions = sorted(set(current["model_versions"]) | set((previous or {}).get("model_versions", [])))
    return {
        "requests": int(requests),
        "errors": int(errors),
        "error_rate": (errors / requests) if requests else None,
        "objects_classified": int(delta("objects")),
        "latency_p50_ms": percentile_ms(buckets, 0.50),
        "latency_p95_ms": percentile_ms(buckets, 0.95),
        "latency_p99_ms": percentile_ms(buckets, 0.99),
        "model_versions": versions,
        "model_version_now": current["model_versions"][0] if current["model_versions"] else None,
        "counting": counting,
    }
