"""Helpers for the resource-controller tests: service instances, connection info and
service-to-service authorizations, called as a user would over real HTTP."""
from __future__ import annotations

import time

from api_helpers import Client, check_status, uniq

KMS_ONLY = None  # marker: no Bluemix-Instance header


def rc(c: Client, method, path, body=None, **kw):
    """An account-level call: token only, no Bluemix-Instance."""
    if body is None:
        return c.req(method, path, instance=False, **kw)
    return c.req(method, path, body, instance=False, **kw)


def create_instance(c: Client, expect=201, **body):
    body.setdefault("name", uniq("inst"))
    r = rc(c, "POST", "/v2/resource_instances", body)
    check_status(r, expect)
    return r.json()


def hs_crypto(c: Client, units=2):
    return create_instance(c, resource_plan_id="hs-crypto-standard", parameters={"units": units})


def kms(c: Client, crypto=None):
    if crypto is None:
        return create_instance(c, resource_plan_id="kms-standard")
    return create_instance(c, service="kms", parameters={"crypto_instance": crypto})


def authorize(c: Client, source, target, roles=("Reader",)):
    r = rc(c, "POST", "/v1/authorizations",
           {"source": source, "target": target, "roles": list(roles)})
    check_status(r, 201)
    return r.json()


def on(c: Client, instance_id, method, path, body=None, **kw):
    """A Key Protect call on the given instance."""
    headers = dict(kw.pop("headers", {}) or {})
    headers["Bluemix-Instance"] = instance_id
    if body is None:
        return c.req(method, path, headers=headers, **kw)
    return c.req(method, path, body, headers=headers, **kw)


def create_root_key(c: Client, instance_id, name=None):
    r = on(c, instance_id, "POST", "/api/v2/keys",
           {"metadata": {"collectionType": "application/vnd.ibm.kms.key+json", "collectionTotal": 1},
            "resources": [{"type": "application/vnd.ibm.kms.key+json", "name": name or uniq("root"),
                           "extractable": False}]})
    check_status(r, 201)
    return r.json()["resources"][0]


def eventually(check, timeout=1.0, step=0.05):
    """Polls `check` until it returns truthy or the cache bound (1 s) passes; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        v = check()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)
