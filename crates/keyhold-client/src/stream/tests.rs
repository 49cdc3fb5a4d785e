//! Round trips and every kind of tampering the format must refuse.

use super::*;

const SEG: u32 = MIN_SEGMENT;
const S: usize = SEG as usize;
const CS: usize = S + TAG_LEN;

fn header() -> Header {
    Header::new(
        "0f7b6a3e-1111-4222-8333-444455556666",
        "v-1",
        "d3JhcHBlZA==",
        SEG,
    )
    .unwrap()
}

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

fn seal(dek: &Dek, h: &Header, pt: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encrypt(dek, h, &mut &pt[..], &mut out, &mut |_| {}).unwrap();
    out
}

fn open(dek: &Dek, file: &[u8]) -> Result<Vec<u8>> {
    let mut r = file;
    let h = Header::read_from(&mut r)?;
    let mut out = Vec::new();
    decrypt(dek, &h, &mut r, &mut out, &mut |_| {})?;
    Ok(out)
}

fn hlen(h: &Header) -> usize {
    h.encode().len()
}

#[test]
fn round_trips_every_boundary() {
    let dek = Dek::generate().unwrap();
    let h = header();
    for n in [0, 1, S - 1, S, S + 1, 2 * S, 3 * S + 7] {
        let pt = data(n);
        let ct = seal(&dek, &h, &pt);
        let segments = n.div_ceil(S).max(1);
        assert_eq!(ct.len(), hlen(&h) + n + segments * TAG_LEN, "size {n}");
        assert_eq!(open(&dek, &ct).unwrap(), pt, "size {n}");
    }
}

#[test]
fn header_round_trips() {
    let h = header();
    let bytes = h.encode();
    let (back, len) = Header::decode(&bytes).unwrap();
    assert_eq!(back, h);
    assert_eq!(len, bytes.len());
}

fn expect_refused(dek: &Dek, file: &[u8], what: &str) {
    match open(dek, file) {
        Err(StreamError::Tampered(_))
        | Err(StreamError::Truncated)
        | Err(StreamError::BadHeader(_)) => {}
        other => panic!("{what}: expected refusal, got {:?}", other.map(|v| v.len())),
    }
}

#[test]
fn truncation_is_refused() {
    let dek = Dek::generate().unwrap();
    let h = header();
    let ct = seal(&dek, &h, &data(3 * S + 100));
    let start = hlen(&h);
    // At a segment boundary (the last whole segment is not flagged last).
    expect_refused(&dek, &ct[..start + 3 * CS], "cut at a boundary");
    expect_refused(&dek, &ct[..start + CS], "cut after the first segment");
    // Inside a segment, inside a tag, and no segment at all.
    expect_refused(&dek, &ct[..ct.len() - 1], "one byte short");
    expect_refused(&dek, &ct[..start + 2 * CS + 5], "mid segment");
    expect_refused(&dek, &ct[..start], "header only");
    expect_refused(&dek, &ct[..start + 10], "shorter than a tag");
    expect_refused(&dek, &ct[..start - 3], "inside the header");
}

#[test]
fn reordered_and_duplicated_segments_are_refused() {
    let dek = Dek::generate().unwrap();
    let h = header();
    let ct = seal(&dek, &h, &data(3 * S + 100));
    let start = hlen(&h);
    let seg = |i: usize| &ct[start + i * CS..start + (i + 1) * CS];
    let tail = &ct[start + 3 * CS..];

    let mut swapped = ct[..start].to_vec();
    for i in [1, 0, 2] {
        swapped.extend_from_slice(seg(i));
    }
    swapped.extend_from_slice(tail);
    expect_refused(&dek, &swapped, "segments 0 and 1 swapped");

    let mut dup = ct[..start].to_vec();
    for i in [0, 1, 1, 2] {
        dup.extend_from_slice(seg(i));
    }
    dup.extend_from_slice(tail);
    expect_refused(&dek, &dup, "segment 1 twice");

    let mut dropped = ct[..start].to_vec();
    for i in [0, 2] {
        dropped.extend_from_slice(seg(i));
    }
    dropped.extend_from_slice(tail);
    expect_refused(&dek, &dropped, "segment 1 dropped");

    let mut appended = ct.clone();
    appended.extend_from_slice(seg(0));
    expect_refused(&dek, &appended, "segment appended after the last");
}

