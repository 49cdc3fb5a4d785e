'use strict';
// Helpers for the @ibm-cloud/ibm-key-protect@0.1.2 conformance suite.
// Starts a real `keyhold serve --dev` and builds KeyProtectV2 clients with IamAuthenticator.

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const crypto = require('node:crypto');
const http = require('node:http');
const assert = require('node:assert/strict');

const REPO_ROOT = path.resolve(__dirname, '..', '..', '..');
const MOD = path.join(REPO_ROOT, '.deps', 'node', 'node_modules', '@ibm-cloud', 'ibm-key-protect');
const KeyProtectV2 = require(path.join(MOD, 'ibm-key-protect-api', 'v2'));
const { IamAuthenticator } = require(path.join(MOD, 'auth'));

const FAST_FLAGS = ['--rotate-min-interval', '0', '--action-cooldown', '0', '--purge-delay', '0'];

function keyholdBin() {
  const p = process.env.KEYHOLD_BIN || 'target/debug/keyhold';
  return path.isAbsolute(p) ? p : path.join(REPO_ROOT, p);
}

class Server {
  constructor(flags = FAST_FLAGS) {
    this.flags = flags;
  }

  async start(readyTimeoutMs = 60000) {
    const bin = keyholdBin();
    if (!fs.existsSync(bin)) throw new Error(`keyhold binary not found at ${bin} (set KEYHOLD_BIN or run cargo build)`);
    this.dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'keyhold-conf-node-'));
    this.stderr = '';
    this.proc = spawn(bin, ['serve', '--dev', '--listen', '127.0.0.1:0', '--data-dir', this.dataDir, ...this.flags],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stderr.on('data', (d) => { this.stderr = (this.stderr + d.toString()).slice(-8000); });
    const line = await new Promise((resolve, reject) => {
      let buf = '';
      const timer = setTimeout(() => reject(new Error(`no ready line within ${readyTimeoutMs} ms; stderr: ${this.stderr}`)), readyTimeoutMs);
      this.proc.stdout.on('data', (d) => {
        buf += d.toString();
        const i = buf.indexOf('\n');
        if (i >= 0 && !this._ready) {
          this._ready = true;
          clearTimeout(timer);
          resolve(buf.slice(0, i));
        }
      });
      this.proc.on('exit', (code) => {
        if (!this._ready) { clearTimeout(timer); reject(new Error(`keyhold exited (${code}) before ready; stderr: ${this.stderr}`)); }
      });
    });
    this.info = JSON.parse(line);
    for (const k of ['url', 'iam_url', 'apikey', 'instance_id', 'second_apikey', 'service_apikey']) {
      assert.ok(this.info[k], `ready line lacks ${k}: ${line}`);
    }
    const devJson = path.join(this.dataDir, 'dev.json');
    assert.deepEqual(JSON.parse(fs.readFileSync(devJson, 'utf8')), this.info);
    assert.equal(fs.statSync(devJson).mode & 0o777, 0o600);
    return this;
  }

  async stop() {
    if (this.proc && this.proc.exitCode === null) {
      const exited = new Promise((r) => this.proc.once('exit', r));
      this.proc.kill('SIGTERM');
      const t = setTimeout(() => this.proc.kill('SIGKILL'), 10000);
      await exited;
      clearTimeout(t);
    }
    if (this.dataDir) fs.rmSync(this.dataDir, { recursive: true, force: true });
  }

  get instance() { return this.info.instance_id; }

  client(apikey) {
    const kp = new KeyProtectV2({
      authenticator: new IamAuthenticator({ apikey: apikey || this.info.apikey, url: this.info.iam_url }),
      serviceUrl: this.info.url,
    });
    // Avoid keep-alive sockets holding the test process open (§9.3).
    kp.getHttpClient().defaults.httpAgent = new http.Agent({ keepAlive: false });
    return kp;
  }

  async token(apikey) {
    const r = await fetch(this.info.iam_url + '/identity/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/x-www-form-urlencoded', Accept: 'application/json', Connection: 'close' },
      body: new URLSearchParams({
        grant_type: 'urn:ibm:params:oauth:grant-type:apikey',
        apikey: apikey || this.info.apikey,
        response_type: 'cloud_iam',
      }),
    });
    const text = await r.text();
    assert.equal(r.status, 200, text);
    return JSON.parse(text).access_token;
  }

  async raw(method, p, { apikey, headers, json } = {}) {
    const h = {
      Authorization: 'Bearer ' + await this.token(apikey),
      'Bluemix-Instance': this.instance,
      Accept: 'application/json',
      Connection: 'close',
      ...(headers || {}),
    };
    const init = { method, headers: h };
    if (json !== undefined) { init.body = JSON.stringify(json); h['Content-Type'] = 'application/json'; }
    const r = await fetch(this.info.url + p, init);
    const text = await r.text();
    return { status: r.status, text, json: () => JSON.parse(text) };
  }

  async register(keyId, crn, { prevent = false, description = 'conformance', metadata = 'meta' } = {}) {
    const r = await this.raw('POST', `/api/v2/keys/${keyId}/registrations/${encodeURIComponent(crn)}`, {
      apikey: this.info.service_apikey,
      json: {
        metadata: { collectionType: 'application/vnd.ibm.kms.registration_input+json', collectionTotal: 1 },
        resources: [{ preventKeyDeletion: prevent, description, registrationMetadata: metadata }],
      },
    });
    assert.ok(r.status === 200 || r.status === 201, `seeding registration failed: ${r.status} ${r.text}`);
    return r;
  }
}

