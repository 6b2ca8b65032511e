"""`stellar serve` and `stellar classify` (plus `model-info` and `reload`).

    stellar serve                      # settings from STELLAR_* / MLFLOW_TRACKING_URI (see config.py)
    stellar classify --u 19.1 --g 17.9 --r 17.3 --i 17.0 --z 16.8 --redshift 0.07
    stellar classify --csv objects.csv.gz --output predictions.csv [--tls-ca ca.pem] [--token T]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter

import grpc

from stellar_core.contract import CLASSES, MODEL_INPUTS


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stellar", description="stellar prediction server and client")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC prediction server (configured by environment variables)")
    serve.add_argument("--host", help="override STELLAR_GRPC_HOST")
    serve.add_argument("--port", type=int, help="override STELLAR_GRPC_PORT")
    serve.add_argument("--metrics-port", type=int, help="override STELLAR_METRICS_PORT")
    serve.add_argument("--print-env", action="store_true", help="list the environment variables and exit")

    def client_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--target", default="localhost:50051", help="server address host:port")
        p.add_argument("--tls-ca", help="PEM file of the CA that signed the server certificate (turns TLS on)")
        p.add_argument("--tls-server-name", help="expected name in the server certificate, if not the host")
        p.add_argument("--token", help="bearer token")
        p.add_argument("--timeout", type=float, default=30.0, help="seconds per call (unary calls)")

    classify = sub.add_parser("classify", help="classify one object from flags, or a CSV file via ClassifyStream")
    client_options(classify)
    for name in MODEL_INPUTS:
        classify.add_argument(f"--{name}", type=float)
    classify.add_argument("--client-id", default="")
    classify.add_argument("--csv", help="CSV (or .csv.gz) with columns u, g, r, i, z, redshift [, spec_obj_ID]")
    classify.add_argument("--output", help="write predictions as CSV here (default: stdout)")
    classify.add_argument("--chunk-size", type=int, default=500, help="objects per stream message")
    classify.add_argument("--no-progress", action="store_true")

    for name, text in (("model-info", "show the model being served"), ("reload", "ReloadModel (admin)")):
        client_options(sub.add_parser(name, help=text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    try:
        return {"classify": _classify, "model-info": _model_info, "reload": _reload}[args.command](args)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 2


def serve_main(argv: list[str] | None = None) -> int:
    """Entry point for a `stellar-serve` script: `stellar serve` with its options."""
    return main(["serve", *(sys.argv[1:] if argv is None else argv)])


def _serve(args) -> int:
    from stellar_serving.config import ServingConfig
    from stellar_serving.server import serve_forever

    if args.print_env:
        for env, (name, default, doc) in ServingConfig.env_vars().items():
            print(f"{env}={default!s:<24} # {doc}")
        return 0
    overrides = {k: v for k, v in (("grpc_host", args.host), ("grpc_port", args.port),
                                   ("metrics_port", args.metrics_port)) if v is not None}
    return serve_forever(ServingConfig.from_env(**overrides))


def _client(args):
    from stellar_serving.client import StellarClient

    return StellarClient(args.target, token=args.token, tls_ca=args.tls_ca, timeout=args.timeout,
                         tls_server_name=args.tls_server_name)


def _classify(args) -> int:
    if args.csv:
        return _classify_csv(args)
    given = {name: getattr(args, name) for name in MODEL_INPUTS if getattr(args, name) is not None}
    with _client(args) as client:
        # Missing flags are sent as missing fields: the server names them.
        result = client.classify(given, client_id=args.client_id)
    print(json.dumps({"client_id": result.client_id, "class": result.predicted_class,
                      "probabilities": result.probabilities, "model_version": result.model_version}))
    return 0


def _classify_csv(args) -> int:
    from tqdm import tqdm

    from stellar_serving.client import count_csv_rows, read_csv_objects

    total = count_csv_rows(args.csv)
    out = open(args.output, "w", newline="") if args.output else sys.stdout
    counts: Counter = Counter()
    versions: set[str] = set()
    try:
        writer = csv.writer(out)
        writer.writerow(["client_id", "class", *[f"p_{c}" for c in CLASSES], "model_version"])
        with _client(args) as client, tqdm(total=total, unit="obj", disable=args.no_progress,
                                           file=sys.stderr) as bar:
            for results in client.classify_stream(read_csv_objects(args.csv), chunk_size=args.chunk_size,
                                                  timeout=None):
                for r in results:
                    writer.writerow([r.client_id, r.predicted_class,
                                     *[f"{r.probabilities.get(c, 0.0):.6g}" for c in CLASSES], r.model_version])
                    counts[r.predicted_class] += 1
                    versions.add(r.model_version)
                bar.update(len(results))
    finally:
        if args.output:
            out.close()
    summary = {"objects": sum(counts.values()), "classes": dict(counts), "model_versions": sorted(versions)}
    print(json.dumps(summary), file=sys.stderr)
    return 0


def _model_info(args) -> int:
    from google.protobuf.json_format import MessageToDict

    with _client(args) as client:
        print(json.dumps(MessageToDict(client.model_info()), indent=2))
    return 0


def _reload(args) -> int:
    with _client(args) as client:
        r = client.reload_model()
    print(json.dumps({"previous_version": r.previous_version, "version": r.version,
                      "changed": r.changed, "source": r.source}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
