"""`stellar serve` and `stellar classify` (plus `model-info` and `reload`).

    stellar serve                      # settings from STELLAR_* / MLFLOW_TRACKING_URI (see config.py)
    stellar classify --u 19.1 --g 17.9 --r 17.3 --i 17.0 --z 16.8 --redshift 0.07
    stellar classify --csv objects.csv.gz --output predictions.csv [--tls-ca ca.pem] [--token T]
    stellar classify --csv objects.csv --output predictions.csv --on-invalid skip   # + predictions.csv.rejects.csv

Exit codes: 0 done; 2 an error, printed as one `error: ...` line on stderr
(bad arguments or input, an unwritable output, a call the server refused or
could not take); 141 stdout closed early (`| head`); 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
from collections import Counter
from contextlib import ExitStack, contextmanager, suppress
from importlib import metadata
from pathlib import Path

import grpc

from stellar_core.contract import CLASSES, INPUT_RANGES, MODEL_INPUTS

from stellar_api._generated.stellar.v1 import classifier_pb2 as pb

API_VERSION = pb.DESCRIPTOR.package  # the gRPC package: changes only with an incompatible API
EXIT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a Unix tool reports when its reader goes away
PREDICTION_COLUMNS = ("client_id", "class", *[f"p_{c}" for c in CLASSES], "model_version")
REJECT_COLUMNS = ("reject_line", "reject_field", "reject_reason")


class CommandError(Exception):
    """A problem for the user to fix: printed as `error: <message>`, exit code 2."""


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the empty ones (None, an unset flag's False, "")."""

    def _get_help_string(self, action):
        if action.default is None or action.default is False or action.default == "":
            return action.help
        return super()._get_help_string(action)


def version_text() -> str:
    try:
        package = metadata.version("stellar")
    except metadata.PackageNotFoundError:
        package = "unknown (not installed)"
    return f"stellar {package} (API {API_VERSION})"


def _new_parser(sub, name: str, text: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=text, description=text, formatter_class=_HelpFormatter)
    # `stellar <command> --version` too: the root `stellar` forwards whole command lines here.
    parser.add_argument("--version", action="version", version=version_text(), help="show the version and exit")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", default="localhost:50051", help="server address host:port")
    p.add_argument("--tls-ca", help="PEM file of the CA that signed the server certificate (turns TLS on)")
    p.add_argument("--tls-server-name", help="expected name in the server certificate, if not the host")
    p.add_argument("--token", help="bearer token")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds per call (unary calls)")


def _classify_options(p: argparse.ArgumentParser) -> None:
    _client_options(p)
    for name in MODEL_INPUTS:
        low, high = INPUT_RANGES[name]
        p.add_argument(f"--{name}", type=float, help=f"input '{name}' of one object (valid: {low:g} to {high:g})")
    p.add_argument("--client-id", default="", help="id of that one object, echoed in the answer")
    p.add_argument("--csv", help="CSV file (plain or gzip, told by its content) with columns u, g, r, i, z, "
                   "redshift and optionally an id (client_id, spec_obj_ID, obj_ID or object_id)")
    p.add_argument("--output", help="write the predictions to this CSV file, replaced only once all is done "
                   "(default: stdout)")
    p.add_argument("--on-invalid", choices=("fail", "skip"), default="fail",
                   help="an invalid row: 'fail' stops with an error naming it and writes nothing; 'skip' "
                   "classifies the valid rows and writes the invalid ones, with the reason, to --rejects")
    p.add_argument("--rejects", help="with --on-invalid skip: CSV file for the rejected rows "
                   "(default: <output>.rejects.csv)")
    p.add_argument("--chunk-size", type=_positive_int, default=500, help="objects per stream message")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stellar", description="stellar prediction server and client",
                                     formatter_class=_HelpFormatter)
    parser.add_argument("--version", action="version", version=version_text(), help="show the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = _new_parser(sub, "serve", "run the gRPC prediction server (configured by environment variables)")
    serve.add_argument("--host", help="override STELLAR_GRPC_HOST")
    serve.add_argument("--port", type=int, help="override STELLAR_GRPC_PORT")
    serve.add_argument("--metrics-port", type=int, help="override STELLAR_METRICS_PORT")
    serve.add_argument("--print-env", action="store_true", help="list the environment variables and exit")

    _classify_options(_new_parser(sub, "classify", "classify one object from flags, or a CSV file via ClassifyStream"))
    for name, text in (("model-info", "show the model being served"), ("reload", "ReloadModel (admin)")):
        _client_options(_new_parser(sub, name, text))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    from stellar_api.client import CsvInputError, InvalidRow

    try:
        return {"classify": _classify, "model-info": _model_info, "reload": _reload}[args.command](args)
    except grpc.RpcError as exc:
        return _error(f"{exc.code().name}: {exc.details()}")
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (CommandError, CsvInputError, InvalidRow) as exc:
        return _error(str(exc))
    except OSError as exc:  # writing the output: disk full, a folder that went away...
        return _error(f"{exc.filename or 'output'}: {exc.strerror or exc}")
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _error(message: str) -> int:
    print("error: " + " ".join(str(message).split()), file=sys.stderr)  # one line, whatever the details hold
    return EXIT_ERROR


def _quiet_broken_pipe() -> int:
    # Python flushes stdout again at exit and would print a second error: send that to /dev/null.
    with suppress(OSError, ValueError):  # ValueError: a stdout without a file descriptor (tests)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


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
    try:
        config = ServingConfig.from_env(**overrides)
        if config.processes > 1:  # a supervisor of several server processes on the one port
            from stellar_serving.processes import supervise

            return supervise(config)
        return serve_forever(config)
    except (ValueError, OSError) as exc:  # a refused setting, or a port that cannot be bound: the message names it
        return _error(str(exc))


def _client(args):
    from stellar_api.client import StellarClient

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
    from stellar_api.client import CsvObjects

    if any(getattr(args, name) is not None for name in MODEL_INPUTS):
        raise CommandError("give either --csv or the input flags (--u ... --redshift), not both")
    rejects_path = _rejects_path(args)
    source = CsvObjects(args.csv)  # checks the file and its header before connecting
    _check_outputs(Path(args.csv), args.output, rejects_path)
    with ExitStack() as files:
        if rejects_path:
            source.on_reject = _reject_writer(files.enter_context(_atomic_output(rejects_path)), source.header)
        out = files.enter_context(_atomic_output(args.output)) if args.output else sys.stdout
        counts, versions = _stream_predictions(args, source, csv.writer(out))
        if source.failure is not None:  # leaving the block unfinished: no file is replaced
            raise CommandError(f"{source.failure}{_failure_hint(args, source)}")
        answered = sum(counts.values())
        if answered != source.sent:  # a stream that ended early must not pass for a whole file
            raise CommandError(f"the server answered {answered} of {source.sent} objects"
                               f"{_failure_hint(args, source)}")
    _report(args, source, rejects_path, counts, versions)
    return 0


def _rejects_path(args) -> str | None:
    if args.on_invalid == "fail":
        if args.rejects:
            raise CommandError("--rejects is for --on-invalid skip")
        return None
    if args.rejects:
        return args.rejects
    if args.output:
        return f"{args.output}.rejects.csv"
    raise CommandError("--on-invalid skip writes the rejected rows to a file: give --rejects PATH (or --output)")


def _check_outputs(csv_path: Path, output: str | None, rejects: str | None) -> None:
    """Refuse outputs that would clobber the input or each other, or that are folders."""
    named = [(flag, Path(path)) for flag, path in (("--output", output), ("--rejects", rejects)) if path]
    for flag, path in named:
        if path.is_dir():
            raise CommandError(f"{flag} {path} is a folder: give a file name")
        if path.exists() and path.samefile(csv_path):
            raise CommandError(f"{flag} {path} is the input file: it would be replaced")
    if len(named) == 2 and named[0][1].resolve() == named[1][1].resolve():
        raise CommandError(f"--output and --rejects are the same file: {output}")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def _atomic_output(path: str):
    """A text file that replaces `path` only if the block succeeds: a temp file in the
    same folder (so os.replace is atomic), removed on any failure."""
    target = Path(path)
    mode = 0o666 & ~_umask()  # mkstemp makes 0600 files; give the usual permissions
    try:
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror} (folder {target.parent})") from None
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            yield handle
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _reject_writer(handle, header: list[str]):
    writer = csv.writer(handle)
    writer.writerow([*REJECT_COLUMNS, *header])  # the input columns kept: the file can be fixed and sent again
    return lambda rejected: writer.writerow([rejected.line, rejected.field, rejected.reason, *rejected.values])


