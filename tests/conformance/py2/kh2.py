"""Helpers for the keyprotect 2.3.1 (redstone-based keyprotect.Client) conformance suite.

Starts a real `keyhold serve --dev` process and builds old-style clients:
    tm = keyprotect.bxauth.TokenManager(api_key=..., iam_endpoint=<iam_url>)   # POST /oidc/token
    keyprotect.Client(credentials=tm, region="local", service_instance_id=..., endpoint_url=<url>)
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import urllib.parse
import uuid
from pathlib import Path

import keyprotect
import pytest
import requests
from keyprotect import bxauth

REPO_ROOT = Path(__file__).resolve().parents[3]

FAST_FLAGS = ["--rotate-min-interval", "0", "--action-cooldown", "0", "--purge-delay", "0"]


def keyhold_bin() -> Path:
    p = Path(os.environ.get("KEYHOLD_BIN", "target/debug/keyhold"))
    if not p.is_absolute():
        p = REPO_ROOT / p
    return p


class Server:
    """One `keyhold serve --dev` process on an ephemeral port."""

    def __init__(self, extra_flags=None, ready_timeout=60.0):
        self.extra_flags = list(extra_flags or [])
        self.ready_timeout = ready_timeout
        self.proc = None
        self.info = None
        self.data_dir = None
        self.stderr_path = None

    def start(self) -> "Server":
        binary = keyhold_bin()
        if not binary.exists():
            pytest.fail(f"keyhold binary not found at {binary} (set KEYHOLD_BIN or run cargo build)")
        self.data_dir = tempfile.mkdtemp(prefix="keyhold-conf-py2-")
        self.stderr_path = os.path.abspath(self.data_dir.rstrip("/")) + ".stderr.log"
        self._stderr = open(self.stderr_path, "wb")
        cmd = [str(binary), "serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir", self.data_dir] + self.extra_flags
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._stderr, stdin=subprocess.DEVNULL)
        lines: "queue.Queue[bytes]" = queue.Queue()

        def pump():
            # Keep draining stdout so the server never blocks on a full pipe.
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(b"")

        threading.Thread(target=pump, daemon=True).start()
        try:
            first = lines.get(timeout=self.ready_timeout)
        except queue.Empty:
            self.stop()
            pytest.fail(f"keyhold did not print its ready line within {self.ready_timeout}s; stderr: {self.stderr_tail()}")
        if not first:
            rc = self.proc.wait(timeout=5)
            pytest.fail(f"keyhold exited ({rc}) before printing its ready line; cmd={cmd}; stderr: {self.stderr_tail()}")
        self.info = json.loads(first.decode())
        for k in ("url", "iam_url", "apikey", "instance_id", "second_apikey", "service_apikey"):
            assert k in self.info, f"ready line lacks {k!r}: {self.info}"
        dev_json = Path(self.data_dir) / "dev.json"
        assert dev_json.exists(), "dev.json not written"
        assert json.loads(dev_json.read_text()) == self.info, "dev.json differs from the ready line"
        assert (dev_json.stat().st_mode & 0o777) == 0o600, oct(dev_json.stat().st_mode)
        return self

    def stderr_tail(self, n=4000) -> str:
        try:
            self._stderr.flush()
            return Path(self.stderr_path).read_bytes()[-n:].decode(errors="replace")
        except Exception:  # pragma: no cover
            return "<no stderr>"

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_stderr", None):
            self._stderr.close()
        if self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.stderr_path and os.path.exists(self.stderr_path):
            os.unlink(self.stderr_path)

    # -- conveniences -----------------------------------------------------
    @property
    def url(self):
        return self.info["url"]

    @property
    def iam_url(self):
        return self.info["iam_url"]

    @property
    def instance(self):
        return self.info["instance_id"]

    def token_manager(self, apikey=None, use_refresh_token=False):
        return bxauth.TokenManager(api_key=apikey or self.info["apikey"], iam_endpoint=self.iam_url,
                                   use_refresh_token=use_refresh_token)

    def client(self, apikey=None, tm=None):
        return keyprotect.Client(
            credentials=tm or self.token_manager(apikey),
            region="local",
            service_instance_id=self.instance,
            endpoint_url=self.url,
        )

    def token(self, apikey=None) -> str:
        r = requests.post(
            self.iam_url + "/identity/token",
            data={
                "grant_type": "urn:ibm:params:oauth:grant-type:apikey",
                "apikey": apikey or self.info["apikey"],
                "response_type": "cloud_iam",
            },
            headers={"Accept": "application/json"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    def raw(self, method, path, apikey=None, headers=None, **kw) -> requests.Response:
        """Plain HTTP call (for service-to-service endpoints the SDK lacks)."""
        h = {
            "Authorization": "Bearer " + self.token(apikey),
            "Bluemix-Instance": self.instance,
            "Accept": "application/json",
        }
        h.update(headers or {})
        return requests.request(method, self.url + path, headers=h, timeout=30, **kw)

    def register(self, key_id, crn, prevent=False, description="conformance", metadata="meta"):
        """Seed a registration via the service-to-service POST (service_apikey)."""
        body = {
            "metadata": {"collectionType": "application/vnd.ibm.kms.registration_input+json", "collectionTotal": 1},
            "resources": [
                {"preventKeyDeletion": prevent, "description": description, "registrationMetadata": metadata}
            ],
        }
        r = self.raw(
            "POST",
            f"/api/v2/keys/{key_id}/registrations/{urllib.parse.quote(crn, safe='')}",
            apikey=self.info["service_apikey"],
            json=body,
        )
        assert r.status_code in (200, 201), f"seeding registration failed: {r.status_code} {r.text}"
        return r


# -- helpers -----------------------------------------------------------------


def _kpe():
    import redstone.client
    return redstone.client.KeyProtect.KeyProtectError


def uniq(prefix="k"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def unb64(s: str) -> bytes:
    return base64.b64decode(s)


def describe(err) -> str:
    resp = err.http_error.response
    req = resp.request
    return f"{req.method} {req.url} -> {resp.status_code} {resp.headers.get('Content-Type')} {resp.text[:600]}"


def expect_error(fn, status, code=None):
    """fn() must raise KeyProtectError for an HTTP error with this status (and reason code)."""
    try:
        res = fn()
    except _kpe() as e:
        resp = e.http_error.response
        assert resp.status_code == status, f"expected {status} {code}, got: {describe(e)}"
        doc = resp.json()
        r0 = doc["resources"][0]
        # The old client surfaces resources[0].errorMsg as the exception text.
        assert str(e) == r0["errorMsg"], (str(e), r0)
        if code is not None:
            assert (r0.get("reasons") or [{}])[0].get("code") == code, f"expected reason {code}, got: {describe(e)}"
            assert code in r0["errorMsg"], r0["errorMsg"]
        return e
    pytest.fail(f"expected HTTP {status} {code}, call succeeded: {res!r}")


def secure_import_fields(token_json: dict, key_material: bytes) -> dict:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    pub = serialization.load_pem_public_key(base64.b64decode(token_json["payload"]))
    payload = pub.encrypt(key_material, padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()),
                                                     algorithm=hashes.SHA256(), label=None))
    iv = os.urandom(12)
    enc_nonce = AESGCM(key_material).encrypt(iv, base64.b64decode(token_json["nonce"]), None)
    return {"payload": b64(payload), "encryptedNonce": b64(enc_nonce), "iv": b64(iv),
            "encryptionAlgorithm": "RSAES_OAEP_SHA_256"}
