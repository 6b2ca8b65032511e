"""An offline, deterministic sky: STAR/GALAXY/QSO photometry and redshifts for any week.

Each class draws a redshift and an r-band magnitude, then colours around
class-typical loci (stars on the stellar locus at z ~ 0, galaxies redder and
at z ~ 0.1-1, quasars blue in u-g at z ~ 0.5-4), close enough to SDSS that a
model trained here behaves like one trained on real data.

Drift scenarios inject a known change with an intensity in [0, 1]; later drift
detection is measured against this ground truth:
- `feature_shift`: magnitudes brighten/redden and redshifts stretch,
- `missing_values`: a share of magnitudes becomes missing,
- `class_mix`: the class mix moves towards quasars,
- `combined`: all three at once.
The same (week, scenario, intensity, seed) always gives the same rows.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from stellar_core.contract import CLASSES, SDSS17_COLUMNS
from stellar_core.weeks import Week

SCENARIOS = ("none", "feature_shift", "missing_values", "class_mix", "combined")
BASE_CLASS_MIX = {"GALAXY": 0.60, "QSO": 0.19, "STAR": 0.21}
DRIFTED_CLASS_MIX = {"GALAXY": 0.15, "QSO": 0.70, "STAR": 0.15}

# Per class: mean and spread of r, and of the colours u-g, g-r, r-i, i-z.
_R_MAG = {"GALAXY": (18.9, 1.1), "QSO": (19.9, 0.9), "STAR": (18.0, 1.6)}
_COLOURS = {
    "GALAXY": ((1.75, 0.45), (0.95, 0.30), (0.45, 0.15), (0.32, 0.15)),
    "QSO": ((0.35, 0.35), (0.20, 0.22), (0.15, 0.17), (0.08, 0.17)),
    "STAR": ((1.30, 0.55), (0.55, 0.35), (0.22, 0.22), (0.10, 0.13)),
}


@dataclass(frozen=True)
class Drift:
    scenario: str = "none"
    intensity: float = 0.0

    def __post_init__(self) -> None:
        if self.scenario not in SCENARIOS:
            raise ValueError(f"unknown drift scenario {self.scenario!r}; choose one of {SCENARIOS}")
        if not 0.0 <= self.intensity <= 1.0:
            raise ValueError(f"drift intensity must lie in [0, 1], got {self.intensity}")

    def has(self, kind: str) -> bool:
        return self.intensity > 0 and self.scenario in (kind, "combined")


def _rng(week: str, seed: int, drift: Drift) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}|{week}|{drift.scenario}|{drift.intensity:.6f}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _redshift(cls: str, n: int, rng: np.random.Generator) -> np.ndarray:
    if cls == "STAR":
        return rng.normal(0.0, 0.0004, n)
    if cls == "GALAXY":
        return np.clip(rng.gamma(4.0, 0.11, n), 0.005, 1.9)
    return np.clip(rng.lognormal(np.log(1.6), 0.5, n), 0.1, 6.5)


def simulate_week(week: str, *, rows_mean: float = 30.0, drift: Drift = Drift(), seed: int = 17) -> pd.DataFrame:
    """Rows in the SDSS17 layout for the week starting at `week` (ISO Sunday)."""
    rng = _rng(week, seed, drift)
    n = int(rng.poisson(rows_mean))
    mix = dict(BASE_CLASS_MIX)
    if drift.has("class_mix"):
        mix = {c: (1 - drift.intensity) * BASE_CLASS_MIX[c] + drift.intensity * DRIFTED_CLASS_MIX[c] for c in CLASSES}
    labels = rng.choice(list(CLASSES), size=n, p=[mix[c] for c in CLASSES])
    redshift = np.empty(n)
    mags = np.empty((n, 5))
    for cls in CLASSES:
        idx = np.flatnonzero(labels == cls)
        k = idx.size
        if not k:
            continue
        z = _redshift(cls, k, rng)
        r = rng.normal(*_R_MAG[cls], k)
        (ug, gr, ri, iz) = (rng.normal(m, s, k) for m, s in _COLOURS[cls])
        if cls == "GALAXY":
            gr = gr + 0.6 * (z - 0.4)  # galaxies redden with redshift
        g = r + gr
        mags[idx] = np.column_stack([g + ug, g, r, r - ri, r - ri - iz])
        redshift[idx] = z
    if drift.has("feature_shift"):
        # A calibration change: every band shifts, bluer bands more, and redshifts stretch.
        mags += drift.intensity * np.array([1.2, 0.9, 0.6, 0.45, 0.3])
        redshift = np.where(labels == "STAR", redshift, redshift * (1 + 0.5 * drift.intensity))
    if drift.has("missing_values"):
        mags[rng.random(mags.shape) < 0.4 * drift.intensity] = np.nan
    start = Week.of(week)
    mjd = start.mjd_range[0] + rng.integers(0, 7, n)
    week_index = start.index
    serial = np.arange(n, dtype=np.uint64)
    plate = rng.integers(266, 12547, n)
    fiber = rng.integers(1, 1001, n)
    frame = pd.DataFrame({
        "obj_ID": np.uint64(1237640000000000000) + np.uint64(week_index) * np.uint64(10_000) + serial,
        "alpha": rng.uniform(0, 360, n),
        "delta": np.degrees(np.arcsin(rng.uniform(-0.3, 1.0, n))),
        "u": mags[:, 0], "g": mags[:, 1], "r": mags[:, 2], "i": mags[:, 3], "z": mags[:, 4],
        "run_ID": rng.integers(109, 8163, n), "rerun_ID": 301,
        "cam_col": rng.integers(1, 7, n), "field_ID": rng.integers(11, 978, n),
        "spec_obj_ID": _spec_obj_ids(plate, fiber, mjd),
        "class": labels, "redshift": redshift,
        "plate": plate, "MJD": mjd.astype(np.int64), "fiber_ID": fiber,
    })
    return frame.loc[:, list(SDSS17_COLUMNS)]


def _spec_obj_ids(plate: np.ndarray, fiber: np.ndarray, mjd: np.ndarray) -> np.ndarray:
    """spec_obj_ID packed as SDSS packs it (plate, fibre, MJD - 50000, run2d 26), so the
    quality suite's ID checks hold for simulated rows as they do for real ones."""
    plate, fiber, mjd = (np.asarray(a, dtype=np.uint64) for a in (plate, fiber, mjd))
    return ((plate << np.uint64(50)) | (fiber << np.uint64(38)) | ((mjd - np.uint64(50000)) << np.uint64(24))
            | (np.uint64(26) << np.uint64(10)))


def simulate_weeks(weeks: list[str], **kwargs) -> pd.DataFrame:
    frames = [simulate_week(week, **kwargs) for week in weeks]
    return pd.concat(frames, ignore_index=True) if frames else simulate_week("2000-03-05", rows_mean=0)
