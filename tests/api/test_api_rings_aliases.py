"""§5 rows 31–35, §6.12: key rings and aliases."""
import uuid

import pytest

from api_helpers import (JSON_CT, RFC3339, _NO, assert_kp_error, check_status, describe, uniq, unb64)

RING_TYPE = "application/vnd.ibm.kms.key_ring+json"


# --- key rings ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rkp(server_factory):
    """Own server, so ring listings stay small and predictable."""
    return server_factory().client()


def list_rings(c, params=None):
    r = c.get("/api/v2/key_rings", params=params)
    check_status(r, 200)
    assert JSON_CT.match(r.headers["content-type"]), describe(r)
    body = r.json()
    assert body["metadata"]["collectionType"] == RING_TYPE
    assert body["metadata"]["collectionTotal"] == len(body["resources"])
    return body


def test_default_ring_listed(rkp):
    body = list_rings(rkp)
    ring_ids = [x["id"] for x in body["resources"]]
    assert "default" in ring_ids
    d = [x for x in body["resources"] if x["id"] == "default"][0]
    assert RFC3339.match(d["creationDate"]) and "createdBy" in d


def test_create_list_delete_ring(rkp):
    ring = uniq("ring")
    r = rkp.post(f"/api/v2/key_rings/{ring}")
    check_status(r, 201)
    assert r.content == b"", "§6.12: 201, no body"
    body = list_rings(rkp, {"totalCount": "true"})
    assert body["metadata"]["totalCount"] >= 2
    mine = [x for x in body["resources"] if x["id"] == ring]
    assert mine, describe(r)
    assert RFC3339.match(mine[0]["creationDate"]) and mine[0]["createdBy"]
    check_status(rkp.delete(f"/api/v2/key_rings/{ring}"), 204)
    assert ring not in [x["id"] for x in list_rings(rkp)["resources"]]
    assert_kp_error(rkp.delete(f"/api/v2/key_rings/{ring}"), 404)


def test_ring_create_accepts_empty_json_body_and_content_types(rkp):
    for body, ct in ((_NO, None), ({}, "application/json")):
        ring = uniq("ring")
        r = rkp.post(f"/api/v2/key_rings/{ring}", body, headers={"Content-Type": ct} if ct else None)
        check_status(r, 201)


def test_ring_paging(server_factory):
    c = server_factory().client()
    made = [c.create_ring(f"page-ring-{i}") for i in range(4)]
    body = list_rings(c, {"totalCount": "true"})
    assert body["metadata"]["totalCount"] == 5
    assert {x["id"] for x in body["resources"]} == set(made) | {"default"}
    p1 = list_rings(c, {"limit": "2", "offset": "0"})["resources"]
    p2 = list_rings(c, {"limit": "2", "offset": "2"})["resources"]
    p3 = list_rings(c, {"limit": "2", "offset": "4"})["resources"]
    assert len(p1) == 2 and len(p2) == 2 and len(p3) == 1
    assert {x["id"] for x in p1 + p2 + p3} == set(made) | {"default"}
    for bad in ({"limit": "-1"}, {"limit": "abc"}, {"offset": "-3"}):
        assert_kp_error(c.get("/api/v2/key_rings", params=bad), 400)


def test_duplicate_ring(rkp):
    ring = rkp.create_ring()
    assert_kp_error(rkp.post(f"/api/v2/key_rings/{ring}"), 409)


def test_default_ring_reserved(rkp):
    assert_kp_error(rkp.post("/api/v2/key_rings/default"), (400, 409))
    assert_kp_error(rkp.delete("/api/v2/key_rings/default"), (400, 403, 409))
    assert_kp_error(rkp.delete("/api/v2/key_rings/default", params={"force": "true"}), (400, 403, 409))


