"""Concurrent use through several SDK clients at once (bounded: a few dozen requests, local server only)."""

import os
from concurrent.futures import ThreadPoolExecutor

from kh3 import J, body, create, meta, unb64, unwrap, versions, wrap


def test_parallel_wrap_unwrap(server, inst):
    kp = server.client()
    k = create(kp, inst)
    clients = [server.client() for _ in range(8)]

    def job(i):
        c = clients[i % len(clients)]
        dek = os.urandom(32)
        w = wrap(c, inst, k["id"], dek, aad=[str(i)])
        return dek, unb64(unwrap(c, inst, k["id"], w["ciphertext"], aad=[str(i)])["plaintext"])

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(job, range(40)))
    assert all(a == b for a, b in results)


def test_parallel_rotations_lose_no_version(server, inst):
    kp = server.client()
    k = create(kp, inst)
    dek = os.urandom(32)
    old = wrap(kp, inst, k["id"], dek)
    clients = [server.client() for _ in range(6)]

    def rot(i):
        return clients[i].rotate_key(id=k["id"], bluemix_instance=inst).get_status_code()

    with ThreadPoolExecutor(6) as ex:
        codes = list(ex.map(rot, range(6)))
    assert codes == [204] * 6, codes
    v = versions(kp, inst, k["id"])["resources"]
    assert len(v) == 7 and len({x["id"] for x in v}) == 7
    assert v[0]["id"] == meta(kp, inst, k["id"])["keyVersion"]["id"]
    assert unb64(unwrap(kp, inst, k["id"], old["ciphertext"])["plaintext"]) == dek


def test_parallel_creates_and_aliases(server, inst):
    clients = [server.client() for _ in range(6)]

    def mk(i):
        return create(clients[i % len(clients)], inst, aliases=[f"par-alias-{os.getpid()}-{i}"])["id"]

    with ThreadPoolExecutor(6) as ex:
        ids = list(ex.map(mk, range(12)))
    assert len(set(ids)) == 12
    kp = clients[0]
    for i, kid in enumerate(ids):
        assert meta(kp, inst, f"par-alias-{os.getpid()}-{i}")["id"] == kid
