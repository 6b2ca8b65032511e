"""The main job (`make demo`): a range of survey weeks replayed through the platform, and `stellar ingest`.

It runs on a persistent Dagster instance in the project home, so everything it
does is visible afterwards in the Dagster UI (`make ui`).
"""

from __future__ import annotations

import time
from collections import Counter

from stellar_core.home import configure_environment, default_sdss_csv

# `stellar ingest` shows Dagster's INFO lines (the replay keeps to WARNING).
INGEST_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def say(message: str = "") -> None:
    print(message, flush=True)


def run_ingestion(first_week: str | None = None, last_week: str | None = None, allow_shrink: bool = False) -> int:
    """`stellar ingest`: raw observations and features for the weeks the source covers (or a range),
    one run per contiguous range of new or changed weeks (usually one run)."""
    csv, why = default_sdss_csv()
    configure_environment()

    import dagster as dg

    from stellar_assets.definitions import defs
    from stellar_core.home import project_home

    instance = dg.DagsterInstance.get()
    say(f"stellar ingest: project home {project_home()}")
    _say_source(csv, why)
    planned = _plan_ingestion(defs, first_week, last_week)
    if isinstance(planned, int):
        return planned
    ranges, selected, unchanged = planned
    say(f"Ingestion: raw_observations + observation_features for {len(selected)} weeks ({selected[0]} .. "
        f"{selected[-1]}): {unchanged} unchanged and complete, {len(ranges)} run(s) for the rest "
        "(single-run backfill policy)" + ("; stored weeks may shrink (--allow-shrink)" if allow_shrink else ""))
    for first, last in ranges:
        if _ingest_range(defs, instance, first, last, allow_shrink) != 0:
            return 1
    if not ranges:
        say("Nothing to run: every week already holds exactly these rows (their data versions stay).")
    say(f"\nOpen the Dagster UI on this instance:  make ui   (DAGSTER_HOME={instance.root_directory})")
    return 0


def _plan_ingestion(defs, first_week: str | None, last_week: str | None):
    """(ranges to run, weeks selected, unchanged weeks), or an exit code after saying what is wrong."""
    from stellar_assets.ingestion.plan import ranges_to_ingest
    from stellar_assets.partitions import observation_weeks, survey_span
    from stellar_core.sources import SourceError

    keys = observation_weeks.get_partition_keys()
    source = defs.resources["source"]
    try:
        covers = source.coverage(survey_span())
    except SourceError as exc:
        say(f"error: {exc}")
        return 2
    if covers is None:
        say("error: the source covers no survey week (no row with an MJD inside the survey): nothing to ingest")
        return 2
    first = first_week or max(covers.first, keys[0])
    last = last_week or min(covers.last, keys[-1])
    for name, week in (("first", first), ("last", last)):
        if week not in keys:
            say(f"error: --{name}-week {week} is not an observation week: weeks start on Sundays between "
                f"{keys[0]} and {keys[-1]}")
            return 2
    if first > last:
        say(f"error: --first-week {first} is after --last-week {last} (the source covers {covers})")
        return 2
    selected = keys[keys.index(first): keys.index(last) + 1]
    say(f"The source covers {covers}.")
    if source.resolved_kind == "skyserver":  # one query per week: do not ask twice
        return [(first, last)], selected, 0
    try:
        ranges, unchanged = ranges_to_ingest(source, defs.resources["io_manager"], selected, survey_span())
    except SourceError as exc:
        say(f"error: {exc}")
        return 2
    return ranges, selected, unchanged


def _ingest_range(defs, instance, first: str, last: str, allow_shrink: bool) -> int:
    from stellar_assets.replay import RANGE_END_TAG, RANGE_START_TAG
    from stellar_assets.resources.io_managers import ALLOW_SHRINK_TAG

    tags = {RANGE_START_TAG: first, RANGE_END_TAG: last, "stellar/step": "ingestion"}
    if allow_shrink:
        tags[ALLOW_SHRINK_TAG] = "true"
    started = time.perf_counter()
    result = defs.resolve_job_def("ingestion_job").execute_in_process(
        instance=instance, run_config=INGEST_LOGS, raise_on_error=False, tags=tags,
    )
    elapsed = time.perf_counter() - started
    if not result.success:
        say(f"Ingestion run {result.run_id} ({first} .. {last}) FAILED after {elapsed:.1f} s:")
        _print_failures(result)
        return 1
    say(_ingestion_summary(result, elapsed))
    return 0


def run_demo(first_week: str | None = None, last_week: str | None = None) -> int:
    """`stellar demo`, the main job: replay a range of weeks, then serve the final champion."""
    csv, why = default_sdss_csv()
    configure_environment()

    import dagster as dg

    from stellar_assets.replay import ReplayError, replay_main
    from stellar_assets.training import describe_champion
    from stellar_core.home import project_home

    say(f"stellar main job: project home {project_home()}")
    _say_source(csv, why)
    say("\n[1] Replay: for each week in order, ingest, predict with the champion of the time, check drift, "
        "retrain when the retraining sensor says so, promote when the gate passes")
    try:
        # None lets the replay apply STELLAR_REPLAY_FIRST_WEEK / _LAST_WEEK, then its defaults.
        replay_main(first_week, last_week, say=say)
    except ReplayError as exc:
        say(f"Replay stopped: {exc}")
        return 1
    say("\n[2] The champion now")
    say(describe_champion())

    say("\n[3] Serving: the gRPC prediction server on the champion, asked about a few real objects")
    if _serve_and_classify() != 0:
        return 1
    say(f"\nOpen the Dagster UI on this instance:  make ui   (DAGSTER_HOME={dg.DagsterInstance.get().root_directory})")
    say("Open the MLflow UI on the same store:  make mlflow-ui")
    say("Run the prediction server:             make serve")
    say("Backfill every week of the source:     .venv/bin/stellar ingest")
    return 0


