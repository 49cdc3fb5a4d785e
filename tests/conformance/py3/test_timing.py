"""Timing rules with the server's default settings (rotate 1/h, 30 s action cooldown, 4 h purge delay)."""

import pytest

from kh3 import J, body, create, expect_error, meta, versions


@pytest.fixture
def skp(strict_server):
    return strict_server.client(), strict_server.instance


def test_second_rotate_within_hour_refused(skp):
    kp, inst = skp
    k = create(kp, inst)
    assert kp.rotate_key(id=k["id"], bluemix_instance=inst).get_status_code() == 204
    e = expect_error(lambda: kp.rotate_key(id=k["id"], bluemix_instance=inst), 409, "KEY_ROTATION_NOT_PERMITTED")
    assert len(versions(kp, inst, k["id"])["resources"]) == 2
    # The deprecated ?action=rotate form follows the same rule.
    expect_error(lambda: kp.action_on_key(id=k["id"], bluemix_instance=inst, action="rotate", key_action_body=body({})),
                 409, "KEY_ROTATION_NOT_PERMITTED")


def test_purge_too_early(skp):
    kp, inst = skp
    k = create(kp, inst)
    kp.delete_key(id=k["id"], bluemix_instance=inst)
    d = meta(kp, inst, k["id"])
    assert d["purgeAllowed"] is False
    e = expect_error(lambda: kp.purge_key(id=k["id"], bluemix_instance=inst), 409, "REQ_TOO_EARLY_ERR")
    assert meta(kp, inst, k["id"])["state"] == 5


def test_restore_too_early(skp):
    kp, inst = skp
    k = create(kp, inst)
    kp.delete_key(id=k["id"], bluemix_instance=inst)
    expect_error(lambda: kp.restore_key(id=k["id"], bluemix_instance=inst), 409, "REQ_TOO_EARLY_ERR")
    assert meta(kp, inst, k["id"])["state"] == 5


def test_enable_too_early(skp):
    kp, inst = skp
    k = create(kp, inst)
    kp.disable_key(id=k["id"], bluemix_instance=inst)
    expect_error(lambda: kp.enable_key(id=k["id"], bluemix_instance=inst), 409, "REQ_TOO_EARLY_ERR")
    assert meta(kp, inst, k["id"])["state"] == 2


def test_deleted_key_purge_dates(skp):
    kp, inst = skp
    k = create(kp, inst)
    d = J(kp.delete_key(id=k["id"], bluemix_instance=inst, prefer="return=representation"))["resources"][0]
    from datetime import datetime, timedelta
    p = lambda s: datetime.fromisoformat(s.replace("Z", "+00:00"))
    deleted = p(d["deletionDate"])
    assert abs(p(d["purgeAllowedFrom"]) - (deleted + timedelta(hours=4))) <= timedelta(seconds=2)
    assert abs(p(d["restoreExpirationDate"]) - (deleted + timedelta(days=30))) <= timedelta(seconds=2)
    assert abs(p(d["purgeScheduledOn"]) - (deleted + timedelta(days=90))) <= timedelta(seconds=2)
    assert d["purgeAllowed"] is False
