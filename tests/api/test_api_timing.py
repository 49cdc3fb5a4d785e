"""§6.4/§6.6/§8 timing rules, on a server started with the DEFAULT rules
(rotate ≤ 1/h, 30 s action cool-down, purge ≥ 4 h after delete)."""
from datetime import datetime, timezone

import pytest

from api_helpers import assert_kp_error, check_status, describe


@pytest.fixture(scope="module")
def slow(server_factory):
    return server_factory(fast=False).client()


def _parse(ts):
    return datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def test_rotate_twice_not_permitted(slow):
    k = slow.root_key()
    first = slow.action(k["id"], "rotate")
    if first.status_code != 204:  # creation counted as a rotation: see test_rotate_right_after_create_is_allowed
        assert_kp_error(first, 409, "KEY_ROTATION_NOT_PERMITTED")
    r = slow.action(k["id"], "rotate")
    assert_kp_error(r, 409, "KEY_ROTATION_NOT_PERMITTED")
    r = slow.action(k["id"], "rotate", form="query")
    assert_kp_error(r, 409, "KEY_ROTATION_NOT_PERMITTED")
    assert len(slow.versions(k["id"])) == (2 if first.status_code == 204 else 1)


def test_rotate_right_after_create_is_allowed(slow):
    # The 1/h rule counts rotations, not creation (KP lets you rotate a new key once).
    k = slow.root_key()
    check_status(slow.action(k["id"], "rotate"), 204)


def test_enable_right_after_disable_too_early(slow):
    k = slow.root_key()
    check_status(slow.action(k["id"], "disable"), 204)
    assert_kp_error(slow.action(k["id"], "enable"), 409, "REQ_TOO_EARLY_ERR")
    assert_kp_error(slow.action(k["id"], "enable", form="query"), 409, "REQ_TOO_EARLY_ERR")
    assert slow.metadata(k["id"])["state"] == 2


def test_purge_right_after_delete_too_early(slow):
    k = slow.root_key()
    r = slow.delete(f"/api/v2/keys/{k['id']}", headers={"Prefer": "return=representation"})
    check_status(r, 200)
    d = r.json()["resources"][0]
    assert d["purgeAllowed"] is False
    delta = (_parse(d["purgeAllowedFrom"]) - _parse(d["deletionDate"])).total_seconds()
    assert abs(delta - 4 * 3600) <= 2, describe(r)
    delta = (_parse(d["restoreExpirationDate"]) - _parse(d["deletionDate"])).total_seconds()
    assert abs(delta - 30 * 86400) <= 2, describe(r)
    delta = (_parse(d["purgeScheduledOn"]) - _parse(d["deletionDate"])).total_seconds()
    assert abs(delta - 90 * 86400) <= 2, describe(r)
    assert_kp_error(slow.delete(f"/api/v2/keys/{k['id']}/purge"), 409, "REQ_TOO_EARLY_ERR")
    assert slow.get_key(k["id"])["state"] == 5


def test_restore_right_after_delete_too_early(slow):
    k = slow.root_key()
    slow.delete_key(k["id"])
    assert_kp_error(slow.post(f"/api/v2/keys/{k['id']}/restore"), 409, "REQ_TOO_EARLY_ERR")
    assert slow.metadata(k["id"])["state"] == 5
