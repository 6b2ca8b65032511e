"""Where observations come from: an SDSS17 CSV, SkyServer's SQL API, or the simulator.

Each source returns raw rows in the SDSS17 column layout for an MJD range,
as received (no cleaning: that is the feature step's job, so the quality
checks see what really arrived).
"""

from stellar_core.sources.errors import SourceError

__all__ = ["SourceError"]
