"""A short replay over real weeks (SDSS-II -> SEGUE, spring 2008) on a real instance, end to end."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from stellar_app.replay import ReplayError, print_timeline, run_replay, save_timeline
from stellar_mlflow.names import TAG_WINDOW_LAST
from tests.monitoring.scenario import SMALL_MODEL

FIRST, LAST = "2008-04-27", "2008-06-29"


def test_replay_retrains_on_drift_promotes_and_predicts_with_the_new_champion(platform, model_name, tmp_path):
    defs = platform.definitions(model_name, db_name=model_name)
    lines: list[str] = []
    with dg.instance_for_test() as instance:
        timeline = run_replay(instance, defs, FIRST, LAST, training_window_weeks=8, cooldown_weeks=8,
                              challenger_config=SMALL_MODEL, say=lines.append)
        runs = instance.get_runs()
        retrain_runs = [r for r in runs if r.tags.get("stellar/trigger") == "drift_retraining_sensor"]
        # The main job run again on the same instance: the same drift does not retrain twice.
        again = run_replay(instance, defs, FIRST, LAST, training_window_weeks=8, cooldown_weeks=8,
                           challenger_config=SMALL_MODEL, ingest=False, say=lines.append)
        new_runs = instance.get_runs()[: len(instance.get_runs()) - len(runs)]
    assert list(timeline["week"]) == [str(d.date()) for d in pd.date_range(FIRST, LAST, freq="7D")]
    retrained = timeline[timeline["retrained"]]
    assert len(retrained) == 1 and retrained.iloc[0]["promotion"] == "promoted"
    week = retrained.iloc[0]["week"]
    assert "drift" == timeline.set_index("week").loc[week, "drift_status"]
    # The run says why it was requested and carries the sensor's run key.
    [run] = retrain_runs
    assert run.tags["dagster/run_key"] == f"drift-retrain-{week}" and "drift checks failed" in run.tags["stellar/retrain_reason"]

    # Weeks after the promotion were predicted by the new champion, which never saw them.
    client = MlflowClient(platform.tracking_uri)
    with_data = timeline[timeline["rows"] > 0]
    before, after = with_data[with_data["week"] <= week], with_data[with_data["week"] > week]
    assert len(after) and set(after["model_version"]) != set(before["model_version"])
    for row in with_data.itertuples():
        assert client.get_model_version(model_name, row.model_version).tags[TAG_WINDOW_LAST] < row.week

    # Runs: one ingestion, one initial champion, one predict+drift per champion, one retraining. No run per week.
    jobs = sorted(r.job_name for r in runs)
    assert jobs.count("predict_and_check") == 2 and jobs.count("ingestion_job") == 1
    assert jobs.count("train_and_promote") == 2 and len(runs) == 5
    assert (timeline["rows"] == 0).sum() >= 1  # the empty week was in those runs all the same

    assert [r.job_name for r in new_runs] == ["predict_and_check"]  # data ingested already: one run
    assert again[again["retrained"]]["promotion"].tolist() == ["promoted (earlier run)"]
    assert again["model_version"].tolist() == timeline["model_version"].tolist()

    csv, png = save_timeline(timeline, tmp_path / "replay")
    assert pd.read_csv(csv)["week"].tolist() == timeline["week"].tolist() and png.stat().st_size > 10_000
    printed: list[str] = []
    print_timeline(timeline, printed.append)
    assert any(week in line and "promoted" in line for line in printed)


def test_replay_refuses_weeks_that_are_not_observation_weeks(platform, model_name):
    with dg.instance_for_test() as instance:
        with pytest.raises(ReplayError, match="2008-04-28 is not an observation week"):
            run_replay(instance, platform.definitions(model_name), "2008-04-28", LAST, say=lambda _: None)
