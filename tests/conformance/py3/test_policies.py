"""Key policies, dual-authorization delete and instance policies (§5 rows 17, 18, 22-26)."""

import pytest

from kh3 import J, create, expect_error, key_body, meta, uniq

POL = "application/vnd.ibm.kms.policy+json"


def key_policy_body(*resources):
    return {"metadata": {"collectionType": POL, "collectionTotal": len(resources)},
            "resources": [dict(type=POL, **r) for r in resources]}


def inst_policy_body(*resources, total=None):
    return {"metadata": {"collectionType": POL, "collectionTotal": len(resources) if total is None else total},
            "resources": list(resources)}


# -- key policies (rows 22, 23) -------------------------------------------------

def test_put_get_rotation_policy(kp, inst):
    k = create(kp, inst)
    res = kp.put_policy(id=k["id"], bluemix_instance=inst, policy="rotation",
                        key_policy_put_body=key_policy_body({"rotation": {"enabled": True, "interval_month": 3}}))
    assert res.get_status_code() == 200
    doc = J(res)
    assert doc["metadata"]["collectionType"] == POL
    r = doc["resources"][0]
    assert r["type"] == POL
    assert r["rotation"]["interval_month"] == 3
    assert r["rotation"].get("enabled", True) is True
    assert r["crn"].startswith("crn:v1:") and ":policy:" in r["crn"], r
    assert "creationDate" in r and "createdBy" in r

    doc = J(kp.get_policy(id=k["id"], bluemix_instance=inst, policy="rotation"))
    assert len(doc["resources"]) == 1 and doc["resources"][0]["rotation"]["interval_month"] == 3
    doc = J(kp.get_policy(id=k["id"], bluemix_instance=inst, policy="dualAuthDelete"))
    assert all("rotation" not in x for x in doc["resources"]), doc
    # Key metadata reflects the policy.
    assert meta(kp, inst, k["id"])["rotation"]["interval_month"] == 3


def test_put_both_key_policies_without_filter(kp, inst):
    k = create(kp, inst)
    res = kp.put_policy(id=k["id"], bluemix_instance=inst, key_policy_put_body=key_policy_body(
        {"rotation": {"interval_month": 2}}, {"dualAuthDelete": {"enabled": True}}))
    assert res.get_status_code() == 200
    doc = J(kp.get_policy(id=k["id"], bluemix_instance=inst))
    rot = [x for x in doc["resources"] if "rotation" in x]
    dad = [x for x in doc["resources"] if "dualAuthDelete" in x]
    assert rot and rot[0]["rotation"]["interval_month"] == 2, doc
    assert dad and dad[0]["dualAuthDelete"]["enabled"] is True, doc
    assert meta(kp, inst, k["id"])["dualAuthDelete"]["enabled"] is True


def test_rotation_policy_bad_interval(kp, inst):
    k = create(kp, inst)
    for bad in (0, 13, -1):
        expect_error(lambda: kp.put_policy(id=k["id"], bluemix_instance=inst, policy="rotation",
                                           key_policy_put_body=key_policy_body({"rotation": {"interval_month": bad}})),
                     400, "INVALID_FIELD_ERR")


def test_rotation_policy_on_standard_key(kp, inst):
    k = create(kp, inst, extractable=True)
    expect_error(lambda: kp.put_policy(id=k["id"], bluemix_instance=inst, policy="rotation",
                                       key_policy_put_body=key_policy_body({"rotation": {"interval_month": 1}})),
                 400, "KEY_ROOT_REQ_ERR")


def test_key_policy_unknown_key(kp, inst):
    import uuid
    expect_error(lambda: kp.get_policy(id=str(uuid.uuid4()), bluemix_instance=inst), 404, "KEY_NOT_FOUND_ERR")


# -- dual authorization delete (rows 17, 18, 8) -------------------------------------

def _dual(kp, inst, kid):
    kp.put_policy(id=kid, bluemix_instance=inst, policy="dualAuthDelete",
                  key_policy_put_body=key_policy_body({"dualAuthDelete": {"enabled": True}}))


