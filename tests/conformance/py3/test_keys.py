"""Key lifecycle through IbmKeyProtectApiV2 (§5 rows 1-5, 7-12)."""

import os
import re
import uuid

import pytest

from kh3 import (
    J, b64, create, expect_error, get, key_body, meta, uniq, unb64, unwrap, versions, wrap,
)

RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def _is_uuid(s):
    return str(uuid.UUID(s)) == s.lower()


# -- create (row 2) ---------------------------------------------------------

def test_create_root_key_default_representation(kp, inst):
    name = uniq("root")
    k = create(kp, inst, name=name, description="a root key")
    assert _is_uuid(k["id"])
    assert k["type"] == "application/vnd.ibm.kms.key+json"
    assert k["name"] == name
    assert k["description"] == "a root key"
    assert k["state"] == 1
    assert k["extractable"] is False
    assert k["imported"] is False
    assert k["keyRingID"] == "default"
    assert "payload" not in k
    assert _is_uuid(k["keyVersion"]["id"])
    assert RFC3339_Z.match(k["keyVersion"]["creationDate"]), k["keyVersion"]
    assert RFC3339_Z.match(k["creationDate"]), k["creationDate"]
    assert k["crn"].startswith("crn:v1:") and k["crn"].endswith(":key:" + k["id"]), k["crn"]
    assert inst in k["crn"]
    assert k["dualAuthDelete"]["enabled"] is False
    assert k["deleted"] is False
    assert k["algorithmType"] in ("AES", "Deprecated")
    assert k["algorithmMetadata"]["bitLength"] == "256"  # a string (§6.1)
    assert k["algorithmBitSize"] == 256
    assert k["algorithmMode"] in ("CBC_PAD", "Deprecated")
    assert RFC3339_Z.match(k["lastUpdateDate"]), k["lastUpdateDate"]
    assert k["createdBy"]


def test_create_standard_key_representation_has_payload(kp, inst):
    k = create(kp, inst, extractable=True, prefer="return=representation")
    assert k["extractable"] is True
    assert len(unb64(k["payload"])) == 32
    # GET returns the same payload; /metadata does not.
    assert get(kp, inst, k["id"])["payload"] == k["payload"]
    assert "payload" not in meta(kp, inst, k["id"])


def test_create_minimal_is_201(kp, inst):
    res = kp.create_key(bluemix_instance=inst, key_create_body=key_body(uniq()), prefer="return=minimal")
    assert res.get_status_code() == 201


def test_create_with_all_optional_fields(kp, inst):
    alias = uniq("al")
    k = create(
        kp, inst, description="d", aliases=[alias], tags=["t1", "t2"], expirationDate="2099-01-01T00:00:00Z"
    )
    assert k["aliases"] == [alias]
    assert sorted(k["tags"]) == ["t1", "t2"]
    assert k["expirationDate"] == "2099-01-01T00:00:00Z"
    # Lookup by alias works on GET.
    assert get(kp, inst, alias)["id"] == k["id"]


@pytest.mark.parametrize("size", [16, 24, 32])
def test_import_root_key_plain(kp, inst, size):
    material = os.urandom(size)
    k = create(kp, inst, payload=b64(material))
    assert k["imported"] is True
    assert k["extractable"] is False
    assert "payload" not in k
    w = wrap(kp, inst, k["id"], b"hello dek")
    assert unb64(unwrap(kp, inst, k["id"], w["ciphertext"])["plaintext"]) == b"hello dek"


def test_import_root_key_bad_length(kp, inst):
    expect_error(
        lambda: kp.create_key(bluemix_instance=inst, key_create_body=key_body(uniq(), payload=b64(os.urandom(17)))),
        400,
    )


def test_import_standard_key_payload_roundtrip(kp, inst):
    material = os.urandom(100)
    k = create(kp, inst, extractable=True, payload=b64(material))
    assert k["imported"] is True
    assert unb64(get(kp, inst, k["id"])["payload"]) == material


def test_create_without_name_is_400(kp, inst):
    doc = {"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
           "resources": [{"type": "application/vnd.ibm.kms.key+json", "extractable": False}]}
    import io, json
    expect_error(lambda: kp.create_key(bluemix_instance=inst, key_create_body=io.BytesIO(json.dumps(doc).encode())), 400)


