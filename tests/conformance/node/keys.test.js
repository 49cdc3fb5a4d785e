'use strict';
// @ibm-cloud/ibm-key-protect@0.1.2: keys, actions, lifecycle, aliases, key rings.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const h = require('./helper');

const { uniq, b64, unb64, jbuf, keyBody, expectError, streamJson } = h;

describe('node client: keys and actions', () => {
  let srv; let kp; let inst;

  before(async () => {
    srv = await new h.Server().start();
    kp = srv.client();
    inst = srv.instance;
  });
  after(async () => { if (srv) await srv.stop(); });

  async function createKey(extra = {}, { extractable = false, prefer, ring } = {}) {
    const res = await kp.createKey({ bluemixInstance: inst, body: keyBody(extra.name || uniq(), extractable, extra), prefer, xKmsKeyRing: ring });
    assert.equal(res.status, 201);
    assert.equal(res.result.metadata.collectionType, 'application/vnd.ibm.kms.key+json');
    assert.equal(res.result.resources.length, 1);
    return res.result.resources[0];
  }
  async function meta(id) {
    const res = await kp.getKeyMetadata({ id, bluemixInstance: inst });
    assert.equal(res.status, 200);
    return res.result.resources[0];
  }
  async function wrap(id, plaintext, aad) {
    const body = {};
    if (plaintext !== undefined) body.plaintext = b64(plaintext);
    if (aad) body.aad = aad;
    const res = await kp.wrapKey({ id, bluemixInstance: inst, keyActionWrapBody: jbuf(body) });
    assert.equal(res.status, 200);
    return res.result;
  }
  async function unwrap(id, ciphertext, aad) {
    const body = { ciphertext };
    if (aad) body.aad = aad;
    const res = await kp.unwrapKey({ id, bluemixInstance: inst, keyActionUnwrapBody: jbuf(body) });
    assert.equal(res.status, 200);
    return res.result;
  }

  it('creates a root key with the default representation', async () => {
    const name = uniq('root');
    const k = await createKey({ name, description: 'node root' });
    assert.equal(k.name, name);
    assert.equal(k.state, 1);
    assert.equal(k.extractable, false);
    assert.equal(k.imported, false);
    assert.equal(k.keyRingID, 'default');
    assert.equal(k.payload, undefined);
    assert.ok(k.keyVersion.id);
    assert.ok(k.crn.endsWith(':key:' + k.id));
  });

  it('creates a standard key (return=representation) and reads its payload', async () => {
    const k = await createKey({}, { extractable: true, prefer: 'return=representation' });
    assert.equal(unb64(k.payload).length, 32);
    const g = await kp.getKey({ id: k.id, bluemixInstance: inst });
    assert.equal(g.status, 200);
    assert.equal(g.result.resources[0].payload, k.payload);
    const m = await meta(k.id);
    assert.equal(m.payload, undefined);
  });

  it('imports root key material and wraps with it', async () => {
    const k = await createKey({ payload: b64(crypto.randomBytes(32)) });
    assert.equal(k.imported, true);
    const w = await wrap(k.id, Buffer.from('imported'));
    assert.equal(unb64((await unwrap(k.id, w.ciphertext)).plaintext).toString(), 'imported');
  });

  it('getKey on an unknown id is 404 KEY_NOT_FOUND_ERR', async () => {
    await expectError(() => kp.getKey({ id: crypto.randomUUID(), bluemixInstance: inst }), 404, 'KEY_NOT_FOUND_ERR');
  });

  it('lists keys with limit/offset/state/extractable and counts them with HEAD', async () => {
    const s = await new h.Server().start();
    try {
      const c = s.client();
      const i = s.instance;
      const mk = async (extractable) => (await c.createKey({ bluemixInstance: i, body: keyBody(uniq(), extractable) })).result.resources[0];
      const r1 = await mk(false); const r2 = await mk(false); const s1 = await mk(true); const gone = await mk(false);
      await c.deleteKey({ id: gone.id, bluemixInstance: i });
      const ids = async (p) => (await c.getKeys({ bluemixInstance: i, ...p })).result.resources.map((x) => x.id).sort();
      assert.deepEqual(await ids({}), [r1.id, r2.id, s1.id].sort());
      assert.deepEqual(await ids({ state: [1, 5] }), [r1.id, r2.id, s1.id, gone.id].sort());
      assert.deepEqual(await ids({ state: [5] }), [gone.id]);
      assert.deepEqual(await ids({ extractable: false }), [r1.id, r2.id].sort());
      assert.deepEqual(await ids({ extractable: true }), [s1.id]);
      const page1 = await ids({ limit: 2, offset: 0 });
      const page2 = await ids({ limit: 2, offset: 2 });
      assert.equal(page1.length, 2);
      assert.equal(page2.length, 1);
      assert.deepEqual([...page1, ...page2].sort(), [r1.id, r2.id, s1.id].sort());
      const res = await c.getKeys({ bluemixInstance: i, limit: 2 });
      assert.equal(res.result.metadata.collectionTotal, 2);
      for (const k of res.result.resources) assert.equal(k.payload, undefined);

      const head = await c.getKeyCollectionMetadata({ bluemixInstance: i });
      assert.equal(head.status, 200);
      assert.equal(head.headers['key-total'], '3');
      assert.equal((await c.getKeyCollectionMetadata({ bluemixInstance: i, extractable: false })).headers['key-total'], '2');
      assert.equal((await c.getKeyCollectionMetadata({ bluemixInstance: i, state: [1, 5] })).headers['key-total'], '4');
    } finally {
      await s.stop();
    }
  });

  it('wraps and unwraps (given DEK, generated DEK, AAD)', async () => {
    const k = await createKey();
    const dek = crypto.randomBytes(32);
    const w = await wrap(k.id, dek);
    assert.equal(w.keyVersion.id, k.keyVersion.id);
    const u = await unwrap(k.id, w.ciphertext);
    assert.deepEqual(unb64(u.plaintext), dek);
    assert.equal(u.keyVersion.id, k.keyVersion.id);
    assert.equal(u.rewrappedKeyVersion, undefined);

    const g = await kp.wrapKey({ id: k.id, bluemixInstance: inst });
    assert.equal(g.status, 200);
    const gen = unb64(g.result.plaintext);
    assert.equal(gen.length, 32);
    assert.deepEqual(unb64((await unwrap(k.id, g.result.ciphertext)).plaintext), gen);

    const wa = await wrap(k.id, Buffer.from('aad'), ['ctx']);
    assert.equal(unb64((await unwrap(k.id, wa.ciphertext, ['ctx'])).plaintext).toString(), 'aad');
    await assert.rejects(() => unwrap(k.id, wa.ciphertext, ['other']), (e) => [400, 422].includes(e.status));
  });

  it('rotates: versions grow, old ciphertext unwraps and is rewrapped, rewrap works', async () => {
    const k = await createKey();
    const v1 = k.keyVersion.id;
    const dek = crypto.randomBytes(32);
    const old = await wrap(k.id, dek);
    const r = await kp.rotateKey({ id: k.id, bluemixInstance: inst });
    assert.equal(r.status, 204);
    const m = await meta(k.id);
    const v2 = m.keyVersion.id;
    assert.notEqual(v2, v1);
    assert.ok(m.lastRotateDate);
    const vs = await kp.getKeyVersions({ id: k.id, bluemixInstance: inst });
    assert.equal(vs.status, 200);
    assert.deepEqual(vs.result.resources.map((x) => x.id).sort(), [v1, v2].sort());
    const vpage = await kp.getKeyVersions({ id: k.id, bluemixInstance: inst, limit: 1, offset: 0 });
    assert.equal(vpage.result.resources.length, 1);

    const u = await unwrap(k.id, old.ciphertext);
    assert.deepEqual(unb64(u.plaintext), dek);
    assert.equal(u.keyVersion.id, v1);
    assert.equal(u.rewrappedKeyVersion.id, v2);
    assert.ok(u.ciphertext);
    const u2 = await unwrap(k.id, u.ciphertext);
    assert.deepEqual(unb64(u2.plaintext), dek);
    assert.equal(u2.keyVersion.id, v2);

    const rw = await kp.rewrapKey({ id: k.id, bluemixInstance: inst, keyActionRewrapBody: jbuf({ ciphertext: old.ciphertext }) });
    assert.equal(rw.status, 200);
    assert.equal(rw.result.keyVersion.id, v1);
    assert.equal(rw.result.rewrappedKeyVersion.id, v2);
    assert.deepEqual(unb64((await unwrap(k.id, rw.result.ciphertext)).plaintext), dek);
  });

  it('rotates an imported key only with a payload', async () => {
    const k = await createKey({ payload: b64(crypto.randomBytes(32)) });
    const old = await wrap(k.id, Buffer.from('imp'));
    await expectError(() => kp.rotateKey({ id: k.id, bluemixInstance: inst }), 400, 'KEY_PAYLOAD_REQ_ERR');
    const r = await kp.rotateKey({ id: k.id, bluemixInstance: inst, keyActionRotateBody: jbuf({ payload: b64(crypto.randomBytes(32)) }) });
    assert.equal(r.status, 204);
    assert.equal(unb64((await unwrap(k.id, old.ciphertext)).plaintext).toString(), 'imp');
  });

  it('disable refuses wrap with 409 KEY_ACTION_INVALID_STATE_ERR; enable restores service', async () => {
    const k = await createKey();
    const d = await kp.disableKey({ id: k.id, bluemixInstance: inst });
    assert.equal(d.status, 204);
    assert.equal((await meta(k.id)).state, 2);
    await expectError(() => wrap(k.id, Buffer.from('x')), 409, 'KEY_ACTION_INVALID_STATE_ERR');
    await expectError(() => kp.disableKey({ id: k.id, bluemixInstance: inst }), 409, 'KEY_ACTION_INVALID_STATE_ERR');
    const e = await kp.enableKey({ id: k.id, bluemixInstance: inst });
    assert.equal(e.status, 204);
    assert.equal((await meta(k.id)).state, 1);
    const w = await wrap(k.id, Buffer.from('back'));
    assert.equal(unb64((await unwrap(k.id, w.ciphertext)).plaintext).toString(), 'back');
  });

  it('standard keys cannot wrap', async () => {
    const k = await createKey({}, { extractable: true });
    await expectError(() => wrap(k.id, Buffer.from('x')), 400, 'KEY_ROOT_REQ_ERR');
  });

  it('sync is 204', async () => {
    const k = await createKey();
    const r = await kp.syncAssociatedResources({ id: k.id, bluemixInstance: inst });
    assert.equal(r.status, 204);
  });

  it('deletes (representation/minimal), 410 on second delete, restores', async () => {
    const k = await createKey();
    const w = await wrap(k.id, Buffer.from('survives'));
    const d = await kp.deleteKey({ id: k.id, bluemixInstance: inst, prefer: 'return=representation' });
    assert.equal(d.status, 200);
    assert.equal(d.result.resources[0].state, 5);
    assert.equal(d.result.resources[0].deleted, true);
    await expectError(() => kp.deleteKey({ id: k.id, bluemixInstance: inst }), 410, 'KEY_DELETED_ERR');
    await expectError(() => wrap(k.id, Buffer.from('x')), 410, 'KEY_DELETED_ERR');

    const r = await kp.restoreKey({ id: k.id, bluemixInstance: inst });
    assert.equal(r.status, 201);
    const body = await streamJson(r.result);
    assert.equal(body.resources[0].id, k.id);
    assert.equal(body.resources[0].state, 1);
    assert.equal(unb64((await unwrap(k.id, w.ciphertext)).plaintext).toString(), 'survives');
    // restoreKey uses responseType 'stream': the SDK cannot surface the error body, so check the status only.
    await expectError(() => kp.restoreKey({ id: k.id, bluemixInstance: inst }), 409);

    const k2 = await createKey();
    const m = await kp.deleteKey({ id: k2.id, bluemixInstance: inst, prefer: 'return=minimal', force: true });
    assert.equal(m.status, 204);
    assert.equal((await meta(k2.id)).state, 5);
  });

  it('set/unset for deletion without dual auth policy is 409 NOT_DUAL_AUTH_ERR', async () => {
    const k = await createKey();
    await expectError(() => kp.setKeyForDeletion({ id: k.id, bluemixInstance: inst }), 409, 'NOT_DUAL_AUTH_ERR');
    await expectError(() => kp.unsetKeyForDeletion({ id: k.id, bluemixInstance: inst }), 409, 'NOT_DUAL_AUTH_ERR');
  });

  it('aliases: create, use, delete, invalid names', async () => {
    const k = await createKey();
    const alias = uniq('alias');
    const c = await kp.createKeyAlias({ id: k.id, alias, bluemixInstance: inst });
    assert.ok([200, 201].includes(c.status));
    assert.equal(c.result.resources[0].keyId, k.id);
    assert.equal(c.result.resources[0].alias, alias);
    const g = await kp.getKey({ id: alias, bluemixInstance: inst });
    assert.equal(g.result.resources[0].id, k.id);
    const w = await wrap(alias, Buffer.from('al'));
    assert.equal(unb64((await unwrap(alias, w.ciphertext)).plaintext).toString(), 'al');
    const d = await kp.deleteKeyAlias({ id: k.id, alias, bluemixInstance: inst });
    assert.equal(d.status, 204);
    await expectError(() => kp.getKey({ id: alias, bluemixInstance: inst }), 404, 'KEY_NOT_FOUND_ERR');
    await expectError(() => kp.createKeyAlias({ id: k.id, alias: 'metadata', bluemixInstance: inst }), 400);
    await expectError(() => kp.createKeyAlias({ id: k.id, alias: crypto.randomUUID(), bluemixInstance: inst }), 400);
  });

  it('key rings: create, list, create key in ring, delete', async () => {
    const ring = uniq('ring');
    const c = await kp.createKeyRing({ keyRingId: ring, bluemixInstance: inst });
    assert.equal(c.status, 201);
    const l = await kp.listKeyRings({ bluemixInstance: inst });
    assert.equal(l.status, 200);
    assert.equal(l.result.metadata.collectionType, 'application/vnd.ibm.kms.key_ring+json');
    const ids = l.result.resources.map((r) => r.id);
    assert.ok(ids.includes('default') && ids.includes(ring), ids.join(','));
    const k = await createKey({}, { ring });
    assert.equal(k.keyRingID, ring);
    const inRing = await kp.getKeys({ bluemixInstance: inst, xKmsKeyRing: ring });
    assert.deepEqual(inRing.result.resources.map((x) => x.id), [k.id]);
    await expectError(() => kp.deleteKeyRing({ keyRingId: ring, bluemixInstance: inst }), 409);
    await kp.deleteKey({ id: k.id, bluemixInstance: inst });
    // deleteKeyRing in 0.1.2 has no force parameter, so delete an empty ring.
    const empty = uniq('empty');
    await kp.createKeyRing({ keyRingId: empty, bluemixInstance: inst });
    const d = await kp.deleteKeyRing({ keyRingId: empty, bluemixInstance: inst });
    assert.equal(d.status, 204);
    const after = (await kp.listKeyRings({ bluemixInstance: inst })).result.resources.map((r) => r.id);
    assert.ok(!after.includes(empty));
  });
});

