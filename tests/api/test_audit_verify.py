"""The audit trail is tamper-evident (docs/audit.md; issue #8 must-show): an export verifies
with `keyhold audit verify` against the published key; each of five tamperings of the export
(modify, delete, insert, reorder, truncate) and a record altered in the database itself is
detected, naming the first broken record. Runs on the suite's store (SQLite or PostgreSQL)."""
import json
import os
import subprocess

import pytest

from api_helpers import keyhold_bin, wait_for
from audit_helpers import AuditServer, lines_of, records, verify


@pytest.fixture(scope="module")
def trail(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("audit-verify")
    a = AuditServer(tmp, extra=["--audit-timeout", "2"])
    kp = a.kp
    kid = kp.root_key()["id"]
    for _ in range(5):
        ct = kp.wrap(kid, os.urandom(32))["ciphertext"]
        kp.unwrap(kid, ct)
    kp.get(f"/api/v2/keys/{kid}")
    kp.get("/api/v2/keys/no-such-key")
    # Wraps, unwraps and reads are group-committed (every 100 ms): the tests export once all are in.
    queued = ("kms.secrets.wrap", "kms.secrets.unwrap", "kms.secrets.read")
    assert wait_for(lambda: sum(e["action"] in queued for e in a.events()) >= 12, timeout=10)
    keys = tmp / "keys.json"
    keys.write_text(a.keys_json())
    yield a, tmp, keys
    a.stop()


def export(trail, name):
    a, tmp, _ = trail
    path = tmp / name
    path.write_text(a.export_text())
    return path


def broken_at(res, seq):
    assert res.returncode == 6, f"verify should fail with 6: rc={res.returncode}\n{res.stdout}\n{res.stderr}"
    assert f"broken at seq {seq} " in res.stderr, res.stderr


def test_untouched_export_verifies(trail):
    _, _, keys = trail
    path = export(trail, "intact.jsonl")
    recs = records(path.read_text())
    assert recs[-1]["type"] == "head" and recs[-1]["seq"] == recs[-2]["seq"]
    assert [r["seq"] for r in recs[:-1]] == list(range(1, len(recs)))
    res = verify(path, keys)
    assert res.returncode == 0, res.stderr
    assert f"signed head at seq {recs[-1]['seq']}" in res.stdout
    res = verify(path, keys, "-o", "json")
    assert json.loads(res.stdout)["intact"] is True


def test_wrong_public_key_fails(trail, tmp_path):
    path = export(trail, "wrongkey.jsonl")
    other = tmp_path / "other.pub"
    other.write_text("HN3KhysEEij16E0zbNsQq1pzNUXo51yYC574YDhi+/4=")
    res = verify(path, other)
    assert res.returncode == 6, res.stderr


def tampered(trail, name, edit):
    path = export(trail, name)
    lines = lines_of(path.read_text())
    lines = edit(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_modified_event_is_named(trail):
    _, _, keys = trail

    seq = None

    def edit(lines):
        nonlocal seq
        i = next(i for i in range(4, len(lines)) if json.loads(lines[i])["type"] == "event")
        rec = json.loads(lines[i])
        rec["action"] = "kms.secrets.read"
        lines[i] = json.dumps(rec, separators=(",", ":"))
        seq = rec["seq"]
        return lines

    res = verify(tampered(trail, "modified.jsonl", edit), keys)
    broken_at(res, seq)
    assert "altered" in res.stderr


def test_deleted_event_is_named(trail):
    _, _, keys = trail
    res = verify(tampered(trail, "deleted.jsonl", lambda ls: ls[:3] + ls[4:]), keys)
    broken_at(res, 4)
    assert "missing" in res.stderr


def test_inserted_event_is_named(trail):
    _, _, keys = trail

    def edit(lines):
        # A copy of event 3 slipped in after it, as a forger would add a record.
        return lines[:3] + [lines[2]] + lines[3:]

    res = verify(tampered(trail, "inserted.jsonl", edit), keys)
    broken_at(res, 4)

    def forged(lines):
        # A fabricated record 4 with a correct-looking link and a recomputed-looking hash:
        # the real record 4 then no longer links.
        fake = json.loads(lines[3])
        fake["action"] = "kms.secrets.read"
        return lines[:3] + [json.dumps(fake, separators=(",", ":"))] + lines[3:]

    res = verify(tampered(trail, "forged.jsonl", forged), keys)
    broken_at(res, 4)


def test_reordered_events_are_named(trail):
    _, _, keys = trail

    def edit(lines):
        lines[5], lines[6] = lines[6], lines[5]
        return lines

    res = verify(tampered(trail, "reordered.jsonl", edit), keys)
    broken_at(res, 6)


def test_truncated_tail_is_detected(trail):
    _, _, keys = trail
    # The tail cut together with the signed head: no head, so truncation shows.
    path = tampered(trail, "truncated.jsonl", lambda ls: ls[:-3])
    res = verify(path, keys)
    assert res.returncode == 6 and "truncated" in res.stderr, res.stderr
    # Records cut but the signed head kept: the head names a record beyond the end.
    path = tampered(trail, "truncated2.jsonl", lambda ls: ls[:-3] + ls[-1:])
    n = len(lines_of(path.read_text())) - 1
    res = verify(path, keys)
    broken_at(res, n + 1)
    assert "truncated" in res.stderr


def test_verify_fetches_from_a_server_url(trail):
    """`keyhold audit verify URL` exports from the server and checks it (before any tampering)."""
    a, _, keys = trail
    dev = a.data / "dev.json"
    res = subprocess.run([keyhold_bin(), "audit", "verify", a.srv.url, "--public-key", str(keys),
                          "--dev-json", str(dev)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "intact" in res.stdout


def test_record_altered_in_the_database_is_detected(trail):
    """Records live in batches (one row per group commit); editing or removing one line
    of a batch is caught like any other tampering."""
    a, _, keys = trail
    seq = 3
    rec = a.stored_record(seq)
    changed = rec.replace('"outcome":"success"', '"outcome":"failure"')
    assert changed != rec
    a.store_record(seq, changed)
    try:
        res = verify(export(trail, "db-tampered.jsonl"), keys)
        broken_at(res, seq)
        a.store_record(seq, rec)
        assert verify(export(trail, "db-restored.jsonl"), keys).returncode == 0
        # A record removed from its batch shows as a gap in the next export.
        a.store_record(7, None)
        res = verify(export(trail, "db-deleted.jsonl"), keys)
        broken_at(res, 7)
    finally:
        a.store_record(seq, rec)