def test_create_collection_total_mismatch(kp, inst):
    import io, json
    doc = {"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 2},
           "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": uniq(), "extractable": False}]}
    expect_error(
        lambda: kp.create_key(bluemix_instance=inst, key_create_body=io.BytesIO(json.dumps(doc).encode())),
        400, "COLLECTION_TOTAL_MISMATCH_ERR",
    )


def test_create_bad_json_is_400(kp, inst):
    import io
    expect_error(lambda: kp.create_key(bluemix_instance=inst, key_create_body=io.BytesIO(b"{not json")), 400)


# -- overrides (row 4) ------------------------------------------------------

def test_create_key_with_policies_overrides(kp, inst):
    import io, json
    doc = {
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [{
            "type": "application/vnd.ibm.kms.key+json", "name": uniq("ovr"), "extractable": False,
            "rotation": {"enabled": True, "interval_month": 6},
            "dualAuthDelete": {"enabled": False},
        }],
    }
    res = kp.create_key_with_policies_overrides(
        bluemix_instance=inst, key_with_policy_overrides_create_body=io.BytesIO(json.dumps(doc).encode()),
        prefer="return=representation",
    )
    assert res.get_status_code() == 201
    k = J(res)["resources"][0]
    assert k["state"] == 1 and k["extractable"] is False
    pol = J(kp.get_policy(id=k["id"], bluemix_instance=inst, policy="rotation"))
    rot = [r for r in pol["resources"] if "rotation" in r]
    assert rot and rot[0]["rotation"]["interval_month"] == 6, pol
    assert rot[0]["rotation"].get("enabled", True) is True


def test_overrides_rotation_on_standard_key_rejected(kp, inst):
    import io, json
    doc = {
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [{
            "type": "application/vnd.ibm.kms.key+json", "name": uniq("ovr"), "extractable": True,
            "rotation": {"enabled": True, "interval_month": 6},
        }],
    }
    expect_error(
        lambda: kp.create_key_with_policies_overrides(
            bluemix_instance=inst, key_with_policy_overrides_create_body=io.BytesIO(json.dumps(doc).encode())),
        400, "KEY_ROOT_REQ_ERR",
    )


# -- get / metadata (rows 5, 9) --------------------------------------------

def test_get_unknown_key_404(kp, inst):
    e = expect_error(lambda: kp.get_key(id=str(uuid.uuid4()), bluemix_instance=inst), 404, "KEY_NOT_FOUND_ERR")
    assert "KEY_NOT_FOUND_ERR" in e.http_response.json()["resources"][0]["errorMsg"]


def test_get_metadata_unknown_404(kp, inst):
    expect_error(lambda: kp.get_key_metadata(id=str(uuid.uuid4()), bluemix_instance=inst), 404, "KEY_NOT_FOUND_ERR")


def test_get_root_key_has_no_payload(kp, inst):
    k = create(kp, inst)
    g = get(kp, inst, k["id"])
    assert "payload" not in g
    assert g["id"] == k["id"] and g["keyVersion"]["id"] == k["keyVersion"]["id"]
    m = meta(kp, inst, k["id"])
    assert m["id"] == k["id"] and m["name"] == k["name"] and m["state"] == 1


# -- list / head (rows 1, 3) -----------------------------------------------

@pytest.fixture
def populated(fresh_server):
    s = fresh_server
    kp = s.client()
    inst = s.instance
    r1 = create(kp, inst, name="alpha-root")
    r2 = create(kp, inst, name="beta-root")
    s1 = create(kp, inst, name="gamma-std", extractable=True)
    gone = create(kp, inst, name="delta-root")
    kp.delete_key(id=gone["id"], bluemix_instance=inst)
    return s, kp, inst, {"r1": r1, "r2": r2, "s1": s1, "gone": gone}


def _ids(doc):
    return [k["id"] for k in doc["resources"]]