def test_dual_auth_delete_flow(kp, kp2, inst):
    k = create(kp, inst)
    _dual(kp, inst, k["id"])
    m = meta(kp, inst, k["id"])
    assert m["dualAuthDelete"]["enabled"] is True
    assert m["dualAuthDelete"].get("keySetForDeletion", False) is False

    # Nobody authorized yet -> 409.
    expect_error(lambda: kp.delete_key(id=k["id"], bluemix_instance=inst), 409, "AUTHORIZATIONS_NOT_MET")

    res = kp.set_key_for_deletion(id=k["id"], bluemix_instance=inst)
    assert res.get_status_code() == 204
    m = meta(kp, inst, k["id"])
    assert m["dualAuthDelete"]["keySetForDeletion"] is True
    assert m["dualAuthDelete"]["authExpiration"].endswith("Z")

    # The principal who set the key for deletion may not be the one who deletes it.
    expect_error(lambda: kp.delete_key(id=k["id"], bluemix_instance=inst), 409, "AUTHORIZATIONS_NOT_MET")

    res = kp.unset_key_for_deletion(id=k["id"], bluemix_instance=inst)
    assert res.get_status_code() == 204
    assert meta(kp, inst, k["id"])["dualAuthDelete"].get("keySetForDeletion", False) is False
    expect_error(lambda: kp2.delete_key(id=k["id"], bluemix_instance=inst), 409, "AUTHORIZATIONS_NOT_MET")

    # Set by admin 1, deleted by admin 2 -> success.
    kp.set_key_for_deletion(id=k["id"], bluemix_instance=inst)
    res = kp2.delete_key(id=k["id"], bluemix_instance=inst, prefer="return=representation")
    assert res.get_status_code() == 200
    assert J(res)["resources"][0]["state"] == 5


def test_dual_auth_second_admin_sets_first_deletes(kp, kp2, inst):
    k = create(kp, inst)
    _dual(kp, inst, k["id"])
    kp2.set_key_for_deletion(id=k["id"], bluemix_instance=inst)
    res = kp.delete_key(id=k["id"], bluemix_instance=inst)
    assert res.get_status_code() in (200, 204)
    assert meta(kp, inst, k["id"])["state"] == 5


# -- instance policies (rows 24, 25, 26) ------------------------------------------------

ALL_SIX = {
    "dualAuthDelete": {"enabled": False},
    "metrics": {"enabled": True},
    "allowedNetwork": {"enabled": True, "attributes": {"allowed_network": "public-and-private"}},
    "allowedIP": {"enabled": True, "attributes": {"allowed_ip": ["127.0.0.0/8", "::1/128", "10.0.0.0/8"]}},
    "keyCreateImportAccess": {"enabled": True, "attributes": {
        "create_root_key": True, "create_standard_key": True, "import_root_key": True,
        "import_standard_key": True, "enforce_token": False}},
    "rotation": {"enabled": True, "attributes": {"interval_month": 3}},
}


@pytest.fixture
def ikp(fresh_server):
    return fresh_server.client(), fresh_server.instance


@pytest.mark.parametrize("ptype", list(ALL_SIX))
def test_instance_policy_each_type(ikp, ptype):
    kp, inst = ikp
    data = ALL_SIX[ptype]
    res = kp.put_instance_policy(bluemix_instance=inst, policy=ptype,
                                 instance_policy_put_body=inst_policy_body({"policy_type": ptype, "policy_data": data}))
    assert res.get_status_code() == 204
    doc = J(kp.get_instance_policy(bluemix_instance=inst, policy=ptype))
    assert doc["metadata"]["collectionType"] == POL
    assert len(doc["resources"]) == 1, doc
    r = doc["resources"][0]
    assert r["policy_type"] == ptype
    assert r["policy_data"]["enabled"] == data["enabled"]
    if "attributes" in data:
        for k, v in data["attributes"].items():
            got = r["policy_data"]["attributes"][k]
            assert (sorted(got) if isinstance(v, list) else got) == (sorted(v) if isinstance(v, list) else v), r
    assert "creationDate" in r and "createdBy" in r and "lastUpdated" in r and "updatedBy" in r, r


def test_instance_policies_multi_put_and_list(ikp):
    kp, inst = ikp
    resources = [{"policy_type": t, "policy_data": d} for t, d in ALL_SIX.items()]
    res = kp.put_instance_policy(bluemix_instance=inst, instance_policy_put_body=inst_policy_body(*resources))
    assert res.get_status_code() == 204
    doc = J(kp.get_instance_policy(bluemix_instance=inst))
    types = sorted(r["policy_type"] for r in doc["resources"])
    assert types == sorted(ALL_SIX), doc
    assert doc["metadata"]["collectionTotal"] == 6


