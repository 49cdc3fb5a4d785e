"""§5 rows 6, 13–21 and §6.5–§6.6, Appendix C: key actions, both action forms, state table,
expiration."""
import base64
import os
import time
from datetime import datetime, timedelta, timezone

import pytest

from api_helpers import _NO, assert_kp_error, b64, check_status, describe, unb64

FORMS = ["path", "query"]


# --- wrap / unwrap / rewrap -----------------------------------------------------------------

@pytest.mark.parametrize("form", FORMS)
def test_wrap_generates_dek(kp, form):
    k = kp.root_key()
    for body in ({}, _NO, None):
        r = kp.action(k["id"], "wrap", body, form=form)
        check_status(r, 200)
        w = r.json()
        assert len(unb64(w["plaintext"])) == 32, describe(r)
        assert w["keyVersion"]["id"] == k["keyVersion"]["id"]
        assert unb64(kp.unwrap(k["id"], w["ciphertext"], form=form)["plaintext"]) == unb64(w["plaintext"])


@pytest.mark.parametrize("form", FORMS)
def test_wrap_unwrap_roundtrip(kp, form):
    k = kp.root_key()
    dek = os.urandom(48)
    r = kp.wrap_resp(k["id"], dek, form=form)
    check_status(r, 200)
    w = r.json()
    assert "plaintext" not in w
    assert isinstance(w["ciphertext"], str)
    base64.b64decode(w["ciphertext"], validate=True)
    assert w["keyVersion"]["id"] == k["keyVersion"]["id"]
    u = kp.unwrap_resp(k["id"], w["ciphertext"], form=form)
    check_status(u, 200)
    ub = u.json()
    assert unb64(ub["plaintext"]) == dek
    assert ub["keyVersion"]["id"] == k["keyVersion"]["id"]
    assert "rewrappedKeyVersion" not in ub
    assert "ciphertext" not in ub


def test_wrap_is_randomized(kp):
    k = kp.root_key()
    a = kp.wrap(k["id"], b"same")["ciphertext"]
    b = kp.wrap(k["id"], b"same")["ciphertext"]
    assert a != b


def test_wrap_response_content_type(kp):
    """§4.1: wrap/unwrap/rewrap default to application/vnd.ibm.kms.key_action+json."""
    k = kp.root_key()
    r = check_status(kp.wrap_resp(k["id"], b"x"), 200)
    assert r.headers["content-type"].split(";")[0].strip() in (
        "application/vnd.ibm.kms.key_action+json",), describe(r)


def test_wrap_unwrap_with_aad(kp):
    k = kp.root_key()
    aad = ["ctx-1", "ctx-2"]
    w = kp.wrap(k["id"], b"secret", aad=aad)
    assert unb64(kp.unwrap(k["id"], w["ciphertext"], aad=aad)["plaintext"]) == b"secret"
    for bad in (None, [], ["ctx-1"], ["ctx-2", "ctx-1"], ["ctx-1", "ctx-2", "x"], ["ctx-1ctx-2"],
                ["ctx-1", "ctx-3"]):
        r = kp.unwrap_resp(k["id"], w["ciphertext"], aad=bad)
        assert_kp_error(r, (400, 422))


def test_aad_is_length_prefixed(kp):
    k = kp.root_key()
    w = kp.wrap(k["id"], b"x", aad=["ab", "c"])
    assert_kp_error(kp.unwrap_resp(k["id"], w["ciphertext"], aad=["a", "bc"]), (400, 422))
    assert_kp_error(kp.unwrap_resp(k["id"], w["ciphertext"], aad=["abc"]), (400, 422))


def test_aad_with_control_characters(kp):
    """AAD items are arbitrary JSON strings (§6.5); they are never stored, so NUL and other control
    characters have no reason to be refused."""
    k = kp.root_key()
    for aad in (["a\x00b"], ["\x00"], ["tab\there", "new\nline", "\x7f\x01"]):
        w = check_status(kp.wrap_resp(k["id"], b"x", aad=aad), 200).json()
        assert unb64(kp.unwrap(k["id"], w["ciphertext"], aad=aad)["plaintext"]) == b"x"
        assert_kp_error(kp.unwrap_resp(k["id"], w["ciphertext"], aad=[a.replace("\x00", "") for a in aad] + ["z"]),
                        (400, 422))


