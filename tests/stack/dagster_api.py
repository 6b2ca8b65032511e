"""Talking to the running dagster-webserver as a user's script would: the official
DagsterGraphQLClient for jobs and run status, and the same GraphQL endpoint (gql, which
the official client is built on) for what that client has no method for: backfills and
re-execution from failure."""

from __future__ import annotations

import time

from dagster_graphql import DagsterGraphQLClient
from gql import Client, gql
from gql.transport.requests import RequestsHTTPTransport

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}

LAUNCH_BACKFILL = """
mutation Launch($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
    ... on PartitionSetNotFoundError { message }
  }
}
"""

BACKFILL = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { id status numPartitions runs { runId status tags { key value } } error { message } }
    ... on PythonError { message }
  }
}
"""

RUN = """
query Run($id: ID!) {
  runOrError(runId: $id) {
    __typename
    ... on Run { runId status jobName tags { key value } stats { ... on RunStatsSnapshot { stepsFailed stepsSucceeded } } }
  }
}
"""

RUNS = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    ... on Runs { results { runId status jobName startTime endTime tags { key value } } }
  }
}
"""

EVENTS = """
query Events($id: ID!) {
  logsForRun(runId: $id, limit: 2000) {
    __typename
    ... on EventConnection { events { __typename ... on MessageEvent { message }
      ... on ExecutionStepFailureEvent { stepKey error { message causes { message } } }
      ... on RunFailureEvent { error { message } } } }
  }
}
"""

REEXECUTE = """
mutation Reexecute($parentRunId: String!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $parentRunId, strategy: FROM_FAILURE}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
  }
}
"""


class DagsterApi:
    def __init__(self, host: str, port: int):
        self.client = DagsterGraphQLClient(host, port_number=port, timeout=60)
        transport = RequestsHTTPTransport(url=f"http://{host}:{port}/graphql", timeout=60, retries=2)
        self._gql = Client(transport=transport, fetch_schema_from_transport=False)

    def query(self, text: str, **variables) -> dict:
        return self._gql.execute(gql(text), variable_values=variables)

    # ---- backfills
    def launch_backfill(self, assets: list[str], partitions: list[str], run_config: dict | None = None,
                        tags: dict[str, str] | None = None) -> str:
        params = {"assetSelection": [{"path": [a]} for a in assets], "partitionNames": partitions,
                  "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        if run_config is not None:
            params["runConfigData"] = run_config
        answer = self.query(LAUNCH_BACKFILL, params=params)["launchPartitionBackfill"]
        if answer["__typename"] != "LaunchBackfillSuccess":
            raise AssertionError(f"backfill not launched: {answer}")
        return answer["backfillId"]

    def backfill(self, backfill_id: str) -> dict:
        answer = self.query(BACKFILL, id=backfill_id)["partitionBackfillOrError"]
        assert answer["__typename"] == "PartitionBackfill", answer
        return answer

    def wait_backfill(self, backfill_id: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.backfill(backfill_id)
            if answer["status"] in ("COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"):
                return answer
            time.sleep(2)
        raise TimeoutError(f"backfill {backfill_id} still {answer['status']} after {timeout:.0f}s: {answer}")

    # ---- runs
    def submit_job(self, job: str, run_config: dict | None = None, tags: dict[str, str] | None = None) -> str:
        return self.client.submit_job_execution(job, run_config=run_config or {}, tags=tags or {})

    def status(self, run_id: str) -> str:
        return self.client.get_run_status(run_id).value

    def run(self, run_id: str) -> dict:
        return self.query(RUN, id=run_id)["runOrError"]

    def runs(self, **filter_) -> list[dict]:
        return self.query(RUNS, filter=filter_)["runsOrError"]["results"]

    def wait_run(self, run_id: str, timeout: float, statuses=TERMINAL) -> str:
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            try:
                status = self.status(run_id)
            except Exception as exc:  # the webserver may be briefly unable to reach PostgreSQL
                status = f"unknown ({exc})"
            if status in statuses:
                return status
            time.sleep(1)
        raise TimeoutError(f"run {run_id} still {status} after {timeout:.0f}s")

    def failure_messages(self, run_id: str) -> list[str]:
        answer = self.query(EVENTS, id=run_id)["logsForRun"]
        messages = []
        for event in answer.get("events", []):
            if event["__typename"] in ("ExecutionStepFailureEvent", "RunFailureEvent") and event.get("error"):
                error = event["error"]
                messages.append(" <- ".join([error["message"], *[c["message"] for c in error.get("causes") or []]]))
        return messages

    def reexecute_from_failure(self, run_id: str) -> str:
        answer = self.query(REEXECUTE, parentRunId=run_id)["launchRunReexecution"]
        if answer["__typename"] != "LaunchRunSuccess":
            raise AssertionError(f"re-execution not launched: {answer}")
        return answer["run"]["runId"]
