"""Champion/challenger on real Dagster runs, a real MLflow SQLite store and real ingested weeks."""

from __future__ import annotations

import datetime as dt

import dagster as dg
from mlflow.tracking import MlflowClient

from stellar_mlflow.names import TAG_WINDOW_FIRST, TAG_WINDOW_LAST
from stellar_assets.ingestion import INGESTION_ASSETS
from stellar_assets.training import describe_champion
from stellar_app.runs import failure_text
from stellar_mlflow.registry import champion_as_of, get_alias_version
from tests.dagster_support import check_of, metadata_of
from tests.training.scenario import EARLY_WEEK, LATE_WEEK, STRONG, WEAK


def _client(store) -> MlflowClient:
    return MlflowClient(store.tracking_uri)


def _step_failures(result) -> dict:
    """step key -> its StepFailureData."""
    return {e.step_key: e.step_failure_data for e in result.all_events if e.is_step_failure}


def _assert_blocked_by_the_gate(result, failed_check: str, champion_words: str):
    """Blocking stays blocking (the run fails, champion_model never runs), but the step failure is the
    gate's decision in words with the failed check's figures, not Dagster's generic check error."""
    assert result.dagster_run.status == dg.DagsterRunStatus.FAILURE
    assert result.is_node_untouched("champion_model")
    check = check_of(result, failed_check)
    assert not check.passed and check.blocking and check.severity == dg.AssetCheckSeverity.ERROR
    failures = _step_failures(result)
    assert list(failures) == ["challenger_model"]
    failure = failures["challenger_model"]
    assert failure.error.cls_name == "Failure"  # not DagsterAssetCheckFailedError
    version = metadata_of(result, "challenger_model")["model_version"]
    decision = failure.user_failure_data.description
    assert decision == (f"challenger v{version} not promoted: blocked by the gate — "
                        f"{failed_check}: {check.description}; {champion_words}")
    figures = {k: v.value for k, v in failure.user_failure_data.metadata.items()}
    assert figures["decision"] == "blocked by the gate" and figures["challenger_version"] == version
    assert figures["failed_checks"] == {failed_check: check.description.split("; ")}
    for key, value in check.metadata.items():
        assert figures[f"{failed_check}.{key}"] == value.value
    # The WARN comparison still ran and says so; it does not unblock anything.
    verdict = check_of(result, "beats_champion")
    assert verdict.severity == dg.AssetCheckSeverity.WARN and figures["beats_champion"] == verdict.description
    # The replay's one line per decision still names the failed check in its own words.
    assert failure_text(result).startswith(f"{failed_check}: ") and check.description in failure_text(result)
    return figures


def test_better_challenger_is_promoted_and_alias_matches_metadata(store, model_name):
    first = store.train(model_name, EARLY_WEEK, WEAK)
    assert first.success
    assert metadata_of(first, "champion_model")["decision"] == "promoted"  # no champion yet

    second = store.train(model_name, LATE_WEEK, STRONG)
    assert second.success
    champion = metadata_of(second, "champion_model")
    challenger = metadata_of(second, "challenger_model")
    assert champion["decision"] == "promoted"
    assert champion["champion_version"] == challenger["model_version"] == champion["challenger_version"]
    assert champion["previous_champion_version"] == metadata_of(first, "challenger_model")["model_version"]
    assert champion["delta"] > 0 and champion["comparison"]["rows_compared"] >= 20
    assert champion["mcnemar_p_value"] < 0.05 and champion["rule"] == "superiority"
    # Out of time: the evaluation weeks came after every row the old champion trained on.
    assert champion["comparison"]["rows_excluded_seen_by_champion"] == 0

    alias = get_alias_version(_client(store), model_name)
    assert str(alias.version) == champion["alias_version"] == champion["champion_version"]
    assert alias.run_id == challenger["mlflow_run_id"]
    assert alias.tags[TAG_WINDOW_FIRST] == "2012-05-06" and alias.tags[TAG_WINDOW_LAST] == LATE_WEEK
    assert check_of(second, "beats_champion").passed
    text = describe_champion(model_name, store.tracking_uri)
    assert text.startswith(f"{model_name} v{alias.version} is champion") and "recall_QSO" in text


def test_worse_challenger_leaves_champion_and_run_succeeds(store, model_name):
    assert store.train(model_name, EARLY_WEEK, STRONG).success
    client = _client(store)
    champion_before = get_alias_version(client, model_name)

    result = store.train(model_name, LATE_WEEK, WEAK)
    assert result.success  # losing to the champion is a normal outcome, not a failed run
    verdict = check_of(result, "beats_champion")
    assert not verdict.passed and verdict.severity == dg.AssetCheckSeverity.WARN
    numbers = {k: v.value for k, v in verdict.metadata.items()}
    assert numbers["delta"] < 0 and numbers["champion_accuracy"] > numbers["challenger_accuracy"]
    assert verdict.description.startswith("keep champion") and "McNemar" in verdict.description

    champion = metadata_of(result, "champion_model")
    assert champion["decision"] == "retained"
    assert champion["champion_version"] == str(champion_before.version) == champion["alias_version"]
    assert champion["summary"].startswith(f"retained v{champion_before.version}, challenger v")
    assert champion["delta"] == numbers["delta"]  # the check and the promotion ran the same comparison
    assert get_alias_version(client, model_name).version == champion_before.version
    loser = client.get_model_version(model_name, champion["challenger_version"])
    assert loser.tags["promotion_decision"] == f"retained at {LATE_WEEK}"