def test_list_keys_filters(populated):
    s, kp, inst, k = populated
    doc = J(kp.get_keys(bluemix_instance=inst))
    assert doc["metadata"]["collectionType"] == "application/vnd.ibm.kms.key+json"
    assert doc["metadata"]["collectionTotal"] == len(doc["resources"]) == 3
    assert set(_ids(doc)) == {k["r1"]["id"], k["r2"]["id"], k["s1"]["id"]}  # deleted key excluded by default
    assert all("payload" not in x for x in doc["resources"])

    doc = J(kp.get_keys(bluemix_instance=inst, state=[1, 5]))
    assert set(_ids(doc)) == {k["r1"]["id"], k["r2"]["id"], k["s1"]["id"], k["gone"]["id"]}
    doc = J(kp.get_keys(bluemix_instance=inst, state=[5]))
    assert _ids(doc) == [k["gone"]["id"]]

    doc = J(kp.get_keys(bluemix_instance=inst, extractable=False))
    assert set(_ids(doc)) == {k["r1"]["id"], k["r2"]["id"]}
    doc = J(kp.get_keys(bluemix_instance=inst, extractable=True))
    assert _ids(doc) == [k["s1"]["id"]]


def test_list_keys_limit_offset_sort(populated):
    s, kp, inst, k = populated
    all_ids = sorted([k["r1"]["id"], k["r2"]["id"], k["s1"]["id"]])
    doc = J(kp.get_keys(bluemix_instance=inst, sort="id"))
    assert _ids(doc) == all_ids
    doc = J(kp.get_keys(bluemix_instance=inst, sort="-id"))
    assert _ids(doc) == list(reversed(all_ids))
    doc = J(kp.get_keys(bluemix_instance=inst, sort="id", limit=2, offset=0))
    assert _ids(doc) == all_ids[:2] and doc["metadata"]["collectionTotal"] == 2
    doc = J(kp.get_keys(bluemix_instance=inst, sort="id", limit=2, offset=2))
    assert _ids(doc) == all_ids[2:]


def test_list_keys_search(populated):
    s, kp, inst, k = populated
    doc = J(kp.get_keys(bluemix_instance=inst, search="root"))
    assert set(_ids(doc)) == {k["r1"]["id"], k["r2"]["id"]}
    doc = J(kp.get_keys(bluemix_instance=inst, search="exact:alpha-root"))
    assert _ids(doc) == [k["r1"]["id"]]
    doc = J(kp.get_keys(bluemix_instance=inst, search="ALPHA"))  # case-insensitive
    assert _ids(doc) == [k["r1"]["id"]]
    doc = J(kp.get_keys(bluemix_instance=inst, search="not:root"))
    assert _ids(doc) == [k["s1"]["id"]]


def test_list_keys_filter_param(populated):
    s, kp, inst, k = populated
    doc = J(kp.get_keys(bluemix_instance=inst, filter="extractable=true"))
    assert _ids(doc) == [k["s1"]["id"]]
    doc = J(kp.get_keys(bluemix_instance=inst, filter="state=5"))
    assert _ids(doc) == [k["gone"]["id"]]
    doc = J(kp.get_keys(bluemix_instance=inst, filter='creationDate=gte:"2000-01-01T00:00:00Z" extractable=false'))
    assert set(_ids(doc)) == {k["r1"]["id"], k["r2"]["id"]}
    # state both as filter and as standalone parameter -> 400
    expect_error(lambda: kp.get_keys(bluemix_instance=inst, filter="state=1", state=[1]), 400)


def test_list_keys_bad_limit(kp, inst):
    expect_error(lambda: kp.get_keys(bluemix_instance=inst, limit=5001), 400, "INVALID_QUERY_PARAM_ERR")


def test_head_key_total(populated):
    s, kp, inst, k = populated
    res = kp.get_key_collection_metadata(bluemix_instance=inst)
    assert res.get_status_code() == 200
    assert res.get_result() is None
    assert res.get_headers()["Key-Total"] == "3"
    res = kp.get_key_collection_metadata(bluemix_instance=inst, extractable=False)
    assert res.get_headers()["Key-Total"] == "2"
    res = kp.get_key_collection_metadata(bluemix_instance=inst, state=[1, 5])
    assert res.get_headers()["Key-Total"] == "4"
    res = kp.get_key_collection_metadata(bluemix_instance=inst, filter="extractable=true")
    assert res.get_headers()["Key-Total"] == "1"


# -- patch (row 7) -----------------------------------------------------------

