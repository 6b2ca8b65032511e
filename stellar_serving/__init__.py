"""stellar_serving: the gRPC prediction server of the champion (never imports Dagster)."""
