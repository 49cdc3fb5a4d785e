"""Deeper result checks through IbmKeyProtectApiV2: field validation limits (§6.1, §6.5),
multi-rotation rewrap chains, restore keeping attributes, search scopes."""

import os

import pytest

from kh3 import J, b64, body, create, expect_error, key_body, meta, uniq, unb64, unwrap, versions, wrap


@pytest.mark.parametrize("field,value", [
    ("name", "x"),                      # 2-90 chars
    ("name", "n" * 91),
    ("description", "d" * 241),         # <= 240 chars
    ("tags", ["bad<tag"]),              # no < > , : & |
    ("tags", ["t" * 31]),               # each <= 30 chars
    ("tags", [f"t{i}" for i in range(31)]),  # <= 30 tags
    ("aliases", [uniq("a") for _ in range(6)]),  # <= 5 aliases
])
def test_create_field_limits(kp, inst, field, value):
    extra = {field: value}
    name = extra.pop("name", uniq())
    expect_error(lambda: kp.create_key(bluemix_instance=inst, key_create_body=key_body(name, **extra)), 400)


def test_create_field_limits_accept_boundaries(kp, inst):
    k = create(kp, inst, name="n" * 90, description="d" * 240, tags=["t" * 30] + [f"x{i}" for i in range(29)])
    assert len(k["name"]) == 90 and len(k["description"]) == 240 and len(k["tags"]) == 30


def test_aad_element_limit(kp, inst):
    k = create(kp, inst)
    w = wrap(kp, inst, k["id"], b"x", aad=["a" * 255])
    assert unb64(unwrap(kp, inst, k["id"], w["ciphertext"], aad=["a" * 255])["plaintext"]) == b"x"
    expect_error(lambda: kp.wrap_key(id=k["id"], bluemix_instance=inst,
                                     key_action_wrap_body=body({"plaintext": b64(b"x"), "aad": ["a" * 256]})), 400)


def test_rewrap_chain_over_three_versions(kp, inst):
    k = create(kp, inst)
    dek = os.urandom(32)
    c1 = wrap(kp, inst, k["id"], dek)["ciphertext"]
    kp.rotate_key(id=k["id"], bluemix_instance=inst)
    c2 = wrap(kp, inst, k["id"], dek)["ciphertext"]
    kp.rotate_key(id=k["id"], bluemix_instance=inst)
    v = [x["id"] for x in versions(kp, inst, k["id"])["resources"]]
    assert len(v) == 3
    v3 = meta(kp, inst, k["id"])["keyVersion"]["id"]
    for ct in (c1, c2):
        u = unwrap(kp, inst, k["id"], ct)
        assert unb64(u["plaintext"]) == dek
        assert u["rewrappedKeyVersion"]["id"] == v3
        rw = J(kp.rewrap_key(id=k["id"], bluemix_instance=inst, key_action_rewrap_body=body({"ciphertext": ct})))
        assert rw["rewrappedKeyVersion"]["id"] == v3
        assert rw["keyVersion"]["id"] != v3
        assert unb64(unwrap(kp, inst, k["id"], rw["ciphertext"])["plaintext"]) == dek
    # Versions are distinct and the current one is listed first.
    assert len(set(v)) == 3 and v[0] == v3


def test_rotate_updates_dates(kp, inst):
    k = create(kp, inst)
    assert "lastRotateDate" not in k
    kp.rotate_key(id=k["id"], bluemix_instance=inst)
    m = meta(kp, inst, k["id"])
    assert m["lastRotateDate"] >= k["creationDate"]
    assert m["lastUpdateDate"] >= k["lastUpdateDate"]
    assert m["keyVersion"]["creationDate"] >= k["keyVersion"]["creationDate"]


def test_restore_keeps_aliases_and_policies(kp, inst):
    alias = uniq("keep")
    k = create(kp, inst, aliases=[alias], description="kept", tags=["kept"])
    kp.put_policy(id=k["id"], bluemix_instance=inst, policy="rotation", key_policy_put_body={
        "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.policy+json", "rotation": {"enabled": True, "interval_month": 5}}]})
    kp.rotate_key(id=k["id"], bluemix_instance=inst)
    before = meta(kp, inst, k["id"])
    kp.delete_key(id=k["id"], bluemix_instance=inst)
    kp.restore_key(id=k["id"], bluemix_instance=inst)
    after = meta(kp, inst, k["id"])
    assert after["state"] == 1
    assert after["description"] == "kept" and after["tags"] == ["kept"]
    assert after["keyVersion"]["id"] == before["keyVersion"]["id"]
    assert len(versions(kp, inst, k["id"])["resources"]) == 2
    pol = J(kp.get_policy(id=k["id"], bluemix_instance=inst, policy="rotation"))
    assert pol["resources"] and pol["resources"][0]["rotation"]["interval_month"] == 5
    assert alias in after.get("aliases", []), after
    assert meta(kp, inst, alias)["id"] == k["id"]


def test_search_scopes(fresh_server):
    kp, inst = fresh_server.client(), fresh_server.instance
    a = create(kp, inst, name="findme-name", aliases=["other-alias"])
    b = create(kp, inst, name="plain", aliases=["findme-alias"])
    ids = lambda q: sorted(x["id"] for x in J(kp.get_keys(bluemix_instance=inst, search=q))["resources"])
    assert ids("findme") == sorted([a["id"], b["id"]])
    assert ids("name:findme") == [a["id"]]
    assert ids("alias:findme") == [b["id"]]
    assert ids("exact:findme") == []
    assert ids("exact:alias:findme-alias") == [b["id"]]
    doc = J(kp.get_keys(bluemix_instance=inst, search=a["id"]))
    assert doc["resources"][0]["id"] == a["id"]


def test_force_delete_removes_registrations(fresh_server):
    s = fresh_server
    kp, inst = s.client(), s.instance
    k = create(kp, inst)
    crn = "crn:v1:bluemix:public:cloud-object-storage:global:a/acct:inst:bucket:forced"
    s.register(k["id"], crn)
    kp.delete_key(id=k["id"], bluemix_instance=inst, force=True)
    doc = J(kp.get_registrations_all_keys(bluemix_instance=inst))
    assert crn not in [r["resourceCrn"] for r in doc["resources"]], doc


def test_standard_key_payload_never_listed_or_in_metadata(kp, inst):
    k = create(kp, inst, extractable=True, payload=b64(b"top secret standard"))
    assert "payload" not in meta(kp, inst, k["id"])
    doc = J(kp.get_keys(bluemix_instance=inst, extractable=True))
    assert all("payload" not in x for x in doc["resources"])
    d = J(kp.delete_key(id=k["id"], bluemix_instance=inst, prefer="return=representation"))["resources"][0]
    assert "payload" not in d
