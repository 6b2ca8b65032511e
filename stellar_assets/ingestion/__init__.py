from stellar_assets.ingestion.assets import observation_features, raw_observations

INGESTION_ASSETS = [raw_observations, observation_features]

__all__ = ["INGESTION_ASSETS", "observation_features", "raw_observations"]
