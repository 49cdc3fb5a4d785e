"""MUST SHOW (2) of issue #5: concurrency is safe across nodes.

- Many clients spread over both nodes doing create/rotate/wrap/unwrap/delete for a while:
  no 5xx, no lost key, no duplicate version, every wrapped DEK still unwraps.
- Truly simultaneous rotations of one key under the default hourly rule: exactly one wins.
- Import-token retrievals, disables and dual-authorization deletes racing over both nodes
  keep their counts and rules.
"""
import os
import random
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from cluster_helpers import (CROSS_NODE_BOUND, POLICY_TYPE, assert_kp_error, check_status, describe,
                             policy_envelope, reason_code, unb64)

LOAD_SECS = float(os.environ.get("KEYHOLD_CLUSTER_LOAD_SECS", "15"))
LOAD_THREADS = int(os.environ.get("KEYHOLD_CLUSTER_LOAD_THREADS", "16"))


def _race(calls):
    """Run the callables at the same instant (barrier; connections opened beforehand by the
    caller) and return their results in order; an exception is returned, not raised."""
    barrier = threading.Barrier(len(calls))
    out = [None] * len(calls)

    def run(i):
        barrier.wait()
        try:
            out[i] = calls[i]()
        except Exception as e:  # noqa: BLE001 - reported by the caller
            out[i] = e

    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return out


def _show(results):
    return "".join(describe(r) if isinstance(r, requests.Response) else f"\n  EXCEPTION: {r!r}" for r in results)


# --- the mixed load -------------------------------------------------------------------------

class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.live: dict[str, dict] = {}        # key id -> {"owner"}
        self.rotations: Counter = Counter()    # key id -> acknowledged (204) rotations
        self.deleted: set[str] = set()
        self.wraps: list[tuple] = []           # (kid, ciphertext, plaintext, aad, version id)
        self.gone_seen: dict[str, str] = {}    # key id -> description of a 410 answer
        self.bad: list[str] = []               # 5xx, unexpected statuses, exceptions
        self.ops = Counter()
        self.hot: list[str] = []               # shared keys every thread rotates and wraps


def _worker(idx, nodes, ledger: Ledger, deadline):
    rng = random.Random(1000 + idx)
    clients = [n.client() for n in nodes]
    mine: list[str] = []

    def note(op, c, r, ok_statuses, kid=None):
        ledger.ops[(op, c.name, r.status_code)] += 1
        if r.status_code >= 500:
            ledger.bad.append(f"5xx on {op} via {c.name}{describe(r)}")
            return False
        if r.status_code == 410 and kid is not None and reason_code(r) == "KEY_DELETED_ERR":
            with ledger.lock:
                ledger.gone_seen.setdefault(kid, f"{op} via {c.name}{describe(r)}")
            return False
        if r.status_code not in ok_statuses:
            ledger.bad.append(f"unexpected {r.status_code} on {op} via {c.name}{describe(r)}")
            return False
        return True

    def pick_key():
        # a third of the picks go to a few shared hot keys (never deleted), so rotations and
        # wraps of one key collide across nodes all the time
        if ledger.hot and rng.random() < 0.33:
            return rng.choice(ledger.hot)
        with ledger.lock:
            keys = list(ledger.live)
        return rng.choice(keys) if keys else None

    def create(c):
        r = c.create_key_resp()
        if note("create", c, r, (201,)):
            kid = r.json()["resources"][0]["id"]
            with ledger.lock:
                ledger.live[kid] = {"owner": idx}
            mine.append(kid)

    ops = ["create"] * 10 + ["wrap"] * 35 + ["unwrap"] * 30 + ["rotate"] * 15 + ["delete"] * 4 + ["get"] * 6
    try:
        create(clients[idx % 2])
        while time.monotonic() < deadline:
            c = rng.choice(clients)
            op = rng.choice(ops)
            if op == "create":
                create(c)
            elif op == "wrap":
                kid = pick_key()
                if kid is None:
                    continue
                pt = os.urandom(32)
                aad = [f"t{idx}"] if rng.random() < 0.5 else None
                r = c.wrap_resp(kid, pt, aad)
                if note("wrap", c, r, (200,), kid):
                    body = r.json()
                    with ledger.lock:
                        ledger.wraps.append((kid, body["ciphertext"], pt, aad, body["keyVersion"]["id"]))
            elif op == "unwrap":
                with ledger.lock:
                    w = rng.choice(ledger.wraps) if ledger.wraps else None
                if w is None:
                    continue
                kid, ct, pt, aad, _ = w
                r = c.unwrap_resp(kid, ct, aad)
                if note("unwrap", c, r, (200,), kid):
                    got = unb64(r.json()["plaintext"])
                    if got != pt:
                        ledger.bad.append(f"unwrap via {c.name} returned another plaintext{describe(r)}")
            elif op == "rotate":
                kid = pick_key()
                if kid is None:
                    continue
                r = c.action(kid, "rotate")
                if note("rotate", c, r, (204,), kid):
                    with ledger.lock:
                        ledger.rotations[kid] += 1
            elif op == "delete":
                if len(mine) < 3:
                    continue
                kid = mine.pop(rng.randrange(len(mine)))
                r = c.delete_key_resp(kid)
                if note("delete", c, r, (200, 204), kid):
                    with ledger.lock:
                        ledger.live.pop(kid, None)
                        ledger.deleted.add(kid)
                else:
                    mine.append(kid)
            elif op == "get":
                kid = pick_key()
                if kid is not None:
                    note("get", c, c.get_key_resp(kid), (200,), kid)
    except Exception as e:  # noqa: BLE001
        ledger.bad.append(f"thread {idx}: exception {e!r}")


