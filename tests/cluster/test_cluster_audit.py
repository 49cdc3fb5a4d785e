"""The audit chain stays linear when two nodes append to one PostgreSQL (docs/audit.md,
"Linear chain on a shared PostgreSQL"): wraps and creates spread over both nodes, with
checkpoints written by both, export as one gap-free chain that `keyhold audit verify`
accepts, and every answered call's event is in it."""
import json
import re
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import requests

from cluster_helpers import keyhold_bin


def call(node, apikey, method, path, body=None):
    rid = str(uuid.uuid4())
    h = {"Authorization": "Bearer " + node.token(apikey), "Bluemix-Instance": node.instance_id,
         "Correlation-Id": rid}
    r = requests.request(method, node.url + path, json=body, headers=h, timeout=30)
    return r, rid


def test_two_nodes_append_one_linear_chain(start_cluster, tmp_path):
    c = start_cluster(extra=["--audit-checkpoint-every", "25"])
    apikey = c.info["apikey"]
    n1, n2 = c.nodes
    r, _ = call(n1, apikey, "POST", "/api/v2/keys", {
        "metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
        "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": "audit-cluster", "extractable": False}]})
    assert r.status_code == 201, r.text
    kid = r.json()["resources"][0]["id"]
    answered = []

    def load(node):
        end = time.monotonic() + 3
        while time.monotonic() < end:
            r, rid = call(node, apikey, "POST", f"/api/v2/keys/{kid}/actions/wrap", {})
            assert r.status_code == 200, r.text
            answered.append(rid)
            r, rid = call(node, apikey, "GET", f"/api/v2/keys/{kid}")
            assert r.status_code == 200, r.text
            answered.append(rid)

    with ThreadPoolExecutor(4) as pool:
        for f in [pool.submit(load, n) for n in (n1, n2, n1, n2)]:
            f.result()

    keys = tmp_path / "keys.json"
    keys.write_text(requests.get(n1.url + "/audit/v1/keys", timeout=30).text)
    assert requests.get(n2.url + "/audit/v1/keys", timeout=30).json() == \
        requests.get(n1.url + "/audit/v1/keys", timeout=30).json(), "both nodes sign with one key"
    export = tmp_path / "trail.jsonl"
    # Queued events reach the store within a group-commit tick (100 ms) of each node.
    deadline = time.monotonic() + 10
    while True:
        r = requests.get(n2.url + "/audit/v1/export", headers={"Authorization": "Bearer " + n2.token(apikey)},
                         timeout=60)
        assert r.status_code == 200, r.text
        exported = set(re.findall(r'"request_id":"([^"]+)"', r.text))
        if all(rid in exported for rid in answered) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    export.write_text(r.text)
    res = subprocess.run([keyhold_bin(), "audit", "verify", str(export), "--public-key", str(keys)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr

    recs = [json.loads(x) for x in r.text.splitlines() if x.strip()]
    events = [x for x in recs if x["type"] == "event"]
    checkpoints = [x for x in recs if x["type"] == "checkpoint"]
    assert len(checkpoints) >= 4, f"only {len(checkpoints)} checkpoints for {len(events)} events"
    ids = {e["request_id"] for e in events}
    missing = [rid for rid in answered if rid not in ids]
    assert not missing, f"{len(missing)} of {len(answered)} answered calls have no event"
    assert len(answered) > 20
