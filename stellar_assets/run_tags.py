"""Dagster run tags the code location reads (MLflow's tag names are in stellar_mlflow.names)."""

# Set by the retraining sensor when the champion's own accuracy was shown to have dropped: the
# promotion gate then also accepts a challenger that is ahead and non-inferior within the margin.
RETRAIN_BECAUSE_TAG = "stellar/retrain_because"
DEGRADED = "champion_degraded"


def is_degradation_retrain(tags) -> bool:
    return (tags or {}).get(RETRAIN_BECAUSE_TAG) == DEGRADED
