"""Master-key rotation and zeroization through the CLI (issue #3, must-show 4):

- a rotation under a bounded concurrent wrap/unwrap/create load loses no request, and every
  ciphertext made before it still unwraps; afterwards the old key's parts unseal nothing;
- a kill -9 in the middle of the re-wrap walk, a restart (sealed), an unseal with the parts
  of both keys: the walk resumes where it stopped and finishes;
- zeroize (crypto-shredding): every key operation then answers 410 MASTER_KEY_ZEROIZED_ERR,
  also after a restart, and nothing unseals again.

The walk is throttled for the test with KEYHOLD_REWRAP_BATCH / KEYHOLD_REWRAP_PAUSE_MS so it
takes long enough to load it and to kill the server in the middle.
"""
import base64
import json
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from api_helpers import (assert_kp_error, key_envelope, key_resource, secure_import_fields, start_server,
                         unb64)
from test_ceremony import CEREMONY, Admin, raw, status

CAROL_PART_PASS = "carol part pass"


def part2(a: Admin) -> str:
    return str(a.dir / f"{a.name}2.part")


def part_pass(a: Admin) -> str:
    return {"alice": "alice part pass", "bob": "bob part pass"}.get(a.name, CAROL_PART_PASS)


def bootstrap(tmp_path, data):
    """3 administrators, threshold 2, the first master key in two parts (alice, bob);
    the next key's parts are held by alice and carol."""
    dev_json = data / "dev.json"
    alice, bob, carol = (Admin(n, tmp_path, dev_json) for n in ("alice", "bob", "carol"))
    for a in (alice, bob, carol):
        a.run("admin-keygen", "--name", a.name, "--out", a.key)
        a.sign("add-admin")
    alice.run("part-generate", "--holder", "alice", "--out", alice.part)
    bob.run("part-generate", "--holder", "bob", "--out", bob.part)
    alice.run("part-generate", "--holder", "alice", "--out", part2(alice))
    carol.run("part-generate", "--holder", "carol", "--out", part2(carol), part_pass=CAROL_PART_PASS)
    alice.sign("set-thresholds", "--signature", "2", "--revocation", "2")
    alice.sign("exit-imprint")
    alice.sign("load-part", "--parts", "2", "--part", alice.part)
    bob.sign("load-part", "--parts", "2", "--part", bob.part)
    for verb in ("commit", "activate"):
        alice.sign(verb)
        assert "EXECUTED" in carol.sign(verb)
    st = status(alice)
    assert st["sealed"] is False
    return alice, bob, carol, st["registers"]["current"]["verification_pattern"]


def make_keys(kp, n):
    """n root keys, each with one DEK wrapped under it (with an aad), plus a standard key."""
    def one(i):
        kid = kp.root_key()["id"]
        dek = os.urandom(32)
        aad = [f"k{i}"]
        return kid, dek, aad, kp.wrap(kid, dek, aad=aad)["ciphertext"]

    with ThreadPoolExecutor(8) as ex:
        wrapped = list(ex.map(one, range(n)))
    std = kp.standard_key()
    r = raw(kp, "POST", "/api/v2/import_token", {"expiration": 3600, "maxAllowedRetrievals": 10})
    assert r.status_code in (200, 201), r.text
    return wrapped, std


def check_all(kp, wrapped, std):
    def one(w):
        kid, dek, aad, ct = w
        r = raw(kp, "POST", f"/api/v2/keys/{kid}/actions/unwrap", {"ciphertext": ct, "aad": aad})
        assert r.status_code == 200, r.text
        assert unb64(r.json()["plaintext"]) == dek

    with ThreadPoolExecutor(4) as ex:
        list(ex.map(one, wrapped))
    r = raw(kp, "GET", f"/api/v2/keys/{std['id']}")
    assert r.status_code == 200, r.text
    assert r.json()["resources"][0]["payload"] == std["payload"]


def secure_import_works(kp):
    """The import token made before the rotation still decrypts (its private key was re-wrapped)."""
    r = raw(kp, "GET", "/api/v2/import_token")
    assert r.status_code == 200, r.text
    material = os.urandom(32)
    r = kp.create_key_resp(extractable=False, **secure_import_fields(r.json(), material))
    assert r.status_code == 201, r.text
    kid = r.json()["resources"][0]["id"]
    ct = kp.wrap(kid, b"imported after rotation")["ciphertext"]
    assert unb64(kp.unwrap(kid, ct)["plaintext"]) == b"imported after rotation"


def load_new_key(alice, carol):
    """The new key's holders load its parts; alice and carol commit it. Returns its pattern."""
    alice.sign("load-part", "--parts", "2", "--part", part2(alice))
    carol.sign("load-part", "--parts", "2", "--part", part2(carol), part_pass=CAROL_PART_PASS)
    vp2 = status(alice)["registers"]["new"]["verification_pattern"]
    alice.sign("commit")
    assert "EXECUTED" in carol.sign("commit")
    return vp2


