"""Rules that depend on elapsed time, run with second-sized settings; and restart persistence."""

import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone

import pytest
import requests

from kh3 import FAST_FLAGS, J, Server, b64, create, expect_error, meta, unb64, unwrap, wrap


def _server(flags):
    return Server(flags).start()


def _iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


# Timestamps have second precision, so a rule of N seconds may hold for up to N+1 s:
# waits for "allowed again" use N + 1.2 s.
AFTER = 3.2


@pytest.fixture
def short():
    """Every time rule set to 2 s."""
    s = _server(["--rotate-min-interval", "2", "--action-cooldown", "2", "--purge-delay", "2",
                 "--restore-window", "4", "--dual-auth-validity", "2"])
    yield s
    s.stop()


def test_rotate_allowed_again_after_interval(short):
    kp, inst = short.client(), short.instance
    k = create(kp, inst)
    kp.rotate_key(id=k["id"], bluemix_instance=inst)
    expect_error(lambda: kp.rotate_key(id=k["id"], bluemix_instance=inst), 409, "KEY_ROTATION_NOT_PERMITTED")
    time.sleep(AFTER)
    assert kp.rotate_key(id=k["id"], bluemix_instance=inst).get_status_code() == 204


def test_enable_allowed_after_cooldown(short):
    kp, inst = short.client(), short.instance
    k = create(kp, inst)
    time.sleep(AFTER)
    kp.disable_key(id=k["id"], bluemix_instance=inst)
    expect_error(lambda: kp.enable_key(id=k["id"], bluemix_instance=inst), 409, "REQ_TOO_EARLY_ERR")
    time.sleep(AFTER)
    assert kp.enable_key(id=k["id"], bluemix_instance=inst).get_status_code() == 204
    assert meta(kp, inst, k["id"])["state"] == 1


def test_purge_allowed_after_delay(short):
    kp, inst = short.client(), short.instance
    k = create(kp, inst)
    kp.delete_key(id=k["id"], bluemix_instance=inst)
    expect_error(lambda: kp.purge_key(id=k["id"], bluemix_instance=inst), 409, "REQ_TOO_EARLY_ERR")
    time.sleep(AFTER)
    assert meta(kp, inst, k["id"])["purgeAllowed"] is True
    assert kp.purge_key(id=k["id"], bluemix_instance=inst).get_status_code() in (200, 204)
    expect_error(lambda: kp.get_key(id=k["id"], bluemix_instance=inst), 404, "KEY_NOT_FOUND_ERR")


def test_restore_window(short):
    kp, inst = short.client(), short.instance
    k = create(kp, inst)
    kp.delete_key(id=k["id"], bluemix_instance=inst)
    time.sleep(4 + AFTER - 2)
    assert meta(kp, inst, k["id"])["restoreAllowed"] is False
    expect_error(lambda: kp.restore_key(id=k["id"], bluemix_instance=inst), 400, "KEY_RESTORE_EXPIRED")


def test_dual_auth_approval_expires(short):
    kp, inst = short.client(), short.instance
    kp2 = short.client(short.info["second_apikey"])
    k = create(kp, inst)
    kp.put_policy(id=k["id"], bluemix_instance=inst, policy="dualAuthDelete", key_policy_put_body={
        "metadata": {"collectionType": "application/vnd.ibm.kms.policy+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.policy+json", "dualAuthDelete": {"enabled": True}}]})
    kp.set_key_for_deletion(id=k["id"], bluemix_instance=inst)
    time.sleep(AFTER)
    expect_error(lambda: kp2.delete_key(id=k["id"], bluemix_instance=inst), 409, "AUTHORIZATIONS_NOT_MET")
    assert meta(kp, inst, k["id"])["dualAuthDelete"].get("keySetForDeletion", False) is False


def test_expired_key_is_deactivated(server, kp, inst):
    """Appendix C: after expirationDate the key is Deactivated (3): unwrap/rewrap/rotate yes, wrap/enable no."""
    k = create(kp, inst, expirationDate=_iso(datetime.now(timezone.utc) + timedelta(seconds=3)))
    w = wrap(kp, inst, k["id"], b"before expiry")
    time.sleep(4.5)
    assert meta(kp, inst, k["id"])["state"] == 3
    expect_error(lambda: kp.wrap_key(id=k["id"], bluemix_instance=inst,
                                     key_action_wrap_body=__import__("kh3").body({"plaintext": b64(b"x")})),
                 409, "KEY_ACTION_INVALID_STATE_ERR")
    assert unb64(unwrap(kp, inst, k["id"], w["ciphertext"])["plaintext"]) == b"before expiry"
    expect_error(lambda: kp.enable_key(id=k["id"], bluemix_instance=inst), 409, "KEY_ACTION_INVALID_STATE_ERR")
    expect_error(lambda: kp.disable_key(id=k["id"], bluemix_instance=inst), 409, "KEY_ACTION_INVALID_STATE_ERR")
    assert kp.rotate_key(id=k["id"], bluemix_instance=inst).get_status_code() == 204
    res = kp.delete_key(id=k["id"], bluemix_instance=inst)
    assert res.get_status_code() in (200, 204)


def test_expiration_date_in_past_rejected(kp, inst):
    from kh3 import key_body, uniq
    expect_error(lambda: kp.create_key(bluemix_instance=inst, key_create_body=key_body(
        uniq(), expirationDate="2001-01-01T00:00:00Z")), 400)


def test_sdk_refreshes_short_lived_tokens():
    """IAMAuthenticator must fetch a new token when the old one expires (§2.3)."""
    s = _server(FAST_FLAGS + ["--token-lifetime", "3"])
    try:
        kp, inst = s.client(), s.instance
        k = create(kp, inst)
        old = s.token()
        time.sleep(4)
        r = requests.get(s.url + "/api/v2/keys", timeout=10,
                         headers={"Authorization": "Bearer " + old, "Bluemix-Instance": inst})
        assert r.status_code == 401, r.text  # an expired token is refused
        assert meta(kp, inst, k["id"])["id"] == k["id"]  # the SDK refreshed on its own
    finally:
        s.stop()


def test_restart_keeps_keys_and_credentials():
    d = tempfile.mkdtemp(prefix="keyhold-conf-py3-restart-")
    try:
        s1 = Server(FAST_FLAGS, data_dir=d, keep_data=True).start()
        kp, inst = s1.client(), s1.instance
        k = create(kp, inst)
        w = wrap(kp, inst, k["id"], b"durable")
        info1 = dict(s1.info)
        s1.stop()
        s2 = Server(FAST_FLAGS, data_dir=d, keep_data=True).start()
        try:
            for f in ("instance_id", "apikey", "second_apikey", "service_apikey"):
                assert s2.info[f] == info1[f], f
            kp2, inst2 = s2.client(), s2.instance
            assert meta(kp2, inst2, k["id"])["keyVersion"]["id"] == k["keyVersion"]["id"]
            assert unb64(unwrap(kp2, inst2, k["id"], w["ciphertext"])["plaintext"]) == b"durable"
        finally:
            s2.stop()
    finally:
        shutil.rmtree(d, ignore_errors=True)
