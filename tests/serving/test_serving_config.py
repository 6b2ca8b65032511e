"""ServingConfig: the one place that names the server's environment variables."""

from __future__ import annotations

import pytest

from stellar_serving.config import ServingConfig


def test_environment_is_parsed_into_typed_settings(tmp_path):
    env = {"STELLAR_GRPC_PORT": "6000", "STELLAR_POLL_SECONDS": "2.5", "MLFLOW_TRACKING_URI": "http://mlflow:5000",
           "STELLAR_AUTH_TOKEN": "t", "STELLAR_AUTH_SCOPE": "admin", "STELLAR_MAX_BATCH_SIZE": "",
           "UNRELATED": "x"}
    config = ServingConfig.from_env(env)
    assert (config.grpc_port, config.poll_seconds, config.tracking_uri) == (6000, 2.5, "http://mlflow:5000")
    assert (config.auth_token, config.auth_scope) == ("t", "admin")
    assert config.max_batch_size == ServingConfig().max_batch_size  # empty means default
    names = ServingConfig.env_vars()
    assert len(names) == len(set(names))
    assert all(n.startswith("STELLAR_") or n == "MLFLOW_TRACKING_URI" for n in names)


@pytest.mark.parametrize("env, message", [
    ({"STELLAR_GRPC_PORT": "fifty"}, "STELLAR_GRPC_PORT='fifty' is not a valid int"),
    ({"STELLAR_TLS_CERT": "/nonexistent/cert.pem"}, "STELLAR_TLS_CERT and STELLAR_TLS_KEY must be set together"),
    ({"STELLAR_AUTH_SCOPE": "some"}, "STELLAR_AUTH_SCOPE must be one of ('all', 'admin'), got 'some'"),
    ({"STELLAR_MAX_BATCH_SIZE": "0"}, "STELLAR_MAX_BATCH_SIZE must be at least 1"),
])
def test_bad_settings_are_refused_with_the_variable_named(env, message):
    with pytest.raises(ValueError) as err:
        ServingConfig.from_env(env)
    assert message in str(err.value)


def test_tls_files_must_exist(tmp_path):
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    with pytest.raises(ValueError) as err:
        ServingConfig.from_env({"STELLAR_TLS_CERT": str(cert), "STELLAR_TLS_KEY": str(tmp_path / "missing.key")})
    assert f"STELLAR_TLS_KEY={str(tmp_path / 'missing.key')!r} is not a file" in str(err.value)


def test_serve_refuses_a_bad_setting_in_one_line(monkeypatch, capsys):
    from stellar_serving import cli

    monkeypatch.setenv("STELLAR_SERVER_PROCESSES", "-1")
    assert cli.main(["serve"]) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert err == ("error: invalid serving configuration: STELLAR_SERVER_PROCESSES must be at least 0, got -1\n")
