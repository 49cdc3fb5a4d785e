"""Helpers for the Keyhold cluster suite: several `keyhold serve --dev` processes over one
PostgreSQL, spoken to over real HTTP (Key Protect v2, /work/shared/keyprotect-api.md).

Self-contained on purpose: this suite does not import tests/api.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parents[2]
DEFAULT_BIN = REPO / "target" / "debug" / "keyhold"

FAST_RULES = ["--rotate-min-interval", "0", "--action-cooldown", "0", "--purge-delay", "0"]
KEY_TYPE = "application/vnd.ibm.kms.key+json"
POLICY_TYPE = "application/vnd.ibm.kms.policy+json"
ERROR_TYPE = "application/vnd.ibm.kms.error+json"
APIKEY_GRANT = "urn:ibm:params:oauth:grant-type:apikey"

# The documented cross-node bound: a state change on one node is enforced on every
# other node within this many seconds.
CROSS_NODE_BOUND = 1.0

_NO = object()


def keyhold_bin() -> str:
    return os.environ.get("KEYHOLD_BIN", str(DEFAULT_BIN))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def uniq(prefix="k") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def describe(resp: requests.Response, limit=600) -> str:
    """The request and the response, for assertion messages (no tokens)."""
    req = resp.request
    body = req.body
    if isinstance(body, bytes):
        body = body[:limit].decode("utf-8", "replace")
    elif isinstance(body, str):
        body = body[:limit]
    hdrs = {k: v for k, v in req.headers.items()
            if k.lower() in ("content-type", "prefer", "bluemix-instance")}
    return (f"\n  REQUEST : {req.method} {req.url} {hdrs} body={body!r}"
            f"\n  RESPONSE: {resp.status_code} {resp.headers.get('content-type')} {resp.text[:limit]!r}")


def check_status(resp: requests.Response, *expected: int) -> requests.Response:
    assert resp.status_code in expected, f"expected {expected}, got {resp.status_code}{describe(resp)}"
    return resp


def reason_code(resp: requests.Response):
    """resources[0].reasons[0].code of a Key Protect error envelope, or None."""
    try:
        body = resp.json()
        return body["resources"][0]["reasons"][0]["code"]
    except Exception:
        return None


def assert_kp_error(resp: requests.Response, status, code=None):
    statuses = status if isinstance(status, tuple) else (status,)
    ctx = describe(resp)
    assert resp.status_code in statuses, f"expected {statuses}, got {resp.status_code}{ctx}"
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body is not JSON{ctx}")
    assert isinstance(body, dict) and body.get("metadata", {}).get("collectionType") == ERROR_TYPE, \
        f"not a Key Protect error envelope{ctx}"
    res = body["resources"][0]
    assert isinstance(res.get("errorMsg"), str) and res["errorMsg"], ctx
    reasons = res.get("reasons")
    assert isinstance(reasons, list) and reasons, f"missing reasons{ctx}"
    if code is not None:
        codes = code if isinstance(code, tuple) else (code,)
        assert reasons[0].get("code") in codes, f"expected reason {codes}, got {reasons[0].get('code')}{ctx}"
    return res


def key_envelope(*resources):
    return {"metadata": {"collectionType": KEY_TYPE, "collectionTotal": len(resources)},
            "resources": list(resources)}


def key_resource(name=None, extractable=False, **fields):
    r = {"type": KEY_TYPE, "name": name or uniq("key"), "extractable": extractable}
    r.update(fields)
    return r


def policy_envelope(*resources):
    return {"metadata": {"collectionType": POLICY_TYPE, "collectionTotal": len(resources)},
            "resources": list(resources)}


# --- server processes ---------------------------------------------------------------------

class Node:
    """One running `keyhold serve --dev` process."""

    def __init__(self, name: str, data_dir: Path, args: list[str], env: dict, log_path: Path):
        self.name = name
        self.data_dir = Path(data_dir)
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self._log,
                                     stdin=subprocess.DEVNULL, env=env)
        self.first_line = None
        self._ready = threading.Event()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self.info: dict = {}
        self.stopped_by_suite = False
        self._tokens: dict[str, str] = {}
        self._tok_lock = threading.Lock()

    def _read_stdout(self):
        for line in self.proc.stdout:
            if self.first_line is None:
                self.first_line = line
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout=90):
        if not self._ready.wait(timeout) or self.first_line is None:
            self.stop(signal.SIGKILL)
            raise RuntimeError(f"{self.name}: keyhold did not print its ready line within {timeout}s; "
                               f"args={self.args}\nexit={self.proc.poll()}\nstderr (without backtrace frames):\n{self.stderr_summary()}")
        try:
            self.info = json.loads(self.first_line)
        except ValueError:
            raise RuntimeError(f"{self.name}: ready line is not JSON: {self.first_line!r}")
        for f in ("url", "iam_url", "apikey", "instance_id", "second_apikey", "service_apikey"):
            assert f in self.info, f"{self.name}: ready line lacks {f!r}: {self.info}"
        return self

    def stderr_tail(self, n=4000):
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_summary(self, n=3000):
        """The stderr without backtrace frames and per-request log lines: what went wrong."""
        import re
        try:
            text = self.log_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""
        frame = re.compile(r"^\s+(\d+: |at )")
        keep = [line for line in text.splitlines()
                if line.strip() and not frame.match(line) and '"message":"request"' not in line
                and "already exists, skipping" not in line]
        return "\n".join(keep)[-n:]

    @property
    def url(self):
        return self.info["url"].rstrip("/")

    @property
    def iam_url(self):
        return self.info.get("iam_url", self.info["url"]).rstrip("/")

    @property
    def instance_id(self):
        return self.info["instance_id"]

    def token(self, apikey, fresh=False) -> str:
        with self._tok_lock:
            if fresh or apikey not in self._tokens:
                r = requests.post(self.iam_url + "/identity/token",
                                  data={"grant_type": APIKEY_GRANT, "apikey": apikey},
                                  headers={"Accept": "application/json"}, timeout=30)
                assert r.status_code == 200, f"{self.name}: token request failed{describe(r)}"
                self._tokens[apikey] = r.json()["access_token"]
            return self._tokens[apikey]

    def client(self, apikey=None, token=None) -> "Client":
        return Client(self, apikey or self.info["apikey"], token=token)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        self.stopped_by_suite = True
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


def start_node(name: str, data_dir: Path, store_url: str | None, fast=True, extra=(), wait=True) -> Node:
    binary = keyhold_bin()
    if not (os.path.exists(binary) or shutil.which(binary)):
        raise RuntimeError(f"keyhold binary not found at {binary} (cargo build, or set KEYHOLD_BIN)")
    args = [binary, "serve", "--dev", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir)]
    if store_url:
        args += ["--store", store_url]
    if fast:
        args += FAST_RULES
    args += list(extra)
    env = dict(os.environ)
    env.setdefault("RUST_BACKTRACE", "1")
    env.pop("KEYHOLD_STORE", None)  # the flag decides
    log_path = Path(str(data_dir) + f".{name}.stderr.log")
    node = Node(name, data_dir, args, env, log_path)
    if wait:
        node.wait_ready()
    return node


class Cluster:
    """N nodes started on the same --data-dir and the same PostgreSQL URL (one deployment)."""

    def __init__(self, nodes: list[Node]):
        self.nodes = nodes
        self.info = nodes[0].info

    def __getitem__(self, i) -> Node:
        return self.nodes[i]

    def clients(self, which="apikey"):
        return [n.client(n.info[which]) for n in self.nodes]

    def dead_nodes(self):
        return [n for n in self.nodes if not n.alive()]


# --- HTTP client --------------------------------------------------------------------------

class Client:
    """An authenticated Key Protect client for one principal on one node."""

    def __init__(self, node: Node, apikey: str, token: str | None = None, timeout=30):
        self.node = node
        self.apikey = apikey
        self._token = token
        self.timeout = timeout
        self.session = requests.Session()

    @property
    def name(self):
        return self.node.name

    @property
    def token(self):
        return self._token or self.node.token(self.apikey)

    def req(self, method, path, body=_NO, *, headers=None, params=None, timeout=None):
        h = {"Authorization": "Bearer " + self.token, "Bluemix-Instance": self.node.instance_id}
        data = None
        if body is not _NO:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        return self.session.request(method, self.node.url + path, data=data, headers=h, params=params,
                                    timeout=timeout or self.timeout)

    def get(self, path, **kw):
        return self.req("GET", path, **kw)

    def post(self, path, body=_NO, **kw):
        return self.req("POST", path, body, **kw)

    def put(self, path, body=_NO, **kw):
        return self.req("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.req("DELETE", path, **kw)

    # keys
    def create_key_resp(self, name=None, extractable=False, **kw):
        return self.post("/api/v2/keys", key_envelope(key_resource(name, extractable)), **kw)

    def root_key(self, name=None) -> dict:
        r = check_status(self.create_key_resp(name), 201)
        return r.json()["resources"][0]

    def get_key_resp(self, kid, **kw):
        return self.get(f"/api/v2/keys/{kid}", **kw)

    def action(self, kid, name, body=_NO, **kw):
        return self.post(f"/api/v2/keys/{kid}/actions/{name}", body, **kw)

    def wrap_resp(self, kid, plaintext: bytes | None = None, aad=None, **kw):
        body = {}
        if plaintext is not None:
            body["plaintext"] = b64(plaintext)
        if aad is not None:
            body["aad"] = aad
        return self.action(kid, "wrap", body, **kw)

    def wrap(self, kid, plaintext=None, aad=None) -> dict:
        return check_status(self.wrap_resp(kid, plaintext, aad), 200).json()

    def unwrap_resp(self, kid, ciphertext, aad=None, **kw):
        body = {"ciphertext": ciphertext}
        if aad is not None:
            body["aad"] = aad
        return self.action(kid, "unwrap", body, **kw)

    def unwrap(self, kid, ciphertext, aad=None) -> dict:
        return check_status(self.unwrap_resp(kid, ciphertext, aad), 200).json()

    def delete_key_resp(self, kid, **kw):
        return self.delete(f"/api/v2/keys/{kid}", **kw)

    def versions(self, kid) -> list:
        out, offset = [], 0
        while True:
            r = check_status(self.get(f"/api/v2/keys/{kid}/versions",
                                      params={"limit": "5000", "offset": str(offset)}), 200)
            page = r.json().get("resources", []) or []
            out += page
            if len(page) < 5000:
                return out
            offset += len(page)

    def list_key_ids(self) -> set:
        ids, offset = set(), 0
        while True:
            r = check_status(self.get("/api/v2/keys", params={"limit": "5000", "offset": str(offset)}), 200)
            page = r.json().get("resources", []) or []
            ids |= {k["id"] for k in page}
            if len(page) < 5000:
                return ids
            offset += len(page)

    def put_instance_policy(self, ptype, data, **kw):
        return self.put("/api/v2/instance/policies",
                        policy_envelope({"policy_type": ptype, "policy_data": data}),
                        params={"policy": ptype}, **kw)


# --- timing -------------------------------------------------------------------------------

def poll_until(fn, ok, bound, interval=0.02, settle=0.0):
    """Call fn() until ok(result) is true. Returns (elapsed, result, history) where elapsed
    counts from the call of poll_until; gives up at bound + 2 s (so a late success is still
    measured and reported). history holds (t, status, reason) of every attempt."""
    t0 = time.monotonic()
    history = []
    deadline = t0 + bound + 2.0
    while True:
        res = fn()
        t = time.monotonic() - t0
        history.append((round(t, 3), getattr(res, "status_code", None),
                        reason_code(res) if hasattr(res, "status_code") else None))
        if ok(res):
            return t, res, history
        if time.monotonic() > deadline:
            return None, res, history
        time.sleep(interval)


# --- a TCP proxy that can partition one node from PostgreSQL ----------------------------------

class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. `partition()` stops all forwarding (new and
    existing connections stay open but nothing gets through, as when the network between a
    node and PostgreSQL fails silently); `heal()` resumes (held data then flows on)."""

    def __init__(self, target_host: str, target_port: int):
        import socket
        self.target = (target_host, target_port)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._closed = False
        self._conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def partition(self):
        self._open.clear()

    def heal(self):
        self._open.set()

    def _accept(self):
        import socket
        while not self._closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(c)

            def start(c=c):
                self._open.wait()
                if self._closed:
                    return
                try:
                    u = socket.create_connection(self.target, timeout=10)
                    u.settimeout(None)
                except OSError:
                    c.close()
                    return
                self._conns.append(u)
                threading.Thread(target=self._pump, args=(c, u), daemon=True).start()
                threading.Thread(target=self._pump, args=(u, c), daemon=True).start()
            threading.Thread(target=start, daemon=True).start()

    def _pump(self, src, dst):
        try:
            while not self._closed:
                data = src.recv(65536)
                if not data:
                    break
                self._open.wait()
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(2)
            except OSError:
                pass

    def close(self):
        self._closed = True
        self._open.set()
        for s in [self.sock] + self._conns:
            try:
                s.close()
            except OSError:
                pass