@pytest.mark.parametrize("name", ["x" * 1000, "has space", "slash%2Fx", "ключ", "tab%09x", "nul%00x", "semi;colon"])
def test_invalid_ring_ids(rkp, name):
    r = rkp.post(f"/api/v2/key_rings/{name}")
    assert 400 <= r.status_code < 500, describe(r)
    assert name not in [x["id"] for x in list_rings(rkp)["resources"]]


def test_create_key_in_ring(rkp):
    ring = rkp.create_ring()
    k = rkp.root_key(ring=ring)
    assert k["keyRingID"] == ring
    assert rkp.metadata(k["id"])["keyRingID"] == ring


def test_create_key_in_unknown_ring(rkp):
    r = rkp.create_key_resp(ring=uniq("nosuchring"))
    assert_kp_error(r, (400, 404))


def test_non_empty_ring_delete_refused(rkp):
    ring = rkp.create_ring()
    k = rkp.root_key(ring=ring)
    assert_kp_error(rkp.delete(f"/api/v2/key_rings/{ring}"), 409)
    # force does not remove active keys either (§6.12)
    assert_kp_error(rkp.delete(f"/api/v2/key_rings/{ring}", params={"force": "true"}), 409)
    assert rkp.metadata(k["id"])["keyRingID"] == ring
    rkp.delete_key(k["id"])
    # only destroyed keys left: plain delete still refused, force moves them to default
    r = rkp.delete(f"/api/v2/key_rings/{ring}")
    assert r.status_code in (204, 409), describe(r)
    if r.status_code == 409:
        assert_kp_error(r, 409)
        check_status(rkp.delete(f"/api/v2/key_rings/{ring}", params={"force": "true"}), 204)
    assert rkp.get_key(k["id"])["keyRingID"] == "default"
    assert ring not in [x["id"] for x in list_rings(rkp)["resources"]]


def test_ring_with_suspended_key_refused(rkp):
    ring = rkp.create_ring()
    k = rkp.root_key(ring=ring)
    check_status(rkp.action(k["id"], "disable"), 204)
    assert_kp_error(rkp.delete(f"/api/v2/key_rings/{ring}", params={"force": "true"}), 409)


def test_ring_delete_bad_force(rkp):
    ring = rkp.create_ring()
    assert_kp_error(rkp.delete(f"/api/v2/key_rings/{ring}", params={"force": "maybe"}), 400)


def test_key_ring_header_on_key_ops(rkp):
    ring = rkp.create_ring()
    k = rkp.root_key(ring=ring)
    r = rkp.get(f"/api/v2/keys/{k['id']}", headers={"X-Kms-Key-Ring": ring})
    check_status(r, 200)


# --- aliases --------------------------------------------------------------------------------

ALIAS_TYPES = ("application/vnd.ibm.kms.alias+json", "application/vnd.ibm.kms.key+json")


def test_create_alias(kp):
    k = kp.root_key()
    al = uniq("alias")
    r = kp.post(f"/api/v2/keys/{k['id']}/aliases/{al}")
    check_status(r, 200, 201)
    body = r.json()
    assert body["metadata"]["collectionType"] in ALIAS_TYPES
    res = body["resources"][0]
    assert res["keyId"] == k["id"] and res["alias"] == al
    assert RFC3339.match(res["creationDate"]) and res["createdBy"]
    assert al in kp.metadata(k["id"])["aliases"]