def _stream_predictions(args, source, writer) -> tuple[Counter, set[str]]:
    from tqdm import tqdm

    counts: Counter = Counter()
    versions: set[str] = set()
    header_written = False  # on stdout, only once the server answers: a failed connection prints nothing
    with _client(args) as client, tqdm(total=_row_count(args.csv), unit="obj", disable=args.no_progress,
                                       file=sys.stderr) as bar:
        for results in client.classify_stream(source, chunk_size=args.chunk_size, timeout=None):
            if not header_written:
                writer.writerow(PREDICTION_COLUMNS)
                header_written = True
            for r in results:
                writer.writerow([r.client_id, r.predicted_class,
                                 *[f"{r.probabilities.get(c, 0.0):.6g}" for c in CLASSES], r.model_version])
                counts[r.predicted_class] += 1
                versions.add(r.model_version)
            bar.update(len(results))
    if not header_written:  # every row skipped: the header alone
        writer.writerow(PREDICTION_COLUMNS)
    return counts, versions


def _row_count(path: str) -> int | None:
    """Rows for the progress bar; None (no total) if the file cannot be counted."""
    from stellar_api.client import READ_ERRORS, count_csv_rows

    try:
        return count_csv_rows(path)
    except READ_ERRORS:
        return None  # the stream then reports what is wrong with the file


def _failure_hint(args, source) -> str:
    from stellar_api.client import InvalidRow

    written = f"; {args.output} was not written" if args.output else ""
    if isinstance(source.failure, InvalidRow):
        return f"{written} (--on-invalid skip classifies the valid rows and lists the invalid ones)"
    return written


def _report(args, source, rejects_path: str | None, counts: Counter, versions: set[str]) -> None:
    if source.duplicate_ids:
        examples = ", ".join(repr(i) for i, _ in source.duplicate_ids.most_common(3))
        n = len(source.duplicate_ids)
        print(f"warning: {n} id{'s' if n > 1 else ''} appear{'' if n > 1 else 's'} more than once in {args.csv} "
              f"({sum(source.duplicate_ids.values())} repeated rows; e.g. {examples}): "
              "their predictions can be told apart only by row order", file=sys.stderr)
    summary = {"objects": sum(counts.values()), "classes": dict(counts), "model_versions": sorted(versions)}
    if rejects_path:
        if source.rejected:
            print(f"warning: skipped {source.rejected} invalid row{'s' if source.rejected > 1 else ''} of "
                  f"{source.rows} (first: {source.first_rejected}); written with the reasons to {rejects_path}",
                  file=sys.stderr)
        summary.update(skipped=source.rejected, rejects=rejects_path)
    print(json.dumps(summary), file=sys.stderr)


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
