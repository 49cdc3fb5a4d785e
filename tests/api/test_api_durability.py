"""Durability: kill -9 right after a 201, restart with the same --data-dir."""
import json
import signal

from api_helpers import check_status, unb64


def test_kill9_after_create_then_restart(server_factory, tmp_path):
    data = tmp_path / "durable"
    a = server_factory(data_dir=data)
    c = a.client()
    k1 = c.root_key()
    dek = b"wrapped before the kill"
    w = c.wrap(k1["id"], dek, aad=["ctx"])
    c.rotate(k1["id"])
    v2 = c.metadata(k1["id"])["keyVersion"]["id"]
    std = c.standard_key()
    ring = c.create_ring()
    gone = c.root_key()
    c.delete_key(gone["id"])
    r = c.create_key_resp(ring=ring)
    check_status(r, 201)
    last = r.json()["resources"][0]
    a.proc.send_signal(signal.SIGKILL)  # right after the 201
    a.proc.wait(10)
    info_before = dict(a.info)

    old_token = a.token()
    b = server_factory(data_dir=data)
    # clients cache tokens for most of their lifetime: a restart must not invalidate them
    import requests
    r = requests.get(b.url + "/api/v2/keys", timeout=30,
                     headers={"Authorization": "Bearer " + old_token, "Bluemix-Instance": b.instance_id})
    check_status(r, 200)
    assert b.info["instance_id"] == info_before["instance_id"]
    assert b.info["apikey"] == info_before["apikey"]
    assert b.info["second_apikey"] == info_before["second_apikey"]
    assert b.info["service_apikey"] == info_before["service_apikey"]
    assert json.loads((data / "dev.json").read_text()) == b.info
    c2 = b.client()
    got = c2.get_key(last["id"])
    assert got["keyRingID"] == ring and got["state"] == 1
    md = c2.metadata(k1["id"])
    assert md["keyVersion"]["id"] == v2
    u = c2.unwrap(k1["id"], w["ciphertext"], aad=["ctx"])
    assert unb64(u["plaintext"]) == dek
    assert u["rewrappedKeyVersion"]["id"] == v2
    assert c2.get_key(std["id"])["payload"] == std["payload"]
    assert c2.metadata(gone["id"])["state"] == 5
    w2 = c2.wrap(last["id"], b"after restart")
    assert unb64(c2.unwrap(last["id"], w2["ciphertext"])["plaintext"]) == b"after restart"


def test_restart_keeps_policies_and_aliases(server_factory, tmp_path):
    data = tmp_path / "durable2"
    a = server_factory(data_dir=data)
    c = a.client()
    k = c.root_key(aliases=["durable-alias"])
    check_status(c.put(f"/api/v2/keys/{k['id']}/policies",
                       {"metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
                        "resources": [{"type": "application/vnd.ibm.kms.policy+json",
                                       "dualAuthDelete": {"enabled": True}}]}), 200)
    a.kill()
    b = server_factory(data_dir=data)
    c2 = b.client()
    assert c2.get_key("durable-alias")["id"] == k["id"]
    assert c2.metadata(k["id"])["dualAuthDelete"]["enabled"] is True


def test_kill9_during_concurrent_writes(server_factory, tmp_path):
    """Every write answered 2xx before a kill -9 is there after the restart (DESIGN §4: a write is
    acknowledged only after it is durable), and the store is still usable."""
    import threading
    import time
    import requests
    data = tmp_path / "durable3"
    a = server_factory(data_dir=data)
    acked, wrapped, stop = [], [], threading.Event()
    lock = threading.Lock()
    base = a.client()
    root = base.root_key()

    def writer(i):
        c = a.client()
        n = 0
        while not stop.is_set():
            try:
                r = c.create_key_resp(name=f"w{i}-{n}")
                if r.status_code == 201:
                    with lock:
                        acked.append(r.json()["resources"][0]["id"])
                w = c.wrap_resp(root["id"], f"{i}-{n}".encode())
                if w.status_code == 200:
                    with lock:
                        wrapped.append((f"{i}-{n}".encode(), w.json()["ciphertext"]))
            except requests.RequestException:
                return
            n += 1

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait(10)
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) > 5, "the writers should have created some keys"
    b = server_factory(data_dir=data)
    c = b.client()
    present = {k["id"] for k in c.list_keys({"limit": "5000", "state": "0,1,2,3,5"})}
    missing = [k for k in acked if k not in present]
    assert not missing, f"{len(missing)} of {len(acked)} acknowledged keys lost after kill -9"
    for pt, ct in wrapped[-20:]:
        assert unb64(c.unwrap(root["id"], ct)["plaintext"]) == pt
    check_status(c.create_key_resp(), 201)