def test_alias_works_wherever_key_id_does(kp):
    k = kp.root_key()
    al = uniq("use")
    check_status(kp.post(f"/api/v2/keys/{k['id']}/aliases/{al}"), 200, 201)
    assert kp.get_key(al)["id"] == k["id"]
    assert kp.metadata(al)["id"] == k["id"]
    w = kp.wrap(al, b"via alias")
    assert unb64(kp.unwrap(k["id"], w["ciphertext"])["plaintext"]) == b"via alias"
    assert unb64(kp.unwrap(al, w["ciphertext"], form="query")["plaintext"]) == b"via alias"
    check_status(kp.action(al, "rewrap", {"ciphertext": w["ciphertext"]}), 200)
    check_status(kp.get(f"/api/v2/keys/{al}/versions"), 200)
    check_status(kp.get(f"/api/v2/keys/{al}/policies"), 200)
    check_status(kp.put(f"/api/v2/keys/{al}/policies",
                        {"metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
                         "resources": [{"type": "application/vnd.ibm.kms.policy+json",
                                        "rotation": {"enabled": True, "interval_month": 2}}]},
                        params={"policy": "rotation"}), 200)
    check_status(kp.get(f"/api/v2/keys/{al}/registrations"), 200)
    kp.rotate(al)
    check_status(kp.action(al, "disable"), 204)
    check_status(kp.action(al, "enable", form="query"), 204)
    check_status(kp.action(al, "sync"), 204)
    ring = kp.create_ring()
    check_status(kp.patch(f"/api/v2/keys/{al}", {"keyRingID": ring}), 200)
    al2 = uniq("second")
    check_status(kp.post(f"/api/v2/keys/{al}/aliases/{al2}"), 200, 201)
    assert kp.get_key(al2)["id"] == k["id"]
    r = kp.delete(f"/api/v2/keys/{al}", headers={"Prefer": "return=representation"})
    check_status(r, 200)
    assert r.json()["resources"][0]["id"] == k["id"]
    check_status(kp.post(f"/api/v2/keys/{al}/restore"), 201)
    kp.delete_key(al)
    check_status(kp.delete(f"/api/v2/keys/{al}/purge"), 200, 204)
    assert_kp_error(kp.get(f"/api/v2/keys/{al}"), 404, "KEY_NOT_FOUND_ERR")


def test_alias_list_and_search(kp):
    ring = kp.create_ring()
    al = uniq("listed")
    kp.root_key(ring=ring, aliases=[al])
    listed = kp.list_keys(ring=ring)
    assert listed[0]["aliases"] == [al]


def test_delete_alias(kp):
    k = kp.root_key()
    al = uniq("del")
    check_status(kp.post(f"/api/v2/keys/{k['id']}/aliases/{al}"), 200, 201)
    r = kp.delete(f"/api/v2/keys/{k['id']}/aliases/{al}")
    check_status(r, 204)
    assert r.content == b""
    assert_kp_error(kp.get(f"/api/v2/keys/{al}"), 404, "KEY_NOT_FOUND_ERR")
    assert kp.metadata(k["id"])["state"] == 1
    assert al not in kp.metadata(k["id"]).get("aliases", [])
    assert_kp_error(kp.delete(f"/api/v2/keys/{k['id']}/aliases/{al}"), 404)


def test_delete_alias_via_alias_path(kp):
    k = kp.root_key()
    a1, a2 = uniq("p"), uniq("q")
    for a in (a1, a2):
        check_status(kp.post(f"/api/v2/keys/{k['id']}/aliases/{a}"), 200, 201)
    check_status(kp.delete(f"/api/v2/keys/{a1}/aliases/{a2}"), 204)
    assert kp.metadata(k["id"])["aliases"] == [a1]


def test_alias_freed_after_delete_can_be_reused(kp):
    a, b = kp.root_key(), kp.root_key()
    al = uniq("reuse")
    check_status(kp.post(f"/api/v2/keys/{a['id']}/aliases/{al}"), 200, 201)
    check_status(kp.delete(f"/api/v2/keys/{a['id']}/aliases/{al}"), 204)
    check_status(kp.post(f"/api/v2/keys/{b['id']}/aliases/{al}"), 200, 201)
    assert kp.get_key(al)["id"] == b["id"]


def test_alias_unique_per_instance(kp):
    a, b = kp.root_key(), kp.root_key()
    al = uniq("uniq")
    check_status(kp.post(f"/api/v2/keys/{a['id']}/aliases/{al}"), 200, 201)
    assert_kp_error(kp.post(f"/api/v2/keys/{b['id']}/aliases/{al}"), (400, 409))
    assert kp.get_key(al)["id"] == a["id"]
    r = kp.create_key_resp(aliases=[al])
    assert_kp_error(r, (400, 409))