describe('node client: short-lived tokens', () => {
  it('IamAuthenticator fetches a new token after expiry', async () => {
    const s = await new h.Server([...h.FAST_FLAGS, '--token-lifetime', '3']).start();
    try {
      const c = s.client();
      const r = await c.createKey({ bluemixInstance: s.instance, body: keyBody(uniq(), false) });
      const id = r.result.resources[0].id;
      await new Promise((res) => setTimeout(res, 3500));
      const g = await c.getKey({ id, bluemixInstance: s.instance });
      assert.equal(g.result.resources[0].id, id);
    } finally {
      await s.stop();
    }
  });
});

describe('node client: construction from the environment', () => {
  it('KeyProtectV2.newInstance reads IBM_KEY_PROTECT_API_* variables', async () => {
    const s = await new h.Server().start();
    const saved = { ...process.env };
    try {
      process.env.IBM_KEY_PROTECT_API_URL = s.info.url;
      process.env.IBM_KEY_PROTECT_API_AUTH_TYPE = 'iam';
      process.env.IBM_KEY_PROTECT_API_APIKEY = s.info.apikey;
      process.env.IBM_KEY_PROTECT_API_AUTH_URL = s.info.iam_url;
      const c = h.KeyProtectV2.newInstance({});
      c.getHttpClient().defaults.httpAgent = new (require('node:http').Agent)({ keepAlive: false });
      const r = await c.createKey({ bluemixInstance: s.instance, body: keyBody(uniq('env'), false) });
      assert.equal(r.status, 201);
      const g = await c.getKey({ id: r.result.resources[0].id, bluemixInstance: s.instance });
      assert.equal(g.result.resources[0].id, r.result.resources[0].id);
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      await s.stop();
    }
  });
});
