"""Key actions through IbmKeyProtectApiV2 (§5 rows 6, 13-21)."""

import io
import json
import os

import pytest
from ibm_cloud_sdk_core import ApiException

from kh3 import J, b64, body, create, describe, expect_error, meta, unb64, unwrap, versions, wrap


# -- wrap / unwrap (rows 13, 14) ------------------------------------------------

def test_wrap_unwrap_roundtrip(kp, inst):
    k = create(kp, inst)
    dek = os.urandom(32)
    w = wrap(kp, inst, k["id"], dek)
    assert w["ciphertext"] and unb64(w["ciphertext"])  # valid base64
    assert "plaintext" not in w
    assert w["keyVersion"]["id"] == k["keyVersion"]["id"]
    u = unwrap(kp, inst, k["id"], w["ciphertext"])
    assert unb64(u["plaintext"]) == dek
    assert u["keyVersion"]["id"] == k["keyVersion"]["id"]
    assert "rewrappedKeyVersion" not in u
    # Wrapping twice gives different ciphertexts (random IV) that both open.
    w2 = wrap(kp, inst, k["id"], dek)
    assert w2["ciphertext"] != w["ciphertext"]
    assert unb64(unwrap(kp, inst, k["id"], w2["ciphertext"])["plaintext"]) == dek


def test_wrap_generates_dek_when_no_plaintext(kp, inst):
    k = create(kp, inst)
    for b in (None, b"", b"{}"):
        res = kp.wrap_key(id=k["id"], bluemix_instance=inst,
                          key_action_wrap_body=None if b is None else io.BytesIO(b))
        assert res.get_status_code() == 200, b
        w = J(res)
        dek = unb64(w["plaintext"])
        assert len(dek) == 32
        assert unb64(unwrap(kp, inst, k["id"], w["ciphertext"])["plaintext"]) == dek


def test_wrap_with_aad(kp, inst):
    k = create(kp, inst)
    w = wrap(kp, inst, k["id"], b"secret", aad=["ctx-1", "ctx-2"])
    assert unb64(unwrap(kp, inst, k["id"], w["ciphertext"], aad=["ctx-1", "ctx-2"])["plaintext"]) == b"secret"
    for bad in (["ctx-1"], ["ctx-2", "ctx-1"], None):
        b = {"ciphertext": w["ciphertext"]}
        if bad is not None:
            b["aad"] = bad
        try:
            kp.unwrap_key(id=k["id"], bluemix_instance=inst, key_action_unwrap_body=body(b))
        except ApiException as e:
            assert e.code in (400, 422), describe(e)
        else:
            pytest.fail(f"unwrap with aad={bad} succeeded although wrap used other AAD")


def test_unwrap_garbage_ciphertext(kp, inst):
    k = create(kp, inst)
    for ct in ("not base64 !!", b64(b"random junk that is not a ciphertext")):
        try:
            kp.unwrap_key(id=k["id"], bluemix_instance=inst, key_action_unwrap_body=body({"ciphertext": ct}))
        except ApiException as e:
            assert e.code in (400, 422), describe(e)
        else:
            pytest.fail("garbage ciphertext unwrapped")


def test_unwrap_with_other_key_fails(kp, inst):
    k1, k2 = create(kp, inst), create(kp, inst)
    w = wrap(kp, inst, k1["id"], b"x")
    try:
        kp.unwrap_key(id=k2["id"], bluemix_instance=inst, key_action_unwrap_body=body({"ciphertext": w["ciphertext"]}))
    except ApiException as e:
        assert e.code in (400, 422), describe(e)
    else:
        pytest.fail("ciphertext of key 1 unwrapped with key 2")


def test_unwrap_missing_body(kp, inst):
    k = create(kp, inst)
    expect_error(lambda: kp.unwrap_key(id=k["id"], bluemix_instance=inst, key_action_unwrap_body=io.BytesIO(b"")),
                 400, "NO_BODY_ERR")


def test_wrap_invalid_base64_plaintext(kp, inst):
    k = create(kp, inst)
    e = expect_error(lambda: kp.wrap_key(id=k["id"], bluemix_instance=inst,
                                         key_action_wrap_body=body({"plaintext": "%%% not b64"})),
                     400, "INVALID_FIELD_ERR")
    reason = e.http_response.json()["resources"][0]["reasons"][0]
    assert reason.get("target", {}).get("name") == "plaintext", reason