def test_alias_case_sensitive(kp):
    a, b = kp.root_key(), kp.root_key()
    al = uniq("Case")
    check_status(kp.post(f"/api/v2/keys/{a['id']}/aliases/{al}"), 200, 201)
    check_status(kp.post(f"/api/v2/keys/{b['id']}/aliases/{al.upper()}"), 200, 201)
    assert kp.get_key(al)["id"] == a["id"]
    assert kp.get_key(al.upper())["id"] == b["id"]


def test_at_most_five_aliases(kp):
    k = kp.root_key()
    for i in range(5):
        check_status(kp.post(f"/api/v2/keys/{k['id']}/aliases/{uniq(f'a{i}')}"), 200, 201)
    assert_kp_error(kp.post(f"/api/v2/keys/{k['id']}/aliases/{uniq('sixth')}"), 400)
    assert len(kp.metadata(k["id"])["aliases"]) == 5
    assert_kp_error(kp.create_key_resp(aliases=[uniq(f"c{i}") for i in range(6)]), 400)


RESERVED = ["allowed_ip", "key", "keys", "metadata", "policy", "policies", "registration", "registrations",
            "ring", "rings", "rotate", "wrap", "unwrap", "rewrap", "version", "versions"]


@pytest.mark.parametrize("alias", ["a", "x" * 91, "has.dot", "has~tilde", "ünï", str(uuid.uuid4()),
                                   str(uuid.uuid4()).upper()] + RESERVED)
def test_invalid_alias(kp, alias):
    k = kp.root_key()
    r = kp.post(f"/api/v2/keys/{k['id']}/aliases/{alias}")
    assert_kp_error(r, 400)
    assert kp.metadata(k["id"]).get("aliases", []) == []
    r = kp.create_key_resp(aliases=[alias])
    assert_kp_error(r, 400)


@pytest.mark.parametrize("alias", ["ab", "x" * 90, "A-b_9", "key-1", "keysX", "0123"])
def test_valid_alias_edges(kp, alias):
    k = kp.root_key()
    al = alias if len(alias) > 10 or alias in ("ab",) else alias + uniq("")[1:]
    if alias in ("ab", "x" * 90):
        al = alias  # exact lengths; unique per instance, so only one test uses them
    check_status(kp.post(f"/api/v2/keys/{k['id']}/aliases/{al}"), 200, 201)
    assert kp.get_key(al)["id"] == k["id"]


def test_alias_on_unknown_key(kp):
    assert_kp_error(kp.post(f"/api/v2/keys/00000000-0000-4000-8000-000000000000/aliases/{uniq('x')}"), 404,
                    "KEY_NOT_FOUND_ERR")


def test_alias_on_deleted_key(kp):
    k = kp.root_key()
    kp.delete_key(k["id"])
    r = kp.post(f"/api/v2/keys/{k['id']}/aliases/{uniq('late')}")
    assert_kp_error(r, (409, 410))


def test_purge_frees_alias_and_ring(kp):
    ring = kp.create_ring()
    al = uniq("purged")
    k = kp.root_key(ring=ring, aliases=[al])
    kp.delete_key(k["id"])
    assert kp.get_key(al)["state"] == 5, "a deleted key is still reachable by its alias"
    check_status(kp.delete(f"/api/v2/keys/{k['id']}/purge"), 200, 204)
    assert_kp_error(kp.get(f"/api/v2/keys/{al}"), 404, "KEY_NOT_FOUND_ERR")
    other = kp.root_key()
    check_status(kp.post(f"/api/v2/keys/{other['id']}/aliases/{al}"), 200, 201)
    check_status(kp.delete(f"/api/v2/key_rings/{ring}"), 204)
