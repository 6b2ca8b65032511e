"""Every MLflow name stellar writes or reads: the alias, tags and artifact paths.

A tag or path written in one place and read in another (training writes the
window, serving and the replay read it) is spelled once, here.
"""

# The alias production serves (registry stages are deprecated).
CHAMPION_ALIAS = "champion"

# Model version tags: find "the champion as of week W" and why each version is what it is.
TAG_WINDOW_FIRST = "training_window_first_week"
TAG_WINDOW_LAST = "training_window_last_week"
TAG_PARTITION = "dagster_partition"
TAG_PROMOTED_AT = "promoted_at_week"
TAG_GATE = "gate_status"
TAG_DECISION = "promotion_decision"

# Run tags.
TAG_DAGSTER_RUN = "dagster_run_id"
TAG_ASSET = "stellar_asset"  # the asset that logged the run
TAG_RUN_NAME = "mlflow.runName"
TAG_PROMOTION_REASON = "promotion_reason"
TAG_PARAMS_SOURCE = "params_source"  # where the challenger's hyperparameters came from
TAG_WEEK = "week"
TAG_CHAMPION_VERSION = "champion_version"
TAG_DRIFT_STATUS = "drift_status"
TAG_FAMILY = "family"  # model selection: the model family of a candidate run
TAG_BEST_FAMILY = "best_family"

# Artifact paths inside a run.
MODEL_ARTIFACT = "model"  # MLflow's xgboost flavour (mlflow models serve)
SERVING_ARTIFACT_DIR = "serving"  # the pickle-free bundle the prediction server loads
TRAINING_IDS_ARTIFACT = "training/object_ids.txt"
TRAINING_STATISTICS_ARTIFACT = "training/feature_statistics.json"
TEST_EVALUATION_ARTIFACT = "evaluation/test_evaluation.json"
IMPORTANCE_ARTIFACT = "evaluation/feature_importance.json"
CONFUSION_PLOT = "plots/confusion_matrix.png"
ROC_PLOT = "plots/roc_ovr.png"
PRECISION_RECALL_PLOT = "plots/precision_recall_ovr.png"
IMPORTANCE_PLOT = "plots/feature_importance.png"
LEADERBOARD_ARTIFACT = "model_selection/leaderboard.json"
DRIFT_PLOT = "drift/distributions.png"
DRIFT_REPORT_ARTIFACT = "drift/drift_report.json"
SERVING_REPORT_ARTIFACT = "serving/serving_report.json"
