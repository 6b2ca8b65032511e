"""Resources of the monitoring assets: the predictions database, the prediction server, drift settings.

Embedded defaults: SQLite at $STELLAR_HOME/predictions.db, the server on
127.0.0.1:50051 with metrics on :9464 (the serving defaults). A team set-up
points STELLAR_PREDICTIONS_DB_URL at PostgreSQL
(postgresql+psycopg2://user:pass@host/db) and STELLAR_SERVING_TARGET /
STELLAR_SERVING_METRICS_URL at the deployed server. The database URL and
STELLAR_AUTH_TOKEN are secrets: the resources hold them as dg.EnvVar, never
their values (see CodeLocationSettings.secret).
"""

from __future__ import annotations

import logging
from dataclasses import fields
import os
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import pandas as pd
import sqlalchemy as sa
from pydantic import Field

from stellar_assets.settings import CodeLocationSettings
from stellar_core.contract import CLASSES
from stellar_core.drift import DriftThresholds
from stellar_assets.resources.io_managers import refuse_shrinking

_log = logging.getLogger(__name__)

PREDICTIONS_TABLE = "batch_predictions"
SNAPSHOTS_TABLE = "serving_snapshots"
PREDICTION_COLUMNS = ("object_id", "week", "mjd", "predicted_class", *(f"p_{c}" for c in CLASSES),
                      "model_version", "label")

_metadata = sa.MetaData()
predictions_table = sa.Table(
    PREDICTIONS_TABLE, _metadata,
    # One row per object and week partition: re-materializing a week replaces its rows.
    sa.Column("object_id", sa.String(32), primary_key=True),
    sa.Column("week", sa.String(10), primary_key=True),
    sa.Column("mjd", sa.Integer, nullable=False),
    sa.Column("predicted_class", sa.String(8), nullable=False),
    *(sa.Column(f"p_{c}", sa.Float, nullable=False) for c in CLASSES),
    sa.Column("model_version", sa.String(16), nullable=False),
    sa.Column("label", sa.String(8), nullable=True),
    sa.Column("dagster_run_id", sa.String(64), nullable=False),
)
snapshots_table = sa.Table(
    SNAPSHOTS_TABLE, _metadata,
    sa.Column("week", sa.String(10), primary_key=True),
    sa.Column("taken_at", sa.Float, nullable=False),
    sa.Column("snapshot_json", sa.Text, nullable=False),
)


