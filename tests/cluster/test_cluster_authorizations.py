"""Service instances and authorizations across nodes: each node keeps them in memory
(the request path reads no database), so a change made on one node must be enforced on
the other within CROSS_NODE_BOUND (1 s), through the store's change feed."""
from cluster_helpers import CROSS_NODE_BOUND, assert_kp_error, check_status, poll_until, reason_code
from test_cluster_nodes import _assert_within_bound, _stays


def kms_call(client, inst, method, path, body=None):
    h = {"Bluemix-Instance": inst}
    if body is None:
        return client.req(method, path, headers=h)
    return client.req(method, path, body, headers=h)


def wrap(client, inst, kid):
    """Wrap a generated DEK (an empty body asks the service for one)."""
    return kms_call(client, inst, "POST", f"/api/v2/keys/{kid}/actions/wrap", {})


def test_authorization_changes_reach_the_other_node_within_bound(cluster):
    c1, c2 = cluster.clients()
    hs = check_status(c1.post("/v2/resource_instances", {"name": "hs", "resource_plan_id": "hs-crypto-standard"}), 201).json()
    kms = check_status(c1.post("/v2/resource_instances", {"name": "kms", "service": "kms",
                                                          "parameters": {"crypto_instance": hs["guid"]}}), 201).json()
    inst = kms["guid"]
    body = {"source": {"service_name": "kms", "instance_id": inst},
            "target": {"service_name": "hs-crypto", "instance_id": hs["guid"]}, "roles": ["Reader"]}
    auth = check_status(c1.post("/v1/authorizations", body), 201).json()
    key = check_status(kms_call(c1, inst, "POST", "/api/v2/keys",
                                {"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
                                 "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "root",
                                                "extractable": False}]}), 201).json()["resources"][0]
    works = lambda r: r.status_code == 200
    # The instance and authorization made on node 1 serve on node 2 within the bound.
    elapsed, res, hist = poll_until(lambda: wrap(c2, inst, key["id"]), works, CROSS_NODE_BOUND)
    _assert_within_bound(elapsed, res, hist, "instance + authorization on node 1 -> wrap on node 2")

    # Removing the authorization on node 1 refuses wrap on (warm) node 2 within the bound.
    check_status(c1.delete(f"/v1/authorizations/{auth['id']}"), 204)
    refused = lambda r: r.status_code == 403 and reason_code(r) == "CRYPTO_INSTANCE_AUTHORIZATION_ERR"
    elapsed, res, hist = poll_until(lambda: wrap(c2, inst, key["id"]), refused, CROSS_NODE_BOUND)
    _assert_within_bound(elapsed, res, hist, "authorization removed on node 1 -> wrap refused on node 2")
    assert_kp_error(res, 403, "CRYPTO_INSTANCE_AUTHORIZATION_ERR")
    _stays(lambda: wrap(c2, inst, key["id"]), refused)

    # Restoring it on node 2 restores service on node 1.
    check_status(c2.post("/v1/authorizations", body), 201)
    elapsed, res, hist = poll_until(lambda: wrap(c1, inst, key["id"]), works, CROSS_NODE_BOUND)
    _assert_within_bound(elapsed, res, hist, "authorization restored on node 2 -> wrap on node 1")

    # The crypto instance in use is refused on either node; nothing changed.
    assert_kp_error(c2.delete(f"/v2/resource_instances/{hs['guid']}"), 409, "INSTANCE_IN_USE_ERR")
    check_status(wrap(c1, inst, key["id"]), 200)