def test_challenger_below_floors_is_blocked(store, model_name):
    assert store.train(model_name, EARLY_WEEK, STRONG).success
    client = _client(store)
    champion_before = get_alias_version(client, model_name)

    result = store.train(model_name, LATE_WEEK, WEAK, accuracy_floor=0.95, recall_floors={"QSO": 0.9})
    assert not result.success  # a broken challenger is an error
    floors = check_of(result, "quality_floors")
    assert not floors.passed and floors.severity == dg.AssetCheckSeverity.ERROR
    assert "< floor 0.9500" in floors.description and "recall of QSO" in floors.description
    assert floors.metadata["accuracy_floor"].value == 0.95
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "champion_model" not in materialized
    assert get_alias_version(client, model_name).version == champion_before.version
    rejected = metadata_of(result, "challenger_model")["model_version"]
    assert client.get_model_version(model_name, rejected).tags["gate_status"].startswith("failed: accuracy")
    # Its MLflow run records the failed gate instead of a green "Finished".
    run = client.get_run(metadata_of(result, "challenger_model")["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["gate_status"].startswith("failed: accuracy")
    figures = _assert_blocked_by_the_gate(result, "quality_floors", f"champion v{champion_before.version} stays")
    assert figures["champion_version"] == str(champion_before.version)
    assert figures["quality_floors.accuracy_floor"] == 0.95


def test_latency_over_budget_is_blocked(store, model_name):
    result = store.train(model_name, EARLY_WEEK, STRONG, single_row_latency_budget_ms=1e-9)
    assert not result.success
    latency = check_of(result, "latency_budget")
    assert not latency.passed and "budget 0.000 ms" in latency.description
    assert get_alias_version(_client(store), model_name) is None
    figures = _assert_blocked_by_the_gate(result, "latency_budget", "there is no champion yet")
    assert figures["champion_version"] == "None"


def test_same_partition_twice_gives_same_split_and_metrics(store, model_name):
    first = store.train(model_name, EARLY_WEEK, STRONG)
    second = store.train(model_name, EARLY_WEEK, STRONG)
    assert first.success and second.success
    split_a, split_b = metadata_of(first, "train_test_split"), metadata_of(second, "train_test_split")
    assert split_a["class_mix_json"] == split_b["class_mix_json"]
    assert split_a["evaluation_first_week"] == split_b["evaluation_first_week"]
    client = _client(store)
    runs = [client.get_run(metadata_of(r, "challenger_model")["mlflow_run_id"]) for r in (first, second)]
    assert runs[0].info.run_id != runs[1].info.run_id  # one MLflow run per Dagster run
    assert [run.info.status for run in runs] == ["FINISHED", "FINISHED"]
    assert [run.data.tags["dagster_run_id"] for run in runs] == [first.run_id, second.run_id]
    quality = [{k: v for k, v in run.data.metrics.items() if not k.startswith(("latency_", "train_seconds"))}
               for run in runs]
    assert quality[0] == quality[1] and "accuracy" in quality[0]
    # The same model again ties the champion on every row: a tie never promotes.
    decision = metadata_of(second, "champion_model")
    assert decision["decision"] == "retained"
    verdict = check_of(second, "beats_champion")
    numbers = {k: v.value for k, v in verdict.metadata.items()}
    assert not verdict.passed and numbers["mcnemar_p_value"] == 1.0 and numbers["delta"] == 0
    assert "keep champion" in verdict.description


def test_the_gate_decides_on_macro_f1_by_the_randomization_test_when_configured(store, model_name):
    assert store.train(model_name, EARLY_WEEK, STRONG).success
    # The same model again, judged on macro F1: identical predictions, p = 1, a tie does not promote.
    result = store.train(model_name, EARLY_WEEK, STRONG, metric="macro_f1")
    assert result.success
    verdict = check_of(result, "beats_champion")
    numbers = {k: v.value for k, v in verdict.metadata.items()}
    assert not verdict.passed and numbers["gate_metric"] == "macro_f1"
    assert numbers["randomization_p_value"] == 1.0 and "mcnemar_p_value" not in numbers
    assert numbers["champion_macro_f1"] == numbers["challenger_macro_f1"] and numbers["resamples"] == 2000
    assert "paired randomization test of macro_f1" in verdict.description
    assert metadata_of(result, "champion_model")["decision"] == "retained"


def test_an_unknown_gate_metric_is_named(store, model_name):
    result = store.train(model_name, EARLY_WEEK, STRONG, metric="f2_score")
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert "metric must be one of ['accuracy', 'macro_f1', 'balanced_accuracy'], got 'f2_score'" in (
        failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data))


def test_champion_as_of_never_returns_a_model_that_saw_the_week(store, model_name):
    # A backfill out of order: the later week first.
    late = store.train(model_name, LATE_WEEK, STRONG)
    early = store.train(model_name, EARLY_WEEK, STRONG)
    assert late.success and early.success
    client = _client(store)
    late_version = metadata_of(late, "challenger_model")["model_version"]
    early_version = metadata_of(early, "challenger_model")["model_version"]
    # The older model was promoted for its week, but production did not move back in time.
    early_champion = metadata_of(early, "champion_model")
    assert early_champion["decision"] == "promoted" and early_champion["alias_version"] == late_version
    assert str(get_alias_version(client, model_name).version) == late_version

    day = dt.date.fromisoformat("2012-04-01")
    while day <= dt.date(2012, 8, 5):
        week = day.isoformat()
        version = champion_as_of(client, model_name, week)
        if version is not None:
            assert version.tags[TAG_WINDOW_LAST] < week, f"champion as of {week} trained through {version.tags[TAG_WINDOW_LAST]}"
        day += dt.timedelta(days=7)
    assert champion_as_of(client, model_name, EARLY_WEEK) is None
    assert str(champion_as_of(client, model_name, LATE_WEEK).version) == early_version
    assert str(champion_as_of(client, model_name, "2012-07-01").version) == late_version


def test_empty_window_fails_with_a_clear_message(store, model_name):
    result = store.train(model_name, "2011-01-02", STRONG)
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    message = failure.step_failure_data.error.message + str(failure.step_failure_data.user_failure_data)
    assert "observation_features" in message


def test_too_few_unseen_rows_is_no_evidence_and_champion_stays(store, model_name):
    assert store.train(model_name, EARLY_WEEK, WEAK).success
    champion_before = get_alias_version(_client(store), model_name)
    result = store.train(model_name, LATE_WEEK, STRONG, min_comparison_rows=10_000)
    assert result.success
    verdict = check_of(result, "beats_champion")
    assert not verdict.passed and "(minimum 10000): no evidence" in verdict.description
    champion = metadata_of(result, "champion_model")
    assert champion["decision"] == "retained" and champion["alias_version"] == str(champion_before.version)


def test_champion_model_on_its_own_refuses_a_blocked_challenger_in_the_gates_words(store, model_name):
    """Materializing champion_model alone cannot bypass the gate, and says so as the blocked run did."""
    assert store.train(model_name, EARLY_WEEK, STRONG).success
    champion_before = get_alias_version(_client(store), model_name)
    instance = dg.DagsterInstance.ephemeral()
    blocked = store.train(model_name, LATE_WEEK, WEAK, instance=instance, accuracy_floor=0.999)
    assert not blocked.success
    version = metadata_of(blocked, "challenger_model")["model_version"]
    alone = dg.materialize([*INGESTION_ASSETS, *store.training_assets], selection=["champion_model"],
                           resources=store.resources(model_name), partition_key=LATE_WEEK, instance=instance,
                           raise_on_error=False)
    assert not alone.success
    failure = _step_failures(alone)["champion_model"]
    assert failure.error.cls_name == "Failure"
    assert failure.user_failure_data.description.startswith(
        f"challenger v{version} not promoted: blocked by the gate — quality_floors: accuracy ")
    assert failure.user_failure_data.description.endswith(f"; champion v{champion_before.version} stays")
    assert get_alias_version(_client(store), model_name).version == champion_before.version


def test_invalid_gate_configuration_is_named(store, model_name):
    result = store.train(model_name, EARLY_WEEK, STRONG, recall_floors={"PLANET": 0.5})
    assert not result.success
    failure = [e for e in result.all_events if e.is_step_failure][0]
    assert "recall_floors names unknown classes ['PLANET']" in failure.step_failure_data.error.message + str(
        failure.step_failure_data.user_failure_data)
    assert get_alias_version(_client(store), model_name) is None


def test_challenger_metrics_are_logged_once_and_linked_to_its_logged_model(store, model_name):
    """Metrics are logged after the model, with its id (MLflow 3 would otherwise log them a
    second time to link them, which PostgreSQL refuses; tests/stack checks that side)."""
    result = store.train(model_name, EARLY_WEEK, WEAK)
    assert result.success
    challenger = metadata_of(result, "challenger_model")
    client = _client(store)
    run = client.get_run(challenger["mlflow_run_id"])
    models = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                         filter_string=f"source_run_id = '{run.info.run_id}'")
    assert len(models) == 1
    linked = {m.key: m for m in models[0].metrics}
    for key in ("accuracy", "macro_f1", "recall_QSO", "latency_single_row_ms_p95", "train_seconds"):
        assert key in linked, sorted(linked)
        assert linked[key].run_id == challenger["mlflow_run_id"]
        assert len(client.get_metric_history(challenger["mlflow_run_id"], key)) == 1, key
    assert linked["accuracy"].value == challenger["accuracy"]
