"""`keyhold login` and `keyhold iam …` against a running dev server: identities, API keys
(secret written once, mode 0600), policies that really grant and refuse, table and JSON
output, and exit codes (2 not found, 3 not allowed, 1 usage)."""
import json
import os
import stat
import uuid

import pytest

from test_cli import fails, ok


def uniq(p):
    return f"{p}-{uuid.uuid4().hex[:8]}"


HELP = ([["login"], ["iam"], ["iam", "whoami"]]
        + [["iam", g, c] for g in ("users", "service-ids") for c in ("", "list", "create", "get", "delete")]
        + [["iam", "access-groups", c] for c in ("", "list", "create", "get", "delete", "members", "add-member",
                                                 "remove-member")]
        + [["iam", "api-keys", c] for c in ("", "list", "create", "get", "delete", "rotate")]
        + [["iam", "policies", c] for c in ("", "list", "create", "get", "delete")])


@pytest.mark.parametrize("cmd", [[w for w in c if w] for c in HELP], ids=lambda c: " ".join(c))
def test_help_has_examples(kh, cmd):
    r = ok(kh(*cmd, "--help", dev=False))
    assert "Example" in r.out, r.out


def test_whoami_table_and_json(kh):
    assert "dev-admin" in ok(kh("iam", "whoami")).out
    me = ok(kh("iam", "whoami", "-o", "json")).json()
    assert me[0]["iam_id"] == "dev-admin" and me[0]["iam_admin"] is True


def test_service_id_key_policy_login_rotate_delete(kh, server, tmp_path):
    sid = ok(kh("iam", "service-ids", "create", uniq("app"), "--description", "cli", "-o", "json")).json()[0]
    assert sid["iam_id"].startswith("iam-ServiceId-")
    assert sid["iam_id"] in ok(kh("iam", "service-ids", "list")).out
    keyfile = tmp_path / "app.key"
    made = ok(kh("iam", "api-keys", "create", "app-key", "--iam-id", sid["iam_id"], "--out", keyfile, "-o", "json"))
    info = made.json()[0]
    secret = keyfile.read_text().strip()
    assert secret.startswith("kh_") and secret not in made.out and "apikey" not in info
    assert stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    listed = ok(kh("iam", "api-keys", "list", "--iam-id", sid["iam_id"], "-o", "json")).json()
    assert [k["id"] for k in listed] == [info["id"]] and secret not in json.dumps(listed)

    # No policy yet: the key logs in, but may not list keys (exit 3).
    cfg = tmp_path / "app.toml"
    conn = ["--url", server.url, "--instance", server.instance_id, "--apikey-file", keyfile]
    env = {"KEYHOLD_CONFIG": str(cfg)}
    r = ok(kh("login", *conn, "--save-as", "app", dev=False, env=env))
    assert "logged in" in r.out and sid["iam_id"] in r.out
    assert stat.S_IMODE(os.stat(cfg).st_mode) == 0o600
    fails(kh("keys", "list", dev=False, env=env), 3)

    # Reader on the instance: list and wrap yes, create no.
    pol = ok(kh("iam", "policies", "create", "--subject", sid["iam_id"], "--role", "Reader",
                "--on-instance", server.instance_id, "-o", "json")).json()
    assert pol["roles"][0]["role_id"].endswith("serviceRole:Reader")
    ok(kh("keys", "list", dev=False, env=env))
    fails(kh("keys", "create", uniq("nope"), dev=False, env=env), 3)
    table = ok(kh("iam", "policies", "list", "--iam-id", sid["iam_id"])).out
    assert pol["id"] in table and "Reader" in table

    # Rotate: the old secret (still in the saved profile) stops working.
    ok(kh("iam", "api-keys", "rotate", info["id"], "--out", keyfile))
    assert keyfile.read_text().strip() != secret
    fails(kh("keys", "list", dev=False, env=env), 3)
    ok(kh("login", *conn, "--save-as", "app", dev=False, env=env))
    ok(kh("keys", "list", dev=False, env=env))

    # Delete the policy, then the service ID (its keys go with it).
    ok(kh("iam", "policies", "delete", pol["id"]))
    fails(kh("keys", "list", dev=False, env=env), 3)
    ok(kh("iam", "service-ids", "delete", sid["iam_id"]))
    fails(kh("iam", "service-ids", "get", sid["iam_id"]), 2)
    fails(kh("iam", "whoami", dev=False, env=env), 3)


def test_groups_and_users(kh, server):
    user = ok(kh("iam", "users", "create", "carol@example.com", "-o", "json")).json()[0]
    g = ok(kh("iam", "access-groups", "create", uniq("writers"), "-o", "json")).json()[0]
    members = ok(kh("iam", "access-groups", "add-member", g["id"], user["iam_id"], "-o", "json")).json()
    assert [m["iam_id"] for m in members] == [user["iam_id"]]
    ok(kh("iam", "policies", "create", "--subject", g["id"], "--role", "Writer", "--on-instance",
          server.instance_id, "--on-key-ring", "default"))
    assert user["iam_id"] in ok(kh("iam", "access-groups", "members", g["id"])).out
    ok(kh("iam", "access-groups", "remove-member", g["id"], user["iam_id"]))
    assert ok(kh("iam", "access-groups", "members", g["id"], "-o", "json")).json() == []
    ok(kh("iam", "access-groups", "delete", g["id"]))
    ok(kh("iam", "users", "delete", user["iam_id"]))
    fails(kh("iam", "users", "delete", user["iam_id"]), 2)


def test_errors_and_non_admins(kh, server, tmp_path):
    fails(kh("iam", "policies", "create", "--subject", "dev-service", "--role", "Owner"), 1, "unknown role")
    fails(kh("iam", "policies", "create", "--subject", "nobody", "--role", "Reader"), 1)
    fails(kh("iam", "api-keys", "get", "ApiKey-00000000-0000-0000-0000-000000000000"), 2)
    # The dev service ID is no administrator: IAM management is refused (3), its own keys are not.
    svc = {"KEYHOLD_APIKEY": server.service_apikey}
    fails(kh("iam", "users", "list", env=svc), 3)
    mine = ok(kh("iam", "api-keys", "create", "own", "-o", "json", env=svc)).json()[0]
    assert mine["iam_id"] == "dev-service" and mine["apikey"].startswith("kh_")
    ok(kh("iam", "api-keys", "delete", mine["id"], env=svc))
    fails(kh("login", "--url", server.url, dev=False, env={"KEYHOLD_APIKEY": "kh_wrong",
                                                            "KEYHOLD_CONFIG": str(tmp_path / "x.toml")}), 3)
    assert not (tmp_path / "x.toml").exists()
