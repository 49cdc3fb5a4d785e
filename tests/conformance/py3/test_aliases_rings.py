"""Key aliases and key rings (§5 rows 31-35; §6.12)."""

import uuid

import pytest
from ibm_cloud_sdk_core import ApiException

from kh3 import J, create, describe, expect_error, get, meta, uniq, unb64, unwrap, wrap

ALIAS = "application/vnd.ibm.kms.alias+json"
RING = "application/vnd.ibm.kms.key_ring+json"


# -- aliases ------------------------------------------------------------------

def test_alias_create_use_delete(kp, inst):
    k = create(kp, inst)
    alias = uniq("alias")
    res = kp.create_key_alias(id=k["id"], alias=alias, bluemix_instance=inst)
    assert res.get_status_code() in (200, 201)
    doc = J(res)
    assert doc["metadata"]["collectionType"] in (ALIAS, "application/vnd.ibm.kms.key+json")
    r = doc["resources"][0]
    assert r["keyId"] == k["id"] and r["alias"] == alias
    assert r["creationDate"].endswith("Z") and "createdBy" in r

    assert alias in meta(kp, inst, k["id"])["aliases"]
    assert get(kp, inst, alias)["id"] == k["id"]
    assert J(kp.get_key_metadata(id=alias, bluemix_instance=inst))["resources"][0]["id"] == k["id"]
    w = wrap(kp, inst, alias, b"aliased")
    assert unb64(unwrap(kp, inst, alias, w["ciphertext"])["plaintext"]) == b"aliased"
    assert len(J(kp.get_key_versions(id=alias, bluemix_instance=inst))["resources"]) == 1

    res = kp.delete_key_alias(id=k["id"], alias=alias, bluemix_instance=inst)
    assert res.get_status_code() == 204
    expect_error(lambda: kp.get_key(id=alias, bluemix_instance=inst), 404, "KEY_NOT_FOUND_ERR")
    assert meta(kp, inst, k["id"]).get("aliases", []) == []
    assert get(kp, inst, k["id"])["state"] == 1  # the key itself is untouched


def test_alias_case_sensitive(kp, inst):
    k = create(kp, inst)
    alias = "CaseAlias-" + uuid.uuid4().hex[:6]
    kp.create_key_alias(id=k["id"], alias=alias, bluemix_instance=inst)
    expect_error(lambda: kp.get_key(id=alias.lower(), bluemix_instance=inst), 404, "KEY_NOT_FOUND_ERR")


def test_delete_key_by_alias(kp, inst):
    alias = uniq("del")
    k = create(kp, inst, aliases=[alias])
    res = kp.delete_key(id=alias, bluemix_instance=inst)
    assert res.get_status_code() in (200, 204)
    assert meta(kp, inst, k["id"])["state"] == 5


@pytest.mark.parametrize("bad", ["versions", "keys", "wrap", "registrations", "x", "a" * 91, "has space", "bad/slash",
                                 "has.dot", str(uuid.uuid4())])
def test_alias_invalid_names(kp, inst, bad):
    k = create(kp, inst)
    try:
        kp.create_key_alias(id=k["id"], alias=bad, bluemix_instance=inst)
    except ApiException as e:
        assert e.code in (400, 404), describe(e)  # 404 acceptable only for '/' which splits the path
        if bad != "bad/slash":
            assert e.code == 400, describe(e)
    else:
        pytest.fail(f"alias {bad!r} accepted")


def test_alias_limit_five(kp, inst):
    k = create(kp, inst, aliases=[uniq("a") for _ in range(5)])
    assert len(k["aliases"]) == 5
    expect_error(lambda: kp.create_key_alias(id=k["id"], alias=uniq("sixth"), bluemix_instance=inst), 400)


def test_alias_unique_per_instance(kp, inst):
    alias = uniq("dup")
    create(kp, inst, aliases=[alias])
    k2 = create(kp, inst)
    try:
        kp.create_key_alias(id=k2["id"], alias=alias, bluemix_instance=inst)
    except ApiException as e:
        assert e.code in (400, 409), describe(e)
    else:
        pytest.fail("the same alias was given to two keys")


def test_alias_on_unknown_key(kp, inst):
    expect_error(lambda: kp.create_key_alias(id=str(uuid.uuid4()), alias=uniq("x"), bluemix_instance=inst),
                 404, "KEY_NOT_FOUND_ERR")


