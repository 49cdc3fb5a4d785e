"""Configurable windows of §8 on short-lived servers: dual-auth approval validity, restore window,
auto-purge, token lifetime."""
import time

from api_helpers import APIKEY_GRANT, assert_kp_error, check_status, policy_envelope

import requests


def _dual(c):
    k = c.root_key()
    check_status(c.put(f"/api/v2/keys/{k['id']}/policies",
                       policy_envelope({"type": "application/vnd.ibm.kms.policy+json", "dualAuthDelete": {"enabled": True}}),
                       params={"policy": "dualAuthDelete"}), 200)
    return k


def test_dual_auth_approval_expires(server_factory):
    srv = server_factory(extra=["--dual-auth-validity", "1"])
    a, b = srv.client(), srv.client(srv.second_apikey)
    k = _dual(a)
    check_status(a.action(k["id"], "setKeyForDeletion"), 204)
    time.sleep(2.2)
    md = a.metadata(k["id"])
    assert md["dualAuthDelete"].get("keySetForDeletion", False) is False, md["dualAuthDelete"]
    assert_kp_error(b.delete(f"/api/v2/keys/{k['id']}"), 409, "AUTHORIZATIONS_NOT_MET")
    assert a.metadata(k["id"])["state"] == 1


def test_dual_auth_approval_expiration_date(server):
    a = server.client()
    k = _dual(a)
    check_status(a.action(k["id"], "setKeyForDeletion"), 204)
    from datetime import datetime, timezone
    exp = datetime.strptime(a.metadata(k["id"])["dualAuthDelete"]["authExpiration"], "%Y-%m-%dT%H:%M:%SZ")
    delta = exp.replace(tzinfo=timezone.utc).timestamp() - time.time()
    assert abs(delta - 7 * 86400) < 120, delta


def test_restore_window(server_factory):
    c = server_factory(extra=["--restore-window", "1"]).client()
    k = c.root_key()
    r = c.delete(f"/api/v2/keys/{k['id']}", headers={"Prefer": "return=representation"})
    check_status(r, 200)
    time.sleep(2.2)
    assert_kp_error(c.post(f"/api/v2/keys/{k['id']}/restore"), 400, "KEY_RESTORE_EXPIRED")
    md = c.metadata(k["id"])
    assert md["state"] == 5 and md.get("restoreAllowed") is False


def test_auto_purge_schedule(server_factory):
    """KP purges "at any time after" the retention period (a periodic sweep is fine), so only the
    announced schedule is checked here."""
    from datetime import datetime
    c = server_factory(extra=["--auto-purge-after", "5"]).client()
    k = c.root_key()
    r = c.delete(f"/api/v2/keys/{k['id']}", headers={"Prefer": "return=representation"})
    d = check_status(r, 200).json()["resources"][0]
    p = lambda s: datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ")
    assert (p(d["purgeScheduledOn"]) - p(d["deletionDate"])).total_seconds() == 5, d


def test_token_lifetime_flag(server_factory):
    srv = server_factory(extra=["--token-lifetime", "7"])
    r = requests.post(srv.iam_url + "/identity/token", data={"grant_type": APIKEY_GRANT, "apikey": srv.apikey},
                      timeout=30)
    check_status(r, 200)
    assert r.json()["expires_in"] == 7