def test_mixed_load_over_both_nodes(cluster):
    ledger = Ledger()
    for i in range(3):
        kid = cluster.nodes[i % 2].client().root_key()["id"]
        ledger.hot.append(kid)
        ledger.live[kid] = {"owner": None}
    deadline = time.monotonic() + LOAD_SECS
    threads = [threading.Thread(target=_worker, args=(i, cluster.nodes, ledger, deadline))
               for i in range(LOAD_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(LOAD_SECS + 120)
    assert not any(t.is_alive() for t in threads), "a client thread hung"

    per = Counter()
    for (op, node, status), n in ledger.ops.items():
        per[(op, status)] += n
    summary = ", ".join(f"{op} {st}: {n}" for (op, st), n in sorted(per.items()))
    print(f"\nmixed load ({LOAD_THREADS} threads, {LOAD_SECS:.0f} s): {summary}; "
          f"{len(ledger.live)} live keys, {len(ledger.deleted)} deleted, {len(ledger.wraps)} wraps; "
          f"hot-key rotations {[ledger.rotations[k] for k in ledger.hot]}")

    assert not ledger.bad, f"{len(ledger.bad)} bad answers (first 5):\n" + "\n".join(ledger.bad[:5])
    assert per[("rotate", 204)] > 0 and per[("wrap", 200)] > 0 and per[("delete", 204)] + per[("delete", 200)] > 0, \
        f"the load did too little to prove anything: {summary}"
    # every 410 seen during the run belongs to a key whose delete was acknowledged
    stray = {k: d for k, d in ledger.gone_seen.items() if k not in ledger.deleted}
    assert not stray, f"410 KEY_DELETED_ERR for keys never deleted: {list(stray.values())[:3]}"

    time.sleep(CROSS_NODE_BOUND)
    c1, c2 = cluster.clients()
    live, deleted = set(ledger.live), ledger.deleted
    for c in (c1, c2):
        listed = c.list_key_ids()
        missing = live - listed
        assert not missing, f"{len(missing)} created keys missing from the list on {c.name}: {sorted(missing)[:5]}"
        shown = deleted & listed
        assert not shown, f"deleted keys still listed on {c.name}: {sorted(shown)[:5]}"

    def check_versions(kid):
        expected = 1 + ledger.rotations[kid]
        seen = []
        for c in (c1, c2):
            v = [x["id"] for x in c.versions(kid)]
            if len(v) != len(set(v)):
                return f"{kid}: duplicate version ids on {c.name}: {v}"
            if len(v) != expected:
                return f"{kid}: {len(v)} versions on {c.name}, expected 1 + {expected - 1} acknowledged rotations"
            seen.append(sorted(v))
        if seen[0] != seen[1]:
            return f"{kid}: the nodes list different versions"
        return None

    with ThreadPoolExecutor(8) as ex:
        problems = [p for p in ex.map(check_versions, sorted(live)) if p]
    assert not problems, f"{len(problems)} keys with wrong versions (first 5):\n" + "\n".join(problems[:5])

    versions_of = {}
    for kid in live:
        versions_of[kid] = {v["id"] for v in c1.versions(kid)}

    def check_unwrap(i_w):
        i, (kid, ct, pt, aad, vid) = i_w
        c = (c1, c2)[i % 2]
        r = c.unwrap_resp(kid, ct, aad)
        if kid in deleted:
            return None if (r.status_code == 410 and reason_code(r) == "KEY_DELETED_ERR") else \
                f"unwrap for a deleted key is not 410{describe(r)}"
        if r.status_code != 200:
            return f"a wrapped DEK no longer unwraps{describe(r)}"
        if unb64(r.json()["plaintext"]) != pt:
            return f"unwrap returned another plaintext{describe(r)}"
        if vid not in versions_of[kid]:
            return f"wrap reported version {vid} which the key does not list"
        return None

    with ThreadPoolExecutor(8) as ex:
        problems = [p for p in ex.map(check_unwrap, enumerate(ledger.wraps)) if p]
    assert not problems, f"{len(problems)} of {len(ledger.wraps)} DEKs failed (first 5):\n" + "\n".join(problems[:5])


# --- simultaneous rotations under the hourly rule ----------------------------------------------

@pytest.fixture(scope="module")
def default_rules_cluster(start_cluster):
    """Two nodes with the DEFAULT timing rules (one rotation per hour, 30 s action cooldown)."""
    c = start_cluster(fast=False)
    yield c
    for n in c.nodes:
        n.stop()


@pytest.mark.parametrize("per_node", [1, 2])
def test_simultaneous_rotations_one_wins(default_rules_cluster, per_node):
    """A fresh key may be rotated once; simultaneous rotations on both nodes (per_node each)
    give exactly one 204, the others 409 KEY_ROTATION_NOT_PERMITTED, and exactly one new version."""
    nodes = default_rules_cluster.nodes
    rounds = 10 if per_node == 1 else 5
    for _ in range(rounds):
        k = nodes[0].client().root_key()
        clients = [n.client() for n in nodes for _ in range(per_node)]
        for c in clients:  # open the connections and warm both nodes on this key
            check_status(c.get_key_resp(k["id"]), 200)
        res = _race([lambda c=c: c.action(k["id"], "rotate") for c in clients])
        ctx = _show(res)
        assert all(isinstance(r, requests.Response) for r in res), ctx
        assert not [r for r in res if r.status_code >= 500], f"5xx in a rotation race{ctx}"
        won = [r for r in res if r.status_code == 204]
        assert len(won) == 1, f"{len(won)} of {len(res)} simultaneous rotations succeeded, expected exactly 1{ctx}"
        for r in res:
            if r.status_code != 204:
                assert_kp_error(r, 409, "KEY_ROTATION_NOT_PERMITTED")
        for n in nodes:
            v = [x["id"] for x in n.client().versions(k["id"])]
            assert len(v) == 2 and len(set(v)) == 2, f"{n.name}: versions after the race: {v}{ctx}"
        # the hourly rule keeps holding on both nodes
        for n in nodes:
            assert_kp_error(n.client().action(k["id"], "rotate"), 409, "KEY_ROTATION_NOT_PERMITTED")


def test_simultaneous_rotations_all_allowed_each_makes_one_version(cluster):
    """With --rotate-min-interval 0 the rules allow every rotation: 4 simultaneous rotations
    over both nodes all succeed and add exactly 4 distinct versions."""
    for _ in range(5):
        k = cluster.nodes[0].client().root_key()
        clients = [n.client() for n in cluster.nodes for _ in range(2)]
        for c in clients:
            check_status(c.get_key_resp(k["id"]), 200)
        res = _race([lambda c=c: c.action(k["id"], "rotate") for c in clients])
        ctx = _show(res)
        assert all(isinstance(r, requests.Response) and r.status_code == 204 for r in res), \
            f"a rotation the rules allow was refused or failed{ctx}"
        for n in cluster.nodes:
            v = [x["id"] for x in n.client().versions(k["id"])]
            assert len(v) == 5 and len(set(v)) == 5, f"{n.name}: 1 + 4 rotations gave versions {v}"


def test_action_cooldown_holds_across_nodes(default_rules_cluster):
    """Default 30 s cooldown: a disable on node 1 makes an immediate enable on node 2 (and
    node 1) 409 REQ_TOO_EARLY_ERR; simultaneous enables on both nodes are all refused."""
    n1, n2 = default_rules_cluster.nodes
    k = n1.client().root_key()
    check_status(n1.client().action(k["id"], "disable"), 204)
    clients = [n.client() for n in (n1, n2) for _ in range(2)]
    for c in clients:
        check_status(c.get_key_resp(k["id"]), 200)
    res = _race([lambda c=c: c.action(k["id"], "enable") for c in clients])
    for r in res:
        assert isinstance(r, requests.Response), _show(res)
        assert_kp_error(r, 409, "REQ_TOO_EARLY_ERR")
    assert n2.client().get_key_resp(k["id"]).json()["resources"][0]["state"] == 2


# --- import-token retrievals -----------------------------------------------------------------

def test_import_token_retrievals_race(cluster):
    """maxAllowedRetrievals=3, 10 simultaneous GET /api/v2/import_token over both nodes:
    exactly 3 succeed (remainingRetrievals 2, 1, 0), the rest 409 IMPORT_TOKEN_EXPIRED_ERR."""
    for round_ in range(5):
        c_post = cluster.nodes[round_ % 2].client()
        check_status(c_post.post("/api/v2/import_token", {"expiration": 600, "maxAllowedRetrievals": 3}), 200, 201)
        time.sleep(CROSS_NODE_BOUND)  # the new token is visible everywhere within the bound
        clients = [cluster.nodes[i % 2].client() for i in range(10)]
        for c in clients:  # open connections (a GET would consume a retrieval: use another route)
            check_status(c.get("/api/v2/instance/policies"), 200)
        res = _race([lambda c=c: c.get("/api/v2/import_token") for c in clients])
        ctx = _show(res)
        assert all(isinstance(r, requests.Response) for r in res), ctx
        ok = [r for r in res if r.status_code == 200]
        assert len(ok) == 3, f"round {round_}: {len(ok)} of 10 retrievals succeeded, expected 3{ctx}"
        assert sorted(r.json()["remainingRetrievals"] for r in ok) == [0, 1, 2], ctx
        payloads = {r.json()["payload"] for r in ok}
        assert len(payloads) == 1, f"the successful retrievals returned different public keys{ctx}"
        for r in res:
            if r.status_code != 200:
                assert_kp_error(r, 409, "IMPORT_TOKEN_EXPIRED_ERR")


# --- state races -------------------------------------------------------------------------------

def test_simultaneous_disables_one_wins(cluster):
    for _ in range(8):
        k = cluster.nodes[0].client().root_key()
        clients = [n.client() for n in cluster.nodes for _ in range(2)]
        for c in clients:
            check_status(c.get_key_resp(k["id"]), 200)
        res = _race([lambda c=c: c.action(k["id"], "disable") for c in clients])
        ctx = _show(res)
        assert all(isinstance(r, requests.Response) for r in res), ctx
        won = [r for r in res if r.status_code == 204]
        assert len(won) == 1, f"{len(won)} simultaneous disables succeeded, expected 1{ctx}"
        for r in res:
            if r.status_code != 204:
                assert_kp_error(r, 409, "KEY_ACTION_INVALID_STATE_ERR")


def _dual_auth_key(cluster):
    c1 = cluster.nodes[0].client()
    k = c1.root_key()
    r = c1.put(f"/api/v2/keys/{k['id']}/policies",
               policy_envelope({"type": POLICY_TYPE, "dualAuthDelete": {"enabled": True}}),
               params={"policy": "dualAuthDelete"})
    check_status(r, 200)
    return k


def test_dual_auth_deletes_race_one_wins(cluster):
    """Admin A authorizes on node 1; admin B deletes simultaneously on both nodes: one delete."""
    second = cluster.info["second_apikey"]
    for _ in range(5):
        k = _dual_auth_key(cluster)
        check_status(cluster.nodes[0].client().action(k["id"], "setKeyForDeletion"), 204)
        time.sleep(CROSS_NODE_BOUND)
        clients = [n.client(second) for n in cluster.nodes for _ in range(2)]
        for c in clients:
            check_status(c.get_key_resp(k["id"]), 200)
        res = _race([lambda c=c: c.delete_key_resp(k["id"]) for c in clients])
        ctx = _show(res)
        assert all(isinstance(r, requests.Response) for r in res), ctx
        won = [r for r in res if r.status_code in (200, 204)]
        assert len(won) == 1, f"{len(won)} simultaneous deletes succeeded, expected 1{ctx}"
        for r in res:
            if r.status_code not in (200, 204):
                assert_kp_error(r, 410, "KEY_DELETED_ERR")


def test_dual_auth_unset_races_delete(cluster):
    """Admin A withdraws the authorization on node 1 while admin B deletes on node 2: either
    the delete happened first (the withdrawal then sees a deleted key) or the withdrawal did
    (the delete is refused) -- never both succeeding."""
    a1 = cluster.nodes[0].client()
    b2 = cluster.nodes[1].client(cluster.info["second_apikey"])
    outcomes = Counter()
    for i in range(12):
        k = _dual_auth_key(cluster)
        check_status(a1.action(k["id"], "setKeyForDeletion"), 204)
        time.sleep(CROSS_NODE_BOUND)
        check_status(a1.get_key_resp(k["id"]), 200)
        check_status(b2.get_key_resp(k["id"]), 200)
        # vary which side starts first by a few milliseconds, so both orders occur
        lag = (i % 4) * 0.004
        d_unset, d_delete = (lag, 0.0) if i % 2 else (0.0, lag)
        unset, dele = _race([lambda: (time.sleep(d_unset), a1.action(k["id"], "unsetKeyForDeletion"))[1],
                             lambda: (time.sleep(d_delete), b2.delete_key_resp(k["id"]))[1]])
        ctx = _show([unset, dele])
        assert isinstance(unset, requests.Response) and isinstance(dele, requests.Response), ctx
        state = a1.get_key_resp(k["id"]).json()["resources"][0]["state"]
        if dele.status_code in (200, 204):
            assert unset.status_code == 410 and reason_code(unset) == "KEY_DELETED_ERR", \
                f"delete and withdrawal both took effect{ctx}"
            assert state == 5
            outcomes["delete first"] += 1
        else:
            assert unset.status_code == 204, ctx
            assert_kp_error(dele, 409, "AUTHORIZATIONS_NOT_MET")
            assert state == 1
            outcomes["withdrawal first"] += 1
    print(f"\nunset/delete race outcomes: {dict(outcomes)}")
