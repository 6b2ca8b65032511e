"""stellar's use of MLflow: the registry (aliases, versions, bundles), run helpers, and every
tag name and artifact path (names.py). Free of Dagster's assets, so the code location and the
prediction server share it."""
