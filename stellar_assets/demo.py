"""The main job (`make demo`): every week of the configured source through the platform.

It runs on a persistent Dagster instance in the project home, so everything it
does is visible afterwards in the Dagster UI (`make ui`).
"""

from __future__ import annotations

import time
from collections import Counter

from stellar_core.home import configure_environment, default_sdss_csv

RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


def say(message: str = "") -> None:
    print(message, flush=True)


def run_demo(first_week: str | None = None, last_week: str | None = None) -> int:
    csv, why = default_sdss_csv()
    configure_environment()

    import dagster as dg

    from stellar_assets.definitions import defs
    from stellar_assets.partitions import observation_weeks
    from stellar_core.home import project_home

    instance = dg.DagsterInstance.get()
    keys = observation_weeks.get_partition_keys()
    first = first_week or keys[0]
    last = last_week or keys[-1]
    for name, week in (("first", first), ("last", last)):
        if week not in keys:
            say(f"--{name}-week {week} is not an observation week: weeks start on Sundays between {keys[0]} and {keys[-1]}")
            return 2
    selected = keys[keys.index(first): keys.index(last) + 1]

    say(f"stellar main job: project home {project_home()}")
    if csv:
        say(f"Source: SDSS17 CSV {csv} ({why})")
    else:
        say("Source: the built-in simulator (no SDSS17 CSV configured: put the Kaggle download at "
            "data/star_classification.csv or set STELLAR_SDSS_CSV)")

    say(f"\n[1] Ingestion: raw_observations + observation_features for {len(selected)} weeks "
        f"({first} .. {last}) as ONE run (single-run backfill policy)")
    started = time.perf_counter()
    result = defs.resolve_job_def("ingestion_job").execute_in_process(
        instance=instance, run_config=QUIET_LOGS, raise_on_error=False,
        tags={RANGE_START_TAG: first, RANGE_END_TAG: last, "stellar/step": "ingestion"},
    )
    elapsed = time.perf_counter() - started
    if not result.success:
        say(f"Ingestion run {result.run_id} FAILED after {elapsed:.1f} s:")
        for event in result.all_events:
            if event.is_step_failure or event.event_type_value == "ASSET_CHECK_EVALUATION":
                say(f"  - {event.message}")
        failure = next((e for e in result.all_events if e.is_step_failure), None)
        if failure and failure.step_failure_data and failure.step_failure_data.user_failure_data:
            say(f"  {failure.step_failure_data.user_failure_data.description}")
        return 1
    say(_ingestion_summary(result, elapsed))
    say(f"\nOpen the Dagster UI on this instance:  make ui   (DAGSTER_HOME={instance.root_directory})")
    return 0


def _ingestion_summary(result, elapsed: float) -> str:
    rows = Counter()
    weeks_with_data = Counter()
    classes: Counter = Counter()
    dropped = 0
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        asset = materialization.asset_key.to_user_string()
        metadata = materialization.metadata
        n = metadata["rows"].value if "rows" in metadata else 0
        rows[asset] += n
        weeks_with_data[asset] += bool(n)
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
        f"  observation_features: {rows['observation_features']:>7} rows ({dropped} dropped as unphysical, counted per week)",
        f"  class mix: {mix}",
        f"  quality checks: {passed}/{len(checks)} passed (great-expectations suite, blocking)",
    ])
