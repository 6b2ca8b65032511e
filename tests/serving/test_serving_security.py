"""Bearer-token auth (on, off, admin-only) and TLS with a certificate made at test time."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json

import grpc
import pytest
import tritonclient.grpc as triton
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.utils import InferenceServerException

from stellar_serving import cli
from stellar_api._generated.stellar.v1 import classifier_pb2 as pb
from stellar_api._generated.stellar.v1 import classifier_pb2_grpc as pb_grpc
from stellar_api.client import StellarClient

from .messages import to_objects

TOKEN = "s3cret-token"


def _code(call):
    try:
        call()
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


def _open_calls_work(channel):
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    listing = next(reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    assert "stellar.v1.ClassifierService" in {s.name for s in listing.list_services_response.service}


def test_token_required_for_every_rpc_but_health_and_reflection(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server(auth_token=TOKEN)
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = pb_grpc.ClassifierServiceStub(channel)
    request = pb.ClassifyRequest(object=to_objects(sample_inputs[:1])[0])
    good = (("authorization", f"Bearer {TOKEN}"),)
    bad = (("authorization", "Bearer nope"),)

    with pytest.raises(grpc.RpcError) as err:
        stub.Classify(request, timeout=5)
    assert (err.value.code(), err.value.details()) == (
        grpc.StatusCode.UNAUTHENTICATED, "missing 'authorization: Bearer <token>' metadata")
    with pytest.raises(grpc.RpcError) as err:
        stub.Classify(request, metadata=bad, timeout=5)
    assert (err.value.code(), err.value.details()) == (grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
    assert _code(lambda: stub.ReloadModel(pb.ReloadModelRequest(), timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: list(stub.ClassifyStream(iter([pb.ClassifyStreamRequest(objects=[request.object])]),
                                                  timeout=5))) == grpc.StatusCode.UNAUTHENTICATED
    assert stub.Classify(request, metadata=good, timeout=5).result.model_version == "1"
    assert stub.ReloadModel(pb.ReloadModelRequest(), metadata=good, timeout=30).version == "1"
    _open_calls_work(channel)

    # The Open Inference Protocol side is guarded the same way (tritonclient sends headers as metadata).
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    with pytest.raises(InferenceServerException) as err:
        client.is_model_ready("stellar-classifier")
    assert err.value.status() == "StatusCode.UNAUTHENTICATED"
    assert client.is_model_ready("stellar-classifier", headers={"authorization": f"Bearer {TOKEN}"})


def test_admin_scope_guards_only_reload(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server(auth_token=TOKEN, auth_scope="admin")
    stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    request = pb.ClassifyRequest(object=to_objects(sample_inputs[:1])[0])
    assert stub.Classify(request, timeout=5).result.model_version == "1"
    assert _code(lambda: stub.ReloadModel(pb.ReloadModelRequest(), timeout=5)) == grpc.StatusCode.UNAUTHENTICATED
    response = stub.ReloadModel(pb.ReloadModelRequest(), metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=30)
    assert (response.version, response.changed) == ("1", False)


def test_without_a_token_everything_is_open(make_server, registry, sample_inputs):
    registry.set_champion("1")
    server = make_server()
    stub = pb_grpc.ClassifierServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    assert stub.Classify(pb.ClassifyRequest(object=to_objects(sample_inputs[:1])[0]), timeout=5).result
    assert stub.ReloadModel(pb.ReloadModelRequest(), timeout=30).version == "1"


def _make_certificates(folder):
    """A CA and a server certificate for localhost / 127.0.0.1 signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stellar test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(pem))
    paths["cert"].write_bytes(cert.public_bytes(pem))
    paths["key"].write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    return paths


def test_tls_with_token_from_library_and_cli(make_server, registry, sample_inputs, tmp_path, capsys):
    registry.set_champion("1")
    certs = _make_certificates(tmp_path)
    server = make_server(tls_cert=str(certs["cert"]), tls_key=str(certs["key"]), auth_token=TOKEN)
    target = f"localhost:{server.port}"
    row = dict(zip(("u", "g", "r", "i", "z", "redshift"), map(float, sample_inputs[0])))
    expected = registry.expected("1", sample_inputs[:1])[0]

    with StellarClient(target, tls_ca=certs["ca"], token=TOKEN) as client:
        result = client.classify(row, client_id="tls-1")
    assert (result.client_id, result.model_version) == ("tls-1", "1")
    assert [result.probabilities[c] for c in ("GALAXY", "QSO", "STAR")] == expected.tolist()

    # Plain text against a TLS port fails; so does TLS without the token.
    with StellarClient(target, timeout=3) as plain:
        assert _code(lambda: plain.classify(row)) == grpc.StatusCode.UNAVAILABLE
    with StellarClient(target, tls_ca=certs["ca"]) as anonymous:
        assert _code(lambda: anonymous.classify(row)) == grpc.StatusCode.UNAUTHENTICATED

    flags = [f"--{k}={v!r}" for k, v in row.items()]
    assert cli.main(["classify", "--target", target, "--tls-ca", str(certs["ca"]), "--token", TOKEN,
                     "--client-id", "cli-1", *flags]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (printed["client_id"], printed["model_version"]) == ("cli-1", "1")
    assert printed["probabilities"]["GALAXY"] == pytest.approx(float(expected[0]), rel=1e-6)
    assert cli.main(["classify", "--target", target, "--tls-ca", str(certs["ca"]), *flags]) == 2
    assert "UNAUTHENTICATED" in capsys.readouterr().err
