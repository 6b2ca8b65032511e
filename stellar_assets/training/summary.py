"""A plain-text description of the current champion, for `make demo` and the CLI."""

from __future__ import annotations

from stellar_assets.settings import CodeLocationSettings
from stellar_mlflow.names import TAG_WINDOW_FIRST, TAG_WINDOW_LAST
from stellar_mlflow.names import TAG_PROMOTED_AT
from stellar_mlflow.registry import get_alias_version
from stellar_assets.training.resources import ModelRegistry

_SHOWN = ("accuracy", "macro_f1", "recall_GALAXY", "recall_QSO", "recall_STAR", "roc_auc_ovr",
          "latency_single_row_ms_p95", "latency_batch_ms_per_1000_rows")


def describe_champion(model_name: str | None = None, tracking_uri: str | None = None) -> str:
    """The champion's version, training window, promotion week and test metrics (or why there is none).
    Defaults: the code location's settings (STELLAR_MODEL_NAME, MLFLOW_TRACKING_URI), as training uses."""
    settings = CodeLocationSettings()
    model_name = model_name or settings.model_name
    default_uri = settings.secret("mlflow_tracking_uri", settings.default_tracking_uri)
    registry = ModelRegistry(tracking_uri=tracking_uri or default_uri, model_name=model_name,
                             ui_url=settings.mlflow_ui_url)
    client = registry.client()
    version = get_alias_version(client, model_name)
    if version is None:
        return f"{model_name}: no champion yet (no version carries the 'champion' alias)"
    run = client.get_run(version.run_id)
    tags = version.tags or {}
    metrics = run.data.metrics
    lines = [
        f"{model_name} v{version.version} is champion",
        f"  trained on weeks {tags.get(TAG_WINDOW_FIRST)} .. {tags.get(TAG_WINDOW_LAST)}, "
        f"promoted at week {tags.get(TAG_PROMOTED_AT)}",
        f"  MLflow run {version.run_id}: {registry.run_url(run.info.experiment_id, version.run_id)}",
    ]
    for name in _SHOWN:
        if name in metrics:
            lines.append(f"  {name:32s} {metrics[name]:.4f}")
    if "test_rows" in metrics:
        lines.append(f"  {'test_rows':32s} {int(metrics['test_rows'])}")
    return "\n".join(lines)
