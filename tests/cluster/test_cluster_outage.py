"""MUST SHOW (3) of issue #5: PostgreSQL stopped mid-run.

While clients keep writing through both nodes, PostgreSQL is stopped (fast shutdown; an
immediate one, like a crash; and frozen with SIGSTOP, so connections hang as in a network
partition). Then:
- every request to either node answers 503 with reason SERVICE_UNAVAILABLE_ERR (or
  AUDIT_UNAVAILABLE_ERR: the audit trail lives in the same PostgreSQL, docs/audit.md) in the Key
  Protect error envelope, and every call returns in < 5 s (no hang) -- also for a key only
  the other node has served (no 404 for a key a node cannot look up); deletes answered 503
  did not happen; the token endpoint answers 200 or 503, fast;
- when PostgreSQL is started again, both nodes serve again within 10 s, without restart;
- no acknowledged write is lost: every key whose create was answered 201 exists on both
  nodes, every acknowledged rotation is a version, every acknowledged wrap unwraps;
- afterwards a change on one node is enforced on the other within the bound again (the
  change-notice channel came back too). Same for all connections dropped by PostgreSQL.
"""
import os
import threading
import time
from collections import Counter

import pytest
import requests

from cluster_helpers import (APIKEY_GRANT, CROSS_NODE_BOUND, assert_kp_error, check_status, describe, poll_until,
                             reason_code, unb64)

FAIL_FAST = 5.0      # every call answers within this during the outage
RECOVERY = 10.0      # both nodes serve again within this after PostgreSQL is back
OUTAGE_SECS = 4.0
# reads a node may answer from its own cache while PostgreSQL is frozen (nobody can change anything)
# 503 reasons of an unreachable PostgreSQL: the key store's, or the audit trail's (same database)
UNAVAILABLE = ("SERVICE_UNAVAILABLE_ERR", "AUDIT_UNAVAILABLE_ERR")
SERVABLE_FROM_CACHE = {"get", "list", "wrap", "unwrap", "versions", "instance policies",
                       "get of a key only the other node served", "wrap with a key only the other node served"}


class Writer(threading.Thread):
    """Creates keys, rotates its own key and wraps through one node until stopped."""

    def __init__(self, node, base_key):
        super().__init__(daemon=True)
        self.node = node
        self.client = node.client()
        self.client.timeout = 15  # longer than FAIL_FAST: a hang shows as a slow answer, not an exception
        self.base = base_key
        self.stop_ev = threading.Event()
        self.created: list[str] = []        # 201-acknowledged key ids
        self.rotations_acked = 0
        self.rotations_unsure = 0           # answered 503 or failed: may or may not have happened
        self.wraps: list[tuple] = []        # (ciphertext, plaintext) acknowledged
        self.answers: list[tuple] = []      # (op, status, reason, seconds)
        self.bad: list[str] = []

    def _call(self, op, fn, ok):
        t0 = time.monotonic()
        try:
            r = fn()
        except Exception as e:  # noqa: BLE001
            self.bad.append(f"{self.node.name} {op}: exception after {time.monotonic() - t0:.1f} s: {e!r}")
            return None
        dt = time.monotonic() - t0
        self.answers.append((op, r.status_code, reason_code(r), dt))
        if dt >= FAIL_FAST:
            self.bad.append(f"{self.node.name} {op}: answered after {dt:.1f} s (>= {FAIL_FAST} s){describe(r)}")
        if r.status_code == 503:
            if reason_code(r) not in UNAVAILABLE:
                self.bad.append(f"{self.node.name} {op}: 503 without {UNAVAILABLE}{describe(r)}")
            return r
        if r.status_code not in ok:
            self.bad.append(f"{self.node.name} {op}: unexpected {r.status_code}{describe(r)}")
        return r

    def run(self):
        i = 0
        while not self.stop_ev.is_set():
            i += 1
            r = self._call("create", lambda: self.client.create_key_resp(), (201,))
            if r is not None and r.status_code == 201:
                self.created.append(r.json()["resources"][0]["id"])
            pt = os.urandom(32)
            r = self._call("wrap", lambda: self.client.wrap_resp(self.base, pt), (200,))
            if r is not None and r.status_code == 200:
                self.wraps.append((r.json()["ciphertext"], pt))
            if i % 3 == 0:
                r = self._call("rotate", lambda: self.client.action(self.base, "rotate"), (204,))
                if r is not None and r.status_code == 204:
                    self.rotations_acked += 1
                else:
                    self.rotations_unsure += 1
            time.sleep(0.02)


