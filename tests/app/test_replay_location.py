"""The main job's replay runs are runs of the code location workspace.yaml loads, as the UI lists them.

A child process (the code location reads its settings once per process) replays three weeks on a
fresh project home with the project's own Definitions, as `stellar demo` does."""

from __future__ import annotations

import os
import subprocess
import sys

import dagster as dg
import yaml

from stellar_app.location import CodeLocation
from stellar_app.replay import REPLAY_TAG

REPLAY = "from stellar_app.replay import replay_main; replay_main('2008-04-27', '2008-05-11', progress=False)"


def test_replay_runs_carry_the_code_location_of_the_workspace(tmp_path, sdss_sample_path):
    env = {**os.environ, "STELLAR_HOME": str(tmp_path / "home"), "STELLAR_SDSS_CSV": str(sdss_sample_path)}
    for name in ("DAGSTER_HOME", "MLFLOW_TRACKING_URI", "STELLAR_PREDICTIONS_DB_URL"):
        env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", REPLAY], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Replay 2008-04-27..2008-05-11: 3 weeks" in done.stdout

    (entry,) = yaml.safe_load(open(CodeLocation().working_directory + "/workspace.yaml"))["load_from"]
    declared = entry["python_module"]
    with dg.DagsterInstance.from_config(str(tmp_path / "home" / "dagster")) as instance:
        runs = instance.get_runs()
    assert sorted(r.job_name for r in runs) == ["ingestion_job", "predict_and_check", "train_and_promote"]
    for run in runs:
        origin = run.remote_job_origin
        assert origin is not None, run.job_name
        assert origin.location_name == declared["location_name"] and run.tags["dagster/code_location"] == "stellar"
        assert origin.repository_origin.code_location_origin.loadable_target_origin.module_name == \
            declared["module_name"]
        assert run.job_code_origin is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags[REPLAY_TAG] == "true" and "dagster/sensor_name" not in run.tags
