"""C TreeSHAP is built as a version is swapped in, not at its first Explain call.

A real server on 127.0.0.1 against the test registry: GetModelInfo reports
c_treeshap without any Explain call, for the loaded version and for the one a
hot swap brings. The Explainer itself: a swap during a build still builds the
newer version, and a version waiting for its compiled predictor waits.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np

from stellar_core.features import derive_feature_matrix
from stellar_api.client import StellarClient
from stellar_serving import treeshap
from stellar_serving.servicers import Explainer

from .messages import to_objects
from .test_treeshap import SETTLE_TIMEOUT, TOLERANCE, _contributions, _Model, _settle

READY_NOTE = "C TreeSHAP (within 1e-05 of XGBoost pred_contribs on probe rows) explains v{}"


def _explainer_once(client: StellarClient, version: str, settled) -> tuple[str, str]:
    """GetModelInfo's (explainer, note) for `version` once `settled(explainer, note)` holds; no Explain call."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while True:
        info = client.model_info()
        assert info.version == version
        if settled(info.explainer, info.explainer_note):
            return info.explainer, info.explainer_note
        assert time.monotonic() < deadline, f"v{version}: still {info.explainer}: {info.explainer_note}"
        time.sleep(0.1)


def _ready(explainer: str, note: str) -> bool:
    return explainer == "c_treeshap"


def test_c_treeshap_is_built_at_load_and_at_a_hot_swap_without_an_explain_call(make_server, registry,
                                                                              sample_inputs):
    registry.set_champion("1")
    server = make_server()
    inputs = sample_inputs[40:45]
    try:
        with StellarClient(f"127.0.0.1:{server.port}", timeout=30) as client:
            assert _explainer_once(client, "1", _ready) == ("c_treeshap", READY_NOTE.format("1"))
            registry.set_champion("2")
            assert client.reload_model().version == "2"
            assert _explainer_once(client, "2", _ready) == ("c_treeshap", READY_NOTE.format("2"))
            assert server.metrics.objects_of("Explain")._value.get() == 0  # no Explain call built them
            # The first Explain call already gets v2's C answer, bit for bit.
            response = client.explain(to_objects(inputs))
    finally:
        registry.set_champion("1")
    assert response.model_version == "2"
    booster = registry.bundles["2"].booster
    features = derive_feature_matrix(inputs)
    np.testing.assert_array_equal(_contributions(response),
                                  treeshap.TreeShap(booster)(features).astype(np.float32))


def test_without_a_compiler_the_server_says_why_and_xgboost_explains(make_server, registry, sample_inputs,
                                                                     tmp_path):
    registry.set_champion("1")
    server = make_server(compiled_compiler=str(tmp_path / "no-such-cc"))
    inputs = sample_inputs[:9]
    with StellarClient(f"127.0.0.1:{server.port}", timeout=30) as client:
        which, note = _explainer_once(client, "1", lambda _, note: note != Explainer.PREPARING_NOTE)
        got = _contributions(client.explain(to_objects(inputs)))
    assert which == "xgboost"
    assert note.startswith("XGBoost pred_contribs explains v1: no C compiler for TreeSHAP")
    want = treeshap.xgboost_contributions(registry.bundles["1"].booster, derive_feature_matrix(inputs))
    np.testing.assert_array_equal(got, want.astype(np.float32))  # XGBoost's own answer, bit for bit


def _gated_gcc(tmp_path: Path) -> tuple[str, Path, Path]:
    """The machine's gcc, compiling only once the gate file exists; `started` appears when first asked."""
    gate, started = tmp_path / "gate", tmp_path / "started"
    gcc = shutil.which("gcc")
    assert gcc, "these tests need gcc"
    script = tmp_path / "gated-gcc"
    script.write_text(f"""#!/bin/sh
touch {started}
waited=0
while [ ! -e {gate} ]; do  # bounded: a failed test never leaves it waiting
  sleep 0.05; waited=$((waited + 1)); [ $waited -gt 2400 ] && exit 1
done
exec {gcc} "$@"
""")
    script.chmod(0o755)
    return str(script), gate, started


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def test_a_swap_during_a_build_still_builds_the_newer_version(registry, sample_inputs, tmp_path):
    cc, gate, started = _gated_gcc(tmp_path)
    explainer = Explainer(compiler=cc)
    v1, v2 = _Model(registry.bundles["1"], "1"), _Model(registry.bundles["2"], "2")
    try:
        explainer.prepare(v1)
        _wait_for(started)  # v1's build is compiling, held at the gate
        explainer.prepare(v2)  # v2 is swapped in meanwhile
        assert explainer.describe(v2) == (Explainer.XGBOOST, Explainer.PREPARING_NOTE)
    finally:
        gate.touch()
    explain = _settle(explainer, v2)
    assert explainer.describe(v2) == (Explainer.C_TREESHAP, READY_NOTE.format("2"))
    features = derive_feature_matrix(sample_inputs[:50])
    want = treeshap.xgboost_contributions(registry.bundles["2"].booster, features)
    assert np.abs(explain(features) - want).max() <= TOLERANCE
    # v1 is no longer served: nothing of its build answers for it now.
    assert explainer.c_explainer(v1) is None
    assert explainer.describe(v1)[0] == Explainer.XGBOOST


def test_a_version_waiting_for_its_compiled_predictor_is_built_after_it(registry):
    explainer = Explainer()
    compiling = _Model(registry.bundles["1"], "1", compiling=True)
    settled = _Model(registry.bundles["1"], "1")  # the store's copy once its compiled predictor settled
    explainer.prepare(compiling)
    assert explainer.describe(compiling) == (
        Explainer.XGBOOST, "C TreeSHAP for v1 is prepared once its compiled predictor is ready; "
                           "XGBoost pred_contribs answers until then")
    assert explainer.describe(settled)[1] != Explainer.PREPARING_NOTE  # no build started or wanted
    explainer.prepare(settled)
    assert _settle(explainer, settled) is not None
    # The booster is the key: built once for both copies of the version.
    assert explainer.describe(compiling) == (Explainer.C_TREESHAP, READY_NOTE.format("1"))
    explainer.prepare(compiling)
    explainer.prepare(settled)
    assert explainer.describe(settled) == (Explainer.C_TREESHAP, READY_NOTE.format("1"))