def _probe(node, base, ct, unseen, doomed):
    """Calls that all need the store, run at the same time (each on its own connection);
    returns [(name, response or exception, seconds)]. `unseen` is a key this node never
    served (it must not answer 404 for it: it cannot know), `doomed` a key the probe tries
    to delete (it must still exist afterwards)."""
    def c():
        cl = node.client()
        cl.timeout = FAIL_FAST + 1  # a hang shows as a timeout
        return cl
    calls = [
        ("create", lambda: c().create_key_resp()),
        ("get", lambda: c().get_key_resp(base)),
        ("get of a key only the other node served", lambda: c().get_key_resp(unseen)),
        ("wrap with a key only the other node served", lambda: c().wrap_resp(unseen, os.urandom(32))),
        ("delete", lambda: c().delete_key_resp(doomed)),
        ("list", lambda: c().get("/api/v2/keys")),
        ("wrap", lambda: c().wrap_resp(base, os.urandom(32))),
        ("unwrap", lambda: c().unwrap_resp(base, ct)),
        ("rotate", lambda: c().action(base, "rotate")),
        ("versions", lambda: c().get(f"/api/v2/keys/{base}/versions")),
        ("instance policies", lambda: c().get("/api/v2/instance/policies")),
    ]

    def run(item):
        name, fn = item
        t0 = time.monotonic()
        try:
            r = fn()
        except Exception as e:  # noqa: BLE001
            r = e
        return name, r, time.monotonic() - t0

    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(len(calls)) as ex:
        return list(ex.map(run, calls))


