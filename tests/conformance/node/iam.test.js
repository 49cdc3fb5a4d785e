'use strict';
// @ibm-cloud/ibm-key-protect@0.1.2 with non-administrator API keys (IamAuthenticator against
// our /identity/token): a Reader and a Writer service ID can do exactly what their role allows.
const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const h = require('./helper');

const { uniq, b64, jbuf, keyBody, expectError } = h;
const SR = 'crn:v1:bluemix:public:iam::::serviceRole:';

describe('node client: roles from IAM policies', () => {
  let srv; let admin; let reader; let writer; let inst;

  async function iam(method, p, body) {
    const r = await fetch(srv.info.url + p, {
      method,
      headers: { Authorization: 'Bearer ' + await srv.token(), 'Content-Type': 'application/json', Connection: 'close' },
      body: JSON.stringify(body),
    });
    const text = await r.text();
    assert.ok(r.status === 200 || r.status === 201, `${method} ${p}: ${r.status} ${text}`);
    return JSON.parse(text);
  }

  async function keyWithRole(role) {
    const sid = (await iam('POST', '/v1/serviceids', { name: uniq(role) })).iam_id;
    await iam('POST', '/v1/policies', {
      type: 'access',
      subjects: [{ attributes: [{ name: 'iam_id', value: sid }] }],
      roles: [{ role_id: SR + role }],
      resources: [{ attributes: [{ name: 'accountId', value: 'dev-account' }, { name: 'serviceName', value: 'kms' },
        { name: 'serviceInstance', value: inst }] }],
    });
    return (await iam('POST', '/v1/apikeys', { name: role, iam_id: sid })).apikey;
  }

  before(async () => {
    srv = await new h.Server().start();
    inst = srv.instance;
    admin = srv.client();
    reader = srv.client(await keyWithRole('Reader'));
    writer = srv.client(await keyWithRole('Writer'));
  });
  after(async () => { if (srv) await srv.stop(); });

  it('Reader: list, wrap and unwrap; no create, rotate or disable', async () => {
    const created = await admin.createKey({ bluemixInstance: inst, body: keyBody(uniq()) });
    const id = created.result.resources[0].id;
    const listed = await reader.getKeys({ bluemixInstance: inst });
    assert.ok(listed.result.resources.some((k) => k.id === id));
    const w = await reader.wrapKey({ id, bluemixInstance: inst, keyActionWrapBody: jbuf({ plaintext: b64(Buffer.alloc(32, 7)) }) });
    assert.equal(w.status, 200);
    const u = await reader.unwrapKey({ id, bluemixInstance: inst, keyActionUnwrapBody: jbuf({ ciphertext: w.result.ciphertext }) });
    assert.equal(u.result.plaintext, b64(Buffer.alloc(32, 7)));
    await expectError(() => reader.createKey({ bluemixInstance: inst, body: keyBody(uniq()) }), 401);
    await expectError(() => reader.rotateKey({ id, bluemixInstance: inst }), 401);
    await expectError(() => reader.disableKey({ id, bluemixInstance: inst }), 401);
  });

  it('Writer: create, rotate and wrap; no delete or disable', async () => {
    const created = await writer.createKey({ bluemixInstance: inst, body: keyBody(uniq()) });
    assert.equal(created.status, 201);
    const id = created.result.resources[0].id;
    const rotated = await writer.rotateKey({ id, bluemixInstance: inst });
    assert.equal(rotated.status, 204);
    const w = await writer.wrapKey({ id, bluemixInstance: inst, keyActionWrapBody: jbuf({}) });
    assert.equal(w.status, 200);
    await expectError(() => writer.disableKey({ id, bluemixInstance: inst }), 401);
    await expectError(() => writer.deleteKey({ id, bluemixInstance: inst }), 401);
  });
});
