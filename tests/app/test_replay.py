"""A short replay over real weeks (SDSS-II -> SEGUE, spring 2008) on a real instance, end to end."""

from __future__ import annotations

from collections import Counter

import dagster as dg
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from stellar_app.replay import ReplayError, print_timeline, run_replay, save_timeline
from stellar_mlflow.names import TAG_WINDOW_LAST
from stellar_mlflow.registry import champion_as_of
from tests.monitoring.scenario import SMALL_MODEL, WEAK_MODEL

FIRST, LAST = "2008-04-27", "2008-06-29"
DRIFT_TRIGGERS = ("data_drift", "prediction_drift", "performance_drift")
TINY_MODEL = {"n_estimators": 3, "max_depth": 2, "learning_rate": 0.3, "latency_single_row_repeats": 10}


def test_replay_retrains_on_drift_promotes_and_predicts_with_the_new_champion(platform, model_name, tmp_path):
    # The replay's mechanics, not the gate's statistics, are under test: a weak first champion and a
    # lenient gate (alpha 0.5) make the drift retraining promote on this short window's few rows.
    defs = platform.definitions(model_name, db_name=model_name, alpha=0.5)
    lines: list[str] = []
    with dg.instance_for_test() as instance:
        timeline = run_replay(instance, defs, FIRST, LAST, training_window_weeks=8, cooldown_weeks=10,
                              challenger_config=SMALL_MODEL, say=lines.append, retrain_on=DRIFT_TRIGGERS,
                              initial_config=WEAK_MODEL)
        runs = instance.get_runs()
        retrain_runs = [r for r in runs if r.tags.get("stellar/trigger") == "drift_retraining_sensor"]
        # The main job run again on the same instance: the same drift does not retrain twice.
        again = run_replay(instance, defs, FIRST, LAST, training_window_weeks=8, cooldown_weeks=10,
                           challenger_config=SMALL_MODEL, ingest=False, say=lines.append, retrain_on=DRIFT_TRIGGERS,
                           initial_config=WEAK_MODEL)
        new_runs = instance.get_runs()[: len(instance.get_runs()) - len(runs)]
    assert list(timeline["week"]) == [str(d.date()) for d in pd.date_range(FIRST, LAST, freq="7D")]
    retrained = timeline[timeline["retrained"]]
    assert len(retrained) == 1 and retrained.iloc[0]["promotion"] == "promoted"
    week = retrained.iloc[0]["week"]
    assert "drift" == timeline.set_index("week").loc[week, "drift_status"]
    # The run says why it was requested and carries the sensor's run key.
    [run] = retrain_runs
    assert run.tags["dagster/run_key"] == f"drift-retrain-{week}" and "retraining triggered by" in run.tags["stellar/retrain_reason"]

    # Weeks after the promotion were predicted by the new champion, which never saw them.
    client = MlflowClient(platform.tracking_uri)
    with_data = timeline[timeline["rows"] > 0]
    before, after = with_data[with_data["week"] <= week], with_data[with_data["week"] > week]
    assert len(after) and set(after["model_version"]) != set(before["model_version"])
    for row in with_data.itertuples():
        assert client.get_model_version(model_name, row.model_version).tags[TAG_WINDOW_LAST] < row.week

    # Runs: one ingestion, one initial champion, one retraining, predict+drift in chunks of cool-down + 1
    # weeks (11: the 10 weeks in one run, then a second from the week after the promotion). No run per week.
    assert timeline.attrs["chunk_weeks"] == 11
    jobs = sorted(r.job_name for r in runs)
    assert jobs.count("predict_and_check") == 2 and jobs.count("ingestion_job") == 1
    assert jobs.count("train_and_promote") == 2 and len(runs) == 5
    assert (timeline["rows"] == 0).sum() >= 1  # the empty week was in those runs all the same
    assert set(timeline["times_predicted"]) <= {1, 2}

    # Data ingested and the promotion recorded already: one chunk, each week by the champion of its time.
    assert [r.job_name for r in new_runs] == ["predict_and_check"]
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


