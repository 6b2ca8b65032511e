"""The code location's jobs, run by the application as runs OF the code location.

`stellar demo` runs the jobs of the location that workspace.yaml loads (module
stellar_assets.definitions, location `stellar`). Each run is created with that
location's origin and the python origin a run launcher would use: the Dagster
UI lists it under the location and in the Overview timeline, and can re-execute
it from there. It is executed in this process with the in-process executor
(what `execute_in_process` does, without the origin): launching each run in a
fresh process, as Dagster's DefaultRunLauncher does, costs seconds of imports
per run, and a replay of the survey runs a few hundred.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableJob, ReconstructableRepository
from dagster._core.execution.api import execute_run
from dagster._core.execution.job_execution_result import JobExecutionResult
from dagster._core.remote_origin import (
    ManagedGrpcPythonEnvCodeLocationOrigin,
    RemoteJobOrigin,
    RemoteRepositoryOrigin,
)
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

PARTITION_TAG = "dagster/partition"
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
REPOSITORY_NAME = "__repository__"  # the repository Dagster makes of a module's Definitions
PROJECT_ROOT = str(Path(__file__).resolve().parents[1])  # workspace.yaml's working_directory


@dataclass(frozen=True)
class CodeLocation:
    """A code location as workspace.yaml declares it (a python_module entry)."""

    module: str = "stellar_assets.definitions"
    attribute: str = "defs"
    name: str = "stellar"
    working_directory: str = PROJECT_ROOT

    def job(self, job_name: str) -> ReconstructableJob:
        return _repository(self.module, self.attribute, self.working_directory).get_reconstructable_job(job_name)

    def origin(self, job_name: str) -> RemoteJobOrigin:
        target = LoadableTargetOrigin(executable_path=sys.executable, module_name=self.module,
                                      working_directory=self.working_directory)
        location = ManagedGrpcPythonEnvCodeLocationOrigin(loadable_target_origin=target, location_name=self.name)
        return RemoteJobOrigin(RemoteRepositoryOrigin(location, REPOSITORY_NAME), job_name)

    def run(self, instance: dg.DagsterInstance, job_name: str, run_config: dict, tags: dict,
            partition_key: str | None = None) -> JobExecutionResult:
        """Create the run as the location's and execute it here; returns its result (failures included)."""
        job = self.job(job_name)
        run = instance.create_run_for_job(
            job.get_definition(), run_config={**run_config, **IN_PROCESS},
            tags={**tags, **({PARTITION_TAG: partition_key} if partition_key else {})},
            remote_job_origin=self.origin(job_name), job_code_origin=job.get_python_origin())
        return execute_run(job, run, instance)


@lru_cache(maxsize=None)
def _repository(module: str, attribute: str, working_directory: str) -> ReconstructableRepository:
    return ReconstructableRepository.for_module(module, attribute, working_directory)
