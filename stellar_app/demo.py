"""The main job (`make demo`): a range of survey weeks replayed through the platform, then the
final champion served and asked about a few real objects.

It runs on a persistent Dagster instance in the project home, so everything it
does is visible afterwards in the Dagster UI (`make ui`). What it shows is read
through Dagster (asset metadata, the IO manager), so it works on any store.
"""

from __future__ import annotations

import time

import pandas as pd

from stellar_app.home import prepare_home, serving_environment
from stellar_app.ingest import say_source
from stellar_app.runs import say
from stellar_app.settings import AppSettings, child_environment

FEATURES = "observation_features"


def run_demo(first_week: str | None = None, last_week: str | None = None,
             settings: AppSettings | None = None) -> int:
    """`stellar demo`, the main job: replay a range of weeks, then serve the final champion."""
    from stellar_core.home import default_sdss_csv

    settings = settings or AppSettings()
    csv, why = default_sdss_csv(settings.stellar_sdss_csv)
    prepare_home(settings)

    import dagster as dg

    from stellar_app.replay import ReplayError, replay_main
    from stellar_assets.training import describe_champion

    say(f"stellar main job: project home {settings.home}")
    say_source(csv, why)
    say("\n[1] Replay: for each week in order, ingest, predict with the champion of the time, check drift, "
        "retrain when the retraining sensor says so, promote when the gate passes")
    try:
        # None lets the replay apply STELLAR_REPLAY_FIRST_WEEK / _LAST_WEEK, then its defaults.
        replay_main(first_week, last_week, say=say, settings=settings)
    except ReplayError as exc:
        say(f"Replay stopped: {exc}")
        return 1
    say("\n[2] The champion now")
    say(describe_champion())

    say("\n[3] Serving: the gRPC prediction server on the champion, asked about a few real objects")
    instance = dg.DagsterInstance.get()
    if _serve_and_classify(settings, instance) != 0:
        return 1
    say(f"\nOpen the Dagster UI on this instance:  make ui   (DAGSTER_HOME={instance.root_directory})")
    say("Open the MLflow UI on the same store:  make mlflow-ui")
    say("Run the prediction server:             make serve")
    say("Backfill every week of the source:     .venv/bin/stellar ingest")
    return 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve_and_classify(settings: AppSettings, instance, n_objects: int = 6) -> int:
    """Start `stellar serve` as its own process on free ports and classify a few objects of the last weeks."""
    import subprocess
    import sys

    from stellar_api.client import StellarClient
    from stellar_assets.definitions import defs
    from stellar_core.contract import CLASSES, MODEL_INPUTS

    port, metrics_port = _free_port(), _free_port()
    env = child_environment({**serving_environment(settings), "STELLAR_GRPC_HOST": "127.0.0.1",
                             "STELLAR_GRPC_PORT": str(port), "STELLAR_METRICS_HOST": "127.0.0.1",
                             "STELLAR_METRICS_PORT": str(metrics_port)})
    log_path = settings.home / "demo-server.log"
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
            sample = recent_objects(defs, instance, n_objects)
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


def weeks_with_rows(instance, asset: str = FEATURES, limit: int = 500) -> list[str]:
    """Weeks whose latest materialization of `asset` has rows, newest first (from the instance's metadata)."""
    import dagster as dg

    records = instance.fetch_materializations(dg.AssetKey(asset), limit=limit).records
    latest: dict[str, int] = {}
    for record in records:  # newest first: the first record of a week is its latest
        materialization = record.asset_materialization
        if materialization.partition and materialization.partition not in latest:
            rows = materialization.metadata.get("rows")
            latest[materialization.partition] = rows.value if rows is not None else 0
    return sorted((week for week, rows in latest.items() if rows), reverse=True)


def recent_objects(defs, instance, n: int, max_weeks: int = 60) -> pd.DataFrame:
    """A few objects of each class from the last weeks with data, loaded through the IO manager."""
    per_class = max(1, n // 3)
    frames: list[pd.DataFrame] = []
    for week in weeks_with_rows(instance)[:max_weeks]:
        frames.append(defs.load_asset_value(FEATURES, partition_key=week, instance=instance))
        counts = pd.concat(frames)["label"].value_counts()
        if len(counts) == 3 and counts.min() >= per_class:
            break
    if not frames:
        raise RuntimeError(f"no week of {FEATURES} with rows on this instance: nothing to classify")
    frame = pd.concat(frames, ignore_index=True)
    return frame.groupby("label", group_keys=False).head(per_class).reset_index(drop=True)
