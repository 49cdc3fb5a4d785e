"""The audit sink goes away mid-run (docs/audit.md "When the sink is unavailable"; issue #8
must-show): while another connection holds the audit table's lock (PostgreSQL: LOCK TABLE …
IN ACCESS EXCLUSIVE MODE; SQLite: an exclusive write transaction on audit.db), wraps and
creates fail fast with 503 AUDIT_UNAVAILABLE_ERR within a bound, never hang, and succeed
again once the lock is released; every call answered 2xx has its event in the trail, and
the chain still verifies."""
import os
import sqlite3
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from api_helpers import b64, key_envelope, key_resource, uniq, wait_for
from audit_helpers import AuditServer, pg_url, verify

TIMEOUT = 2  # --audit-timeout
BOUND = TIMEOUT + 1.5  # the longest any request may take while the sink is down


class Lock:
    """Holds the audit table's write lock from another connection until released."""

    def __init__(self, a: AuditServer):
        self.a = a
        if a.schema:
            self.proc = subprocess.Popen(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", pg_url()],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.proc.stdin.write(f'SET search_path TO "{a.schema}"; BEGIN; '
                                  "LOCK TABLE audit_batches IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n")
            self.proc.stdin.flush()
            assert self.proc.stdout.readline().strip() == "locked"
        else:
            self.conn = sqlite3.connect(a.data / "audit.db", isolation_level=None, timeout=10)
            self.conn.execute("BEGIN EXCLUSIVE")

    def release(self):
        if self.a.schema:
            self.proc.stdin.write("ROLLBACK;\n\\q\n")
            self.proc.stdin.flush()
            self.proc.wait(10)
        else:
            self.conn.execute("ROLLBACK")
            self.conn.close()


@pytest.fixture
def audited(tmp_path):
    a = AuditServer(tmp_path, extra=["--audit-timeout", str(TIMEOUT)])
    yield a
    a.stop()


def timed(kp, method, path, body=None):
    """One call, without the suite's never-5xx check (503 is the expected answer here)."""
    rid = str(uuid.uuid4())
    h = {"Correlation-Id": rid, "Authorization": "Bearer " + kp.token,
         "Bluemix-Instance": kp.server.instance_id}
    t0 = time.monotonic()
    r = requests.request(method, kp.server.url + path, json=body, headers=h, timeout=30)
    return r, time.monotonic() - t0, rid


def test_locked_sink_fails_fast_and_recovers(audited):
    a = audited
    kp = a.kp
    kid = kp.root_key()["id"]
    ok_ids = []  # request ids answered 2xx: each must have its event
    wrap_path = f"/api/v2/keys/{kid}/actions/wrap"

    r, _, rid = timed(kp, "POST", wrap_path, {"plaintext": b64(os.urandom(32))})
    assert r.status_code == 200
    ok_ids.append(rid)

    lock = Lock(a)
    try:
        statuses = []
        t_end = time.monotonic() + TIMEOUT + 2
        stop = threading.Event()

        def wrapper():
            while not stop.is_set() and time.monotonic() < t_end:
                r, took, rid = timed(kp, "POST", wrap_path, {"plaintext": b64(os.urandom(32))})
                statuses.append((r.status_code, took, rid, r))

        with ThreadPoolExecutor(2) as pool:
            futs = [pool.submit(wrapper) for _ in range(2)]
            # a create while the sink is down
            r, took, rid = timed(kp, "POST", "/api/v2/keys", key_envelope(key_resource(uniq("during"))))
            statuses.append((r.status_code, took, rid, r))
            for f in futs:
                f.result()
        # And once the failure is known, a create is refused at once.
        r, took, rid = timed(kp, "POST", "/api/v2/keys", key_envelope(key_resource(uniq("during"))))
        statuses.append((r.status_code, took, rid, r))
        assert r.status_code == 503, r.text
        assert took < 0.5, f"a create took {took:.2f}s once the sink was known to be down"

        refused = [s for s in statuses if s[0] == 503]
        assert refused, "no request was refused while the audit store was locked"
        for code, took, rid, resp in statuses:
            assert took < BOUND, f"a request took {took:.2f}s (bound {BOUND}s) while the sink was down"
            assert code in (200, 201, 503), resp.text
            if code == 503:
                reason = resp.json()["resources"][0]["reasons"][0]
                assert reason["code"] == "AUDIT_UNAVAILABLE_ERR", resp.text
                assert "plaintext" not in resp.text and "ciphertext" not in resp.text
            else:
                ok_ids.append(rid)
        # the last wraps (after the first failed write) were all refused
        assert statuses[-2][0] == 503 or any(s[0] == 503 for s in statuses[-4:])
    finally:
        lock.release()

    # Recovers by itself.
    def works():
        r, _, rid = timed(kp, "POST", wrap_path, {"plaintext": b64(os.urandom(32))})
        if r.status_code == 200:
            ok_ids.append(rid)
            return True
        return False
    deadline = time.monotonic() + 10
    while not works():
        assert time.monotonic() < deadline, "wraps did not recover after the lock was released"
        time.sleep(0.2)
    r, _, rid = timed(kp, "POST", "/api/v2/keys", key_envelope(key_resource(uniq("after"))))
    assert r.status_code == 201, r.text
    ok_ids.append(rid)

    # Every 2xx answer has its event (queued ones were retried in order), and the chain is whole.
    deadline = time.monotonic() + 10
    while True:
        have = {e["request_id"] for e in a.events()}
        missing = [i for i in ok_ids if i not in have]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert not missing, f"{len(missing)} requests answered 2xx have no audit event"
    path = a.data.parent / "after-outage.jsonl"
    path.write_text(a.export_text())
    keys = a.data.parent / "keys.json"
    keys.write_text(a.keys_json())
    res = verify(path, keys)
    assert res.returncode == 0, res.stderr


def test_audit_off_records_nothing(tmp_path):
    a = AuditServer(tmp_path, extra=["--audit", "off"])
    try:
        kid = a.kp.root_key()["id"]
        a.kp.wrap(kid, os.urandom(32))
        r = a.kp.get("/audit/v1/events")
        assert r.status_code == 404
        assert "audit trail is off" in r.text
        # The log is written in batches by a writer thread: give it a moment.
        assert wait_for(lambda: "audit trail is OFF" in a.srv.stderr_tail(100000), timeout=5)
    finally:
        a.stop()
