"""Helpers for the Keyhold API suite: start servers, talk Key Protect v2 over real HTTP.

Everything here follows /work/shared/keyprotect-api.md (the "spec"); section numbers in
comments refer to it.
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit

import requests

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / "target" / "debug" / "keyhold"

FAST_RULES = ["--rotate-min-interval", "0", "--action-cooldown", "0", "--purge-delay", "0"]

KEY_TYPE = "application/vnd.ibm.kms.key+json"
POLICY_TYPE = "application/vnd.ibm.kms.policy+json"
ERROR_TYPE = "application/vnd.ibm.kms.error+json"
REG_INPUT_TYPE = "application/vnd.ibm.kms.registration_input+json"
APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
JSON_CT = re.compile(r"^application/json(\s*;.*)?$", re.I)

_NO = object()  # "no body at all"


def keyhold_bin() -> str:
    return os.environ.get("KEYHOLD_BIN", str(DEFAULT_BIN))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def uniq(prefix: str = "k") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def b64url_decode(seg: str) -> bytes:
    return base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def describe(resp: requests.Response, limit: int = 600) -> str:
    """One readable line pair: the request and the response (for assertion messages)."""
    req = resp.request
    body = req.body
    if isinstance(body, bytes):
        body = body[:limit].decode("utf-8", "replace")
    elif isinstance(body, str):
        body = body[:limit]
    hdrs = {k: v for k, v in req.headers.items()
            if k.lower() in ("content-type", "prefer", "x-kms-key-ring", "bluemix-instance")}
    return (f"\n  REQUEST : {req.method} {req.url} {hdrs} body={body!r}"
            f"\n  RESPONSE: {resp.status_code} {resp.headers.get('content-type')} {resp.text[:limit]!r}")


def check_status(resp: requests.Response, *expected: int) -> requests.Response:
    assert resp.status_code in expected, f"expected {expected}, got {resp.status_code}{describe(resp)}"
    return resp


def assert_kp_error(resp: requests.Response, status, code=None, reasons_optional=False):
    """Assert the §7.1 error envelope with the given status (int or tuple) and reason code
    (str, tuple of acceptable codes, or None = any)."""
    statuses = status if isinstance(status, tuple) else (status,)
    assert resp.status_code in statuses, f"expected {statuses}, got {resp.status_code}{describe(resp)}"
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON{describe(resp)}")
    ctx = describe(resp)
    assert isinstance(body, dict), ctx
    assert set(body) == {"metadata", "resources"}, f"unexpected top-level members{ctx}"
    assert body["metadata"].get("collectionType") == ERROR_TYPE, ctx
    assert body["metadata"].get("collectionTotal") == 1, ctx
    assert isinstance(body["resources"], list) and len(body["resources"]) == 1, ctx
    res = body["resources"][0]
    assert isinstance(res.get("errorMsg"), str) and res["errorMsg"], ctx
    reasons = res.get("reasons")
    if reasons is None and reasons_optional:
        if code is not None:
            codes = code if isinstance(code, tuple) else (code,)
            # 401 without reasons: errorMsg must at least say so (§2.1).
            assert any(c in res["errorMsg"] for c in codes) or res["errorMsg"].startswith("Unauthorized"), ctx
        return res
    assert isinstance(reasons, list) and reasons, f"missing reasons{ctx}"
    r0 = reasons[0]
    for f in ("code", "message", "status", "moreInfo"):
        assert f in r0, f"reason lacks {f!r}{ctx}"
    assert isinstance(r0["message"], str) and r0["message"], ctx
    assert isinstance(r0["moreInfo"], str) and r0["moreInfo"], ctx
    assert r0["status"] == resp.status_code, f"reason status != HTTP status{ctx}"
    if code is not None:
        codes = code if isinstance(code, tuple) else (code,)
        assert r0["code"] in codes, f"expected reason {codes}, got {r0['code']}{ctx}"
    # §7.1: "<HTTP reason phrase>: <Thing> could not be <verb>: Please see `reasons` for more details (<CODE>)"
    phrase = HTTP_PHRASES.get(resp.status_code)
    if phrase:
        assert res["errorMsg"].startswith(phrase + ":"), f"errorMsg should start with {phrase!r}{ctx}"
    if resp.status_code != 401:  # §2.1: the 401 errorMsg is the fixed "Unauthorized: The user does not have ..."
        assert res["errorMsg"].rstrip().endswith(f"({r0['code']})"), f"errorMsg should end with ({r0['code']}){ctx}"
    return res


HTTP_PHRASES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
                410: "Gone", 413: "Payload Too Large", 422: "Unprocessable Entity"}


def assert_4xx(resp: requests.Response):
    assert 400 <= resp.status_code < 500, f"expected a 4xx{describe(resp)}"
    if resp.status_code not in (405, 413) and resp.request.method != "HEAD":
        assert_kp_error(resp, resp.status_code, reasons_optional=resp.status_code == 401)


def key_envelope(*resources, total=None, ctype=KEY_TYPE):
    return {"metadata": {"collectionType": ctype,
                         "collectionTotal": len(resources) if total is None else total},
            "resources": list(resources)}


def key_resource(name=None, extractable=False, **fields):
    r = {"type": KEY_TYPE, "name": name or uniq("key"), "extractable": extractable}
    r.update(fields)
    return r


def policy_envelope(*resources, total=None):
    return {"metadata": {"collectionType": POLICY_TYPE,
                         "collectionTotal": len(resources) if total is None else total},
            "resources": list(resources)}


def crn_path(crn: str) -> str:
    return quote(crn, safe="")


class Server:
    """A running `keyhold serve --dev` process."""

    def __init__(self, data_dir: Path, args: list[str], env=None, log_path: Path | None = None):
        self.data_dir = Path(data_dir)
        self.args = args
        self.log_path = log_path or Path(str(self.data_dir) + ".stderr.log")
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL, env=env)
        self.first_line = None
        self.extra_stdout: list[bytes] = []
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        self._tokens: dict[str, str] = {}
        self.info: dict = {}

    def _read_stdout(self):
        for line in self.proc.stdout:
            if self.first_line is None:
                self.first_line = line
                self._ready.set()
            else:
                self.extra_stdout.append(line)
        self._ready.set()

    def wait_ready(self, timeout=90):
        if not self._ready.wait(timeout) or self.first_line is None:
            self.kill()
            raise RuntimeError(f"keyhold did not print its ready line; args={self.args}\n"
                               f"stderr tail:\n{self.stderr_tail()}")
        self.info = json.loads(self.first_line)
        return self

    def stderr_tail(self, n=4000):
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    # connection info -------------------------------------------------------------------
    @staticmethod
    def _loopback(url):
        return url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://127.0.0.1:")

    @property
    def url(self):
        return self._loopback(self.info["url"]).rstrip("/")

    @property
    def iam_url(self):
        return self._loopback(self.info.get("iam_url", self.info["url"])).rstrip("/")

    @property
    def apikey(self):
        return self.info["apikey"]

    @property
    def second_apikey(self):
        return self.info["second_apikey"]

    @property
    def service_apikey(self):
        return self.info["service_apikey"]

    @property
    def instance_id(self):
        return self.info["instance_id"]

    verify: object = True

    def token(self, apikey=None, fresh=False) -> str:
        apikey = apikey or self.apikey
        if fresh or apikey not in self._tokens:
            r = requests.post(self.iam_url + "/identity/token",
                              data={"grant_type": APIKEY_GRANT, "apikey": apikey},
                              headers={"Accept": "application/json"}, timeout=30, verify=self.verify)
            assert r.status_code == 200, f"token request failed{describe(r)}"
            self._tokens[apikey] = r.json()["access_token"]
        return self._tokens[apikey]

    def client(self, apikey=None) -> "Client":
        return Client(self, apikey or self.apikey)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        try:
            self._log.close()
        except Exception:
            pass

    def kill(self):
        self.stop(signal.SIGKILL)


def start_server(data_dir: Path | None = None, fast=True, extra=(), listen="127.0.0.1:0",
                 wait=True, base_tmp: Path | None = None, env: dict | None = None) -> Server:
    if data_dir is None:
        data_dir = Path(tempfile.mkdtemp(prefix="keyhold-api-", dir=base_tmp))
    binary = keyhold_bin()
    if not (os.path.exists(binary) or shutil.which(binary)):
        raise RuntimeError(f"keyhold binary not found at {binary} (build it, or set KEYHOLD_BIN)")
    args = [binary, "serve", "--dev", "--listen", listen, "--data-dir", str(data_dir)]
    if fast:
        args += FAST_RULES
    args += list(extra)
    full_env = dict(os.environ)
    full_env.setdefault("RUST_BACKTRACE", "1")
    full_env.update(env or {})
    srv = Server(data_dir, args, env=full_env)
    if wait:
        srv.wait_ready()
    return srv


class Client:
    """An authenticated Key Protect client for one principal on one server."""

    def __init__(self, server: Server, apikey: str):
        self.server = server
        self.apikey = apikey
        self.session = requests.Session()
        self.session.verify = server.verify

    @property
    def token(self):
        return self.server.token(self.apikey)

    def req(self, method, path, body=_NO, *, raw=None, headers=None, params=None, auth=True,
            instance=True, timeout=60):
        h = {}
        if auth:
            h["Authorization"] = "Bearer " + self.token
        if instance:
            h["Bluemix-Instance"] = self.server.instance_id
        data = None
        if body is not _NO:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        elif raw is not None:
            data = raw
        for k, v in (headers or {}).items():
            # case-insensitive override; None removes
            for existing in [x for x in h if x.lower() == k.lower()]:
                del h[existing]
            if v is not None:
                h[k] = v
        url = path if path.startswith("http") else self.server.url + path
        # verify per request: a session-level verify is overridden by REQUESTS_CA_BUNDLE
        resp = self.session.request(method, url, data=data, headers=h, params=params,
                                    timeout=timeout, verify=self.server.verify)
        check_invariants(resp)
        return resp

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def head(self, path, **kw):
        return self.req("HEAD", path, **kw)

    def post(self, path, body=_NO, **kw):
        return self.req("POST", path, body, **kw)

    def put(self, path, body=_NO, **kw):
        return self.req("PUT", path, body, **kw)

    def patch(self, path, body=_NO, **kw):
        return self.req("PATCH", path, body, **kw)

    def delete(self, path, **kw):
        return self.req("DELETE", path, **kw)

    # keys ------------------------------------------------------------------------------
    def create_key_resp(self, name=None, extractable=False, ring=None, prefer=None,
                        path="/api/v2/keys", **fields):
        headers = {}
        if ring:
            headers["X-Kms-Key-Ring"] = ring
        if prefer:
            headers["Prefer"] = prefer
        return self.post(path, key_envelope(key_resource(name, extractable, **fields)),
                         headers=headers)

    def create_key(self, name=None, extractable=False, **kw) -> dict:
        r = self.create_key_resp(name, extractable, **kw)
        check_status(r, 201)
        return r.json()["resources"][0]

    def root_key(self, **kw):
        return self.create_key(extractable=False, **kw)

    def standard_key(self, **kw):
        return self.create_key(extractable=True, prefer="return=representation", **kw)

    def get_key(self, kid) -> dict:
        r = self.get(f"/api/v2/keys/{kid}")
        check_status(r, 200)
        return r.json()["resources"][0]

    def metadata(self, kid) -> dict:
        r = self.get(f"/api/v2/keys/{kid}/metadata")
        check_status(r, 200)
        return r.json()["resources"][0]

    def action(self, kid, name, body=_NO, form="path", **kw):
        if form == "path":
            return self.post(f"/api/v2/keys/{kid}/actions/{name}", body, **kw)
        return self.post(f"/api/v2/keys/{kid}", body, params={"action": name}, **kw)

    def wrap_resp(self, kid, plaintext: bytes | None = None, aad=None, form="path"):
        body = {}
        if plaintext is not None:
            body["plaintext"] = b64(plaintext)
        if aad is not None:
            body["aad"] = aad
        return self.action(kid, "wrap", body, form=form)

    def wrap(self, kid, plaintext=None, aad=None, form="path") -> dict:
        r = self.wrap_resp(kid, plaintext, aad, form)
        check_status(r, 200)
        return r.json()

    def unwrap_resp(self, kid, ciphertext, aad=None, form="path"):
        body = {"ciphertext": ciphertext}
        if aad is not None:
            body["aad"] = aad
        return self.action(kid, "unwrap", body, form=form)

    def unwrap(self, kid, ciphertext, aad=None, form="path") -> dict:
        r = self.unwrap_resp(kid, ciphertext, aad, form)
        check_status(r, 200)
        return r.json()

    def rotate(self, kid, body=_NO, expect=(204,), **kw):
        r = self.action(kid, "rotate", body, **kw)
        check_status(r, *expect)
        return r

    def delete_key(self, kid, force=False, prefer=None, expect=(200, 204)):
        params = {"force": "true"} if force else None
        headers = {"Prefer": prefer} if prefer else None
        r = self.delete(f"/api/v2/keys/{kid}", params=params, headers=headers)
        check_status(r, *expect)
        return r

    def list_keys(self, params=None, ring=None, expect=200) -> list:
        headers = {"X-Kms-Key-Ring": ring} if ring else None
        r = self.get("/api/v2/keys", params=params, headers=headers)
        check_status(r, expect)
        return r.json().get("resources", [])

    def create_ring(self, ring=None) -> str:
        ring = ring or uniq("ring")
        check_status(self.post(f"/api/v2/key_rings/{ring}"), 201)
        return ring

    def versions(self, kid, params=None) -> list:
        r = self.get(f"/api/v2/keys/{kid}/versions", params=params)
        check_status(r, 200)
        return r.json()["resources"]


def secure_import_fields(token: dict, material: bytes, nonce: bytes | None = None, iv: bytes | None = None) -> dict:
    """§6.2 secure import: RSA-OAEP-SHA256(material) with the token's PEM public key, and
    encryptedNonce = AES-GCM(key=material, iv, plaintext=token nonce) with the tag appended."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    pub = serialization.load_pem_public_key(unb64(token["payload"]))
    iv = iv or os.urandom(12)
    nonce = unb64(token["nonce"]) if nonce is None else nonce
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    return {"payload": b64(pub.encrypt(material, oaep)),
            "encryptedNonce": b64(AESGCM(material).encrypt(iv, nonce, None)),
            "iv": b64(iv), "encryptionAlgorithm": "RSAES_OAEP_SHA_256"}


def check_invariants(resp: requests.Response):
    """Checked on every response the suite receives:
    - never a 5xx (DESIGN §6: nothing a client sends may produce one);
    - never 200 with an empty body (§4.2: the Go client unmarshals every 200);
    - a JSON Content-Type means a parseable JSON body."""
    assert resp.status_code < 500, f"5xx answer{describe(resp)}"
    if resp.request.method != "HEAD":
        if resp.status_code == 200:
            assert resp.content, f"200 with an empty body (§4.2: use 204){describe(resp)}"
        ct = resp.headers.get("content-type", "").split(";")[0].strip().lower()
        if resp.content and (ct == "application/json" or ct.endswith("+json")):
            try:
                json.loads(resp.content)
            except ValueError:
                raise AssertionError(f"JSON Content-Type but no JSON body{describe(resp)}")


def wait_for(pred, timeout=10.0, interval=0.25):
    end = time.time() + timeout
    while time.time() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    return pred()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_port(url):
    u = urlsplit(url)
    return u.hostname, u.port