def test_patch_key_moves_ring(kp, inst):
    import io, json
    ring = uniq("ring")
    kp.create_key_ring(key_ring_id=ring, bluemix_instance=inst)
    k = create(kp, inst)
    res = kp.patch_key(
        id=k["id"], bluemix_instance=inst, x_kms_key_ring="default",
        key_patch_body=io.BytesIO(json.dumps({"keyRingID": ring}).encode()),
    )
    assert res.get_status_code() == 200
    assert J(res)["resources"][0]["keyRingID"] == ring
    assert meta(kp, inst, k["id"])["keyRingID"] == ring
    # Go sends the member as "KeyRingID": must match case-insensitively.
    res = kp.patch_key(
        id=k["id"], bluemix_instance=inst, x_kms_key_ring=ring,
        key_patch_body=io.BytesIO(json.dumps({"KeyRingID": "default"}).encode()),
    )
    assert J(res)["resources"][0]["keyRingID"] == "default"


def test_patch_key_to_unknown_ring(kp, inst):
    import io, json
    from ibm_cloud_sdk_core import ApiException
    from kh3 import describe
    k = create(kp, inst)
    try:
        kp.patch_key(id=k["id"], bluemix_instance=inst, x_kms_key_ring="default",
                     key_patch_body=io.BytesIO(json.dumps({"keyRingID": uniq("nope")}).encode()))
    except ApiException as e:
        assert e.code in (400, 404), describe(e)  # exact code unverified
    else:
        pytest.fail("key moved into a key ring that does not exist")
    assert meta(kp, inst, k["id"])["keyRingID"] == "default"


# -- delete / restore / purge (rows 8, 10, 11) --------------------------------

def test_delete_representation_then_410(kp, inst):
    k = create(kp, inst)
    res = kp.delete_key(id=k["id"], bluemix_instance=inst, prefer="return=representation")
    assert res.get_status_code() == 200
    d = J(res)["resources"][0]
    assert d["id"] == k["id"]
    assert d["state"] == 5
    assert d["deleted"] is True
    assert RFC3339_Z.match(d["deletionDate"])
    assert d["restoreAllowed"] is True
    for f in ("restoreExpirationDate", "purgeAllowedFrom", "purgeScheduledOn", "deletionDate"):
        assert RFC3339_Z.match(d[f]), (f, d.get(f))  # never +0000 offsets (§4)
    assert d["deletedBy"]
    assert d["purgeAllowed"] is True  # --purge-delay 0
    e = expect_error(lambda: kp.delete_key(id=k["id"], bluemix_instance=inst), 410, "KEY_DELETED_ERR")
    # GET still works on a deleted key and shows state 5.
    assert meta(kp, inst, k["id"])["state"] == 5


def test_delete_minimal_204(kp, inst):
    k = create(kp, inst)
    res = kp.delete_key(id=k["id"], bluemix_instance=inst, prefer="return=minimal")
    assert res.get_status_code() == 204
    assert res.get_result() is None


def test_delete_default_prefer_succeeds(kp, inst):
    k = create(kp, inst)
    res = kp.delete_key(id=k["id"], bluemix_instance=inst)
    assert res.get_status_code() in (200, 204)
    assert meta(kp, inst, k["id"])["state"] == 5


def test_delete_unknown_404(kp, inst):
    expect_error(lambda: kp.delete_key(id=str(uuid.uuid4()), bluemix_instance=inst), 404, "KEY_NOT_FOUND_ERR")


def test_restore_deleted_key_works(kp, inst):
    k = create(kp, inst)
    w = wrap(kp, inst, k["id"], b"restore-me")
    kp.delete_key(id=k["id"], bluemix_instance=inst)
    expect_error(lambda: kp.wrap_key(id=k["id"], bluemix_instance=inst,
                                     key_action_wrap_body=__import__("io").BytesIO(b"{}")), 410, "KEY_DELETED_ERR")
    res = kp.restore_key(id=k["id"], bluemix_instance=inst)
    assert res.get_status_code() == 201
    r = J(res)["resources"][0]
    assert r["id"] == k["id"] and r["state"] == 1
    assert r.get("deleted", False) is False
    # The restored key still opens data wrapped before the delete, and wraps anew.
    assert unb64(unwrap(kp, inst, k["id"], w["ciphertext"])["plaintext"]) == b"restore-me"
    w2 = wrap(kp, inst, k["id"], b"after")
    assert unb64(unwrap(kp, inst, k["id"], w2["ciphertext"])["plaintext"]) == b"after"