def predictions_per_week(instance: dg.DagsterInstance) -> Counter:
    """How often each week's batch_predictions was materialized on the instance."""
    records = instance.fetch_materializations(dg.AssetKey("batch_predictions"), limit=10_000).records
    return Counter(record.asset_materialization.partition for record in records)


def test_no_week_is_predicted_more_than_twice_across_retrainings_and_promotions(platform, model_name):
    # Retraining on drift, tiny models that disagree often and a lenient gate (alpha 0.9, 60 evaluation
    # rows): this test is about the replay's runs, and needs several promotions in the sample's small weeks.
    defs = platform.definitions(model_name, db_name=model_name, alpha=0.9, min_evaluation_rows=60)
    lines: list[str] = []
    with dg.instance_for_test() as instance:
        timeline = run_replay(instance, defs, "2008-03-02", "2008-12-28", training_window_weeks=8,
                              cooldown_weeks=2, challenger_config=TINY_MODEL, say=lines.append,
                              retrain_on=DRIFT_TRIGGERS)
        counts = predictions_per_week(instance)
        predict_runs = [r for r in instance.get_runs() if r.job_name == "predict_and_check"]
    promotions = timeline[timeline["promotion"] == "promoted"]["week"].tolist()
    # The statistical gate keeps most of these small challengers out: one promotion at least (the
    # 2008-04-06 one), and every retraining is still a decision the replay acts on.
    assert len(promotions) >= 1 and len(timeline[timeline["retrained"]]) >= 3, "\n".join(lines)
    weeks = timeline["week"].tolist()
    assert set(counts) == set(weeks) and max(counts.values()) <= 2, counts
    assert dict(counts) == dict(zip(weeks, timeline["times_predicted"]))
    # Weeks predicted twice are the rest of a promotion's chunk (at most the cool-down), nothing else.
    twice = {week for week, n in counts.items() if n == 2}
    assert twice <= {w for p in promotions for w in weeks if p < w <= str((pd.Timestamp(p) + pd.Timedelta(weeks=2)).date())}
    # Linear: one run per chunk of 3 weeks, plus one restart per promotion.
    assert len(predict_runs) <= -(-len(weeks) // 3) + len(promotions)
    # Each week's final prediction is by the champion of its time.
    client = MlflowClient(platform.tracking_uri)
    for row in timeline[timeline["rows"] > 0].itertuples():
        assert str(champion_as_of(client, model_name, row.week).version) == str(row.model_version), row.week
    # One line per decision, not a log per run.
    assert len(lines) == 2 + len(timeline[timeline["retrained"]])


def test_a_replay_from_the_first_survey_week_bootstraps_its_first_champion(platform, model_name):
    # The sample holds about 20 rows a week in 2000: 50 evaluation rows, so 100 rows in an 8-week window.
    defs = platform.definitions(model_name, db_name=model_name, min_evaluation_rows=50)
    lines: list[str] = []
    with dg.instance_for_test() as instance:
        timeline = run_replay(instance, defs, "2000-03-05", "2000-12-31", training_window_weeks=8,
                              cooldown_weeks=8, challenger_config=SMALL_MODEL, say=lines.append)
    initial = timeline.attrs["initial_champion"]
    trained = timeline[timeline["initial_training"]]["week"].tolist()
    assert trained and trained[-1] == initial["last_week"] and trained[0] == max("2000-03-05", initial["first_week"])
    assert (timeline[timeline["initial_training"]]["times_predicted"] == 0).all()
    after = timeline[timeline["week"] > initial["last_week"]]
    assert len(after) and (after["times_predicted"] >= 1).all()
    assert f"initial champion v{initial['version']}, trained on {initial['first_week']}..{initial['last_week']}" in lines


def test_a_replay_of_only_the_first_survey_week_is_refused(platform, model_name):
    with dg.instance_for_test() as instance:
        with pytest.raises(ReplayError, match="needs later weeks to predict"):
            run_replay(instance, platform.definitions(model_name), "2000-03-05", "2000-03-05", say=lambda _: None)