def test_wrap_standard_key_rejected(kp, inst):
    k = create(kp, inst, extractable=True)
    expect_error(lambda: kp.wrap_key(id=k["id"], bluemix_instance=inst, key_action_wrap_body=body({})),
                 400, "KEY_ROOT_REQ_ERR")


def test_wrap_by_alias(kp, inst):
    from kh3 import uniq
    alias = uniq("wa")
    k = create(kp, inst, aliases=[alias])
    w = wrap(kp, inst, alias, b"via alias")
    assert unb64(unwrap(kp, inst, k["id"], w["ciphertext"])["plaintext"]) == b"via alias"
    assert unb64(unwrap(kp, inst, alias, w["ciphertext"])["plaintext"]) == b"via alias"


# -- rotate / rewrap (rows 15, 16) ------------------------------------------------

def test_rotate_then_unwrap_old_ciphertext_rewraps(kp, inst):
    k = create(kp, inst)
    v1 = k["keyVersion"]["id"]
    dek = os.urandom(32)
    old = wrap(kp, inst, k["id"], dek, aad=["a"])
    res = kp.rotate_key(id=k["id"], bluemix_instance=inst)
    assert res.get_status_code() == 204
    m = meta(kp, inst, k["id"])
    v2 = m["keyVersion"]["id"]
    assert v2 != v1
    assert "lastRotateDate" in m
    assert len(versions(kp, inst, k["id"])["resources"]) == 2

    u = unwrap(kp, inst, k["id"], old["ciphertext"], aad=["a"])
    assert unb64(u["plaintext"]) == dek
    assert u["keyVersion"]["id"] == v1
    assert u["rewrappedKeyVersion"]["id"] == v2
    assert u["ciphertext"] and u["ciphertext"] != old["ciphertext"]
    u2 = unwrap(kp, inst, k["id"], u["ciphertext"], aad=["a"])
    assert unb64(u2["plaintext"]) == dek
    assert u2["keyVersion"]["id"] == v2
    assert "rewrappedKeyVersion" not in u2

    # New wraps use the new version.
    assert wrap(kp, inst, k["id"], dek)["keyVersion"]["id"] == v2


def test_rewrap(kp, inst):
    k = create(kp, inst)
    v1 = k["keyVersion"]["id"]
    dek = os.urandom(16)
    old = wrap(kp, inst, k["id"], dek, aad=["r"])
    kp.rotate_key(id=k["id"], bluemix_instance=inst)
    v2 = meta(kp, inst, k["id"])["keyVersion"]["id"]
    res = kp.rewrap_key(id=k["id"], bluemix_instance=inst,
                        key_action_rewrap_body=body({"ciphertext": old["ciphertext"], "aad": ["r"]}))
    assert res.get_status_code() == 200
    rw = J(res)
    assert rw["keyVersion"]["id"] == v1
    assert rw["rewrappedKeyVersion"]["id"] == v2
    assert rw["ciphertext"] != old["ciphertext"]
    assert "plaintext" not in rw
    u = unwrap(kp, inst, k["id"], rw["ciphertext"], aad=["r"])
    assert unb64(u["plaintext"]) == dek and u["keyVersion"]["id"] == v2
    # The old ciphertext keeps working after a rewrap.
    assert unb64(unwrap(kp, inst, k["id"], old["ciphertext"], aad=["r"])["plaintext"]) == dek


def test_rotate_body_forms(kp, inst):
    """Rotate must accept no body, {} and null (GO sends null)."""
    k = create(kp, inst)
    for b in (None, b"{}", b"null"):
        res = kp.rotate_key(id=k["id"], bluemix_instance=inst,
                            key_action_rotate_body=None if b is None else io.BytesIO(b))
        assert res.get_status_code() == 204, b
    assert len(versions(kp, inst, k["id"])["resources"]) == 4


def test_rotate_standard_key_rejected(kp, inst):
    k = create(kp, inst, extractable=True)
    expect_error(lambda: kp.rotate_key(id=k["id"], bluemix_instance=inst), 400, "KEY_ROOT_REQ_ERR")