def _say_source(csv: str | None, why: str) -> None:
    if csv:
        say(f"Source: SDSS17 CSV {csv} ({why})")
    else:
        say("Source: the built-in simulator (no SDSS17 CSV configured: put the Kaggle download at "
            "data/star_classification.csv or set STELLAR_SDSS_CSV)")


def _print_failures(result) -> None:
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            detail = data.user_failure_data.description if data.user_failure_data else (data.error.message if data.error else "")
            say(f"  - {event.step_key}: {detail}")
        elif event.event_type_value == "ASSET_CHECK_EVALUATION" and not event.event_specific_data.passed:
            evaluation = event.event_specific_data
            say(f"  - check {evaluation.check_name} did not pass: {evaluation.description or ''}")
            for key, value in evaluation.metadata.items():
                say(f"      {key}: {getattr(value, 'value', value)}")


def _serve_and_classify(n_objects: int = 6) -> int:
    """Start `stellar serve` as its own process on free ports and classify a few objects of the last weeks."""
    import os
    import socket
    import subprocess
    import sys

    from stellar_core.contract import CLASSES, MODEL_INPUTS
    from stellar_core.home import data_dir, mlflow_tracking_uri, project_home
    from stellar_api.client import StellarClient

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    port, metrics_port = free_port(), free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_tracking_uri(), "STELLAR_GRPC_HOST": "127.0.0.1",
           "STELLAR_GRPC_PORT": str(port), "STELLAR_METRICS_HOST": "127.0.0.1", "STELLAR_METRICS_PORT": str(metrics_port),
           "STELLAR_MODEL_CACHE_DIR": str(project_home() / "model-cache")}
    log_path = project_home() / "demo-server.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen([sys.executable, "-m", "stellar_serving", "serve"], env=env, stdout=log, stderr=log)
    try:
        with StellarClient(f"127.0.0.1:{port}", timeout=10) as client:
            deadline = time.monotonic() + 60
            while client_health(client) != "SERVING":
                if server.poll() is not None or time.monotonic() > deadline:
                    say(f"the prediction server did not come up; its log: {log_path}")
                    return 1
                time.sleep(0.3)
            info = client.model_info()
            say(f"server on 127.0.0.1:{port} answers with {info.name} v{info.version} "
                f"(metrics on http://127.0.0.1:{metrics_port}/metrics)")
            sample = _recent_real_objects(data_dir(), n_objects)
            results = client.classify_batch(sample[list(MODEL_INPUTS)].to_dict("records"))
            say(f"  {'object':>20}  {'true':6}  {'predicted':9}  probabilities")
            for (_, row), res in zip(sample.iterrows(), results):
                probs = "  ".join(f"{k} {res.probabilities.get(k, 0.0):.3f}" for k in CLASSES)
                say(f"  {row['object_id']:>20}  {row['label']:6}  {res.predicted_class:9}  {probs}")
    finally:
        server.terminate()
        server.wait(timeout=30)
    return 0


def client_health(client) -> str:
    import grpc

    try:
        return client.health(timeout=2)
    except grpc.RpcError:
        return "UNAVAILABLE"


def _recent_real_objects(store, n: int):
    """A few objects of each class from the stored features of the last weeks with data."""
    import pandas as pd

    files = sorted((store / "observation_features").glob("*.parquet"), reverse=True)[:60]
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    per_class = max(1, n // 3)
    return frame.groupby("label", group_keys=False).head(per_class).reset_index(drop=True)


def _ingestion_summary(result, elapsed: float) -> str:
    rows = Counter()
    weeks_with_data = Counter()
    changes: Counter = Counter()
    classes: Counter = Counter()
    dropped = 0
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        asset = materialization.asset_key.to_user_string()
        metadata = materialization.metadata
        n = metadata["rows"].value if "rows" in metadata else 0
        rows[asset] += n
        weeks_with_data[asset] += bool(n)
        if asset == "raw_observations" and "change_status" in metadata:
            changes[metadata["change_status"].value] += 1
        if asset == "observation_features":
            dropped += metadata["dropped_rows"].value if "dropped_rows" in metadata else 0
            if "class_mix" in metadata:
                classes.update(metadata["class_mix"].value)
    checks = [e.event_specific_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    passed = sum(1 for c in checks if c.passed)
    mix = ", ".join(f"{k} {v} ({v / max(1, sum(classes.values())):.0%})" for k, v in sorted(classes.items()))
    return "\n".join([
        f"Run {result.run_id}: done in {elapsed:.1f} s",
        f"  raw_observations:     {rows['raw_observations']:>7} rows in {weeks_with_data['raw_observations']} weeks with data",
        f"  weeks: {changes['new']} new, {changes['changed']} changed, {changes['unchanged']} unchanged "
        "(each week's change and content version are in its metadata)",
        f"  observation_features: {rows['observation_features']:>7} rows ({dropped} dropped as unphysical, counted per week)",
        f"  class mix: {mix}",
        f"  quality checks: {passed}/{len(checks)} passed (great-expectations suite, blocking)",
    ])
