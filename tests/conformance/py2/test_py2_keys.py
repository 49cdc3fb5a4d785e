"""keyprotect 2.3.1 / redstone 0.6.2 client: auth, keys, actions, lifecycle."""

import os
import time
import uuid

import pytest

from kh2 import b64, describe, expect_error, secure_import_fields, uniq, unb64


# -- auth (POST /oidc/token) ---------------------------------------------------

def test_oidc_token_manager(server):
    tm = server.token_manager()
    tok = tm.get_token()
    assert tok and tok.count(".") == 2
    info = tm._token_info
    assert info["token_type"] == "Bearer"
    assert info["expiration"] > time.time() and info["expires_in"] > 0
    assert info.get("refresh_token")
    assert tm.get_token() == tok  # cached until 80 % of its lifetime


def test_oidc_refresh_token_grant(server, monkeypatch):
    import redstone.auth
    seen = []
    real_post = redstone.auth.requests.post

    def spy(url, data=None, headers=None, **kw):
        resp = real_post(url, data=data, headers=headers, **kw)
        seen.append((url, dict(data or {}), dict(headers or {}), resp.status_code))
        return resp

    monkeypatch.setattr(redstone.auth.requests, "post", spy)
    tm = server.token_manager(use_refresh_token=True)
    tm.get_token()
    # Make the cached token look expired (its refresh token still valid): the manager
    # now POSTs grant_type=refresh_token to /oidc/token.
    tm._token_info["expiration"] = time.time() - 1
    second = tm.get_token()
    assert [s[0] for s in seen] == [server.iam_url + "/oidc/token"] * 2
    assert seen[0][1]["grant_type"] == "urn:ibm:params:oauth:grant-type:apikey"
    assert seen[0][2]["Authorization"] == "Basic Yng6Yng="
    assert seen[1][1]["grant_type"] == "refresh_token", seen[1]
    assert seen[1][3] == 200, seen[1]
    assert second and second.count(".") == 2
    kp = server.client(tm=tm)
    assert isinstance(kp.keys(), list)


def test_bad_apikey_raises(server):
    kp = server.client(apikey="definitely-wrong")
    with pytest.raises(Exception, match="Error getting token"):
        kp.keys()


# -- create / get / list -------------------------------------------------------

def test_create_root_key(kp):
    name = uniq("root")
    k = kp.create(name=name, root=True)
    assert k["name"] == name
    assert k["extractable"] is False
    assert k["state"] == 1
    assert k["type"] == "application/vnd.ibm.kms.key+json"
    assert uuid.UUID(k["id"])
    assert "payload" not in k
    assert k["keyRingID"] == "default"
    g = kp.get(k["id"])
    assert g["id"] == k["id"] and g["name"] == name


def test_create_standard_key_generated_and_get_payload(kp):
    k = kp.create_key(name=uniq("std"), root=False)
    assert k["extractable"] is True
    g = kp.get_key(k["id"])
    assert len(unb64(g["payload"])) == 32


def test_create_standard_key_with_payload(kp):
    material = b"my secret standard payload"
    k = kp.create(name=uniq("std"), payload=material)
    assert k["imported"] is True
    assert unb64(kp.get(k["id"])["payload"]) == material


def test_create_root_key_raw_payload(kp):
    material = os.urandom(32)
    k = kp.create(name=uniq("imp"), raw_payload=b64(material), root=True)
    assert k["imported"] is True and k["extractable"] is False
    w = kp.wrap(k["id"], b"dek bytes")
    assert kp.unwrap(k["id"], w["ciphertext"]) == b"dek bytes"


def test_create_with_alias_list(kp):
    aliases = [uniq("a1"), uniq("a2")]
    k = kp.create(name=uniq("al"), root=True, alias_list=aliases)
    assert sorted(k["aliases"]) == sorted(aliases)
    assert kp.get(aliases[1])["id"] == k["id"]


def test_list_keys(kp):
    k = kp.create(name=uniq("list"), root=True)
    keys = kp.keys()
    assert isinstance(keys, list)
    assert k["id"] in [x["id"] for x in keys]
    assert all("payload" not in x for x in keys)
    assert k["id"] in {x["id"] for x in kp.list_keys()}


def test_get_unknown(kp):
    expect_error(lambda: kp.get(str(uuid.uuid4())), 404, "KEY_NOT_FOUND_ERR")


# -- wrap / unwrap / rewrap / rotate --------------------------------------------