#[test]
fn every_bit_flip_region_is_refused() {
    let dek = Dek::generate().unwrap();
    let h = header();
    let ct = seal(&dek, &h, &data(2 * S + 10));
    let start = hlen(&h);
    for at in [
        start,
        start + 5,
        start + S,
        start + CS - 1,
        start + CS + 3,
        ct.len() - 1,
    ] {
        let mut bad = ct.clone();
        bad[at] ^= 0x01;
        expect_refused(&dek, &bad, &format!("bit flip at {at}"));
    }
}

#[test]
fn header_edits_are_refused() {
    let dek = Dek::generate().unwrap();
    let h = header();
    let ct = seal(&dek, &h, &data(S + 10));
    // The nonce prefix, a key id character and a wrapped-key character: still parse, but
    // the header is the AAD, so the first segment fails.
    let prefix_at = 14;
    let key_id_at = 8 + 1 + 1 + 4 + PREFIX_LEN + 2;
    let wrapped_at = hlen(&h) - 1;
    for at in [prefix_at, key_id_at, wrapped_at] {
        let mut bad = ct.clone();
        bad[at] ^= 0x01;
        assert!(
            matches!(open(&dek, &bad), Err(StreamError::Tampered(0))),
            "edit at {at}"
        );
    }
    // Segment size doubled: parses, then fails.
    let mut bad = ct.clone();
    bad[12] ^= 0x08;
    expect_refused(&dek, &bad, "segment size edited");
    let mut bad = ct.clone();
    bad[0] = b'X';
    assert!(matches!(open(&dek, &bad), Err(StreamError::NotKeyhold)));
    let mut bad = ct.clone();
    bad[8] = 9;
    assert!(matches!(
        open(&dek, &bad),
        Err(StreamError::UnsupportedVersion(9))
    ));
}

#[test]
fn another_dek_or_another_header_is_refused() {
    let dek = Dek::generate().unwrap();
    let h = header();
    let ct = seal(&dek, &h, &data(100));
    expect_refused(&Dek::generate().unwrap(), &ct, "wrong key");
    // A header from another file (different prefix) spliced onto these segments.
    let other = header();
    let mut spliced = other.encode();
    spliced.extend_from_slice(&ct[hlen(&h)..]);
    expect_refused(&dek, &spliced, "foreign header");
}

#[test]
fn segment_sizes_out_of_range_are_rejected() {
    assert!(Header::new("k", "", "w", MIN_SEGMENT - 1).is_err());
    assert!(Header::new("k", "", "w", MAX_SEGMENT + 1).is_err());
    assert!(Header::new("", "", "w", SEG).is_err());
}

#[tokio::test]
async fn async_round_trip_matches_sync() {
    let dek = Dek::generate().unwrap();
    let h = header();
    let pt = data(5 * S + 3);
    let mut ct = Vec::new();
    encrypt_async(&dek, &h, &mut &pt[..], &mut ct)
        .await
        .unwrap();
    // Same bytes as the sync encryptor (same header, same key, deterministic nonces).
    assert_eq!(ct, seal(&dek, &h, &pt));
    let mut r = &ct[..];
    let back_h = Header::read_from_async(&mut r).await.unwrap();
    let mut out = Vec::new();
    decrypt_async(&dek, &back_h, &mut r, &mut out)
        .await
        .unwrap();
    assert_eq!(out, pt);
    let mut r = &ct[..ct.len() - TAG_LEN - 3];
    let back_h = Header::read_from_async(&mut r).await.unwrap();
    let mut out = Vec::new();
    assert!(decrypt_async(&dek, &back_h, &mut r, &mut out)
        .await
        .is_err());
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Any length round-trips with any segment size, and flipping any one bit of the
        /// file (header included) is refused.
        #[test]
        fn round_trip_and_any_bit_flip(len in 0usize..5000, seg in 1024u32..2100, flip in any::<prop::sample::Index>(), bit in 0u8..8) {
            let dek = Dek::generate().unwrap();
            let h = Header::new("key-id", "v", "wrapped", seg).unwrap();
            let pt = data(len);
            let ct = seal(&dek, &h, &pt);
            prop_assert_eq!(open(&dek, &ct).unwrap(), pt);
            let mut bad = ct.clone();
            let at = flip.index(bad.len());
            bad[at] ^= 1 << bit;
            prop_assert!(open(&dek, &bad).is_err(), "flip at {} of {} accepted", at, bad.len());
        }

        /// The header parser never panics and never accepts a short or oversized field.
        #[test]
        fn header_parser_is_total(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.push(VERSION);
            with_magic.extend_from_slice(&bytes);
            let _ = Header::decode(&bytes);
            let _ = Header::decode(&with_magic);
            let _ = Header::read_from(&mut &with_magic[..]);
        }
    }
}
