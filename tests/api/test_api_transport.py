"""Transport: request size limit, TLS requirement off loopback, HTTPS with a self-signed cert,
the dev ready line / dev.json."""
import datetime
import ipaddress
import json
import os
import re
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


def _raw_roundtrip(srv, request: bytes, then: bytes | None = None):
    """Send one request on a fresh socket, read the response; optionally send a second request on
    the same connection. Returns (first_response_bytes, second_response_bytes_or_error)."""
    import socket
    host, port = srv.url.split("//")[1].split(":")
    s = socket.create_connection((host, int(port)), timeout=10)
    try:
        first = b""
        head, sep, body = request.partition(b"\r\n\r\n")
        try:
            # headers first, then the body, as real clients often do
            s.sendall(head + sep)
            if body:
                time.sleep(0.05)
                s.sendall(body)
        except OSError as e:
            first = f"SEND-ERROR {e!r}".encode()
        try:
            while b"\r\n\r\n" not in first:
                chunk = s.recv(65536)
                if not chunk:
                    break
                first += chunk
            head, _, rest = first.partition(b"\r\n\r\n")
            m = re.search(rb"(?i)content-length:\s*(\d+)", head)
            while m and len(rest) < int(m.group(1)):
                chunk = s.recv(65536)
                if not chunk:
                    break
                rest += chunk
            first = head + b"\r\n\r\n" + rest
        except OSError as e:
            first += f" RECV-ERROR {e!r}".encode()
        second = None
        if then is not None:
            try:
                s.sendall(then)
                second = s.recv(65536)
            except OSError as e:
                second = f"ERROR {e!r}".encode()
        return first, second
    finally:
        s.close()


def _req(kp, method, path, body=b"", extra=b""):
    return (f"{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {kp.token}\r\n"
            f"Bluemix-Instance: {kp.server.instance_id}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n").encode() + extra + b"\r\n" + body


@pytest.mark.parametrize("case", ["valid", "long-bad-auth", "long-bad-instance", "no-auth", "body-too-large"])
def test_connection_reusable_after_early_error(kp, case):
    """An error answered before the body is read must not silently kill a keep-alive connection:
    either the connection stays usable, or the response says `Connection: close`."""
    k = kp.root_key()
    body = json.dumps({"keyRingID": "default"}).encode()
    req = _req(kp, "PATCH", f"/api/v2/keys/{k['id']}", body)
    if case == "long-bad-auth":
        req = req.replace(f"Bearer {kp.token}".encode(), b"Bearer " + b"a" * 20000)
    elif case == "long-bad-instance":
        req = req.replace(kp.server.instance_id.encode(), b"x" * 5000)
    elif case == "valid":
        pass
    elif case == "no-auth":
        req = req.replace(f"Authorization: Bearer {kp.token}\r\n".encode(), b"")
    else:
        req = _req(kp, "POST", "/api/v2/keys", json.dumps(key_envelope(key_resource(description="d" * (1536 * 1024)))).encode())
    first, second = _raw_roundtrip(kp.server, req, _req(kp, "GET", "/api/v2/keys"))
    status = b"HTTP/1.1 2" if case == "valid" else b"HTTP/1.1 4"
    assert status in first[:80], first[:200]
    first = first[first.index(status):]
    if re.search(rb"(?im)^connection:\s*close", first.split(b"\r\n\r\n")[0]):
        return
    assert second and second.startswith(b"HTTP/1.1 200"), (
        f"connection was dropped after {first[:12]!r} without `Connection: close`; next request got {second[:120]!r}")


def test_body_over_1mib_413_reaches_the_client(kp):
    """The 413 must actually reach a client that sends its whole body (no reset while it is still
    sending / before it reads the answer). Five tries, all must see the 413 envelope."""
    big = json.dumps(key_envelope(key_resource(description="d" * (1536 * 1024)))).encode()
    seen = []
    for _ in range(5):
        first, _ = _raw_roundtrip(kp.server, _req(kp, "POST", "/api/v2/keys", big))
        seen.append(first[:80])
    # a client whose send hit EPIPE may still read the answer; what matters is that it arrives
    assert all(b"HTTP/1.1 413" in x for x in seen), seen


def test_body_over_1mib_413(kp):
    # `Connection: close` so a dropped keep-alive connection (tested above) does not leak into this test
    close = {"Content-Type": "application/json", "Connection": "close"}
    big = json.dumps(key_envelope(key_resource(description="d" * (1536 * 1024)))).encode()
    r = kp.post("/api/v2/keys", raw=big, headers=close)
    assert_kp_error(r, 413)
    k = kp.root_key()
    r = kp.post(f"/api/v2/keys/{k['id']}/actions/wrap", raw=json.dumps({"plaintext": "A" * (2 * 1024 * 1024)}).encode(),
                headers=close)
    assert_kp_error(r, 413)
    r = kp.put(f"/api/v2/keys/{k['id']}/policies", raw=b" " * (1100 * 1024) + b"{}", headers=close)
    assert_kp_error(r, 413)