class PredictionsDatabase(dg.ConfigurableResource):
    """The relational copy of batch predictions (SQLite by default, PostgreSQL when configured)."""

    url: str = Field(description="SQLAlchemy URL: sqlite:///path.db or postgresql+psycopg2://...")

    def engine(self) -> sa.Engine:
        if self.url.startswith("sqlite:///"):
            Path(self.url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        try:
            engine = sa.create_engine(self.url, future=True)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise ValueError(f"PredictionsDatabase.url {masked_url(self.url)} is not a usable SQLAlchemy URL: "
                             f"{exc}") from exc
        _metadata.create_all(engine)
        return engine

    def replace_weeks(self, frame: pd.DataFrame, weeks: list[str], run_id: str,
                      run_tags: dict[str, str] | None = None, log=None) -> int:
        """Replace every stored row of `weeks` with `frame`'s rows, in one transaction.

        A week never loses rows unless the run's tags opt in (the rule of every weekly store)."""
        missing = [c for c in PREDICTION_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"predictions lack columns {missing}")
        outside = sorted(set(frame["week"]) - set(weeks))
        if outside:
            raise ValueError(f"predictions for weeks {outside} outside the weeks being replaced {weeks[:3]}...")
        duplicated = frame.duplicated(["object_id", "week"])
        if duplicated.any():
            raise ValueError(f"{int(duplicated.sum())} duplicate (object_id, week) rows, e.g. "
                             f"{frame.loc[duplicated, 'object_id'].head(3).tolist()}")
        records = frame.loc[:, list(PREDICTION_COLUMNS)].astype(object).where(frame.notna(), None).to_dict("records")
        for record in records:
            record["dagster_run_id"] = run_id
            record["mjd"] = int(record["mjd"])
        new_counts = frame.groupby("week").size()
        engine = self.engine()
        with engine.begin() as conn:
            stored = self._stored_counts(conn, weeks)
            shrinking = {w: (n, int(new_counts.get(w, 0))) for w, n in stored.items() if new_counts.get(w, 0) < n}
            refuse_shrinking(f"table {PREDICTIONS_TABLE}", shrinking, run_tags or {}, log or _log)
            for start in range(0, len(weeks), 500):
                conn.execute(predictions_table.delete().where(predictions_table.c.week.in_(weeks[start:start + 500])))
            if records:
                conn.execute(predictions_table.insert(), records)
        engine.dispose()
        return len(records)

    @staticmethod
    def _stored_counts(conn, weeks: list[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for start in range(0, len(weeks), 500):
            query = (sa.select(predictions_table.c.week, sa.func.count())
                     .where(predictions_table.c.week.in_(weeks[start:start + 500]))
                     .group_by(predictions_table.c.week))
            counts.update({week: int(n) for week, n in conn.execute(query)})
        return counts

    def read_weeks(self, weeks: list[str] | None = None) -> pd.DataFrame:
        engine = self.engine()
        query = sa.select(predictions_table)
        if weeks is not None:
            query = query.where(predictions_table.c.week.in_(weeks))
        with engine.connect() as conn:
            frame = pd.read_sql(query.order_by(predictions_table.c.week, predictions_table.c.object_id), conn)
        engine.dispose()
        return frame

    def labelled_scores(self, model_version: str, after_week: str, through_week: str) -> list[tuple[str, int, int]]:
        """(week, correct, labelled) per week in (after_week, through_week] predicted by `model_version`,
        oldest first: the champion's own record since its training window ended."""
        c = predictions_table.c
        query = (sa.select(c.week, sa.func.sum(sa.case((c.predicted_class == c.label, 1), else_=0)), sa.func.count())
                 .where(c.model_version == str(model_version), c.label.is_not(None),
                        c.week > after_week, c.week <= through_week)
                 .group_by(c.week).order_by(c.week))
        engine = self.engine()
        with engine.connect() as conn:
            scores = [(week, int(correct), int(total)) for week, correct, total in conn.execute(query)]
        engine.dispose()
        return scores

    def save_snapshot(self, week: str, taken_at: float, snapshot_json: str) -> None:
        engine = self.engine()
        with engine.begin() as conn:
            conn.execute(snapshots_table.delete().where(snapshots_table.c.week == week))
            conn.execute(snapshots_table.insert(), [{"week": week, "taken_at": taken_at, "snapshot_json": snapshot_json}])
        engine.dispose()

    def previous_snapshot(self, week: str) -> str | None:
        engine = self.engine()
        with engine.connect() as conn:
            row = conn.execute(sa.select(snapshots_table.c.snapshot_json).where(snapshots_table.c.week < week)
                               .order_by(snapshots_table.c.week.desc()).limit(1)).first()
        engine.dispose()
        return row[0] if row else None


def masked_url(url: str) -> str:
    """`url` for messages: its password as ***; an unparsable one is not shown, it may hold a password."""
    try:
        return repr(sa.engine.make_url(url).render_as_string(hide_password=True))
    except sa.exc.ArgumentError:
        return "(not shown: it does not parse, and may hold a password)"


class ServerUnreachable(RuntimeError):
    pass


class PredictionServer(dg.ConfigurableResource):
    """The running prediction server: its Prometheus endpoint and its admin ReloadModel RPC."""

    grpc_target: str = Field(default="127.0.0.1:50051", description="host:port of the gRPC API")
    metrics_url: str = Field(default="http://127.0.0.1:9464/metrics", description="Prometheus text endpoint")
    admin_token: str | None = Field(default=None, description="bearer token for ReloadModel when auth is on")
    timeout_seconds: float = 5.0

    def metrics_text(self) -> str:
        try:
            with urllib.request.urlopen(self.metrics_url, timeout=self.timeout_seconds) as response:
                return response.read().decode()
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise ServerUnreachable(f"metrics endpoint {self.metrics_url} not reachable: {exc}") from exc

    def reload(self) -> dict:
        """Ask the server to re-resolve the champion alias now; {'changed', 'version', ...}."""
        import grpc

        from stellar_api.client import StellarClient

        try:
            with StellarClient(self.grpc_target, token=self.admin_token, timeout=self.timeout_seconds) as client:
                response = client.reload_model()
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ServerUnreachable(f"prediction server {self.grpc_target} not reachable: {exc.details()}") from exc
            raise
        return {"previous_version": response.previous_version, "version": response.version,
                "changed": response.changed, "source": response.source}


class _DriftSettingsBase(dg.ConfigurableResource):
    degradation_min_rows: int = Field(
        default=300, description="the champion's labelled rows since training are pooled back to this many "
        "before its accuracy is tested against its out-of-time reference")
    degradation_alpha: float = Field(default=0.05, description="one-sided significance of that test")
    experiment_name: str = "stellar-monitoring"
    artifact_root: str | None = None
    plots: bool = True

    def thresholds(self) -> DriftThresholds:
        return DriftThresholds(**{f.name: getattr(self, f.name) for f in fields(DriftThresholds)})


# The drift_settings resource: every DriftThresholds field (same name, same default), derived from the
# dataclass rather than kept in sync by hand, plus the degradation test and where reports go in MLflow.
_TYPES = {"int": int, "float": float}
DriftSettings = type("DriftSettings", (_DriftSettingsBase,), {
    "__annotations__": {f.name: _TYPES[str(f.type)] for f in fields(DriftThresholds)},
    **{f.name: f.default for f in fields(DriftThresholds)},
    "__doc__": "Thresholds of stellar_core.drift (docs/monitoring.md) and where reports go in MLflow.",
    "__module__": __name__,
})


def monitoring_resources(settings: CodeLocationSettings) -> dict:
    """Resources the monitoring assets add to the code location (training_resources(settings) supplies model_registry)."""
    return {
        "predictions_db": PredictionsDatabase(
            url=settings.secret("predictions_db_url", settings.default_predictions_url)),
        "prediction_server": PredictionServer(
            grpc_target=settings.serving_target,
            metrics_url=settings.serving_metrics_url,
            admin_token=settings.secret("auth_token", None),
        ),
        "drift_settings": DriftSettings(artifact_root=settings.artifact_root),
    }
