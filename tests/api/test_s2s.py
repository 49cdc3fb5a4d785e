"""Service-to-service: a storage service's instance gets a credential
(POST /v2/resource_keys), whose principal is the instance itself. Without an
authorization it may do nothing on a kms instance; with storage → kms Reader it
registers the root key protecting a bucket and wraps/unwraps, and still may not do
Writer (create key) or Manager (disable, delete, policies) actions."""
import os

import pytest

from api_helpers import (REG_INPUT_TYPE, POLICY_TYPE, assert_kp_error, b64, check_status, crn_path,
                         key_envelope, key_resource, policy_envelope, unb64, uniq)
from rc_helpers import authorize, create_instance, create_root_key, eventually, kms, on, rc

STORAGE = "cloud-object-storage"


def token_for(server, apikey):
    return server.client(apikey)


@pytest.fixture(scope="module")
def world(server, kp):
    cos = create_instance(kp, name=uniq("bucket-service"), service=STORAGE)
    assert cos["resource_plan_id"] == f"{STORAGE}-standard"
    target = kms(kp)["guid"]
    other = kms(kp)["guid"]
    r = check_status(rc(kp, "POST", "/v2/resource_keys", {"name": "cos-credentials", "source": cos["guid"]}), 201)
    cred = r.json()
    assert cred["source_crn"] == cos["crn"] and cred["state"] == "active"
    assert cred["credentials"]["iam_serviceid_crn"] == "crn-" + cos["crn"]
    root = create_root_key(kp, target)
    other_root = create_root_key(kp, other)
    return {"cos": cos, "kms": target, "other": other, "root": root["id"], "other_root": other_root["id"],
            "client": server.client(cred["credentials"]["apikey"])}


def wrap(c, inst, kid, dek):
    return on(c, inst, "POST", f"/api/v2/keys/{kid}/actions/wrap", {"plaintext": b64(dek), "aad": ["b"]})


def registration(c, inst, kid, crn):
    return on(c, inst, "POST", f"/api/v2/keys/{kid}/registrations/{crn_path(crn)}",
              {"metadata": {"collectionType": REG_INPUT_TYPE, "collectionTotal": 1},
               "resources": [{"preventKeyDeletion": True, "description": "bucket"}]})


def test_service_instance_without_authorization_is_refused(world):
    c = world["client"]
    assert_kp_error(wrap(c, world["kms"], world["root"], b"x" * 32), 401, None, reasons_optional=True)
    assert_kp_error(on(c, world["kms"], "GET", "/api/v2/keys"), 401, None, reasons_optional=True)
    # Nor does it hold any platform role.
    assert rc(c, "GET", "/v2/resource_instances").json()["resources"] == []
    assert_kp_error(rc(c, "POST", "/v2/resource_instances", {"name": "x", "resource_plan_id": "kms-standard"}),
                    401, None, reasons_optional=True)


def test_reader_authorization_allows_registration_and_wrapping_only(kp, world):
    c, inst, kid = world["client"], world["kms"], world["root"]
    auth = authorize(kp, {"service_name": STORAGE, "instance_id": world["cos"]["guid"]},
                     {"service_name": "kms", "instance_id": inst}, roles=["Reader"])
    try:
        dek = os.urandom(32)
        r = eventually(lambda: (lambda r: r if r.status_code == 200 else None)(wrap(c, inst, kid, dek)))
        assert r is not None, "the authorization did not take effect within 1 s"
        ct = r.json()["ciphertext"]
        r = check_status(on(c, inst, "POST", f"/api/v2/keys/{kid}/actions/unwrap", {"ciphertext": ct, "aad": ["b"]}), 200)
        assert unb64(r.json()["plaintext"]) == dek

        bucket = f"crn:v1:keyhold:private:{STORAGE}:local:a/dev-account:{world['cos']['guid']}:bucket:photos"
        check_status(registration(c, inst, kid, bucket), 200, 201)
        regs = check_status(on(c, inst, "GET", f"/api/v2/keys/{kid}/registrations"), 200).json()["resources"]
        assert [x["resourceCrn"] for x in regs] == [bucket]

        # Writer and Manager actions stay refused.
        refused = [
            on(c, inst, "POST", "/api/v2/keys", key_envelope(key_resource(uniq("nope")))),
            on(c, inst, "POST", f"/api/v2/keys/{kid}/actions/disable"),
            on(c, inst, "POST", f"/api/v2/keys/{kid}/actions/rotate"),
            on(c, inst, "DELETE", f"/api/v2/keys/{kid}"),
            on(c, inst, "PUT", f"/api/v2/keys/{kid}/policies",
               policy_envelope({"type": POLICY_TYPE, "rotation": {"enabled": True, "interval_month": 3}}),
               params={"policy": "rotation"}),
            on(c, inst, "GET", "/api/v2/instance/policies"),
        ]
        for r in refused:
            assert_kp_error(r, 401, "UNAUTHORIZED_ERR", reasons_optional=True)
        # The key is untouched by the refused calls.
        assert on(kp, inst, "GET", f"/api/v2/keys/{kid}/metadata").json()["resources"][0]["state"] == 1

        # The authorization names one kms instance: another one stays closed.
        assert_kp_error(wrap(c, world["other"], world["other_root"], dek), 401, None, reasons_optional=True)
    finally:
        check_status(rc(kp, "DELETE", f"/v1/authorizations/{auth['id']}"), 204)
    r = eventually(lambda: (lambda r: r if r.status_code == 401 else None)(wrap(c, inst, kid, b"y" * 32)))
    assert r is not None, "wrap still allowed 1 s after the authorization was removed"


def test_service_wide_authorization_and_deleted_source(kp, world):
    """source = the storage service (any instance) → all kms instances; deleting the
    storage instance ends what its credentials may do."""
    cos2 = create_instance(kp, name=uniq("bucket-service"), service=STORAGE)
    cred = check_status(rc(kp, "POST", "/v2/resource_keys", {"source": cos2["crn"]}), 201).json()
    c = kp.server.client(cred["credentials"]["apikey"])
    auth = authorize(kp, {"service_name": STORAGE}, {"service_name": "kms"}, roles=["Reader"])
    try:
        check_status(wrap(c, world["other"], world["other_root"], b"z" * 32), 200)
        check_status(rc(kp, "DELETE", f"/v2/resource_instances/{cos2['guid']}"), 204)
        assert_kp_error(wrap(c, world["other"], world["other_root"], b"z" * 32), 401, None, reasons_optional=True)
    finally:
        check_status(rc(kp, "DELETE", f"/v1/authorizations/{auth['id']}"), 204)


def test_resource_key_validation(kp, svc, world):
    assert_kp_error(rc(kp, "POST", "/v2/resource_keys", {"name": "x"}), 400, "INVALID_FIELD_ERR")
    assert_kp_error(rc(kp, "POST", "/v2/resource_keys", {"source": "00000000-0000-4000-8000-000000000000"}),
                    404, "NOT_FOUND_ERR")
    assert_kp_error(rc(kp, "POST", "/v2/resource_keys", {"source": world["cos"]["guid"], "name": ""}),
                    400, "INVALID_FIELD_ERR")
    # A service ID has no platform role on the instance.
    assert_kp_error(rc(svc, "POST", "/v2/resource_keys", {"source": world["cos"]["guid"]}), 401, None,
                    reasons_optional=True)