def test_wrap_unwrap(kp):
    k = kp.create(name=uniq("w"), root=True)
    dek = os.urandom(32)
    w = kp.wrap(k["id"], dek)
    assert w["keyVersion"]["id"] == k["keyVersion"]["id"]
    assert kp.unwrap(k["id"], w["ciphertext"]) == dek
    assert kp.unwrap(k["id"], w["ciphertext"].encode()) == dek  # bytes ciphertext form


def test_wrap_generated_dek(kp):
    k = kp.create(name=uniq("w"), root=True)
    w = kp.wrap(k["id"], None)
    dek = unb64(w["plaintext"])
    assert len(dek) == 32
    assert kp.unwrap(k["id"], w["ciphertext"]) == dek


def test_wrap_aad(kp):
    k = kp.create(name=uniq("w"), root=True)
    w = kp.wrap(k["id"], b"aad dek", aad=["x", "y"])
    assert kp.unwrap(k["id"], w["ciphertext"], aad=["x", "y"]) == b"aad dek"
    with pytest.raises(Exception):
        kp.unwrap(k["id"], w["ciphertext"], aad=["x"])


def test_rotate_and_rewrap(kp):
    k = kp.create(name=uniq("rot"), root=True)
    v1 = k["keyVersion"]["id"]
    dek = os.urandom(32)
    old = kp.wrap(k["id"], dek)
    assert kp.rotate(k["id"]) is None  # 204
    v2 = kp.get(k["id"])["keyVersion"]["id"]
    assert v2 != v1
    # old ciphertext still opens
    assert kp.unwrap(k["id"], old["ciphertext"]) == dek
    rw = kp.rewrap(k["id"], old["ciphertext"])
    assert rw["keyVersion"]["id"] == v1
    assert rw["rewrappedKeyVersion"]["id"] == v2
    assert kp.unwrap(k["id"], rw["ciphertext"]) == dek
    assert kp.wrap(k["id"], dek)["keyVersion"]["id"] == v2


def test_rotate_imported_key_with_payload(kp):
    k = kp.create(name=uniq("rimp"), raw_payload=b64(os.urandom(32)), root=True)
    old = kp.wrap(k["id"], b"x1")
    expect_error(lambda: kp.rotate_key(k["id"]), 400, "KEY_PAYLOAD_REQ_ERR")
    assert kp.rotate_key(k["id"], payload=os.urandom(32)) is None
    assert kp.get(k["id"])["keyVersion"]["id"] != k["keyVersion"]["id"]
    assert kp.unwrap(k["id"], old["ciphertext"]) == b"x1"


def test_disable_enable(kp):
    k = kp.create(name=uniq("dis"), root=True)
    kp.disable_key(k["id"])
    assert kp.get(k["id"])["state"] == 2
    expect_error(lambda: kp.wrap(k["id"], b"x"), 409, "KEY_ACTION_INVALID_STATE_ERR")
    expect_error(lambda: kp.disable_key(k["id"]), 409, "KEY_ACTION_INVALID_STATE_ERR")
    kp.enable_key(k["id"])
    assert kp.get(k["id"])["state"] == 1
    w = kp.wrap(k["id"], b"x")
    assert kp.unwrap(k["id"], w["ciphertext"]) == b"x"


def test_sync(kp):
    k = kp.create(name=uniq("sync"), root=True)
    assert kp.sync_associated_resources(k["id"]) is None


# -- delete / restore / purge ---------------------------------------------------------

def test_delete_restore(kp):
    k = kp.create(name=uniq("del"), root=True)
    w = kp.wrap(k["id"], b"keep")
    assert kp.delete(k["id"]) is None
    g = kp.get(k["id"])
    assert g["state"] == 5 and g["deleted"] is True
    expect_error(lambda: kp.delete_key(k["id"]), 410, "KEY_DELETED_ERR")
    expect_error(lambda: kp.wrap(k["id"], b"x"), 410, "KEY_DELETED_ERR")
    assert k["id"] not in [x["id"] for x in kp.keys()]
    kp.restore_key(k["id"])
    assert kp.get(k["id"])["state"] == 1
    assert kp.unwrap(k["id"], w["ciphertext"]) == b"keep"
    expect_error(lambda: kp.restore_key(k["id"]), 409, "KEY_ACTION_INVALID_STATE_ERR")


def test_purge(kp):
    k = kp.create(name=uniq("purge"), root=True)
    expect_error(lambda: kp.purge_key(k["id"]), 409, "KEY_ACTION_INVALID_STATE_ERR")
    kp.delete(k["id"])
    kp.purge_key(k["id"])
    expect_error(lambda: kp.get(k["id"]), 404, "KEY_NOT_FOUND_ERR")


