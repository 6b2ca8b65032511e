"""stellar_serving: the gRPC prediction server of the champion (never imports Dagster)."""

import os

# XGBoost's OpenMP threads spin while they wait for work. On a machine whose cores
# are busy with other processes, a spinning team member holds the core another
# one needs, and a 0.4 ms prediction takes 20-100 ms (measured here). Sleeping
# waiters cost microseconds when idle. Must be set before xgboost is loaded.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