def test_allowed_ip_port(ikp):
    kp, inst = ikp
    doc = J(kp.get_allowed_ip_port(bluemix_instance=inst))
    assert doc["metadata"]["collectionType"] == "application/vnd.ibm.kms.allowed_ip_metadata+json"
    assert doc["resources"] == []  # no allowedIP policy yet
    kp.put_instance_policy(bluemix_instance=inst, policy="allowedIP", instance_policy_put_body=inst_policy_body(
        {"policy_type": "allowedIP", "policy_data": ALL_SIX["allowedIP"]}))
    doc = J(kp.get_allowed_ip_port(bluemix_instance=inst))
    assert len(doc["resources"]) == 1, doc
    assert isinstance(doc["resources"][0]["private_endpoint_port"], int)
    kp.put_instance_policy(bluemix_instance=inst, policy="allowedIP", instance_policy_put_body=inst_policy_body(
        {"policy_type": "allowedIP", "policy_data": {"enabled": False}}))
    assert J(kp.get_allowed_ip_port(bluemix_instance=inst))["resources"] == []


def test_instance_policy_errors(ikp):
    kp, inst = ikp
    put = kp.put_instance_policy
    expect_error(lambda: put(bluemix_instance=inst, policy="dualAuthDelete", instance_policy_put_body=inst_policy_body(
        {"policy_type": "dualAuthDelete", "policy_data": {"enabled": True}}, total=2)),
        400, "COLLECTION_TOTAL_MISMATCH_ERR")
    expect_error(lambda: put(bluemix_instance=inst, policy="dualAuthDelete", instance_policy_put_body=inst_policy_body(
        {"policy_type": "dualAuthDelete", "policy_data": {"enabled": True, "attributes": {"x": 1}}})),
        400, "BAD_BODY_ERR")
    expect_error(lambda: put(bluemix_instance=inst, policy="metrics", instance_policy_put_body=inst_policy_body(
        {"policy_type": "dualAuthDelete", "policy_data": {"enabled": True}})),
        400, "BODY_QUERY_PARAM_MISMATCH_ERR")
    expect_error(lambda: put(bluemix_instance=inst, policy="metrics", instance_policy_put_body=inst_policy_body(
        {"policy_type": "metrics", "policy_data": {"enabled": True}},
        {"policy_type": "dualAuthDelete", "policy_data": {"enabled": True}})),
        400, "NUM_COLLECTION_RESOURCE_ERR")
    e = expect_error(lambda: put(bluemix_instance=inst, policy="rotation", instance_policy_put_body=inst_policy_body(
        {"policy_type": "rotation", "policy_data": {"enabled": True, "attributes": {"interval_month": 13}}})),
        400, "INVALID_FIELD_ERR")
    assert e.http_response.json()["resources"][0]["reasons"][0]["target"]["name"] == "interval_month"


def test_instance_key_create_import_access_enforced(ikp):
    kp, inst = ikp
    kp.put_instance_policy(bluemix_instance=inst, policy="keyCreateImportAccess", instance_policy_put_body=inst_policy_body(
        {"policy_type": "keyCreateImportAccess", "policy_data": {"enabled": True, "attributes": {
            "create_root_key": False, "create_standard_key": True, "import_root_key": True,
            "import_standard_key": True, "enforce_token": False}}}))
    expect_error(lambda: kp.create_key(bluemix_instance=inst, key_create_body=key_body(uniq())),
                 409, "KEY_CREATE_IMPORT_ACCESS_ERR")
    create(kp, inst, extractable=True)  # standard keys are still allowed
    kp.put_instance_policy(bluemix_instance=inst, policy="keyCreateImportAccess", instance_policy_put_body=inst_policy_body(
        {"policy_type": "keyCreateImportAccess", "policy_data": {"enabled": False}}))
    create(kp, inst)


def test_instance_dual_auth_applies_to_new_keys(fresh_server):
    kp, inst = fresh_server.client(), fresh_server.instance
    kp2 = fresh_server.client(fresh_server.info["second_apikey"])
    before = create(kp, inst)
    kp.put_instance_policy(bluemix_instance=inst, policy="dualAuthDelete", instance_policy_put_body=inst_policy_body(
        {"policy_type": "dualAuthDelete", "policy_data": {"enabled": True}}))
    after = create(kp, inst)
    assert after["dualAuthDelete"]["enabled"] is True
    expect_error(lambda: kp.delete_key(id=after["id"], bluemix_instance=inst), 409, "AUTHORIZATIONS_NOT_MET")
    kp.set_key_for_deletion(id=after["id"], bluemix_instance=inst)
    kp2.delete_key(id=after["id"], bluemix_instance=inst)
    assert meta(kp, inst, after["id"])["state"] == 5
    # A key created before the policy keeps its own (disabled) setting.
    assert meta(kp, inst, before["id"])["dualAuthDelete"]["enabled"] is False
