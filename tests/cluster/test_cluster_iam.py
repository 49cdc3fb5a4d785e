"""IAM across nodes: an access policy granted or revoked on node 1 is enforced on node 2
within the documented bound (node 2 has just authorized the caller, so its per-account
access cache is warm and a stale cache would show)."""
import os

import requests

from cluster_helpers import CROSS_NODE_BOUND, check_status, poll_until, uniq

SR = "crn:v1:bluemix:public:iam::::serviceRole:"


def _iam(node, token, method, path, body=None):
    r = requests.request(method, node.url + path, json=body, timeout=30,
                         headers={"Authorization": "Bearer " + token})
    assert r.status_code in (200, 201, 204), r.text
    return r.json() if r.content else None


def test_policy_grant_and_revoke_on_node1_enforced_on_node2_within_bound(cluster):
    n1, n2 = cluster[0], cluster[1]
    admin = n1.token(n1.info["apikey"])
    sid = _iam(n1, admin, "POST", "/v1/serviceids", {"name": uniq("cl")})["iam_id"]
    key = _iam(n1, admin, "POST", "/v1/apikeys", {"name": "k", "iam_id": sid})["apikey"]
    kid = n1.client().root_key()["id"]
    c2 = n2.client(key)
    wrap = lambda: c2.wrap_resp(kid, os.urandom(32))  # noqa: E731
    for _ in range(3):
        check_status(wrap(), 401)
    pol = _iam(n1, admin, "POST", "/v1/policies", {
        "type": "access", "subjects": [{"attributes": [{"name": "iam_id", "value": sid}]}],
        "roles": [{"role_id": SR + "Reader"}],
        "resources": [{"attributes": [{"name": "accountId", "value": "dev-account"}]}]})
    elapsed, res, hist = poll_until(wrap, lambda r: r.status_code == 200, CROSS_NODE_BOUND)
    assert elapsed is not None and elapsed <= CROSS_NODE_BOUND, f"grant not seen on node 2: {hist[-3:]}"
    _iam(n1, admin, "DELETE", f"/v1/policies/{pol['id']}")
    elapsed, res, hist = poll_until(wrap, lambda r: r.status_code == 401, CROSS_NODE_BOUND)
    assert elapsed is not None and elapsed <= CROSS_NODE_BOUND, f"revocation not seen on node 2: {hist[-3:]}"