function uniq(prefix = 'k') { return `${prefix}-${crypto.randomBytes(5).toString('hex')}`; }
function b64(buf) { return Buffer.from(buf).toString('base64'); }
function unb64(s) { return Buffer.from(s, 'base64'); }
function jbuf(obj) { return Buffer.from(JSON.stringify(obj)); }

function keyBody(name, extractable = false, extra = {}) {
  return jbuf({
    metadata: { collectionType: 'application/vnd.ibm.kms.key+json', collectionTotal: 1 },
    resources: [{ type: 'application/vnd.ibm.kms.key+json', name, extractable, ...extra }],
  });
}

async function streamJson(result) {
  // restoreKey uses responseType 'stream'.
  if (result && typeof result.on === 'function') {
    const chunks = [];
    for await (const c of result) chunks.push(Buffer.from(c));
    const s = Buffer.concat(chunks).toString();
    return s ? JSON.parse(s) : null;
  }
  if (Buffer.isBuffer(result)) return JSON.parse(result.toString());
  return result;
}

function errBody(err) {
  if (!err || err.body === undefined) return null;
  try { return typeof err.body === 'string' ? JSON.parse(err.body) : err.body; } catch (e) { return null; }
}

function describe(err) {
  let body;
  try { body = typeof err.body === 'string' ? err.body : JSON.stringify(err.body); } catch (e) { body = '<stream>'; }
  return `status=${err && err.status} message=${err && err.message} body=${body}`.slice(0, 800);
}

async function expectError(promiseFn, status, code) {
  let res;
  try {
    res = await promiseFn();
  } catch (err) {
    assert.equal(err.status, status, `expected ${status} ${code || ''}, got ${describe(err)}`);
    if (code) {
      const doc = errBody(err);
      assert.ok(doc, `error body not JSON: ${describe(err)}`);
      assert.equal(doc.metadata.collectionType, 'application/vnd.ibm.kms.error+json');
      const r0 = doc.resources[0];
      assert.ok(r0.errorMsg, describe(err));
      assert.equal((r0.reasons || [{}])[0].code, code, `expected reason ${code}, got ${describe(err)}`);
    }
    return err;
  }
  let shown;
  try { shown = JSON.stringify(res && res.result); } catch (e) { shown = '<stream>'; }
  assert.fail(`expected HTTP ${status} ${code || ''}, call succeeded with ${res && res.status}: ${shown}`);
}

function secureImportFields(token, material) {
  const pub = crypto.createPublicKey(unb64(token.payload).toString());
  const payload = crypto.publicEncrypt(
    { key: pub, padding: crypto.constants.RSA_PKCS1_OAEP_PADDING, oaepHash: 'sha256' }, material);
  const iv = crypto.randomBytes(12);
  const c = crypto.createCipheriv('aes-' + material.length * 8 + '-gcm', material, iv);
  const enc = Buffer.concat([c.update(unb64(token.nonce)), c.final(), c.getAuthTag()]);
  return { payload: b64(payload), encryptedNonce: b64(enc), iv: b64(iv), encryptionAlgorithm: 'RSAES_OAEP_SHA_256' };
}

module.exports = {
  Server, FAST_FLAGS, KeyProtectV2, IamAuthenticator, uniq, b64, unb64, jbuf, keyBody, streamJson,
  errBody, describe, expectError, secureImportFields,
};