def test_rotate_imported_key_needs_payload(kp, inst):
    k = create(kp, inst, payload=b64(os.urandom(32)))
    old = wrap(kp, inst, k["id"], b"imported dek")
    e = expect_error(lambda: kp.rotate_key(id=k["id"], bluemix_instance=inst), 400, "KEY_PAYLOAD_REQ_ERR")
    res = kp.rotate_key(id=k["id"], bluemix_instance=inst,
                        key_action_rotate_body=body({"payload": b64(os.urandom(32))}))
    assert res.get_status_code() == 204
    assert len(versions(kp, inst, k["id"])["resources"]) == 2
    u = unwrap(kp, inst, k["id"], old["ciphertext"])
    assert unb64(u["plaintext"]) == b"imported dek"
    assert "rewrappedKeyVersion" in u


# -- disable / enable (rows 19, 20) --------------------------------------------------

def test_disable_enable(kp, inst):
    k = create(kp, inst)
    old = wrap(kp, inst, k["id"], b"before disable")
    res = kp.disable_key(id=k["id"], bluemix_instance=inst)
    assert res.get_status_code() == 204
    assert meta(kp, inst, k["id"])["state"] == 2
    expect_error(lambda: kp.wrap_key(id=k["id"], bluemix_instance=inst, key_action_wrap_body=body({"plaintext": b64(b"x")})),
                 409, "KEY_ACTION_INVALID_STATE_ERR")
    expect_error(lambda: kp.unwrap_key(id=k["id"], bluemix_instance=inst,
                                       key_action_unwrap_body=body({"ciphertext": old["ciphertext"]})),
                 409, "KEY_ACTION_INVALID_STATE_ERR")
    expect_error(lambda: kp.rotate_key(id=k["id"], bluemix_instance=inst), 409, "KEY_ACTION_INVALID_STATE_ERR")
    expect_error(lambda: kp.disable_key(id=k["id"], bluemix_instance=inst), 409, "KEY_ACTION_INVALID_STATE_ERR")
    res = kp.enable_key(id=k["id"], bluemix_instance=inst)
    assert res.get_status_code() == 204
    assert meta(kp, inst, k["id"])["state"] == 1
    assert unb64(unwrap(kp, inst, k["id"], old["ciphertext"])["plaintext"]) == b"before disable"
    expect_error(lambda: kp.enable_key(id=k["id"], bluemix_instance=inst), 409, "KEY_ACTION_INVALID_STATE_ERR")


def test_disabled_key_can_be_deleted(kp, inst):
    k = create(kp, inst)
    kp.disable_key(id=k["id"], bluemix_instance=inst)
    res = kp.delete_key(id=k["id"], bluemix_instance=inst, prefer="return=representation")
    assert J(res)["resources"][0]["state"] == 5


def test_actions_on_deleted_key_410(kp, inst):
    k = create(kp, inst)
    w = wrap(kp, inst, k["id"], b"x")
    kp.delete_key(id=k["id"], bluemix_instance=inst)
    for call in (
        lambda: kp.wrap_key(id=k["id"], bluemix_instance=inst, key_action_wrap_body=body({})),
        lambda: kp.unwrap_key(id=k["id"], bluemix_instance=inst, key_action_unwrap_body=body({"ciphertext": w["ciphertext"]})),
        lambda: kp.rotate_key(id=k["id"], bluemix_instance=inst),
        lambda: kp.disable_key(id=k["id"], bluemix_instance=inst),
    ):
        expect_error(call, 410, "KEY_DELETED_ERR")


# -- sync (row 21), set/unset without dual auth (rows 17, 18) --------------------------

def test_sync_associated_resources(kp, inst):
    k = create(kp, inst)
    res = kp.sync_associated_resources(id=k["id"], bluemix_instance=inst)
    assert res.get_status_code() == 204


def test_set_unset_for_deletion_without_dual_auth(kp, inst):
    k = create(kp, inst)
    expect_error(lambda: kp.set_key_for_deletion(id=k["id"], bluemix_instance=inst), 409, "NOT_DUAL_AUTH_ERR")
    expect_error(lambda: kp.unset_key_for_deletion(id=k["id"], bluemix_instance=inst), 409, "NOT_DUAL_AUTH_ERR")