def test_purge_and_restore_too_early_default_rules(strict_server):
    kp = strict_server.client()
    k = kp.create(name=uniq("early"), root=True)
    kp.delete(k["id"])
    expect_error(lambda: kp.purge_key(k["id"]), 409, "REQ_TOO_EARLY_ERR")
    expect_error(lambda: kp.restore_key(k["id"]), 409, "REQ_TOO_EARLY_ERR")


def test_enable_too_early_default_rules(strict_server):
    kp = strict_server.client()
    k = kp.create(name=uniq("dis"), root=True)
    kp.disable_key(k["id"])
    expect_error(lambda: kp.enable_key(k["id"]), 409, "REQ_TOO_EARLY_ERR")


def test_rotate_once_per_hour_default_rules(strict_server):
    kp = strict_server.client()
    k = kp.create(name=uniq("rot"), root=True)
    kp.rotate(k["id"])  # the first rotation of a new key is allowed (the rule counts rotations)
    expect_error(lambda: kp.rotate(k["id"]), 409, "KEY_ROTATION_NOT_PERMITTED")


# -- aliases ---------------------------------------------------------------------------

def test_alias_create_delete(kp):
    k = kp.create(name=uniq("al"), root=True)
    alias = uniq("alias")
    doc = kp.create_key_alias(k["id"], alias)
    r = doc["resources"][0]
    assert r["keyId"] == k["id"] and r["alias"] == alias
    assert kp.get(alias)["id"] == k["id"]
    w = kp.wrap(alias, b"by alias")
    assert kp.unwrap(alias, w["ciphertext"]) == b"by alias"
    kp.delete_key_alias(k["id"], alias)
    expect_error(lambda: kp.get(alias), 404, "KEY_NOT_FOUND_ERR")
    expect_error(lambda: kp.create_key_alias(k["id"], "versions"), 400)


# -- key rings -----------------------------------------------------------------------------

def test_key_rings(kp):
    ring = uniq("ring")
    kp.create_key_ring(ring)
    doc = kp.get_key_rings()
    assert doc["metadata"]["collectionType"] == "application/vnd.ibm.kms.key_ring+json"
    ids = [r["id"] for r in doc["resources"]]
    assert "default" in ids and ring in ids
    k = kp.create(name=uniq("mv"), root=True)
    kp.set_key_ring(k["id"], "default", ring)
    assert kp.get(k["id"])["keyRingID"] == ring
    expect_error(lambda: kp.delete_key_ring(ring), 409)
    kp.set_key_ring(k["id"], ring, "default")
    assert kp.get(k["id"])["keyRingID"] == "default"
    kp.delete_key_ring(ring)
    assert ring not in [r["id"] for r in kp.get_key_rings()["resources"]]


# -- import tokens ----------------------------------------------------------------------------

def test_import_token_and_secure_import(fresh_server):
    kp = fresh_server.client()
    t = kp.create_import_token(expiration=600, max_allowed_retrievals=2)
    assert t["maxAllowedRetrievals"] == 2 and t["remainingRetrievals"] == 2
    g = kp.get_import_token()
    assert g["remainingRetrievals"] == 1
    assert unb64(g["payload"]).startswith(b"-----BEGIN PUBLIC KEY-----")
    material = os.urandom(32)
    f = secure_import_fields(g, material)
    # keyprotect 2.3.1 has no secure-import parameters on create(); send the documented body
    # through the client's own authenticated session.
    body = {"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [dict({"type": "application/vnd.ibm.kms.key+json", "name": uniq("sec"), "extractable": False}, **f)]}
    r = kp.session.post(kp.endpoint_url + "/api/v2/keys", json=body)
    assert r.status_code == 201, r.text
    k = r.json()["resources"][0]
    assert k["imported"] is True
    w = kp.wrap(k["id"], b"secure")
    assert kp.unwrap(k["id"], w["ciphertext"]) == b"secure"


# -- short-lived tokens -------------------------------------------------------------------------

def test_token_manager_refreshes_short_lived_tokens():
    from kh2 import FAST_FLAGS, Server
    s = Server(FAST_FLAGS + ["--token-lifetime", "3"]).start()
    try:
        kp = s.client()
        k = kp.create(name=uniq("tok"), root=True)
        time.sleep(3.5)  # the cached token has expired; TokenManager must fetch a new one
        assert kp.get(k["id"])["id"] == k["id"]
    finally:
        s.stop()
