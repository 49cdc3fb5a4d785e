'use strict';
// @ibm-cloud/ibm-key-protect@0.1.2: policies, dual auth, instance policies, import tokens,
// registrations, timing rules.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./helper');

const { uniq, b64, unb64, jbuf, keyBody, expectError, secureImportFields } = h;
const POL = 'application/vnd.ibm.kms.policy+json';

function keyPolicy(...resources) {
  return { metadata: { collectionType: POL, collectionTotal: resources.length }, resources: resources.map((r) => ({ type: POL, ...r })) };
}
function instPolicy(...resources) {
  return { metadata: { collectionType: POL, collectionTotal: resources.length }, resources };
}

describe('node client: policies, import, registrations', () => {
  let srv; let kp; let kp2; let inst;

  before(async () => {
    srv = await new h.Server().start();
    kp = srv.client();
    kp2 = srv.client(srv.info.second_apikey);
    inst = srv.instance;
  });
  after(async () => { if (srv) await srv.stop(); });

  async function createKey(c = kp, i = inst, extractable = false, extra = {}) {
    const res = await c.createKey({ bluemixInstance: i, body: keyBody(uniq(), extractable, extra) });
    assert.equal(res.status, 201);
    return res.result.resources[0];
  }
  async function meta(id, c = kp, i = inst) {
    return (await c.getKeyMetadata({ id, bluemixInstance: i })).result.resources[0];
  }

  it('key policies: put/get rotation and dualAuthDelete', async () => {
    const k = await createKey();
    const p = await kp.putPolicy({ id: k.id, bluemixInstance: inst, policy: 'rotation',
      setKeyPoliciesOneOf: keyPolicy({ rotation: { enabled: true, interval_month: 4 } }) });
    assert.equal(p.status, 200);
    assert.equal(p.result.resources[0].rotation.interval_month, 4);
    const g = await kp.getPolicy({ id: k.id, bluemixInstance: inst, policy: 'rotation' });
    assert.equal(g.status, 200);
    assert.equal(g.result.metadata.collectionType, POL);
    assert.equal(g.result.resources.length, 1);
    assert.equal(g.result.resources[0].rotation.interval_month, 4);
    await kp.putPolicy({ id: k.id, bluemixInstance: inst, policy: 'dualAuthDelete',
      setKeyPoliciesOneOf: keyPolicy({ dualAuthDelete: { enabled: true } }) });
    const all = await kp.getPolicy({ id: k.id, bluemixInstance: inst });
    assert.ok(all.result.resources.some((r) => r.rotation && r.rotation.interval_month === 4), JSON.stringify(all.result));
    assert.ok(all.result.resources.some((r) => r.dualAuthDelete && r.dualAuthDelete.enabled === true), JSON.stringify(all.result));
    await expectError(() => kp.putPolicy({ id: k.id, bluemixInstance: inst, policy: 'rotation',
      setKeyPoliciesOneOf: keyPolicy({ rotation: { interval_month: 13 } }) }), 400, 'INVALID_FIELD_ERR');
  });

  it('dual authorization delete needs a second principal', async () => {
    const k = await createKey();
    await kp.putPolicy({ id: k.id, bluemixInstance: inst, policy: 'dualAuthDelete',
      setKeyPoliciesOneOf: keyPolicy({ dualAuthDelete: { enabled: true } }) });
    await expectError(() => kp.deleteKey({ id: k.id, bluemixInstance: inst }), 409, 'AUTHORIZATIONS_NOT_MET');
    const s = await kp.setKeyForDeletion({ id: k.id, bluemixInstance: inst });
    assert.equal(s.status, 204);
    assert.equal((await meta(k.id)).dualAuthDelete.keySetForDeletion, true);
    await expectError(() => kp.deleteKey({ id: k.id, bluemixInstance: inst }), 409, 'AUTHORIZATIONS_NOT_MET');
    const u = await kp.unsetKeyForDeletion({ id: k.id, bluemixInstance: inst });
    assert.equal(u.status, 204);
    assert.notEqual((await meta(k.id)).dualAuthDelete.keySetForDeletion, true);
    await expectError(() => kp2.deleteKey({ id: k.id, bluemixInstance: inst }), 409, 'AUTHORIZATIONS_NOT_MET');
    await kp.setKeyForDeletion({ id: k.id, bluemixInstance: inst });
    const d = await kp2.deleteKey({ id: k.id, bluemixInstance: inst, prefer: 'return=representation' });
    assert.equal(d.status, 200);
    assert.equal(d.result.resources[0].state, 5);
  });

  it('instance policies: all six types, allowed IP port, enforcement', async () => {
    const s = await new h.Server().start();
    try {
      const c = s.client();
      const i = s.instance;
      const six = {
        dualAuthDelete: { enabled: false },
        metrics: { enabled: true },
        allowedNetwork: { enabled: true, attributes: { allowed_network: 'public-and-private' } },
        allowedIP: { enabled: true, attributes: { allowed_ip: ['127.0.0.0/8', '::1/128'] } },
        keyCreateImportAccess: { enabled: true, attributes: { create_root_key: true, create_standard_key: true,
          import_root_key: true, import_standard_key: true, enforce_token: false } },
        rotation: { enabled: true, attributes: { interval_month: 2 } },
      };
      const port0 = await c.getAllowedIpPort({ bluemixInstance: i });
      assert.equal(port0.status, 200);
      assert.deepEqual(port0.result.resources, []);
      for (const [t, d] of Object.entries(six)) {
        const r = await c.putInstancePolicy({ bluemixInstance: i, policy: t,
          setInstancePoliciesOneOf: instPolicy({ policy_type: t, policy_data: d }) });
        assert.equal(r.status, 204, t);
        const g = await c.getInstancePolicy({ bluemixInstance: i, policy: t });
        assert.equal(g.result.resources.length, 1, t);
        assert.equal(g.result.resources[0].policy_type, t);
        assert.equal(g.result.resources[0].policy_data.enabled, d.enabled);
      }
      const all = await c.getInstancePolicy({ bluemixInstance: i });
      assert.deepEqual(all.result.resources.map((r) => r.policy_type).sort(), Object.keys(six).sort());
      const rot = all.result.resources.find((r) => r.policy_type === 'rotation');
      assert.equal(rot.policy_data.attributes.interval_month, 2);
      const port = await c.getAllowedIpPort({ bluemixInstance: i });
      assert.equal(port.result.metadata.collectionType, 'application/vnd.ibm.kms.allowed_ip_metadata+json');
      assert.equal(port.result.resources.length, 1);
      assert.equal(typeof port.result.resources[0].private_endpoint_port, 'number');

      await c.putInstancePolicy({ bluemixInstance: i, policy: 'keyCreateImportAccess',
        setInstancePoliciesOneOf: instPolicy({ policy_type: 'keyCreateImportAccess', policy_data: { enabled: true,
          attributes: { create_root_key: false, create_standard_key: true, import_root_key: true, import_standard_key: true, enforce_token: false } } }) });
      await expectError(() => c.createKey({ bluemixInstance: i, body: keyBody(uniq()) }), 409, 'KEY_CREATE_IMPORT_ACCESS_ERR');
      await expectError(() => c.putInstancePolicy({ bluemixInstance: i, policy: 'dualAuthDelete',
        setInstancePoliciesOneOf: instPolicy({ policy_type: 'dualAuthDelete', policy_data: { enabled: true, attributes: {} } }) }),
      400, 'BAD_BODY_ERR');
    } finally {
      await s.stop();
    }
  });

  it('import token and secure import', async () => {
    const t = await kp.postImportToken({ bluemixInstance: inst, expiration: 600, maxAllowedRetrievals: 2 });
    assert.ok([200, 201].includes(t.status));
    assert.equal(t.result.maxAllowedRetrievals, 2);
    assert.equal(t.result.remainingRetrievals, 2);
    const g = await kp.getImportToken({ bluemixInstance: inst });
    assert.equal(g.status, 200);
    assert.equal(g.result.remainingRetrievals, 1);
    assert.ok(unb64(g.result.payload).toString().startsWith('-----BEGIN PUBLIC KEY-----'));
    assert.equal(unb64(g.result.nonce).length, 12);
    const material = crypto.randomBytes(32);
    const k = await createKey(kp, inst, false, { name: uniq('sec'), ...secureImportFields(g.result, material) });
    assert.equal(k.imported, true);
    const w = await kp.wrapKey({ id: k.id, bluemixInstance: inst, keyActionWrapBody: jbuf({ plaintext: b64(Buffer.from('sec')) }) });
    const u = await kp.unwrapKey({ id: k.id, bluemixInstance: inst, keyActionUnwrapBody: jbuf({ ciphertext: w.result.ciphertext }) });
    assert.equal(unb64(u.result.plaintext).toString(), 'sec');
    // Wrong nonce is refused.
    const g2 = await kp.getImportToken({ bluemixInstance: inst });
    const bad = secureImportFields({ ...g2.result, nonce: b64(crypto.randomBytes(12)) }, crypto.randomBytes(32));
    await expectError(() => kp.createKey({ bluemixInstance: inst, body: keyBody(uniq(), false, bad) }), 400, 'INCORRECT_NONCE_ERR');
  });

  it('registrations: list per key / all keys, delete protection', async () => {
    const k = await createKey();
    const crn = (b) => `crn:v1:bluemix:public:cloud-object-storage:global:a/acct:inst:bucket:${b}`;
    await srv.register(k.id, crn('n1'));
    await srv.register(k.id, crn('n2'));
    const r = await kp.getRegistrations({ id: k.id, bluemixInstance: inst, totalCount: true });
    assert.equal(r.status, 200);
    assert.equal(r.result.metadata.collectionType, 'application/vnd.ibm.kms.registration+json');
    assert.equal(r.result.metadata.totalCount, 2);
    assert.deepEqual(r.result.resources.map((x) => x.resourceCrn).sort(), [crn('n1'), crn('n2')]);
    assert.ok(r.result.resources.every((x) => x.keyId === k.id && x.preventKeyDeletion === false));
    const f = await kp.getRegistrations({ id: k.id, bluemixInstance: inst, urlEncodedResourceCrnQuery: crn('n2') });
    assert.deepEqual(f.result.resources.map((x) => x.resourceCrn), [crn('n2')]);
    const a = await kp.getRegistrationsAllKeys({ bluemixInstance: inst, urlEncodedResourceCrnQuery: crn('*') });
    assert.equal(a.status, 200);
    assert.ok(a.result.resources.filter((x) => x.keyId === k.id).length === 2);
    await expectError(() => kp.deleteKey({ id: k.id, bluemixInstance: inst }), 409, 'PROTECTED_RESOURCE_ERR');
    const d = await kp.deleteKey({ id: k.id, bluemixInstance: inst, force: true });
    assert.ok([200, 204].includes(d.status));

    const p = await createKey();
    await srv.register(p.id, crn('locked'), { prevent: true });
    const pr = await kp.getRegistrations({ id: p.id, bluemixInstance: inst, preventKeyDeletion: true });
    assert.deepEqual(pr.result.resources.map((x) => x.resourceCrn), [crn('locked')]);
    await expectError(() => kp.deleteKey({ id: p.id, bluemixInstance: inst, force: true }), 409, 'PREV_KEY_DEL_ERR');
  });

  async function withStrict(fn) {
    const s = await new h.Server([]).start();
    try { await fn(s.client(), s.instance); } finally { await s.stop(); }
  }

  it('default timing rules: first rotate allowed, second within the hour refused', () => withStrict(async (c, i) => {
    const k = await createKey(c, i);
    assert.equal((await c.rotateKey({ id: k.id, bluemixInstance: i })).status, 204);
    await expectError(() => c.rotateKey({ id: k.id, bluemixInstance: i }), 409, 'KEY_ROTATION_NOT_PERMITTED');
  }));

  it('default timing rules: enable right after disable is too early', () => withStrict(async (c, i) => {
    const k = await createKey(c, i);
    await c.disableKey({ id: k.id, bluemixInstance: i });
    await expectError(() => c.enableKey({ id: k.id, bluemixInstance: i }), 409, 'REQ_TOO_EARLY_ERR');
  }));

  it('default timing rules: restore right after delete is too early', () => withStrict(async (c, i) => {
    const k = await createKey(c, i);
    await c.deleteKey({ id: k.id, bluemixInstance: i });
    await expectError(() => c.restoreKey({ id: k.id, bluemixInstance: i }), 409); // stream response: status only
  }));
});