# -- key rings ------------------------------------------------------------------

def test_key_ring_lifecycle(fresh_server):
    kp, inst = fresh_server.client(), fresh_server.instance
    ring = uniq("ring")
    res = kp.create_key_ring(key_ring_id=ring, bluemix_instance=inst)
    assert res.get_status_code() == 201

    res = kp.list_key_rings(bluemix_instance=inst, total_count=True)
    assert res.get_status_code() == 200
    doc = J(res)
    assert doc["metadata"]["collectionType"] == RING
    ids = [r["id"] for r in doc["resources"]]
    assert sorted(ids) == sorted(["default", ring])
    assert doc["metadata"]["totalCount"] == 2
    r = [x for x in doc["resources"] if x["id"] == ring][0]
    assert r["creationDate"].endswith("Z") and "createdBy" in r
    doc = J(kp.list_key_rings(bluemix_instance=inst, limit=1, offset=0))
    assert len(doc["resources"]) == 1

    # A key created with X-Kms-Key-Ring lands in that ring; list/HEAD filter by ring.
    k = create(kp, inst, ring=ring)
    assert k["keyRingID"] == ring
    d = create(kp, inst)
    doc = J(kp.get_keys(bluemix_instance=inst, x_kms_key_ring=ring))
    assert [x["id"] for x in doc["resources"]] == [k["id"]]
    doc = J(kp.get_keys(bluemix_instance=inst, x_kms_key_ring="default"))
    assert [x["id"] for x in doc["resources"]] == [d["id"]]
    res = kp.get_key_collection_metadata(bluemix_instance=inst, x_kms_key_ring=ring)
    assert res.get_headers()["Key-Total"] == "1"
    # Operations naming the key's ring work.
    assert J(kp.get_key(id=k["id"], bluemix_instance=inst, x_kms_key_ring=ring))["resources"][0]["id"] == k["id"]

    # A ring holding a live key cannot be deleted.
    try:
        kp.delete_key_ring(key_ring_id=ring, bluemix_instance=inst)
    except ApiException as e:
        assert e.code == 409, describe(e)
    else:
        pytest.fail("non-empty key ring deleted")

    # Once its only key is destroyed, force delete moves it to default and removes the ring.
    kp.delete_key(id=k["id"], bluemix_instance=inst)
    res = kp.delete_key_ring(key_ring_id=ring, bluemix_instance=inst, force=True)
    assert res.get_status_code() == 204
    assert [r["id"] for r in J(kp.list_key_rings(bluemix_instance=inst))["resources"]] == ["default"]
    assert meta(kp, inst, k["id"])["keyRingID"] == "default"


def test_empty_key_ring_delete(kp, inst):
    ring = uniq("empty")
    kp.create_key_ring(key_ring_id=ring, bluemix_instance=inst)
    res = kp.delete_key_ring(key_ring_id=ring, bluemix_instance=inst)
    assert res.get_status_code() == 204
    assert ring not in [r["id"] for r in J(kp.list_key_rings(bluemix_instance=inst))["resources"]]


def test_key_ring_errors(kp, inst):
    for call in (lambda: kp.create_key_ring(key_ring_id="default", bluemix_instance=inst),
                 lambda: kp.delete_key_ring(key_ring_id="default", bluemix_instance=inst)):
        try:
            call()
        except ApiException as e:
            assert 400 <= e.code < 500, describe(e)
        else:
            pytest.fail("the default key ring was created/deleted")
    ring = uniq("twice")
    kp.create_key_ring(key_ring_id=ring, bluemix_instance=inst)
    try:
        kp.create_key_ring(key_ring_id=ring, bluemix_instance=inst)
    except ApiException as e:
        assert e.code in (400, 409), describe(e)
    else:
        pytest.fail("the same key ring was created twice")
    try:
        kp.delete_key_ring(key_ring_id=uniq("ghost"), bluemix_instance=inst)
    except ApiException as e:
        assert e.code == 404, describe(e)
    else:
        pytest.fail("deleting an unknown key ring succeeded")


def test_create_key_in_unknown_ring(kp, inst):
    from kh3 import key_body
    try:
        kp.create_key(bluemix_instance=inst, key_create_body=key_body(uniq()), x_kms_key_ring=uniq("nope"))
    except ApiException as e:
        assert e.code in (400, 404), describe(e)
    else:
        pytest.fail("key created in a key ring that does not exist")
