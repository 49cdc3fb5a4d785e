"""keyprotect 2.3.1 / redstone 0.6.2 client: key + instance policies, dual auth, registrations."""

import pytest

from kh2 import describe, expect_error, uniq

POL = "application/vnd.ibm.kms.policy+json"


def test_key_rotation_policy(kp):
    k = kp.create(name=uniq("pol"), root=True)
    doc = kp.set_key_rotation_policy(k["id"], 3)  # PUT without ?policy=, body has only interval_month
    r = doc["resources"][0]
    assert r["type"] == POL and r["rotation"]["interval_month"] == 3
    got = kp.get_key_policies(k["id"])
    assert got["metadata"]["collectionType"] == POL
    rot = [x for x in got["resources"] if "rotation" in x]
    assert rot and rot[0]["rotation"]["interval_month"] == 3
    expect_error(lambda: kp.set_key_rotation_policy(k["id"], 13), 400, "INVALID_FIELD_ERR")


def test_key_dual_auth_policy_and_delete(kp, kp2):
    k = kp.create(name=uniq("dual"), root=True)
    doc = kp.set_key_dual_auth_policy(k["id"], True)
    assert doc["resources"][0]["dualAuthDelete"]["enabled"] is True
    got = kp.get_key_policies(k["id"])
    assert any(x.get("dualAuthDelete", {}).get("enabled") is True for x in got["resources"]), got
    expect_error(lambda: kp.delete(k["id"]), 409, "AUTHORIZATIONS_NOT_MET")
    kp.initiate_dual_auth_delete(k["id"])
    assert kp.get(k["id"])["dualAuthDelete"]["keySetForDeletion"] is True
    expect_error(lambda: kp.delete(k["id"]), 409, "AUTHORIZATIONS_NOT_MET")  # same principal
    kp.cancel_dual_auth_delete(k["id"])
    assert kp.get(k["id"])["dualAuthDelete"].get("keySetForDeletion", False) is False
    expect_error(lambda: kp2.delete(k["id"]), 409, "AUTHORIZATIONS_NOT_MET")
    kp.initiate_dual_auth_delete(k["id"])
    kp2.delete(k["id"])
    assert kp.get(k["id"])["state"] == 5


def test_set_for_deletion_without_policy(kp):
    k = kp.create(name=uniq("nodual"), root=True)
    expect_error(lambda: kp.initiate_dual_auth_delete(k["id"]), 409, "NOT_DUAL_AUTH_ERR")
    expect_error(lambda: kp.cancel_dual_auth_delete(k["id"]), 409, "NOT_DUAL_AUTH_ERR")


def _types(kp):
    return {r["policy_type"]: r["policy_data"] for r in kp.get_instance_policies()["resources"]}


def test_instance_policies(fresh_server):
    kp = fresh_server.client()
    kp2 = fresh_server.client(fresh_server.info["second_apikey"])
    assert kp.set_instance_metrics_policy(True) is None
    assert kp.set_instance_allowed_network_policy(True, "public-and-private") is None
    assert kp.set_instance_allowed_ip_policy(True, ["127.0.0.0/8", "::1/128"]) is None
    assert kp.set_instance_key_create_import_access_policy(True, True, True, True, True, False) is None
    assert kp.set_instance_dual_auth_policy(True) is None
    doc = kp.get_instance_policies()
    assert doc["metadata"]["collectionType"] == POL
    t = _types(kp)
    assert t["metrics"]["enabled"] is True
    assert t["allowedNetwork"] == {"enabled": True, "attributes": {"allowed_network": "public-and-private"}}
    assert sorted(t["allowedIP"]["attributes"]["allowed_ip"]) == sorted(["127.0.0.0/8", "::1/128"])
    assert t["keyCreateImportAccess"]["attributes"]["create_root_key"] is True
    assert t["keyCreateImportAccess"]["attributes"]["enforce_token"] is False
    assert t["dualAuthDelete"]["enabled"] is True

    # dualAuthDelete now applies to new keys.
    k = kp.create(name=uniq("idual"), root=True)
    assert k["dualAuthDelete"]["enabled"] is True
    expect_error(lambda: kp.delete(k["id"]), 409, "AUTHORIZATIONS_NOT_MET")
    kp2.initiate_dual_auth_delete(k["id"])
    kp.delete(k["id"])

    # keyCreateImportAccess: forbid root key creation.
    kp.set_instance_key_create_import_access_policy(True, False, True, True, True, False)
    expect_error(lambda: kp.create(name=uniq("deny"), root=True), 409, "KEY_CREATE_IMPORT_ACCESS_ERR")
    kp.create(name=uniq("std-ok"), root=False)
    kp.set_instance_key_create_import_access_policy(False, True, True, True, True, False)
    kp.create(name=uniq("root-ok"), root=True)

    kp.set_instance_dual_auth_policy(False)
    assert _types(kp)["dualAuthDelete"]["enabled"] is False


def test_registrations(fresh_server):
    s = fresh_server
    kp = s.client()
    k = kp.create(name=uniq("reg"), root=True)
    c1 = "crn:v1:bluemix:public:cloud-object-storage:global:a/acct:inst:bucket:one"
    c2 = "crn:v1:bluemix:public:cloud-object-storage:global:a/acct:inst:bucket:two"
    s.register(k["id"], c1)
    s.register(k["id"], c2, prevent=True)
    doc = kp.get_registrations(key_id=k["id"])
    assert doc["metadata"]["collectionType"] == "application/vnd.ibm.kms.registration+json"
    assert {r["resourceCrn"] for r in doc["resources"]} == {c1, c2}
    assert all(r["keyId"] == k["id"] for r in doc["resources"])
    doc = kp.get_registrations(key_id=k["id"], crn=c1)
    assert [r["resourceCrn"] for r in doc["resources"]] == [c1]
    doc = kp.get_registrations()
    assert {r["resourceCrn"] for r in doc["resources"]} == {c1, c2}
    doc = kp.get_registrations(crn="crn:v1:bluemix:public:cloud-object-storage:global:a/acct:inst:bucket:*")
    assert len(doc["resources"]) == 2
    expect_error(lambda: kp.delete(k["id"]), 409, "PREV_KEY_DEL_ERR")