def test_unknown_key_actions_404(kp, inst):
    import uuid
    kid = str(uuid.uuid4())
    expect_error(lambda: kp.wrap_key(id=kid, bluemix_instance=inst, key_action_wrap_body=body({})), 404, "KEY_NOT_FOUND_ERR")
    expect_error(lambda: kp.rotate_key(id=kid, bluemix_instance=inst), 404, "KEY_NOT_FOUND_ERR")


# -- deprecated ?action= form (row 6) ----------------------------------------------------

def _act(kp, inst, kid, action, payload=None, prefer=None):
    return kp.action_on_key(id=kid, bluemix_instance=inst, action=action,
                            key_action_body=body(payload if payload is not None else {}), prefer=prefer)


def test_action_on_key_wrap_unwrap_rewrap_rotate(kp, inst):
    k = create(kp, inst)
    v1 = k["keyVersion"]["id"]
    res = _act(kp, inst, k["id"], "wrap", {"plaintext": b64(b"old form"), "aad": ["q"]})
    assert res.get_status_code() == 200
    w = J(res)
    assert w["keyVersion"]["id"] == v1
    res = _act(kp, inst, k["id"], "unwrap", {"ciphertext": w["ciphertext"], "aad": ["q"]})
    assert res.get_status_code() == 200
    assert unb64(J(res)["plaintext"]) == b"old form"
    # Path-form unwrap opens the query-form ciphertext (same semantics).
    assert unb64(unwrap(kp, inst, k["id"], w["ciphertext"], aad=["q"])["plaintext"]) == b"old form"
    res = _act(kp, inst, k["id"], "rotate")
    assert res.get_status_code() in (200, 204)
    v2 = meta(kp, inst, k["id"])["keyVersion"]["id"]
    assert v2 != v1
    res = _act(kp, inst, k["id"], "rewrap", {"ciphertext": w["ciphertext"], "aad": ["q"]})
    assert res.get_status_code() == 200
    rw = J(res)
    assert rw["rewrappedKeyVersion"]["id"] == v2
    assert unb64(unwrap(kp, inst, k["id"], rw["ciphertext"], aad=["q"])["plaintext"]) == b"old form"
    # Generated DEK via ?action=wrap with {}.
    g = J(_act(kp, inst, k["id"], "wrap", {}))
    assert len(unb64(g["plaintext"])) == 32


def test_action_on_key_disable_enable(kp, inst):
    k = create(kp, inst)
    res = _act(kp, inst, k["id"], "disable")
    assert res.get_status_code() == 204
    assert meta(kp, inst, k["id"])["state"] == 2
    e = expect_error(lambda: _act(kp, inst, k["id"], "wrap", {"plaintext": b64(b"x")}), 409, "KEY_ACTION_INVALID_STATE_ERR")
    res = _act(kp, inst, k["id"], "enable")
    assert res.get_status_code() == 204
    assert meta(kp, inst, k["id"])["state"] == 1


def test_action_on_key_dual_auth_and_restore(kp, kp2, inst):
    k = create(kp, inst)
    kp.put_policy(id=k["id"], bluemix_instance=inst, policy="dualAuthDelete", key_policy_put_body={
        "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.policy+json", "dualAuthDelete": {"enabled": True}}],
    })
    res = _act(kp, inst, k["id"], "setKeyForDeletion")
    assert res.get_status_code() == 204
    assert meta(kp, inst, k["id"])["dualAuthDelete"]["keySetForDeletion"] is True
    res = _act(kp, inst, k["id"], "unsetKeyForDeletion")
    assert res.get_status_code() == 204
    assert meta(kp, inst, k["id"])["dualAuthDelete"].get("keySetForDeletion", False) is False
    _act(kp, inst, k["id"], "setKeyForDeletion")
    kp2.delete_key(id=k["id"], bluemix_instance=inst)
    res = _act(kp, inst, k["id"], "restore")
    assert res.get_status_code() == 201
    assert J(res)["resources"][0]["state"] == 1
    assert meta(kp, inst, k["id"])["state"] == 1


def test_action_on_key_unknown_action(kp, inst):
    k = create(kp, inst)
    expect_error(lambda: _act(kp, inst, k["id"], "explode"), 400)