def test_wrap_aad_limits(kp):
    k = kp.root_key()
    w = kp.wrap(k["id"], b"x", aad=["a" * 255])
    assert unb64(kp.unwrap(k["id"], w["ciphertext"], aad=["a" * 255])["plaintext"]) == b"x"
    assert_kp_error(kp.wrap_resp(k["id"], b"x", aad=["a" * 256]), 400)
    for bad in ("notalist", [1], [None], {"a": 1}):
        assert_kp_error(kp.action(k["id"], "wrap", {"plaintext": b64(b"x"), "aad": bad}), 400)


def test_wrap_without_aad_unwrap_with_aad_refused(kp):
    k = kp.root_key()
    w = kp.wrap(k["id"], b"x")
    assert_kp_error(kp.unwrap_resp(k["id"], w["ciphertext"], aad=["a"]), (400, 422))


def test_wrap_dek_sizes(kp):
    k = kp.root_key()
    for n in (1, 7500):
        dek = os.urandom(n)
        w = kp.wrap(k["id"], dek)
        assert unb64(kp.unwrap(k["id"], w["ciphertext"])["plaintext"]) == dek
    assert_kp_error(kp.wrap_resp(k["id"], os.urandom(7501)), 400)


@pytest.mark.parametrize("plaintext", ["!!!", "abc", 123, ["YQ=="], {"a": 1}])
def test_wrap_invalid_plaintext(kp, plaintext):
    k = kp.root_key()
    r = kp.action(k["id"], "wrap", {"plaintext": plaintext})
    assert_kp_error(r, 400, ("INVALID_FIELD_ERR", "BAD_BODY_ERR"))


def test_wrap_invalid_base64_is_invalid_field(kp):
    k = kp.root_key()
    r = kp.action(k["id"], "wrap", {"plaintext": "not base64 at all!"})
    res = assert_kp_error(r, 400, "INVALID_FIELD_ERR")
    target = res["reasons"][0].get("target")
    assert target == {"type": "field", "name": "plaintext"}, describe(r)


@pytest.mark.parametrize("form", FORMS)
def test_unwrap_missing_body(kp, form):
    k = kp.root_key()
    assert_kp_error(kp.action(k["id"], "unwrap", _NO, form=form), 400, ("NO_BODY_ERR", "BAD_BODY_ERR"))


@pytest.mark.parametrize("body", [{}, {"aad": ["a"]}, {"ciphertext": ""}, {"ciphertext": 5},
                                  {"ciphertext": None}, {"ciphertext": "!!!"},
                                  {"ciphertext": b64(b"garbage")}, {"ciphertext": b64(os.urandom(200))},
                                  {"ciphertext": "A" * 100000}])
def test_unwrap_bad_ciphertext(kp, body):
    k = kp.root_key()
    r = kp.action(k["id"], "unwrap", body)
    assert_kp_error(r, (400, 422), ("INVALID_FIELD_ERR", "UNPROCESSABLE_CIPHERTEXT_ERR", "BAD_BODY_ERR",
                                    "NO_BODY_ERR"))


def test_unwrap_with_other_key_refused(kp):
    a, b = kp.root_key(), kp.root_key()
    w = kp.wrap(a["id"], b"for a only")
    assert_kp_error(kp.unwrap_resp(b["id"], w["ciphertext"]), (400, 422))
    assert_kp_error(kp.action(b["id"], "rewrap", {"ciphertext": w["ciphertext"]}), (400, 422))


