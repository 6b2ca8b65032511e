"""`stellar`: the project's command line.

Subcommands import what they need when they run, so `stellar classify` never
pays for importing Dagster.
"""

from __future__ import annotations

import argparse
import os
import sys


SERVING_COMMANDS = ("serve", "classify", "model-info", "reload")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="stellar", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="the main job: replay a range of weeks (ingest, predict, drift, "
                          "retrain, promote), then serve the final champion")
    demo.add_argument("--first-week", help="first week of the replay (YYYY-MM-DD, a Sunday); default 2008-03-02")
    demo.add_argument("--last-week", help="last week of the replay; default 2008-12-28 (up to 2020-03-22)")
    ingest = sub.add_parser("ingest", help="backfill raw observations and features for every week, in one run")
    ingest.add_argument("--first-week", help="first week (YYYY-MM-DD, a Sunday); default: the first the source covers")
    ingest.add_argument("--last-week", help="last week; default: the last the source covers")
    ingest.add_argument("--allow-shrink", action="store_true",
                        help="let this run store fewer rows in a week than it holds (default: refused)")
    ui = sub.add_parser("ui", help="open the Dagster UI (dagster dev) on the main job's instance",
                        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ui.add_argument("--host", default="127.0.0.1",
                    help="address the UI listens on (0.0.0.0: every interface; it has no login)")
    ui.add_argument("--port", type=_tcp_port, default=3000, help="port the UI listens on (1-65535)")
    sub.add_parser("serve", help="run the gRPC prediction server (see stellar_serving)", add_help=False)
    sub.add_parser("classify", help="classify objects through the prediction server", add_help=False)
    sub.add_parser("model-info", help="show the model the prediction server answers with", add_help=False)
    sub.add_parser("reload", help="ask the prediction server to reload the champion (admin)", add_help=False)

    if argv and argv[0] in SERVING_COMMANDS:
        from stellar_core.home import mlflow_tracking_uri, project_home
        from stellar_serving.cli import main as serving_main

        # Without other settings the server serves the embedded store's champion.
        os.environ.setdefault("MLFLOW_TRACKING_URI", mlflow_tracking_uri())
        os.environ.setdefault("STELLAR_MODEL_CACHE_DIR", str(project_home() / "model-cache"))

        return serving_main(argv)
    if argv[:1] == ["--version"]:
        from stellar_serving.cli import version_text

        print(version_text())
        return 0
    args = parser.parse_args(argv)
    if args.command == "demo":
        from stellar_assets.demo import run_demo

        return run_demo(first_week=args.first_week, last_week=args.last_week)
    if args.command == "ingest":
        from stellar_assets.demo import run_ingestion

        return run_ingestion(first_week=args.first_week, last_week=args.last_week, allow_shrink=args.allow_shrink)
    if args.command == "ui":
        return _open_ui(args.host, args.port)
    parser.error(f"unknown command {args.command}")
    return 2


def _tcp_port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def _open_ui(host: str, port: int) -> int:
    from stellar_core.home import configure_environment, repo_root

    configure_environment()
    workspace = repo_root() / "workspace.yaml"
    print(f"Dagster UI on the instance in {os.environ['DAGSTER_HOME']}: http://{host}:{port}")
    dagster = os.path.join(os.path.dirname(sys.executable), "dagster")
    os.execv(dagster, [dagster, "dev", "-w", str(workspace), "-h", host, "-p", str(port)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
