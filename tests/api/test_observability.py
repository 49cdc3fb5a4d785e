"""Observability (issue #8, part 2): Prometheus `/metrics`, `/ready`, and the request id on
responses and on every log line written while serving a request.

- /metrics: counters move after requests, labelled by route template (never a raw key id),
  crypto operations by unit and outcome, cache lookups, store pool, audit queue depth; the
  exposition text is well formed (one group per family).
- /ready: 200 on a working node; 503 naming `crypto_unit` when the unit is sealed
  (`--master-key ceremony` starts sealed); 503 naming `store` when PostgreSQL cannot be
  reached (refused, and silent) behind a TCP relay this test controls, answered within the
  bound; 200 again once it is back.
- Request id: a Correlation-Id sent is echoed in Correlation-Id and X-Request-Id, and the
  service's own log line for that request (a stored-key integrity error) carries it as
  `request_id`, as does the request line (among its fields).
"""
from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import threading
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from api_helpers import start_server, wait_for

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*)\})? (-?[0-9.e+-]+|NaN|\+Inf)$')


def scrape(url) -> dict[tuple[str, frozenset], float]:
    r = requests.get(url + "/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples, families_seen, current = {}, [], None
    for line in r.text.splitlines():
        if line.startswith("# HELP ") or line.startswith("# TYPE "):
            name = line.split()[2]
            if name != current:
                assert name not in families_seen, f"family {name} is not one group"
                families_seen.append(name)
                current = name
            continue
        m = SAMPLE.match(line)
        assert m, f"malformed sample line: {line!r}"
        name = m.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert base == current or name == current, f"sample {name} outside its family group ({current})"
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        samples[(name, labels)] = float(m.group(4))
    return samples


def value(samples, name, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_by_route_template_and_crypto_by_unit(server, kp):
    before = scrape(server.url)
    kid = kp.root_key()["id"]
    for _ in range(3):
        kp.wrap(kid, os.urandom(32))
    ct = kp.wrap(kid, os.urandom(16))["ciphertext"]
    kp.unwrap(kid, ct)
    missing = str(uuid.uuid4())
    assert kp.get(f"/api/v2/keys/{missing}").status_code == 404
    assert requests.get(server.url + f"/no/such/{missing}", timeout=10).status_code == 404
    after = scrape(server.url)

    action = dict(route="/api/v2/keys/{id}/actions/{action}", method="POST", status="200")
    assert value(after, "keyhold_http_requests_total", **action) - value(before, "keyhold_http_requests_total", **action) >= 5
    created = dict(route="/api/v2/keys", method="POST", status="201")
    assert value(after, "keyhold_http_requests_total", **created) >= value(before, "keyhold_http_requests_total", **created) + 1
    nf = dict(route="/api/v2/keys/{id}", method="GET", status="404")
    assert value(after, "keyhold_http_requests_total", **nf) >= value(before, "keyhold_http_requests_total", **nf) + 1
    um = dict(route="unmatched", method="GET", status="404")
    assert value(after, "keyhold_http_requests_total", **um) >= value(before, "keyhold_http_requests_total", **um) + 1

    # Route templates only: no key id, no raw path ever becomes a label.
    text = requests.get(server.url + "/metrics", timeout=10).text
    assert kid not in text and missing not in text and "/no/such" not in text
    routes = {dict(l).get("route") for (_, l) in after if dict(l).get("route")}
    assert all(r == "unmatched" or r.startswith("/") for r in routes)

    # Latency histogram per route: count matches the requests, buckets are cumulative.
    h = "keyhold_http_request_duration_seconds"
    r = "/api/v2/keys/{id}/actions/{action}"
    assert value(after, h + "_count", route=r) - value(before, h + "_count", route=r) >= 5
    assert value(after, h + "_bucket", route=r, le="+Inf") == value(after, h + "_count", route=r)
    assert value(after, h + "_sum", route=r) > 0

    unit = _unit_kind(after)
    ops = "keyhold_crypto_operations_total"
    assert value(after, ops, unit=unit, operation="wrap_dek", outcome="ok") - value(before, ops, unit=unit, operation="wrap_dek", outcome="ok") >= 4
    assert value(after, ops, unit=unit, operation="unwrap_dek", outcome="ok") >= value(before, ops, unit=unit, operation="unwrap_dek", outcome="ok") + 1
    assert value(after, ops, unit=unit, operation="generate_key", outcome="ok") >= value(before, ops, unit=unit, operation="generate_key", outcome="ok") + 1
    assert value(after, "keyhold_crypto_unit_state", unit=unit, state="unsealed") == 1
    assert value(after, "keyhold_crypto_unit_state", unit=unit, state="sealed") == 0

    # The token cache answered the repeated requests; the key cache the repeated wraps.
    hits = "keyhold_cache_requests_total"
    assert value(after, hits, cache="token", result="hit") - value(before, hits, cache="token", result="hit") >= 5
    assert value(after, hits, cache="key", result="hit") > value(before, hits, cache="key", result="hit")
    assert 0 < value(after, "keyhold_cache_hit_ratio", cache="token") <= 1
    for state in ("in_use", "idle", "max_idle"):
        assert ("keyhold_store_connections", frozenset({("state", state)})) in after
    assert value(after, "keyhold_store_connections", state="max_idle") >= 1
    assert ("keyhold_store_errors_total", frozenset({("kind", "unavailable")})) in after
    assert ("keyhold_audit_queue_depth", frozenset()) in after


def _unit_kind(samples) -> str:
    for (name, labels) in samples:
        d = dict(labels)
        if name == "keyhold_crypto_unit_state" and d.get("state") == "unsealed":
            return d["unit"]
    raise AssertionError("no keyhold_crypto_unit_state sample")


def test_ready_on_a_working_node(server):
    r = requests.get(server.url + "/ready", timeout=10)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ready" and body["not_ready"] == []
    assert body["checks"]["store"] == "ok"
    assert body["checks"]["crypto_unit"]["state"] == "unsealed"
    assert requests.get(server.url + "/health", timeout=10).json() == {"status": "ok"}


def test_ready_is_503_while_the_crypto_unit_is_sealed(server_factory):
    if os.environ.get("KEYHOLD_CRYPTO_UNIT", "soft") != "soft":
        # The ceremony loads master keys into the soft unit only (README).
        extra_env = {"KEYHOLD_CRYPTO_UNIT": "soft"}
    else:
        extra_env = None
    srv = server_factory(extra=["--master-key", "ceremony"], env=extra_env)
    r = requests.get(srv.url + "/ready", timeout=10)
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == "not_ready" and body["not_ready"] == ["crypto_unit"]
    assert body["checks"]["crypto_unit"]["state"] == "sealed"
    assert body["checks"]["store"] == "ok"
    samples = scrape(srv.url)
    kind = body["checks"]["crypto_unit"]["kind"]
    assert value(samples, "keyhold_crypto_unit_state", unit=kind, state="sealed") == 1
    assert value(samples, "keyhold_crypto_unit_state", unit=kind, state="unsealed") == 0
    # Liveness is unaffected: the process serves.
    assert requests.get(srv.url + "/health", timeout=10).status_code == 200


class Relay:
    """A TCP relay to PostgreSQL that the test can cut: `refuse` closes every connection
    and answers new ones with a close; `silent` accepts and forwards nothing."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.mode = "forward"
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            mode = self.mode
            if mode == "refuse":
                client.close()
                continue
            with self.lock:
                self.conns.append(client)
            if mode == "silent":
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns.append(upstream)
            threading.Thread(target=self._pipe, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    def _pipe(self, a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data or self.mode != "forward":
                    break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def cut(self, mode):
        self.mode = mode
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.closed = True
        self.cut("refuse")
        self.listener.close()


def test_ready_is_503_while_the_store_cannot_be_reached(tmp_path):
    pg = os.environ.get("KEYHOLD_TEST_PG")
    if not pg:
        pytest.fail("KEYHOLD_TEST_PG is not set: run the API suite under scripts/with-postgres", pytrace=False)
    parts = urlsplit(pg)
    relay = Relay((parts.hostname, parts.port or 5432))
    netloc = f"{parts.username}@127.0.0.1:{relay.port}" if parts.username else f"127.0.0.1:{relay.port}"
    store = urlunsplit((parts.scheme, netloc, parts.path, f"schema=obs_{uuid.uuid4().hex[:12]}", ""))
    srv = start_server(tmp_path / "node", extra=["--store", store])
    try:
        kp = srv.client()
        kid = kp.root_key()["id"]
        assert requests.get(srv.url + "/ready", timeout=10).status_code == 200

        for mode in ("refuse", "silent"):
            relay.cut(mode)
            started = time.monotonic()
            r = requests.get(srv.url + "/ready", timeout=10)
            took = time.monotonic() - started
            assert r.status_code == 503, f"{mode}: {r.text}"
            assert took < 2.5, f"/ready took {took:.1f}s with the store {mode}"
            body = r.json()
            assert body["not_ready"] == ["store"] and body["checks"]["store"] != "ok"
            assert body["checks"]["crypto_unit"]["state"] == "unsealed"
            # A second probe while the first may still hang also answers at once.
            started = time.monotonic()
            assert requests.get(srv.url + "/ready", timeout=10).status_code == 503
            assert time.monotonic() - started < 2.5

        relay.cut("refuse")
        # A key request now fails in the service; its log line carries the request id.
        rid = f"obs-store-{uuid.uuid4().hex[:8]}"
        # (requests, not kp: kp refuses every 5xx, and 503 is the right answer here)
        r = requests.get(f"{srv.url}/api/v2/keys/{kid}/metadata", timeout=30,
                         headers={"Correlation-Id": rid, "Authorization": "Bearer " + kp.token,
                                  "Bluemix-Instance": srv.instance_id})
        assert r.status_code == 503, r.text
        assert r.headers["x-request-id"] == rid
        assert wait_for(lambda: any(l.get("fields", {}).get("message") == "store unavailable"
                             and rid_of(l) == rid for l in log_lines(srv)), timeout=5)
        errors = scrape(srv.url)
        assert value(errors, "keyhold_store_errors_total", kind="unavailable") >= 1

        relay.cut("forward")
        assert wait_for(lambda: requests.get(srv.url + "/ready", timeout=10).status_code == 200, timeout=15)
        assert kp.get(f"/api/v2/keys/{kid}/metadata").status_code == 200
    finally:
        srv.stop()
        relay.close()


def rid_of(line: dict):
    """The request id a log line carries: a top-level member on every line written
    while serving a request, a field of the per-request access line."""
    return line.get("request_id", line.get("fields", {}).get("request_id"))


def log_lines(srv) -> list[dict]:
    out = []
    for line in srv.log_path.read_text(errors="replace").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_request_id_is_echoed_and_on_every_log_line_of_the_request(tmp_path):
    """A service-side error (stored key material altered) is logged while the request is
    served: that line, and the request line, carry the caller's Correlation-Id."""
    data = tmp_path / "server"
    db = data / "keyhold.db"
    srv = start_server(data, extra=["--store", f"sqlite://{db}"])
    try:
        kid = srv.client().root_key()["id"]
    finally:
        srv.stop()
    with sqlite3.connect(db) as c:
        blob = bytearray(c.execute("SELECT blob FROM key_versions WHERE key_id = ?", (kid,)).fetchone()[0])
        blob[len(blob) // 2] ^= 0x01
        c.execute("UPDATE key_versions SET blob = ? WHERE key_id = ?", (bytes(blob), kid))
    srv = start_server(data, extra=["--store", f"sqlite://{db}"])
    try:
        kp = srv.client()
        rid = f"obs-{uuid.uuid4().hex}"
        r = kp.post(f"/api/v2/keys/{kid}/actions/wrap", {}, headers={"Correlation-Id": rid})
        assert r.status_code == 409, r.text
        assert r.headers["correlation-id"] == rid and r.headers["x-request-id"] == rid

        def lines_of_request():
            return [l for l in log_lines(srv) if rid_of(l) == rid]

        assert wait_for(lambda: len(lines_of_request()) >= 2, timeout=5)
        messages = [l["fields"]["message"] for l in lines_of_request()]
        assert "stored key material failed its integrity check" in messages, messages
        assert "request" in messages, messages
        # Every line that names this request carries it as its request id.
        for l in log_lines(srv):
            if rid in json.dumps(l):
                assert rid_of(l) == rid, l

        # Without a Correlation-Id a fresh id is made, echoed and logged.
        r = kp.get(f"/api/v2/keys/{kid}/metadata")
        made = r.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f-]{36}", made) and r.headers["correlation-id"] == made
        assert wait_for(lambda: any(rid_of(l) == made for l in log_lines(srv)), timeout=5)
    finally:
        srv.stop()

    # With only errors logged (KEYHOLD_LOG=error) the service's error line still carries it.
    srv = start_server(data, extra=["--store", f"sqlite://{db}"], env={"KEYHOLD_LOG": "error"})
    try:
        rid = f"obs-quiet-{uuid.uuid4().hex}"
        r = srv.client().post(f"/api/v2/keys/{kid}/actions/wrap", {}, headers={"Correlation-Id": rid})
        assert r.status_code == 409, r.text
        assert wait_for(lambda: any(rid_of(l) == rid
                                    and l["fields"]["message"] == "stored key material failed its integrity check"
                                    for l in log_lines(srv)), timeout=5)
    finally:
        srv.stop()