@pytest.mark.parametrize("how", ["stop", "crash", "freeze"])
def test_postgres_outage_fails_fast_and_recovers(start_cluster, pg_ctl, how):
    cl = start_cluster()
    n1, n2 = cl.nodes
    c1, c2 = cl.clients()
    for c in (c1, c2):
        c.timeout = 15
    probe_key = c1.root_key()
    dek = os.urandom(32)
    probe_ct = c2.wrap(probe_key["id"], dek)["ciphertext"]
    # per node: a key created and served only by the OTHER node, and a key to try to delete
    unseen = {c1.name: c2.root_key()["id"], c2.name: c1.root_key()["id"]}
    doomed = {c.name: c.root_key()["id"] for c in (c1, c2)}

    writers = [Writer(n, c.root_key()["id"]) for n, c in ((n1, c1), (n2, c2))]
    for w in writers:
        w.start()
    time.sleep(2.0)
    assert all(w.created for w in writers), "writers made no progress before the outage: " + \
        "; ".join(b for w in writers for b in w.bad[:3])

    # --- PostgreSQL goes away -------------------------------------------------------------
    pg_ctl(how)
    try:
        time.sleep(CROSS_NODE_BOUND + 0.2)  # cached state may serve for at most the bound
        problems = []
        for c in (c1, c2):
            for name, r, dt in _probe(c.node, probe_key["id"], probe_ct, unseen[c.name], doomed[c.name]):
                if isinstance(r, Exception):
                    problems.append(f"{c.name} {name}: no answer after {dt:.1f} s: {r!r}")
                    continue
                if dt >= FAIL_FAST:
                    problems.append(f"{c.name} {name}: took {dt:.1f} s (>= {FAIL_FAST} s){describe(r)}")
                if how == "freeze" and name in SERVABLE_FROM_CACHE and r.status_code == 200:
                    # PostgreSQL is frozen, so no node can commit a change: an answer from the
                    # node's cache is still correct here (the partition test covers the rest)
                    continue
                try:
                    assert_kp_error(r, 503, UNAVAILABLE)
                except AssertionError as e:
                    problems.append(f"{c.name} {name} during the outage: {e}")
            # the token endpoint: a token (from cached credentials) or 503, fast, never a 5xx crash
            t0 = time.monotonic()
            try:
                r = requests.post(c.node.iam_url + "/identity/token",
                                  data={"grant_type": APIKEY_GRANT, "apikey": c.apikey}, timeout=FAIL_FAST + 1)
                dt = time.monotonic() - t0
                if r.status_code not in (200, 503) or dt >= FAIL_FAST:
                    problems.append(f"{c.name} token during the outage: {r.status_code} after {dt:.1f} s{describe(r)}")
            except Exception as e:  # noqa: BLE001
                problems.append(f"{c.name} token during the outage: exception {e!r}")
        time.sleep(max(0.0, OUTAGE_SECS - CROSS_NODE_BOUND - 0.2))
    finally:
        pg_ctl("thaw" if how == "freeze" else "start")
    t_back = time.monotonic()

    # --- PostgreSQL is back: both nodes serve again by themselves --------------------------------
    recovered = {}
    last = {}
    while len(recovered) < 2 and time.monotonic() - t_back < RECOVERY + 5:
        for c in (c1, c2):
            if c.name in recovered:
                continue
            try:
                r = c.create_key_resp()
                last[c.name] = r
                if r.status_code == 201:
                    recovered[c.name] = time.monotonic() - t_back
            except Exception as e:  # noqa: BLE001
                last[c.name] = e
        time.sleep(0.1)
    time.sleep(1.0)  # the writers see the recovery too
    for w in writers:
        w.stop_ev.set()
    for w in writers:
        w.join(60)
        assert not w.is_alive(), f"writer on {w.node.name} hung"
    assert n1.alive() and n2.alive(), "a node exited during the outage:\n" + n1.stderr_tail() + n2.stderr_tail()

    summary = "; ".join(
        f"{w.node.name}: {dict(Counter((op, st) for op, st, _, _ in w.answers))}, "
        f"max {max((a[3] for a in w.answers), default=0):.2f} s" for w in writers)
    print(f"\noutage ({how}): recovered after {recovered}; writers: {summary}")

    assert not problems, f"during the outage ({how}):\n" + "\n".join(problems)
    for c in (c1, c2):
        assert c.name in recovered, (f"{c.name} did not serve again within {RECOVERY + 5:.0f} s after PostgreSQL "
                                     f"came back; last answer: "
                                     f"{describe(last[c.name]) if isinstance(last.get(c.name), requests.Response) else last.get(c.name)!r}")
        assert recovered[c.name] <= RECOVERY, f"{c.name} took {recovered[c.name]:.1f} s to recover (> {RECOVERY} s)"
    bad = [b for w in writers for b in w.bad]
    assert not bad, f"{len(bad)} bad answers seen by the writers (first 5):\n" + "\n".join(bad[:5])
    saw_503 = sum(1 for w in writers for a in w.answers if a[1] == 503)
    assert saw_503 > 0, "the writers never saw a 503 although PostgreSQL was down for seconds"

    # --- no acknowledged write was lost ---------------------------------------------------------
    time.sleep(CROSS_NODE_BOUND)
    acked = [k for w in writers for k in w.created]
    for c in (c1, c2):
        listed = c.list_key_ids()
        missing = [k for k in acked if k not in listed]
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged keys missing on {c.name}: {missing[:5]}"
        for kid in acked[:: max(1, len(acked) // 20)]:
            r = check_status(c.get_key_resp(kid), 200)
            assert r.json()["resources"][0]["state"] == 1, describe(r)
    for w in writers:
        for c in (c1, c2):
            v = [x["id"] for x in c.versions(w.base)]
            assert len(v) == len(set(v)), f"duplicate versions on {c.name}: {v}"
            lo, hi = 1 + w.rotations_acked, 1 + w.rotations_acked + w.rotations_unsure
            assert lo <= len(v) <= hi, (f"{w.base} on {c.name}: {len(v)} versions; acknowledged rotations say "
                                        f"{lo}, at most {hi} with the unanswered ones")
            for ct, pt in w.wraps[:: max(1, len(w.wraps) // 25)]:
                assert unb64(c.unwrap(w.base, ct)["plaintext"]) == pt
    for c in (c1, c2):
        assert unb64(c.unwrap(probe_key["id"], probe_ct)["plaintext"]) == dek
        for kid in doomed.values():  # deletes answered 503 did not happen
            r = check_status(c.get_key_resp(kid), 200)
            assert r.json()["resources"][0]["state"] == 1, f"a delete answered 503 took effect{describe(r)}"

    # --- and the cross-node bound holds again after the recovery ------------------------------
    _assert_bound_after(c1, c2, f"after PostgreSQL {how} + start")
    for n in cl.nodes:
        n.stop()


def _assert_bound_after(c1, c2, when):
    """Disable on node 1 -> wrap refused on node 2 within the bound, and the reverse. A node
    that lost its change-notice channel and did not re-establish it fails this."""
    for a, b in ((c1, c2), (c2, c1)):
        k = a.root_key()
        for _ in range(3):
            check_status(b.wrap_resp(k["id"], os.urandom(32)), 200)
        check_status(a.action(k["id"], "disable"), 204)
        refused = lambda r: r.status_code == 409 and reason_code(r) == "KEY_ACTION_INVALID_STATE_ERR"
        elapsed, res, hist = poll_until(lambda: b.wrap_resp(k["id"], os.urandom(32)), refused, CROSS_NODE_BOUND)
        assert elapsed is not None and elapsed <= CROSS_NODE_BOUND, (
            f"{when}: disable on {a.name} not enforced on {b.name} within {CROSS_NODE_BOUND} s "
            f"(attempts (t, status, reason): {hist[:4]}...{hist[-2:]}){describe(res)}")


def test_dropped_connections_recover_and_bound_holds(start_cluster, psql):
    """PostgreSQL drops every Keyhold connection (pg_terminate_backend: a failover or network
    blip): both nodes serve again within the recovery bound without restart, answering only
    2xx or 503 SERVICE_UNAVAILABLE_ERR meanwhile, and cross-node changes are enforced within
    the bound afterwards."""
    cl = start_cluster()
    c1, c2 = cl.clients()
    k = c1.root_key()
    _assert_bound_after(c1, c2, "before the drop")
    rows = psql("select count(pg_terminate_backend(pid)) from pg_stat_activity "
                "where pid <> pg_backend_pid() and backend_type = 'client backend'")
    assert rows and int(rows[0][0]) > 0, "no connections to drop"
    t0 = time.monotonic()
    back = {}
    odd = []
    while len(back) < 2 and time.monotonic() - t0 < RECOVERY:
        for c in (c1, c2):
            if c.name in back:
                continue
            s0 = time.monotonic()
            r = c.wrap_resp(k["id"], os.urandom(32))
            if time.monotonic() - s0 >= FAIL_FAST:
                odd.append(f"{c.name}: slow answer{describe(r)}")
            if r.status_code == 200:
                back[c.name] = time.monotonic() - t0
            elif not (r.status_code == 503 and reason_code(r) in UNAVAILABLE):
                odd.append(f"{c.name}: {r.status_code}{describe(r)}")
        time.sleep(0.05)
    assert not odd, "while the connections were re-established:\n" + "\n".join(odd[:5])
    assert len(back) == 2, f"nodes serving again within {RECOVERY} s: {back}"
    # no grace period: a node that serves must enforce other nodes' changes within the bound
    _assert_bound_after(c1, c2, "after the connections were dropped")
    for n in cl.nodes:
        n.stop()


def test_partitioned_node_stops_serving_stale_state(pg_url, keyhold_has_store, tmp_path_factory, _all_nodes):
    """Node 1 reaches PostgreSQL through a proxy that then fails silently (a partition: the
    connections stay open, nothing gets through); node 2 still reaches it and disables a key
    node 1 has cached. Within the bound node 1 must stop answering 200 for that key (it
    cannot know the key's state any more: 503 SERVICE_UNAVAILABLE_ERR, or 409 if it learnt
    of the disable), and every call returns in < 5 s. After the partition heals node 1 serves
    again by itself, with the key disabled."""
    import uuid
    from urllib.parse import urlsplit
    from cluster_helpers import TcpProxy, start_node
    u = urlsplit(pg_url)
    assert not u.query, pg_url
    proxy = TcpProxy(u.hostname, u.port)
    schema = f"part_{uuid.uuid4().hex[:10]}"
    direct = f"{pg_url}?schema={schema}"
    via_proxy = f"{u.scheme}://{u.username}@127.0.0.1:{proxy.port}{u.path}?schema={schema}"
    d = tmp_path_factory.mktemp("keyhold-partition")
    try:
        n1 = start_node("node1", d, via_proxy)
        _all_nodes.append(n1)
        n2 = start_node("node2", d, direct)
        _all_nodes.append(n2)
        assert n2.info["instance_id"] == n1.info["instance_id"]
        c1, c2 = n1.client(), n2.client()
        c1.timeout = c2.timeout = 15
        k = c2.root_key()
        for _ in range(3):
            check_status(c1.wrap_resp(k["id"], os.urandom(32)), 200)
        c1.token  # fetch the token before the partition

        proxy.partition()
        c1.timeout = FAIL_FAST + 1
        check_status(c2.action(k["id"], "disable"), 204)
        t0 = time.monotonic()
        answers, problems = [], []
        while time.monotonic() - t0 < CROSS_NODE_BOUND + 3.0:
            s0 = time.monotonic()
            try:
                r = c1.wrap_resp(k["id"], os.urandom(32))
            except Exception as e:  # noqa: BLE001
                problems.append(f"wrap on node 1: exception after {time.monotonic() - s0:.1f} s: {e!r}")
                break
            at, dt = time.monotonic() - t0, time.monotonic() - s0
            answers.append((round(at, 2), r.status_code, reason_code(r), round(dt, 2)))
            if dt >= FAIL_FAST:
                problems.append(f"wrap on node 1 took {dt:.1f} s{describe(r)}")
            if r.status_code == 200 and at > CROSS_NODE_BOUND:
                problems.append(f"node 1 still wraps {at:.2f} s after the disable on node 2 "
                                f"(cut off from PostgreSQL, serving stale state){describe(r)}")
                break
            if r.status_code not in (200, 409, 503) or \
                    (r.status_code == 409 and reason_code(r) != "KEY_ACTION_INVALID_STATE_ERR") or \
                    (r.status_code == 503 and reason_code(r) not in UNAVAILABLE):
                problems.append(f"unexpected answer{describe(r)}")
            time.sleep(0.1)
        print(f"\npartitioned node 1 answers (t since disable, status, reason, seconds): {answers[:6]}...{answers[-3:]}")
        assert not problems, "\n".join(problems[:3]) + f"\nanswers: {answers[:8]}"
    finally:
        proxy.heal()
        c1.timeout = 15
    # healed: node 1 serves again and knows the key is disabled
    ok = lambda r: r.status_code == 409 and reason_code(r) == "KEY_ACTION_INVALID_STATE_ERR"
    elapsed, res, hist = poll_until(lambda: c1.wrap_resp(k["id"], os.urandom(32)), ok, RECOVERY)
    assert elapsed is not None and elapsed <= RECOVERY, f"node 1 after the partition healed: {hist[-3:]}{describe(res)}"
    check_status(c1.create_key_resp(), 201)
    n1.stop()
    n2.stop()
    proxy.close()
