"""Registrations (§5 rows 29, 30; §6.11) seeded through the service-to-service endpoint."""

import urllib.parse

import pytest

from kh3 import J, create, expect_error, meta, uniq

REG = "application/vnd.ibm.kms.registration+json"


def crn(bucket):
    return f"crn:v1:bluemix:public:cloud-object-storage:global:a/acct123:inst456:bucket:{bucket}"


def test_registrations_listing_and_delete_protection(fresh_server):
    s = fresh_server
    kp, inst = s.client(), s.instance
    k = create(kp, inst)
    other = create(kp, inst)
    s.register(k["id"], crn("b1"), description="first")
    s.register(k["id"], crn("b2"), description="second")
    s.register(other["id"], crn("c1"))

    res = kp.get_registrations(id=k["id"], bluemix_instance=inst, total_count=True)
    assert res.get_status_code() == 200
    doc = J(res)
    assert doc["metadata"]["collectionType"] == REG
    assert doc["metadata"]["collectionTotal"] == 2
    assert doc["metadata"]["totalCount"] == 2
    regs = {r["resourceCrn"]: r for r in doc["resources"]}
    assert set(regs) == {crn("b1"), crn("b2")}
    r = regs[crn("b1")]
    assert r["keyId"] == k["id"]
    assert r["keyName"] == k["name"]
    assert r["description"] == "first"
    assert r["preventKeyDeletion"] is False
    assert r["keyVersion"]["id"] == k["keyVersion"]["id"]
    assert r["creationDate"].endswith("Z") and "createdBy" in r

    # CRN filter (per key) with a wildcard and an exact value.
    doc = J(kp.get_registrations(id=k["id"], bluemix_instance=inst, url_encoded_resource_crn_query=crn("b2")))
    assert [x["resourceCrn"] for x in doc["resources"]] == [crn("b2")]
    doc = J(kp.get_registrations(id=k["id"], bluemix_instance=inst,
                                 url_encoded_resource_crn_query=crn("*")))
    assert len(doc["resources"]) == 2

    # limit / offset
    doc = J(kp.get_registrations(id=k["id"], bluemix_instance=inst, limit=1, offset=1, total_count=True))
    assert len(doc["resources"]) == 1 and doc["metadata"]["totalCount"] == 2

    # All keys.
    res = kp.get_registrations_all_keys(bluemix_instance=inst, total_count=True)
    doc = J(res)
    assert doc["metadata"]["collectionType"] == REG
    assert {x["resourceCrn"] for x in doc["resources"]} == {crn("b1"), crn("b2"), crn("c1")}
    assert doc["metadata"]["totalCount"] == 3
    doc = J(kp.get_registrations_all_keys(bluemix_instance=inst, url_encoded_resource_crn_query=crn("c1")))
    assert [(x["keyId"], x["resourceCrn"]) for x in doc["resources"]] == [(other["id"], crn("c1"))]
    doc = J(kp.get_registrations_all_keys(bluemix_instance=inst, url_encoded_resource_crn_query=crn("*")))
    assert len(doc["resources"]) == 3
    doc = J(kp.get_registrations_all_keys(bluemix_instance=inst, prevent_key_deletion=True))
    assert doc["resources"] == []

    # Deleting a key that protects resources needs force.
    expect_error(lambda: kp.delete_key(id=k["id"], bluemix_instance=inst), 409, "PROTECTED_RESOURCE_ERR")
    assert meta(kp, inst, k["id"])["state"] == 1
    res = kp.delete_key(id=k["id"], bluemix_instance=inst, force=True)
    assert res.get_status_code() in (200, 204)
    assert meta(kp, inst, k["id"])["state"] == 5


def test_prevent_key_deletion(fresh_server):
    s = fresh_server
    kp, inst = s.client(), s.instance
    k = create(kp, inst)
    s.register(k["id"], crn("locked"), prevent=True)
    doc = J(kp.get_registrations(id=k["id"], bluemix_instance=inst, prevent_key_deletion=True))
    assert [x["resourceCrn"] for x in doc["resources"]] == [crn("locked")]
    assert doc["resources"][0]["preventKeyDeletion"] is True
    expect_error(lambda: kp.delete_key(id=k["id"], bluemix_instance=inst), 409, "PREV_KEY_DEL_ERR")
    expect_error(lambda: kp.delete_key(id=k["id"], bluemix_instance=inst, force=True), 409, "PREV_KEY_DEL_ERR")
    assert meta(kp, inst, k["id"])["state"] == 1


def test_registrations_of_key_without_any(kp, inst):
    k = create(kp, inst)
    doc = J(kp.get_registrations(id=k["id"], bluemix_instance=inst))
    assert doc["resources"] == [] and doc["metadata"]["collectionTotal"] == 0


def test_registration_write_requires_service_id(server, kp, inst):
    k = create(kp, inst)
    body = {"metadata": {"collectionType": "application/vnd.ibm.kms.registration_input+json", "collectionTotal": 1},
            "resources": [{"preventKeyDeletion": False, "description": "x", "registrationMetadata": "m"}]}
    r = server.raw("POST", f"/api/v2/keys/{k['id']}/registrations/{urllib.parse.quote(crn('u1'), safe='')}", json=body)
    assert r.status_code == 403, r.text
    assert r.json()["resources"][0]["reasons"][0]["code"] == "SERVICE_ONLY_ERR"


def test_registration_on_standard_key_rejected(server, kp, inst):
    k = create(kp, inst, extractable=True)
    body = {"metadata": {"collectionType": "application/vnd.ibm.kms.registration_input+json", "collectionTotal": 1},
            "resources": [{"preventKeyDeletion": False, "description": "x", "registrationMetadata": "m"}]}
    r = server.raw("POST", f"/api/v2/keys/{k['id']}/registrations/{urllib.parse.quote(crn('u2'), safe='')}",
                   apikey=server.info["service_apikey"], json=body)
    assert r.status_code == 422, r.text
    assert r.json()["resources"][0]["reasons"][0]["code"] == "KEY_ROOT_REQ_REG_ERR"