def rotate(alice, bob):
    assert "PENDING" in alice.sign("rotate")
    assert "EXECUTED" in bob.sign("rotate")


def wait_rotation_done(admin, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = status(admin)
        if st["rotation"] is None:
            return st
        time.sleep(0.2)
    raise AssertionError(f"the rotation did not finish: {status(admin)['rotation']}")


THROTTLE = {"KEYHOLD_REWRAP_BATCH": "25", "KEYHOLD_REWRAP_PAUSE_MS": "40", "KEYHOLD_REWRAP_GRACE_MS": "300"}


def test_rotation_under_load_loses_no_request(tmp_path):
    data = tmp_path / "server"
    # A small root-key cache: most requests open their key's blob, under either key.
    srv = start_server(data, extra=[*CEREMONY, "--key-cache-entries", "64"], env=THROTTLE)
    try:
        alice, bob, carol, vp1 = bootstrap(tmp_path, data)
        kp = srv.client()
        wrapped, std = make_keys(kp, 1500)
        vp2 = load_new_key(alice, carol)
        assert vp2 != vp1
        # Loading and committing the new key changed nothing yet.
        assert status(alice)["rotation"] is None

        stop = threading.Event()
        failures, done = [], [0]
        lock = threading.Lock()

        def worker(seed):
            rnd = random.Random(seed)
            mine = []
            while not stop.is_set():
                try:
                    op = rnd.random()
                    if op < 0.05:
                        r = raw(kp, "POST", "/api/v2/keys", key_envelope(key_resource()))
                        ok = r.status_code == 201
                        if ok:
                            mine.append(r.json()["resources"][0]["id"])
                    elif op < 0.5 or not mine:
                        kid, dek, aad, ct = rnd.choice(wrapped)
                        r = raw(kp, "POST", f"/api/v2/keys/{kid}/actions/unwrap", {"ciphertext": ct, "aad": aad})
                        ok = r.status_code == 200 and unb64(r.json()["plaintext"]) == dek
                    else:
                        kid = rnd.choice(mine + [w[0] for w in rnd.sample(wrapped, 3)])
                        dek = os.urandom(32)
                        r = raw(kp, "POST", f"/api/v2/keys/{kid}/actions/wrap",
                                {"plaintext": base64.b64encode(dek).decode()})
                        ok = r.status_code == 200
                        if ok:
                            ct = r.json()["ciphertext"]
                            r = raw(kp, "POST", f"/api/v2/keys/{kid}/actions/unwrap", {"ciphertext": ct})
                            ok = r.status_code == 200 and unb64(r.json()["plaintext"]) == dek
                    with lock:
                        done[0] += 1
                        if not ok:
                            failures.append((r.status_code, r.text[:300]))
                except Exception as e:  # a dropped connection is a lost request too
                    with lock:
                        failures.append(("exception", repr(e)))

        threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(1)
        rotate(alice, bob)
        st = status(alice)
        rot = st["rotation"]
        assert rot is not None and rot["to_verification_pattern"] == vp2
        assert rot["blobs_total"] >= 1500 and rot["blobs_done"] < rot["blobs_total"]
        seen_partial = False
        deadline = time.time() + 300
        while time.time() < deadline:
            rot = status(alice)["rotation"]
            if rot is None:
                break
            seen_partial |= 0 < rot["blobs_done"] < rot["blobs_total"]
            time.sleep(0.2)
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join(60)
        st = status(alice)
        assert st["rotation"] is None, st["rotation"]
        assert seen_partial, "the walk was never seen in progress: throttle it more"
        assert st["registers"]["current"]["verification_pattern"] == vp2
        assert failures == [], f"{len(failures)} of {done[0]} requests failed: {failures[:5]}"
        assert done[0] > 100, done[0]
        assert st["rotation"] is None
        check_all(kp, wrapped, std)
        secure_import_works(kp)
    finally:
        srv.stop()

    # The old key is retired: its parts no longer unseal; the new key's do, and every
    # earlier ciphertext still unwraps.
    srv = start_server(data, extra=CEREMONY)
    try:
        kp = srv.client()
        out = alice.sign("unseal", "--part", alice.part, ok=False)
        assert "KEY_PART_MISMATCH_ERR" in out
        alice.sign("unseal", "--part", part2(alice))
        out = carol.sign("unseal", "--part", part2(carol), part_pass=CAROL_PART_PASS)
        assert "UNSEALED" in out and vp2 in out
        check_all(kp, wrapped, std)
    finally:
        srv.stop()


def test_rotation_killed_midway_resumes_after_unseal_with_both_keys(tmp_path):
    data = tmp_path / "server"
    slow = {**THROTTLE, "KEYHOLD_REWRAP_BATCH": "10", "KEYHOLD_REWRAP_PAUSE_MS": "60"}
    srv = start_server(data, extra=CEREMONY, env=slow)
    try:
        alice, bob, carol, vp1 = bootstrap(tmp_path, data)
        kp = srv.client()
        wrapped, std = make_keys(kp, 1200)
        vp2 = load_new_key(alice, carol)
        rotate(alice, bob)
        deadline = time.time() + 120
        while True:
            rot = status(alice)["rotation"]
            assert rot is not None, "the rotation finished before the kill: throttle it more"
            if rot["blobs_done"] >= 200:
                break
            assert time.time() < deadline
            time.sleep(0.1)
        assert rot["blobs_done"] < rot["blobs_total"]
        srv.kill()  # SIGKILL in the middle of the walk
    finally:
        srv.stop()

    srv = start_server(data, extra=CEREMONY, env=slow)
    try:
        kp = srv.client()
        st = status(alice)
        assert st["sealed"] is True
        rot = st["rotation"]
        assert rot["to_verification_pattern"] == vp2
        done_at_kill = rot["blobs_done"]
        assert 0 < done_at_kill < rot["blobs_total"], rot
        assert rot["walking_on_this_node"] is False
        # Progress is shown; no secret is: no part file's sealed bytes appear.
        text = json.dumps(st) + alice.run("status")
        assert "of" in text and "re-wrapped" in text
        for path in (alice.part, bob.part, part2(alice), part2(carol)):
            assert json.loads(open(path).read())["sealed"]["ciphertext"] not in text
        # Unsealing needs the parts of both keys: the old one's alone do not unseal.
        alice.sign("unseal", "--part", alice.part)
        out = bob.sign("unseal", "--part", bob.part)
        assert "2 of 4" in out
        assert status(alice)["sealed"] is True
        stray = carol.dir / "stray.part"
        carol.run("part-generate", "--holder", "carol", "--out", str(stray), part_pass=CAROL_PART_PASS)
        out = carol.sign("unseal", "--part", str(stray), part_pass=CAROL_PART_PASS, ok=False)
        assert "KEY_PART_MISMATCH_ERR" in out
        alice.sign("unseal", "--part", part2(alice))
        out = carol.sign("unseal", "--part", part2(carol), part_pass=CAROL_PART_PASS)
        assert "UNSEALED" in out and vp2 in out
        # Mid-walk every ciphertext unwraps (re-wrapped blobs and not yet re-wrapped ones).
        check_all(kp, wrapped[:200], std)
        st = wait_rotation_done(alice)
        assert st["registers"]["current"]["verification_pattern"] == vp2
        check_all(kp, wrapped, std)
        secure_import_works(kp)
    finally:
        srv.stop()


def test_zeroize_shreds_every_key(tmp_path):
    data = tmp_path / "server"
    srv = start_server(data, extra=CEREMONY)
    try:
        alice, bob, carol, vp1 = bootstrap(tmp_path, data)
        kp = srv.client()
        wrapped, std = make_keys(kp, 3)
        # The signers name the key they destroy.
        out = alice.sign("zeroize", "--verification-pattern", "0" * 32, ok=False)
        assert "KEY_PART_MISMATCH_ERR" in out
        assert "PENDING" in alice.sign("zeroize", "--verification-pattern", vp1)
        check_all(kp, wrapped, std)  # one signature destroys nothing
        assert "EXECUTED" in carol.sign("zeroize", "--verification-pattern", vp1)
        kid, dek, aad, ct = wrapped[0]
        r = raw(kp, "POST", f"/api/v2/keys/{kid}/actions/unwrap", {"ciphertext": ct, "aad": aad})
        assert_kp_error(r, 410, "MASTER_KEY_ZEROIZED_ERR")
        assert_kp_error(raw(kp, "GET", f"/api/v2/keys/{std['id']}"), 410, "MASTER_KEY_ZEROIZED_ERR")
        st = status(alice)
        assert st["zeroized"] is True and st["registers"]["current"]["state"] == "zeroized"
        assert "ZEROIZED" in alice.run("status")
    finally:
        srv.stop()

    srv = start_server(data, extra=CEREMONY)
    try:
        kp = srv.client()
        r = raw(kp, "POST", f"/api/v2/keys/{kid}/actions/unwrap", {"ciphertext": ct, "aad": aad})
        assert_kp_error(r, 410, "MASTER_KEY_ZEROIZED_ERR")
        assert "was zeroized" in r.json()["resources"][0]["reasons"][0]["message"]
        out = alice.sign("unseal", "--part", alice.part, ok=False)
        assert "CEREMONY_STATE_ERR" in out and "zeroized" in out
        out = alice.sign("load-part", "--parts", "2", "--part", part2(alice), ok=False)
        assert "zeroized" in out
        assert kp.get("/api/v2/keys").status_code == 200  # metadata stays listable
    finally:
        srv.stop()
