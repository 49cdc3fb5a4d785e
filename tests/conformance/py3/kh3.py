"""Helpers for the keyprotect 3.0.1 (IbmKeyProtectApiV2) conformance suite.

Starts a real `keyhold serve --dev` process, builds clients, and wraps the
small amount of plumbing every test needs (JSON results, error assertions,
service-to-service registration seeding, client-side secure import crypto).
"""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest
import requests
from ibm_cloud_sdk_core import ApiException
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from keyprotect.ibm_key_protect_api_v2 import IbmKeyProtectApiV2

REPO_ROOT = Path(__file__).resolve().parents[3]

# Flags that switch every timing rule off (the default test server).
FAST_FLAGS = ["--rotate-min-interval", "0", "--action-cooldown", "0", "--purge-delay", "0"]


def keyhold_bin() -> Path:
    p = Path(os.environ.get("KEYHOLD_BIN", "target/debug/keyhold"))
    if not p.is_absolute():
        p = REPO_ROOT / p
    return p


class Server:
    """One `keyhold serve --dev` process on an ephemeral port."""

    def __init__(self, extra_flags=None, ready_timeout=60.0, data_dir=None, keep_data=False):
        self.extra_flags = list(extra_flags or [])
        self.ready_timeout = ready_timeout
        self.proc = None
        self.info = None
        self.data_dir = data_dir
        self.keep_data = keep_data
        self.stderr_path = None

    def start(self) -> "Server":
        binary = keyhold_bin()
        if not binary.exists():
            pytest.fail(f"keyhold binary not found at {binary} (set KEYHOLD_BIN or run cargo build)")
        if self.data_dir is None:
            self.data_dir = tempfile.mkdtemp(prefix="keyhold-conf-py3-")
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
        if self.data_dir and not self.keep_data:
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

    def client(self, apikey=None) -> IbmKeyProtectApiV2:
        kp = IbmKeyProtectApiV2(authenticator=IAMAuthenticator(apikey=apikey or self.info["apikey"], url=self.iam_url))
        kp.set_service_url(self.url)
        return kp

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


# -- result / error helpers ------------------------------------------------

def J(detailed):
    """The JSON body of a DetailedResponse, whatever the response Content-Type."""
    r = detailed.get_result()
    if isinstance(r, requests.Response):
        return r.json()
    return r


def body(obj) -> io.BytesIO:
    return io.BytesIO(json.dumps(obj).encode())


def key_body(name, extractable=False, **extra):
    res = {"type": "application/vnd.ibm.kms.key+json", "name": name, "extractable": extractable}
    res.update(extra)
    return body({"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1}, "resources": [res]})


def uniq(prefix="k"):
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def unb64(s: str) -> bytes:
    return base64.b64decode(s)


def error_of(exc: ApiException):
    resp = exc.http_response
    try:
        doc = resp.json()
    except Exception:
        return None, None, resp.text if resp is not None else None
    try:
        r0 = doc["resources"][0]
    except Exception:
        return None, None, doc
    reasons = r0.get("reasons") or []
    return r0.get("errorMsg"), (reasons[0].get("code") if reasons else None), doc


def describe(exc: ApiException) -> str:
    resp = exc.http_response
    if resp is None:
        return str(exc)
    req = resp.request
    return f"{req.method} {req.url} -> {resp.status_code} {resp.headers.get('Content-Type')} {resp.text[:600]}"


def expect_error(fn, status, code=None):
    """Call fn(); it must raise ApiException with this status and reason code."""
    try:
        res = fn()
    except ApiException as e:
        assert e.code == status, f"expected {status} {code}, got: {describe(e)}"
        msg, got_code, doc = error_of(e)
        if code is not None:
            assert got_code == code, f"expected reason {code}, got: {describe(e)}"
            assert msg and isinstance(msg, str), f"errorMsg missing: {describe(e)}"
            assert doc["metadata"]["collectionType"] == "application/vnd.ibm.kms.error+json", describe(e)
        return e
    pytest.fail(f"expected HTTP {status} {code}, call succeeded with {res.get_status_code()}: {res.get_result()}")


# -- secure import crypto --------------------------------------------------

def secure_import_fields(token_json: dict, key_material: bytes) -> dict:
    """Encrypt key material for a secure import, as a client must (KPDOCS secure-import)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    pem = base64.b64decode(token_json["payload"])
    pub = serialization.load_pem_public_key(pem)
    payload = pub.encrypt(
        key_material,
        padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    nonce = base64.b64decode(token_json["nonce"])
    iv = os.urandom(12)
    enc_nonce = AESGCM(key_material).encrypt(iv, nonce, None)  # ciphertext || 16-byte tag
    return {
        "payload": b64(payload),
        "encryptedNonce": b64(enc_nonce),
        "iv": b64(iv),
        "encryptionAlgorithm": "RSAES_OAEP_SHA_256",
    }


def wait_until(pred, timeout=5.0, step=0.1):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


# -- common SDK call shortcuts ---------------------------------------------

def create(kp, inst, name=None, extractable=False, prefer=None, ring=None, **extra) -> dict:
    """create_key via the SDK; returns resources[0] and checks the 201 envelope."""
    res = kp.create_key(
        bluemix_instance=inst,
        key_create_body=key_body(name or uniq(), extractable=extractable, **extra),
        prefer=prefer,
        x_kms_key_ring=ring,
    )
    assert res.get_status_code() == 201, res.get_status_code()
    doc = J(res)
    assert doc["metadata"]["collectionType"] == "application/vnd.ibm.kms.key+json", doc
    assert doc["metadata"]["collectionTotal"] == 1, doc
    assert len(doc["resources"]) == 1, doc
    return doc["resources"][0]


def get(kp, inst, key_id) -> dict:
    res = kp.get_key(id=key_id, bluemix_instance=inst)
    assert res.get_status_code() == 200
    return J(res)["resources"][0]


def meta(kp, inst, key_id) -> dict:
    res = kp.get_key_metadata(id=key_id, bluemix_instance=inst)
    assert res.get_status_code() == 200
    return J(res)["resources"][0]


def wrap(kp, inst, key_id, plaintext=None, aad=None) -> dict:
    b = {}
    if plaintext is not None:
        b["plaintext"] = b64(plaintext)
    if aad is not None:
        b["aad"] = aad
    res = kp.wrap_key(id=key_id, bluemix_instance=inst, key_action_wrap_body=body(b))
    assert res.get_status_code() == 200, res.get_status_code()
    return J(res)


def unwrap(kp, inst, key_id, ciphertext, aad=None) -> dict:
    b = {"ciphertext": ciphertext}
    if aad is not None:
        b["aad"] = aad
    res = kp.unwrap_key(id=key_id, bluemix_instance=inst, key_action_unwrap_body=body(b))
    assert res.get_status_code() == 200, res.get_status_code()
    return J(res)


def versions(kp, inst, key_id, **kw) -> dict:
    res = kp.get_key_versions(id=key_id, bluemix_instance=inst, **kw)
    assert res.get_status_code() == 200
    return J(res)