def test_restore_active_key_409(kp, inst):
    k = create(kp, inst)
    expect_error(lambda: kp.restore_key(id=k["id"], bluemix_instance=inst), 409, "KEY_ACTION_INVALID_STATE_ERR")


def test_purge_after_delete(kp, inst):
    k = create(kp, inst)
    kp.delete_key(id=k["id"], bluemix_instance=inst)
    res = kp.purge_key(id=k["id"], bluemix_instance=inst, prefer="return=representation")
    assert res.get_status_code() in (200, 204)
    if res.get_status_code() == 200:
        assert J(res)["resources"][0]["id"] == k["id"]
    expect_error(lambda: kp.get_key(id=k["id"], bluemix_instance=inst), 404, "KEY_NOT_FOUND_ERR")
    expect_error(lambda: kp.restore_key(id=k["id"], bluemix_instance=inst), 404, "KEY_NOT_FOUND_ERR")


def test_purge_minimal_204(kp, inst):
    k = create(kp, inst)
    kp.delete_key(id=k["id"], bluemix_instance=inst)
    res = kp.purge_key(id=k["id"], bluemix_instance=inst, prefer="return=minimal")
    assert res.get_status_code() == 204


def test_purge_active_key_409(kp, inst):
    k = create(kp, inst)
    expect_error(lambda: kp.purge_key(id=k["id"], bluemix_instance=inst), 409, "KEY_ACTION_INVALID_STATE_ERR")


# -- versions (row 12) ---------------------------------------------------------

def test_versions_list(kp, inst):
    k = create(kp, inst)
    v = versions(kp, inst, k["id"])
    assert v["metadata"]["collectionTotal"] == 1
    assert [x["id"] for x in v["resources"]] == [k["keyVersion"]["id"]]
    assert RFC3339_Z.match(v["resources"][0]["creationDate"])
    kp.rotate_key(id=k["id"], bluemix_instance=inst)
    kp.rotate_key(id=k["id"], bluemix_instance=inst)
    v = versions(kp, inst, k["id"], total_count=True)
    assert v["metadata"]["collectionTotal"] == 3
    assert v["metadata"]["totalCount"] == 3
    cur = meta(kp, inst, k["id"])["keyVersion"]["id"]
    ids = [x["id"] for x in v["resources"]]
    assert len(set(ids)) == 3 and k["keyVersion"]["id"] in ids and cur in ids
    assert ids[0] == cur, "versions must be listed newest first"
    v = versions(kp, inst, k["id"], limit=1, offset=1, total_count=True)
    assert len(v["resources"]) == 1 and v["metadata"]["totalCount"] == 3
    assert v["resources"][0]["id"] == ids[1]


def test_versions_of_deleted_key_with_all_key_states(kp, inst):
    k = create(kp, inst)
    kp.delete_key(id=k["id"], bluemix_instance=inst)
    v = versions(kp, inst, k["id"], all_key_states=True)
    assert [x["id"] for x in v["resources"]] == [k["keyVersion"]["id"]]


def test_versions_bad_limit(kp, inst):
    k = create(kp, inst)
    expect_error(lambda: kp.get_key_versions(id=k["id"], bluemix_instance=inst, limit=0), 400, "INVALID_QUERY_PARAM_ERR")


def test_list_default_limit_200(fresh_server):
    s = fresh_server
    kp, inst = s.client(), s.instance
    tok = s.token()
    import requests
    sess = requests.Session()
    sess.headers.update({"Authorization": "Bearer " + tok, "Bluemix-Instance": inst})
    for i in range(205):
        r = sess.post(s.url + "/api/v2/keys", data=key_body(f"bulk-{i:03d}").getvalue())
        assert r.status_code == 201, r.text
    doc = J(kp.get_keys(bluemix_instance=inst))
    assert len(doc["resources"]) == 200 and doc["metadata"]["collectionTotal"] == 200
    assert kp.get_key_collection_metadata(bluemix_instance=inst).get_headers()["Key-Total"] == "205"
    doc = J(kp.get_keys(bluemix_instance=inst, limit=5000))
    assert len(doc["resources"]) == 205
    doc = J(kp.get_keys(bluemix_instance=inst, offset=200))
    assert len(doc["resources"]) == 5