def test_unwrap_truncated_and_flipped(kp):
    k = kp.root_key()
    ct = unb64(kp.wrap(k["id"], b"0123456789")["ciphertext"])
    for bad in (ct[:-1], ct[:len(ct) // 2], ct[1:], ct + b"\x00", bytes([ct[0] ^ 1]) + ct[1:],
                ct[:-1] + bytes([ct[-1] ^ 0x80])):
        assert_kp_error(kp.unwrap_resp(k["id"], b64(bad)), (400, 422))


def test_wrap_standard_key_refused(kp):
    k = kp.standard_key()
    ct = kp.wrap(kp.root_key()["id"], b"x")["ciphertext"]  # a well-formed ciphertext (of another key)
    assert_kp_error(kp.wrap_resp(k["id"], b"x"), 400, "KEY_ROOT_REQ_ERR")
    assert_kp_error(kp.unwrap_resp(k["id"], ct), 400, "KEY_ROOT_REQ_ERR")
    assert_kp_error(kp.action(k["id"], "rewrap", {"ciphertext": ct}), 400, "KEY_ROOT_REQ_ERR")


def test_actions_unknown_key_404(kp):
    kid = "00000000-0000-4000-8000-000000000000"
    ct = kp.wrap(kp.root_key()["id"], b"x")["ciphertext"]  # well-formed, so only the key is unknown
    for name, body in [("wrap", {}), ("unwrap", {"ciphertext": ct}), ("rewrap", {"ciphertext": ct}),
                       ("rotate", _NO), ("enable", _NO), ("disable", _NO), ("setKeyForDeletion", _NO),
                       ("unsetKeyForDeletion", _NO), ("sync", _NO)]:
        assert_kp_error(kp.action(kid, name, body), 404, "KEY_NOT_FOUND_ERR")
        if name != "sync":
            assert_kp_error(kp.action(kid, name, body, form="query"), 404, "KEY_NOT_FOUND_ERR")


@pytest.mark.parametrize("name", ["bogus", "restore2", "", "purge", "delete"])
def test_unknown_action(kp, name):
    k = kp.root_key()
    r = kp.post(f"/api/v2/keys/{k['id']}", {}, params={"action": name})
    assert_kp_error(r, (400, 404, 405) if name == "" else (400, 404))
    r = kp.post(f"/api/v2/keys/{k['id']}/actions/{name}", {})
    assert 400 <= r.status_code < 500, describe(r)
    assert kp.metadata(k["id"])["state"] == 1


def test_sync_has_no_query_form_but_path_form_works(kp):
    k = kp.root_key()
    check_status(kp.action(k["id"], "sync"), 204)


# --- rotate / unwrap after rotate / rewrap ----------------------------------------------------

@pytest.mark.parametrize("form", FORMS)
def test_rotate_then_unwrap_old_ciphertext(kp, form):
    k = kp.root_key()
    v1 = k["keyVersion"]["id"]
    old = kp.wrap(k["id"], b"dek-v1")
    r = kp.action(k["id"], "rotate", form=form)
    check_status(r, 204)
    md = kp.metadata(k["id"])
    v2 = md["keyVersion"]["id"]
    assert v2 != v1
    assert md["lastRotateDate"]
    u = kp.unwrap(k["id"], old["ciphertext"], form=form)
    assert unb64(u["plaintext"]) == b"dek-v1"
    assert u["keyVersion"]["id"] == v1
    assert u["rewrappedKeyVersion"]["id"] == v2
    assert u["ciphertext"] != old["ciphertext"]
    u2 = kp.unwrap(k["id"], u["ciphertext"])
    assert unb64(u2["plaintext"]) == b"dek-v1"
    assert u2["keyVersion"]["id"] == v2
    assert "rewrappedKeyVersion" not in u2
    new = kp.wrap(k["id"], b"dek-v2")
    assert new["keyVersion"]["id"] == v2


@pytest.mark.parametrize("form", FORMS)
def test_rewrap(kp, form):
    k = kp.root_key()
    v1 = k["keyVersion"]["id"]
    old = kp.wrap(k["id"], b"rewrap-me", aad=["a"])
    kp.rotate(k["id"])
    v2 = kp.metadata(k["id"])["keyVersion"]["id"]
    r = kp.action(k["id"], "rewrap", {"ciphertext": old["ciphertext"], "aad": ["a"]}, form=form)
    check_status(r, 200)
    rw = r.json()
    assert rw["keyVersion"]["id"] == v1
    assert rw["rewrappedKeyVersion"]["id"] == v2
    assert rw["ciphertext"] != old["ciphertext"]
    assert "plaintext" not in rw
    u = kp.unwrap(k["id"], rw["ciphertext"], aad=["a"])
    assert unb64(u["plaintext"]) == b"rewrap-me" and u["keyVersion"]["id"] == v2
    assert_kp_error(kp.action(k["id"], "rewrap", {"ciphertext": old["ciphertext"], "aad": ["b"]}), (400, 422))


def test_rewrap_current_version(kp):
    k = kp.root_key()
    w = kp.wrap(k["id"], b"x")
    rw = check_status(kp.action(k["id"], "rewrap", {"ciphertext": w["ciphertext"]}), 200).json()
    assert unb64(kp.unwrap(k["id"], rw["ciphertext"])["plaintext"]) == b"x"


def test_rewrap_missing_body(kp):
    k = kp.root_key()
    assert_kp_error(kp.action(k["id"], "rewrap"), 400, ("NO_BODY_ERR", "BAD_BODY_ERR"))


def test_rotate_many_versions_all_unwrap(kp):
    k = kp.root_key()
    cts = []
    for i in range(4):
        cts.append((f"dek{i}".encode(), kp.wrap(k["id"], f"dek{i}".encode())["ciphertext"]))
        kp.rotate(k["id"])
    for pt, ct in cts:
        assert unb64(kp.unwrap(k["id"], ct)["plaintext"]) == pt
    assert len(kp.versions(k["id"])) == 5


def test_rotate_with_empty_bodies(kp):
    k = kp.root_key()
    for body in (_NO, {}, None):
        kp.rotate(k["id"], body)
    kp.rotate(k["id"], raw=b"", headers={"Content-Type": "application/vnd.ibm.kms.key_action_rotate+json"})
    assert len(kp.versions(k["id"])) == 5


def test_rotate_imported_requires_payload(kp):
    material = os.urandom(32)
    k = check_status(kp.create_key_resp(payload=b64(material)), 201).json()["resources"][0]
    old = kp.wrap(k["id"], b"imported-dek")
    for body in (_NO, {}, None):
        r = kp.action(k["id"], "rotate", body)
        res = assert_kp_error(r, 400, "KEY_PAYLOAD_REQ_ERR")
        t = res["reasons"][0].get("target")
        assert t is None or t.get("name") == "payload", describe(r)
    assert_kp_error(kp.action(k["id"], "rotate", {"payload": b64(os.urandom(17))}), 400)
    new_material = os.urandom(32)
    kp.rotate(k["id"], {"payload": b64(new_material)})
    assert len(kp.versions(k["id"])) == 2
    assert unb64(kp.unwrap(k["id"], old["ciphertext"])["plaintext"]) == b"imported-dek"
    w = kp.wrap(k["id"], b"after")
    assert unb64(kp.unwrap(k["id"], w["ciphertext"])["plaintext"]) == b"after"


def test_rotate_generated_key_with_payload_refused(kp):
    k = kp.root_key()
    r = kp.action(k["id"], "rotate", {"payload": b64(os.urandom(32))})
    assert_kp_error(r, 400)


def test_rotate_standard_key_refused(kp):
    k = kp.standard_key()
    assert_kp_error(kp.action(k["id"], "rotate"), 400, "KEY_ROOT_REQ_ERR")


def test_rotate_prefer_representation(kp):
    k = kp.root_key()
    r = kp.action(k["id"], "rotate", headers={"Prefer": "return=representation"})
    check_status(r, 200, 201, 204)
    if r.status_code != 204:
        assert r.json()["resources"][0]["id"] == k["id"]


# --- enable / disable / set/unset / sync -------------------------------------------------------

@pytest.mark.parametrize("form", FORMS)
def test_disable_enable(kp, form):
    k = kp.root_key()
    w = kp.wrap(k["id"], b"x")
    r = kp.action(k["id"], "disable", form=form)
    check_status(r, 204)
    assert r.content == b""
    md = kp.metadata(k["id"])
    assert md["state"] == 2
    assert_kp_error(kp.wrap_resp(k["id"], b"x"), 409, "KEY_ACTION_INVALID_STATE_ERR")
    assert_kp_error(kp.unwrap_resp(k["id"], w["ciphertext"]), 409, "KEY_ACTION_INVALID_STATE_ERR")
    assert_kp_error(kp.action(k["id"], "disable", form=form), 409, "KEY_ACTION_INVALID_STATE_ERR")
    check_status(kp.action(k["id"], "enable", form=form), 204)
    assert kp.metadata(k["id"])["state"] == 1
    assert_kp_error(kp.action(k["id"], "enable", form=form), 409, "KEY_ACTION_INVALID_STATE_ERR")
    assert unb64(kp.unwrap(k["id"], w["ciphertext"])["plaintext"]) == b"x"



@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", ["setKeyForDeletion", "unsetKeyForDeletion"])
def test_set_unset_without_dual_auth(kp, form, name):
    k = kp.root_key()
    assert_kp_error(kp.action(k["id"], name, form=form), 409, "NOT_DUAL_AUTH_ERR")


def test_sync(kp):
    k = kp.root_key()
    for body in (_NO, {}, None):
        r = kp.action(k["id"], "sync", body)
        check_status(r, 204)


@pytest.mark.parametrize("form", FORMS)
def test_restore_query_form(kp, form):
    k = kp.root_key()
    kp.delete_key(k["id"])
    if form == "path":
        r = kp.post(f"/api/v2/keys/{k['id']}/restore")
    else:
        r = kp.action(k["id"], "restore", form="query")
    check_status(r, 201)
    assert r.json()["resources"][0]["state"] == 1


# --- Appendix C: state x action ------------------------------------------------------------

ACTIONS = ["rotate", "wrap", "unwrap", "rewrap", "disable", "enable", "restore", "delete", "get"]
ALLOWED = {
    1: {"get", "rotate", "wrap", "unwrap", "rewrap", "disable", "delete"},
    2: {"get", "enable", "delete"},
    3: {"get", "rotate", "unwrap", "rewrap", "delete"},
    5: {"get", "restore"},
}


def _do(kp, k, action, ct, form="path"):
    kid = k["id"]
    if action == "get":
        return kp.get(f"/api/v2/keys/{kid}")
    if action == "delete":
        return kp.delete(f"/api/v2/keys/{kid}")
    if action == "restore" and form == "path":
        return kp.post(f"/api/v2/keys/{kid}/restore")
    body = _NO
    if action == "wrap":
        body = {"plaintext": b64(b"x")}
    elif action in ("unwrap", "rewrap"):
        body = {"ciphertext": ct}
    return kp.action(kid, action, body, form=form)


def _make_in_state(kp, state):
    k = kp.root_key()
    ct = kp.wrap(k["id"], b"x")["ciphertext"]
    if state == 2:
        check_status(kp.action(k["id"], "disable"), 204)
    elif state == 5:
        kp.delete_key(k["id"])
    assert kp.metadata(k["id"])["state"] == state
    return k, ct


def _check(kp, k, state, action, ct, form):
    r = _do(kp, k, action, ct, form)
    if action in ALLOWED[state]:
        assert r.status_code in (200, 201, 204), f"state {state} {action} should be allowed{describe(r)}"
    elif state == 5:
        assert_kp_error(r, 410, "KEY_DELETED_ERR")
    else:
        assert_kp_error(r, 409, "KEY_ACTION_INVALID_STATE_ERR")


@pytest.mark.parametrize("state,action,form", [
    (s, a, f) for s in (1, 2, 5) for a in ACTIONS for f in FORMS if not (f == "query" and a in ("get", "delete"))])
def test_state_action_table(kp, state, action, form):
    k, ct = _make_in_state(kp, state)
    _check(kp, k, state, action, ct, form)


def test_deleted_key_other_actions_410(kp):
    k, ct = _make_in_state(kp, 5)
    for name in ("setKeyForDeletion", "unsetKeyForDeletion", "sync"):
        r = kp.action(k["id"], name)
        assert_kp_error(r, (409, 410), ("KEY_DELETED_ERR", "NOT_DUAL_AUTH_ERR"))
    r = kp.patch(f"/api/v2/keys/{k['id']}", {"keyRingID": "default"})
    assert 400 <= r.status_code < 500 or r.status_code == 200, describe(r)


# --- expiration -> Deactivated (3) -------------------------------------------------------------

def _rfc3339(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(scope="module")
def expired_keys(kp):
    """Several keys that expire ~6 s from now (room for a loaded machine), each with a ciphertext made
    before expiry."""
    exp = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=6)
    keys = []
    for _ in range(len(ACTIONS) + 5):
        k = kp.root_key(expirationDate=_rfc3339(exp))
        assert k["expirationDate"] == _rfc3339(exp)
        assert k["state"] == 1
        keys.append((k, kp.wrap(k["id"], b"pre-expiry")["ciphertext"]))
    wait = (exp - datetime.now(timezone.utc)).total_seconds() + 1.2
    if wait > 0:
        time.sleep(wait)
    return keys


def test_expired_key_state_3(kp, expired_keys):
    k, _ = expired_keys[0]
    assert kp.metadata(k["id"])["state"] == 3
    assert kp.get_key(k["id"])["state"] == 3
    listed = {x["id"]: x for x in kp.list_keys({"state": "3", "limit": "5000"})}
    assert k["id"] in listed and listed[k["id"]]["state"] == 3


@pytest.mark.parametrize("i,action", list(enumerate(ACTIONS)))
def test_expired_key_state_action(kp, expired_keys, i, action):
    k, ct = expired_keys[i + 1]
    _check(kp, k, 3, action, ct, "path")


def test_expired_key_unwrap_and_rewrap_values(kp, expired_keys):
    k, ct = expired_keys[-3]
    assert unb64(kp.unwrap(k["id"], ct)["plaintext"]) == b"pre-expiry"
    check_status(kp.action(k["id"], "rewrap", {"ciphertext": ct}), 200)
    assert_kp_error(kp.action(k["id"], "enable"), 409, "KEY_ACTION_INVALID_STATE_ERR")
    assert_kp_error(kp.action(k["id"], "wrap", {}, form="query"), 409, "KEY_ACTION_INVALID_STATE_ERR")


def test_expired_key_rotation_keeps_it_deactivated(kp, expired_keys):
    k, ct = expired_keys[-4]
    check_status(kp.action(k["id"], "rotate"), 204)
    md = kp.metadata(k["id"])
    assert md["state"] == 3 and md["keyVersion"]["id"] != k["keyVersion"]["id"]
    assert_kp_error(kp.wrap_resp(k["id"], b"x"), 409, "KEY_ACTION_INVALID_STATE_ERR")
    u = kp.unwrap(k["id"], ct)
    assert unb64(u["plaintext"]) == b"pre-expiry" and u["rewrappedKeyVersion"]["id"] == md["keyVersion"]["id"]


def test_expired_deleted_key_cannot_be_restored(kp, expired_keys):
    k, _ = expired_keys[-2]
    kp.delete_key(k["id"])
    assert_kp_error(kp.post(f"/api/v2/keys/{k['id']}/restore"), 400, "KEY_EXPIRED_ERR")


def test_create_with_past_expiration_refused(kp):
    r = kp.create_key_resp(expirationDate="2001-01-01T00:00:00Z")
    assert_kp_error(r, 400)


# --- binding: a ciphertext is bound to its instance, key and version (DESIGN §2) -------------------

def test_ciphertext_bound_to_key_even_with_same_material(kp):
    material = os.urandom(32)
    a = check_status(kp.create_key_resp(payload=b64(material)), 201).json()["resources"][0]
    b = check_status(kp.create_key_resp(payload=b64(material)), 201).json()["resources"][0]
    w = kp.wrap(a["id"], b"bound to a", aad=["ctx"])
    assert_kp_error(kp.unwrap_resp(b["id"], w["ciphertext"], aad=["ctx"]), (400, 422))
    assert_kp_error(kp.action(b["id"], "rewrap", {"ciphertext": w["ciphertext"], "aad": ["ctx"]}), (400, 422))


def test_ciphertext_bound_to_version_even_with_same_material(kp):
    """Rotate an imported key with the SAME material, then make a v1 ciphertext claim to be v2 by
    rewriting the version id inside the envelope: it must be refused (the version is authenticated)."""
    import uuid as _uuid
    material = os.urandom(32)
    k = check_status(kp.create_key_resp(payload=b64(material)), 201).json()["resources"][0]
    v1 = k["keyVersion"]["id"]
    ct = unb64(kp.wrap(k["id"], b"v1 data")["ciphertext"])
    kp.rotate(k["id"], {"payload": b64(material)})
    v2 = kp.metadata(k["id"])["keyVersion"]["id"]
    forms = [(_uuid.UUID(v1).bytes, _uuid.UUID(v2).bytes), (v1.encode(), v2.encode()),
             (_uuid.UUID(v1).hex.encode(), _uuid.UUID(v2).hex.encode())]
    swapped = None
    for old, new in forms:
        if old in ct:
            swapped = ct.replace(old, new)
            break
    if swapped is None:
        pytest.skip("the envelope does not carry the version id in a recognisable form")
    assert_kp_error(kp.unwrap_resp(k["id"], b64(swapped)), (400, 422))
    assert unb64(kp.unwrap(k["id"], b64(ct))["plaintext"]) == b"v1 data"