def test_body_over_1mib_chunked_413(kp):
    def gen():
        for _ in range(24):
            yield b"a" * (64 * 1024)
    r = kp.session.post(kp.server.url + "/api/v2/keys", data=gen(), timeout=60,
                        headers={"Authorization": "Bearer " + kp.token, "Bluemix-Instance": kp.server.instance_id,
                                 "Content-Type": "application/json", "Connection": "close"})
    assert_kp_error(r, 413)


def test_body_just_under_1mib_is_not_413(kp):
    body = json.dumps(key_envelope(key_resource(description="d" * (900 * 1024)))).encode()
    r = kp.post("/api/v2/keys", raw=body)
    assert_kp_error(r, 400)  # too long a description, but parsed, not refused for size


def test_token_endpoint_large_body(server):
    r = requests.post(server.iam_url + "/identity/token", data={"grant_type": APIKEY_GRANT, "apikey": "a" * (2 * 1024 * 1024)},
                      timeout=60)
    assert r.status_code in (400, 413), describe(r)


def test_ipv6_loopback_plain_http_allowed(server_factory):
    srv = server_factory(listen="[::1]:0")
    assert srv.info["url"].startswith("http://[::1]:"), srv.info
    check_status(srv.client().get("/api/v2/keys"), 200)


@pytest.mark.parametrize("listen", ["0.0.0.0:0", "[::]:0"])
def test_non_loopback_without_tls_refused(tmp_path, listen):
    srv = start_server(tmp_path / "d", listen=listen, wait=False)
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


def test_expect_100_continue(kp):
    """curl (the KP docs' client) sends `Expect: 100-continue` for bodies over 1 KiB: the server must
    answer 100 Continue (or the final status) instead of waiting for the body forever."""
    import socket
    body = json.dumps(key_envelope(key_resource(description="d" * 200, tags=["t" * 30] * 30))).encode()
    assert len(body) > 1024
    head = _req(kp, "POST", "/api/v2/keys", b"", extra=b"Expect: 100-continue\r\n")
    head = head.replace(b"Content-Length: 0", f"Content-Length: {len(body)}".encode())
    host, port = kp.server.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head)
        s.settimeout(3)
        first = s.recv(4096)
        assert first.startswith(b"HTTP/1.1 100"), f"no 100 Continue within 3 s: {first[:80]!r}"
        s.sendall(body)
        s.settimeout(10)
        resp = b""
        while b"\r\n\r\n" not in resp:
            chunk = s.recv(65536)
            if not chunk:
                break
            resp += chunk
        if resp.startswith(b"\r\n") or resp.startswith(b"HTTP/1.1 100"):
            resp = resp.split(b"\r\n\r\n", 1)[1] if resp.startswith(b"HTTP/1.1 100") else resp.lstrip(b"\r\n")
        assert resp.startswith(b"HTTP/1.1 201"), resp[:200]


def test_head_on_get_routes(kp):
    k = kp.root_key()
    for path in (f"/api/v2/keys/{k['id']}", "/api/v2/key_rings", f"/api/v2/keys/{k['id']}/metadata"):
        r = kp.head(path)
        assert r.status_code in (200, 404, 405), describe(r)
        assert r.content == b""


def test_expect_100_continue_too_large_gets_413_first(kp):
    import socket
    head = _req(kp, "POST", "/api/v2/keys", b"", extra=b"Expect: 100-continue\r\n")
    head = head.replace(b"Content-Length: 0", f"Content-Length: {2 * 1024 * 1024}".encode())
    host, port = kp.server.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head)
        s.settimeout(5)
        first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 413"), f"expected a 413 before any body is sent: {first[:80]!r}"


def test_chunked_request_bodies(kp):
    body = json.dumps(key_envelope(key_resource())).encode()

    def gen():
        for i in range(0, len(body), 7):
            yield body[i:i + 7]
    r = kp.session.post(kp.server.url + "/api/v2/keys", data=gen(), timeout=30,
                        headers={"Authorization": "Bearer " + kp.token, "Bluemix-Instance": kp.server.instance_id,
                                 "Content-Type": "application/json"})
    check_status(r, 201)
    kid = r.json()["resources"][0]["id"]
    wb = json.dumps({"plaintext": b64(b"chunked")}).encode()
    r = kp.session.post(kp.server.url + f"/api/v2/keys/{kid}/actions/wrap", data=iter([wb[:5], wb[5:]]), timeout=30,
                        headers={"Authorization": "Bearer " + kp.token, "Bluemix-Instance": kp.server.instance_id})
    check_status(r, 200)


def test_many_idle_connections_do_not_block_service(kp):
    import socket
    host, port = kp.server.url.split("//")[1].split(":")
    socks = []
    try:
        for _ in range(300):
            s = socket.create_connection((host, int(port)), timeout=5)
            s.sendall(b"GET /api/v2/keys HTTP/1.1\r\nHost: x\r\n")  # never finished
            socks.append(s)
        r = kp.get("/api/v2/keys", timeout=10)
        check_status(r, 200)
    finally:
        for s in socks:
            s.close()
    assert kp.server.alive()
