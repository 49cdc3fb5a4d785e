"""Concurrent requests: no 5xx (e.g. store busy/locked), no lost updates, uniqueness holds."""
from concurrent.futures import ThreadPoolExecutor

import pytest

from api_helpers import b64, check_status, describe, unb64, uniq

N = 16


def _pool(fn, n=N):
    with ThreadPoolExecutor(max_workers=n) as ex:
        return list(ex.map(fn, range(n)))


@pytest.fixture(scope="module")
def cc(server_factory):
    srv = server_factory()
    return srv


def test_parallel_creates_and_wraps(cc):
    def work(i):
        c = cc.client()
        r = c.create_key_resp(name=f"par-{i}-{uniq('x')}")
        out = [r]
        if r.status_code == 201:
            kid = r.json()["resources"][0]["id"]
            w = c.wrap_resp(kid, f"dek-{i}".encode())
            out.append(w)
            if w.status_code == 200:
                u = c.unwrap_resp(kid, w.json()["ciphertext"])
                out.append(u)
                assert unb64(u.json()["plaintext"]) == f"dek-{i}".encode()
        return out
    results = _pool(work)
    for rs in results:
        for r in rs:
            assert r.status_code < 300, describe(r)
    c = cc.client()
    assert int(c.head("/api/v2/keys").headers["Key-Total"]) >= N


def test_parallel_rotations_no_lost_versions(cc):
    c = cc.client()
    k = c.root_key()
    w = c.wrap(k["id"], b"before")

    def rot(i):
        return cc.client().action(k["id"], "rotate")
    rs = _pool(rot)
    for r in rs:
        assert r.status_code in (204, 409), describe(r)
    ok = sum(r.status_code == 204 for r in rs)
    assert ok >= 1
    assert len(c.versions(k["id"])) == 1 + ok, "each 204 rotation must create exactly one version"
    assert unb64(c.unwrap(k["id"], w["ciphertext"])["plaintext"]) == b"before"


def test_parallel_same_alias_only_one_wins(cc):
    c = cc.client()
    keys = [c.root_key() for _ in range(8)]
    al = uniq("race")

    def claim(i):
        return cc.client().post(f"/api/v2/keys/{keys[i]['id']}/aliases/{al}")
    rs = _pool(claim, 8)
    for r in rs:
        assert r.status_code < 500, describe(r)
    assert sum(r.status_code in (200, 201) for r in rs) == 1, [r.status_code for r in rs]
    owner = c.get_key(al)["id"]
    assert owner in {k["id"] for k in keys}


def test_parallel_disable_enable(cc):
    c = cc.client()
    k = c.root_key()

    def flip(i):
        return cc.client().action(k["id"], "disable" if i % 2 == 0 else "enable")
    rs = _pool(flip)
    for r in rs:
        assert r.status_code in (204, 409), describe(r)
    assert c.metadata(k["id"])["state"] in (1, 2)


def test_parallel_delete_only_one_wins(cc):
    c = cc.client()
    k = c.root_key()

    def kill(i):
        return cc.client().delete(f"/api/v2/keys/{k['id']}")
    rs = _pool(kill, 8)
    for r in rs:
        assert r.status_code in (200, 204, 410), describe(r)
    assert sum(r.status_code in (200, 204) for r in rs) == 1, [r.status_code for r in rs]


def test_parallel_import_token_and_rings(cc):
    def work(i):
        c = cc.client()
        return [c.post("/api/v2/import_token", {"expiration": 600}), c.post(f"/api/v2/key_rings/{uniq('pr')}"),
                c.get("/api/v2/key_rings"), c.get("/api/v2/instance/policies")]
    for rs in _pool(work, 8):
        for r in rs:
            assert r.status_code < 300, describe(r)


def test_parallel_wrap_same_key_many(cc):
    c = cc.client()
    k = c.root_key()

    def work(i):
        cl = cc.client()
        data = bytes([i]) * (i + 1)
        w = cl.wrap_resp(k["id"], data, aad=[str(i)])
        assert w.status_code == 200, describe(w)
        u = cl.unwrap_resp(k["id"], w.json()["ciphertext"], aad=[str(i)])
        assert u.status_code == 200 and u.json()["plaintext"] == b64(data), describe(u)
        return True
    assert all(_pool(work, 32))


@pytest.mark.parametrize("entries", ["1", "0"])
def test_tiny_key_cache_stays_correct(server_factory, entries):
    """With --key-cache-entries 1 (or 0) every operation evicts; results must not change, and state
    changes (rotate, disable, delete) must be seen at once."""
    srv = server_factory(extra=["--key-cache-entries", entries])
    c = srv.client()
    keys = [c.root_key() for _ in range(4)]
    cts = {}
    for rnd in range(3):
        for i, k in enumerate(keys):
            pt = f"{rnd}-{i}".encode()
            cts[(rnd, i)] = (pt, c.wrap(k["id"], pt)["ciphertext"])
        c.rotate(keys[rnd]["id"])
    for (rnd, i), (pt, ct) in cts.items():
        assert unb64(c.unwrap(keys[i]["id"], ct)["plaintext"]) == pt
    # cached versions must not outlive state changes
    c.action(keys[0]["id"], "disable")
    r = c.wrap_resp(keys[0]["id"], b"x")
    assert r.status_code == 409, describe(r)
    c.delete_key(keys[1]["id"])
    r = c.unwrap_resp(keys[1]["id"], cts[(0, 1)][1])
    assert r.status_code == 410, describe(r)


def test_wraps_racing_rotations_and_disable(cc):
    """Wraps running while the key rotates: every ciphertext names an existing version and unwraps;
    once disable has answered 204, no later wrap succeeds."""
    import threading
    c = cc.client()
    k = c.root_key()
    out, stop, lock = [], threading.Event(), threading.Lock()

    def wrapper(i):
        cl = cc.client()
        n = 0
        while not stop.is_set():
            pt = f"{i}-{n}".encode()
            r = cl.wrap_resp(k["id"], pt)
            if r.status_code == 200:
                with lock:
                    out.append((pt, r.json()["ciphertext"], r.json()["keyVersion"]["id"]))
            n += 1

    ts = [threading.Thread(target=wrapper, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for _ in range(3):
        c.rotate(k["id"])
    stop.set()
    for t in ts:
        t.join(30)
    versions = {v["id"] for v in c.versions(k["id"])}
    assert len(versions) == 4
    assert out
    for pt, ct, vid in out:
        assert vid in versions
        assert unb64(c.unwrap(k["id"], ct)["plaintext"]) == pt
    check_status(c.action(k["id"], "disable"), 204)
    for _ in range(20):
        r = c.wrap_resp(k["id"], b"after disable")
        assert r.status_code == 409, describe(r)
