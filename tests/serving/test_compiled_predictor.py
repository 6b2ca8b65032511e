"""The compiled predictor (stellar_serving/compiled.py) and its place in the model store.

Real compiles with the machine's gcc, of small models (20 and 30 rounds) published
to their own registry so they stay quick. Compiler failures are real too: a
compiler that does not exist, and a shell script that answers `--version` but
refuses to compile. A "gated" compiler (gcc behind a script that waits for a
file) holds a compile under way for as long as a test needs, so "before the
compile finishes" is a state the test controls, not a race it hopes to win.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from stellar_core.contract import CLASSES, DEFAULT_MODEL_NAME
from stellar_core.features import FEATURE_NAMES, build_features, derive_feature_matrix, feature_matrix, label_indices
from stellar_core.model_bundle import ModelBundle, new_contract
from stellar_serving import compiled
from stellar_serving.booster_call import DensePredictor
from stellar_serving.config import ServingConfig
from stellar_serving.model_store import COMPILING_NOTE, OFF_NOTE, _compiled_probe_features
from tests.support import publish

REPO = Path(__file__).resolve().parents[2]
TOLERANCE = compiled.PROBE_TOLERANCE
# Small models whose answers differ: a library of one fails the probe check of the other.
SMALL_MODELS = {
    "1": ({"max_depth": 3, "eta": 0.3, "seed": 3}, 20),
    "2": ({"max_depth": 4, "eta": 0.2, "seed": 4}, 30),
}
SETTLE_TIMEOUT = 240  # seconds: only to detect a hang (a compile on a busy 2-core machine)


@dataclass
class SmallRegistry:
    tracking_uri: str
    boosters: dict = field(default_factory=dict)

    def set_champion(self, version: str) -> None:
        from mlflow.tracking import MlflowClient

        MlflowClient(self.tracking_uri, registry_uri=self.tracking_uri).set_registered_model_alias(
            DEFAULT_MODEL_NAME, ServingConfig().model_alias, version)

    def xgboost(self, version: str) -> DensePredictor:
        return DensePredictor(self.boosters[version], len(FEATURE_NAMES), len(CLASSES))

    def model_bytes(self, version: str) -> bytes:
        return bytes(self.boosters[version].save_raw(raw_format="ubj"))


@pytest.fixture(scope="module")
def small_registry(tmp_path_factory, sample) -> SmallRegistry:
    import xgboost as xgb
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("mlflow-small")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment_id = client.create_experiment("compiled-predictor", artifact_location=(root / "artifacts").as_uri())
    client.create_registered_model(DEFAULT_MODEL_NAME)
    features, _ = build_features(sample)
    matrix = xgb.DMatrix(feature_matrix(features), label=label_indices(features["label"]),
                         feature_names=list(FEATURE_NAMES))
    registry = SmallRegistry(uri)
    for expected_version, (params, rounds) in SMALL_MODELS.items():
        booster = xgb.train({"objective": "multi:softprob", "num_class": 3, "tree_method": "hist", "nthread": 2,
                             **params}, matrix, rounds)
        version = publish(uri, experiment_id, booster, ("2015-01-04", "2017-12-31"), {"accuracy": 0.9}, features)
        assert version == expected_version
        registry.boosters[version] = ModelBundle(booster=booster, contract=new_contract()).booster
    registry.set_champion("1")
    return registry


@pytest.fixture(scope="module")
def libraries(small_registry, tmp_path_factory) -> dict[str, compiled.Prepared]:
    """Each small version compiled once, checked against its XGBoost predictor."""
    root = tmp_path_factory.mktemp("compiled")
    return {version: compiled.prepare(small_registry.model_bytes(version), version, root, "gcc",
                                      small_registry.xgboost(version), _compiled_probe_features(), len(CLASSES))
            for version in SMALL_MODELS}


@pytest.fixture
def start(make_server, small_registry):
    """make_server against the small registry, compiled predictor on unless a test says otherwise (and the
    tree kernel off: where it answers, nothing is compiled; the request decoder off: the compilers these
    tests hold or break are tl2cgen's alone)."""
    def start_server(**overrides):
        return make_server(tracking_uri=small_registry.tracking_uri,
                           **{"compiled_predictor": "auto", "tree_kernel": "off", "request_decoder": "off",
                              **overrides})
    return start_server


def _features(sample_inputs: np.ndarray, rows: int, offset: int = 0) -> np.ndarray:
    return derive_feature_matrix(sample_inputs[offset:offset + rows])


def _settled(store, version: str):
    """The store's model once `version`'s compile has settled (compiled, or XGBoost with a reason)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        current = store.current
        if current is not None and current.version == version and current.predictor_note != COMPILING_NOTE:
            return current
        time.sleep(0.05)
    raise AssertionError(f"version {version}'s compile did not settle in {SETTLE_TIMEOUT} s: {store.current}")


def _compile_outcomes(server) -> dict[str, float]:
    return {sample.labels["outcome"]: sample.value for metric in server.metrics.compiles.collect()
            for sample in metric.samples if sample.name.endswith("_total")}


def _model_info(server):
    from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
    from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        return pb_grpc.ClassifierServiceStub(channel).GetModelInfo(pb.GetModelInfoRequest(), timeout=10)


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


def _gated_gcc(tmp_path: Path) -> tuple[str, Path, Path]:
    """A compiler that is the machine's gcc, but compiles only once the gate file exists;
    it touches the started file when first asked to compile."""
    gate, started = tmp_path / "gate", tmp_path / "started"
    gcc = shutil.which("gcc")
    assert gcc, "these tests need gcc"
    cc = _script(tmp_path / "gated-gcc", f"""
if [ "$1" = "--version" ]; then exec {gcc} --version; fi
echo $$ >> {started}
waited=0
while [ ! -e {gate} ]; do  # bounded: a failed test never leaves it waiting
  sleep 0.05; waited=$((waited + 1)); [ $waited -gt 6000 ] && exit 1
done
exec {gcc} "$@"
""")
    return cc, gate, started


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


# -- the predictor itself -----------------------------------------------------------

@pytest.mark.parametrize("rows", [1, 7, 64, 1000])
def test_compiled_and_xgboost_predictors_agree(libraries, small_registry, sample_inputs, rows):
    for version, prepared in libraries.items():
        features = _features(sample_inputs, rows, offset=37)
        got, want = prepared.predict(features), small_registry.xgboost(version)(features)
        assert got.shape == want.shape == (rows, len(CLASSES)) and got.dtype == np.float32
        assert np.abs(got - want).max() <= TOLERANCE, version


def test_missing_values_follow_xgboosts_default_branches(libraries, small_registry, sample_inputs):
    features = _features(sample_inputs, 50)
    features[::2, ::3] = np.nan
    for version, prepared in libraries.items():
        assert np.abs(prepared.predict(features) - small_registry.xgboost(version)(features)).max() <= TOLERANCE


def test_the_probe_check_refuses_a_predictor_that_answers_otherwise(libraries, small_registry):
    probes = _compiled_probe_features()
    assert compiled.checked(libraries["1"].predict, small_registry.xgboost("1"), probes) is libraries["1"].predict
    with pytest.raises(compiled.CompileFailed, match="differed from XGBoost by .* on probe rows") as failed:
        compiled.checked(libraries["2"].predict, small_registry.xgboost("1"), probes)
    assert failed.value.outcome == "mismatch"


def test_a_library_of_another_shape_is_refused_before_any_call(libraries):
    path = libraries["1"].predict.path
    with pytest.raises(compiled.CompileFailed, match=r"has \(features, targets, classes.*\(13, 1, 3.*not \(13, 1, 2"):
        compiled.CompiledPredictor(path, 13, 2)


# -- the server's choice ---------------------------------------------------------------

def test_server_answers_from_xgboost_until_the_compile_finishes_then_compiled_same_version(
        start, small_registry, sample_inputs, tmp_path):
    cc, gate, _ = _gated_gcc(tmp_path)
    try:
        server = start(compiled_compiler=cc)
        waiting = server.store.current
        assert (waiting.version, waiting.predictor, waiting.predictor_note) == ("1", "xgboost", COMPILING_NOTE)
        info = _model_info(server)
        assert (info.version, info.predictor, info.predictor_note) == ("1", "xgboost", COMPILING_NOTE)
        one = _features(sample_inputs, 1)
        assert waiting.predict_proba(sample_inputs[:1]).tobytes() == small_registry.xgboost("1")(one).tobytes()
    finally:
        gate.touch()
    ready = _settled(server.store, "1")
    assert (ready.version, ready.predictor, ready.source) == ("1", "compiled", waiting.source)
    assert ready.bundle is waiting.bundle  # the same version's model, with the compiled predictor beside it
    assert "compiled trees" in _model_info(server).predictor_note and _model_info(server).predictor == "compiled"
    small = sample_inputs[:ready.compiled_max_rows - 1]
    assert ready.predict_proba(small).tobytes() == ready.predict_compiled(derive_feature_matrix(small)).tobytes()
    large = sample_inputs[:ready.compiled_max_rows]  # from the threshold on: XGBoost, bit for bit
    assert ready.predict_proba(large).tobytes() == small_registry.xgboost("1")(derive_feature_matrix(large)).tobytes()
    assert _compile_outcomes(server) == {"compiled": 1.0}
    gauge = server.metrics.registry.get_sample_value(
        "stellar_model_predictor", {"model": DEFAULT_MODEL_NAME, "version": "1", "predictor": "compiled"})
    assert gauge == 1.0


def test_a_late_compile_of_an_old_version_never_replaces_a_newer_model(start, small_registry, tmp_path):
    from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
    from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc

    cc, gate, started = _gated_gcc(tmp_path)
    small_registry.set_champion("1")
    served = []
    try:
        server = start(compiled_compiler=cc)
        server.store.add_listener(served.append)
        _wait_for(started)  # v1's compile is under way, held at the gate
        assert server.store.current.predictor_note == COMPILING_NOTE
        small_registry.set_champion("2")
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            reloaded = pb_grpc.ClassifierServiceStub(channel).ReloadModel(pb.ReloadModelRequest(), timeout=60)
        assert (reloaded.previous_version, reloaded.version) == ("1", "2")
    finally:
        gate.touch()  # v1's compile finishes now, while v2 is served
        small_registry.set_champion("1")
    ready = _settled(server.store, "2")
    assert ready.predictor == "compiled"
    # ... with version 2's trees: version 1's (which answer otherwise) were never swapped in.
    probes = _compiled_probe_features()
    assert compiled.max_difference(ready.predict_compiled, small_registry.xgboost("2"), probes) <= TOLERANCE
    assert compiled.max_difference(ready.predict_compiled, small_registry.xgboost("1"), probes) > 1e-3
    assert [(m.version, m.predictor) for m in served] == [("2", "xgboost"), ("2", "compiled")]
    # v1's compile ended before v2's started (one compile thread); its library is in the cache.
    assert compiled.library_path(server.store.cache_root, "1", small_registry.model_bytes("1"), cc).is_file()
    # Offered again now, v1's predictor is refused: v2 stays.
    assert not server.store.settle_predictor("1", ready.predict_compiled, "late")
    assert server.store.current is ready


def test_stopping_the_server_ends_a_compile_under_way(start, tmp_path):
    cc, gate, started = _gated_gcc(tmp_path)
    server = start(compiled_compiler=cc)
    _wait_for(started)
    compiler_pid = int(started.read_text().split()[0])
    server.stop(grace=0.5)  # the gate stays shut: only the stop can end this compile
    deadline = time.monotonic() + 60
    while _alive(compiler_pid):
        assert time.monotonic() < deadline, "the compiler outlived the server's stop"
        time.sleep(0.05)
    deadline = time.monotonic() + 60
    while _compile_outcomes(server) != {"cancelled": 1.0}:
        assert time.monotonic() < deadline, _compile_outcomes(server)
        time.sleep(0.05)
    gate.touch()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child nobody has waited for yet is a zombie: gone for this purpose.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_a_restart_reuses_the_compiled_library(start, small_registry, tmp_path):
    small_registry.set_champion("1")
    cache = str(tmp_path / "shared-cache")
    first = start(cache_dir=cache)
    assert _settled(first.store, "1").predictor == "compiled"
    library = compiled.library_path(first.store.cache_root, "1", small_registry.model_bytes("1"), "gcc")
    built = library.stat().st_mtime_ns
    first.stop(grace=0.5)

    again = start(cache_dir=cache)
    current = again.store.current  # loaded with the version, before start() returned: no compile
    assert (current.version, current.predictor) == ("1", "compiled")
    assert "reused from the model cache" in current.predictor_note
    assert _compile_outcomes(again) == {"reused": 1.0}
    assert library.stat().st_mtime_ns == built


def test_a_cached_library_that_answers_otherwise_is_not_used(start, small_registry, libraries, tmp_path):
    """A hand-made wrong library (version 2's trees under version 1's name) fails the probe check."""
    small_registry.set_champion("1")
    cache = tmp_path / "cache"
    wrong = compiled.library_path(cache / DEFAULT_MODEL_NAME, "1", small_registry.model_bytes("1"), "gcc")
    wrong.parent.mkdir(parents=True)
    shutil.copy(libraries["2"].predict.path, wrong)
    server = start(cache_dir=str(cache))
    current = server.store.current
    assert current.predictor == "xgboost" and current.predict_compiled is None
    assert "compiled predictor differed from XGBoost by" in current.predictor_note
    assert _model_info(server).predictor_note == current.predictor_note
    assert _compile_outcomes(server) == {"mismatch": 1.0}


def test_a_compiler_that_does_not_exist_leaves_xgboost_and_says_so(start, small_registry, sample_inputs):
    server = start(compiled_compiler="no-such-compiler-14")
    current = server.store.current
    assert current.predictor == "xgboost" and current.predict_compiled is None
    assert current.predictor_note.startswith("XGBoost answers every request: no C compiler: 'no-such-compiler-14'")
    assert _compile_outcomes(server) == {"unavailable": 1.0}
    one = sample_inputs[:1]
    assert current.predict_proba(one).tobytes() == small_registry.xgboost("1")(derive_feature_matrix(one)).tobytes()


def test_a_compile_that_fails_leaves_xgboost_and_says_so(start, tmp_path):
    cc = _script(tmp_path / "broken-cc", """
if [ "$1" = "--version" ]; then echo "broken-cc 1.0"; exit 0; fi
echo "broken-cc: refusing to compile $*"; exit 1
""")
    server = start(compiled_compiler=cc)
    current = _settled(server.store, "1")
    assert current.predictor == "xgboost" and current.predict_compiled is None
    assert f"compiling the trees with {cc!r} failed" in current.predictor_note
    assert "broken-cc: refusing to compile" in current.predictor_note  # the compiler's own words
    assert _compile_outcomes(server) == {"failed": 1.0}


def test_without_tl2cgen_there_is_no_compiled_predictor_and_the_reason_is_given(tmp_path):
    # A fresh interpreter where importing tl2cgen fails, as where it is not installed.
    code = ("import sys; sys.modules['tl2cgen'] = None\n"
            "from stellar_serving import compiled\n"
            "try:\n"
            "    compiled.library_path(sys.argv[1], '1', b'model', 'gcc')\n"
            "except compiled.CompileFailed as exc:\n"
            "    print(exc.outcome, exc)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "unavailable tl2cgen is not installed (import of tl2cgen halted; None in sys.modules)"


def test_off_means_xgboost_without_compiling(start, small_registry):
    server = start(compiled_predictor="off")
    current = server.store.current
    assert (current.predictor, current.predictor_note, current.predict_compiled) == ("xgboost", OFF_NOTE, None)
    assert _compile_outcomes(server) == {"off": 1.0}
    assert not (server.store.cache_root / compiled.COMPILED_DIR).exists()


@pytest.mark.parametrize("env, message", [
    ({"STELLAR_COMPILED_PREDICTOR": "on"}, "STELLAR_COMPILED_PREDICTOR must be one of ('auto', 'off'), got 'on'"),
    ({"STELLAR_COMPILED_MAX_ROWS": "0"}, "STELLAR_COMPILED_MAX_ROWS must be at least 1, got 0"),
    ({"STELLAR_COMPILED_PREDICTOR_CC": "gcc -O0"}, "STELLAR_COMPILED_PREDICTOR_CC must name a C compiler"),
])
def test_bad_compiled_predictor_settings_are_refused(env, message):
    with pytest.raises(ValueError) as err:
        ServingConfig.from_env(env)
    assert message in str(err.value)
    names = ServingConfig.env_vars()
    assert {"STELLAR_COMPILED_PREDICTOR", "STELLAR_COMPILED_MAX_ROWS", "STELLAR_COMPILED_PREDICTOR_CC"} <= set(names)
