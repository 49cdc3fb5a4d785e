"""Transport: request size limit, TLS requirement off loopback, HTTPS with a self-signed cert,
the dev ready line / dev.json."""
import datetime
import ipaddress
import json
import os
import stat
import time

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from api_helpers import (APIKEY_GRANT, assert_kp_error, b64, check_status, describe, key_envelope, key_resource,
                         start_server)


def test_body_over_1mib_413(kp):
    big = json.dumps(key_envelope(key_resource(description="d" * (1536 * 1024)))).encode()
    r = kp.post("/api/v2/keys", raw=big, headers={"Content-Type": "application/json"})
    assert_kp_error(r, 413)
    k = kp.root_key()
    r = kp.post(f"/api/v2/keys/{k['id']}/actions/wrap", raw=json.dumps({"plaintext": "A" * (2 * 1024 * 1024)}).encode(),
                headers={"Content-Type": "application/json"})
    assert_kp_error(r, 413)
    r = kp.put(f"/api/v2/keys/{k['id']}/policies", raw=b" " * (1100 * 1024) + b"{}")
    assert_kp_error(r, 413)


def test_body_over_1mib_chunked_413(kp):
    def gen():
        for _ in range(24):
            yield b"a" * (64 * 1024)
    r = kp.session.post(kp.server.url + "/api/v2/keys", data=gen(), timeout=60,
                        headers={"Authorization": "Bearer " + kp.token, "Bluemix-Instance": kp.server.instance_id,
                                 "Content-Type": "application/json"})
    assert_kp_error(r, 413)


def test_body_just_under_1mib_is_not_413(kp):
    body = json.dumps(key_envelope(key_resource(description="d" * (900 * 1024)))).encode()
    r = kp.post("/api/v2/keys", raw=body)
    assert_kp_error(r, 400)  # too long a description, but parsed, not refused for size


def test_token_endpoint_large_body(server):
    r = requests.post(server.iam_url + "/identity/token", data={"grant_type": APIKEY_GRANT, "apikey": "a" * (2 * 1024 * 1024)},
                      timeout=60)
    assert r.status_code in (400, 413), describe(r)


def test_non_loopback_without_tls_refused(tmp_path):
    srv = start_server(tmp_path / "d", listen="0.0.0.0:0", wait=False)
    try:
        rc = srv.proc.wait(timeout=30)
    except Exception:
        srv.kill()
        raise AssertionError("server kept running on 0.0.0.0 without TLS")
    finally:
        srv.stop()
    assert rc != 0
    assert srv.first_line is None or not srv.first_line.strip(), "must not print a ready line"
    msg = srv.stderr_tail().lower()
    assert "tls" in msg, f"exit message should explain that TLS is required: {msg!r}"


def _self_signed(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "keyhold-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .add_extension(ski, False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "127.0.0.1:0"])
def test_https_with_self_signed_cert(tmp_path, server_factory, listen):
    cert, key = _self_signed(tmp_path)
    srv = server_factory(listen=listen, extra=["--tls-cert", str(cert), "--tls-key", str(key)], wait=False)
    srv.verify = str(cert)
    srv.wait_ready()
    assert srv.info["url"].startswith("https://"), srv.info
    assert srv.iam_url.startswith("https://")
    c = srv.client()
    k = c.root_key()
    w = c.wrap(k["id"], b"over tls")
    assert c.unwrap(k["id"], w["ciphertext"])["plaintext"] == b64(b"over tls")
    # plain HTTP to the TLS port fails cleanly, and the server survives it
    plain = srv.url.replace("https://", "http://")
    try:
        requests.get(plain + "/api/v2/keys", timeout=5)
    except requests.RequestException:
        pass
    assert srv.alive()
    check_status(c.get("/api/v2/keys"), 200)


def test_bad_tls_files_exit_nonzero(tmp_path):
    bogus = tmp_path / "nope.pem"
    bogus.write_text("not a certificate")
    srv = start_server(tmp_path / "d", listen="127.0.0.1:0", wait=False,
                       extra=["--tls-cert", str(bogus), "--tls-key", str(bogus)])
    try:
        rc = srv.proc.wait(timeout=30)
    finally:
        srv.stop()
    assert rc != 0
    assert srv.stderr_tail().strip(), "should say why"


def test_ready_line_and_dev_json(server):
    info = server.info
    for f in ("url", "iam_url", "apikey", "instance_id", "second_apikey", "service_apikey"):
        assert isinstance(info.get(f), str) and info[f], f
    assert info["url"].startswith("http://127.0.0.1:")
    dev = server.data_dir / "dev.json"
    assert json.loads(dev.read_text()) == info
    assert stat.S_IMODE(os.stat(dev).st_mode) == 0o600
    assert len({info["apikey"], info["second_apikey"], info["service_apikey"]}) == 3
    assert server.extra_stdout == [], "only ONE line on stdout (logs go to stderr)"


def test_sigterm_exits_cleanly(server_factory):
    srv = server_factory()
    srv.client().root_key()
    srv.proc.terminate()
    rc = srv.proc.wait(timeout=20)
    assert rc in (0, -15, 143), rc
