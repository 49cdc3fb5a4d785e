//! The stored-blob format: `format 1 | AES-KWP(master, material) | HMAC-SHA256 tag`.
//! The tag covers the binding and the wrapped bytes (DESIGN §2).

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::hmac;
use aws_lc_rs::key_wrap::{AesKek, KeyWrapPadded, AES_256};
use zeroize::Zeroizing;

use crate::{Binding, CryptoError, Result};

const FORMAT: u8 = 1;
const TAG_LEN: usize = 32;

#[derive(Clone)]
pub(crate) struct BlobSealer {
    kek_bytes: Zeroizing<[u8; 32]>,
    mac: hmac::Key,
}

pub(crate) fn binding_bytes(b: &Binding<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    for part in [
        b.purpose.label(),
        b.instance_id.as_bytes(),
        b.object_id.as_bytes(),
        b.version_id.as_bytes(),
    ] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

impl BlobSealer {
    pub(crate) fn new(kek_bytes: Zeroizing<[u8; 32]>, mac_bytes: &[u8]) -> Self {
        BlobSealer {
            kek_bytes,
            mac: hmac::Key::new(hmac::HMAC_SHA256, mac_bytes),
        }
    }

    fn tag(&self, binding: &Binding<'_>, wrapped: &[u8]) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.mac);
        ctx.update(&binding_bytes(binding));
        ctx.update(wrapped);
        ctx.sign()
    }

    pub(crate) fn seal(&self, binding: &Binding<'_>, material: &[u8]) -> Result<Vec<u8>> {
        if material.is_empty() {
            return Err(CryptoError::InvalidInput("empty key material"));
        }
        let kek =
            AesKek::new(&AES_256, &self.kek_bytes[..]).map_err(|_| CryptoError::Unit("kek"))?;
        let mut out = vec![0u8; 1 + material.len() + 16 + TAG_LEN];
        out[0] = FORMAT;
        let n = kek
            .wrap_with_padding(material, &mut out[1..])
            .map_err(|_| CryptoError::Unit("key wrap"))?
            .len();
        out.truncate(1 + n);
        let tag = self.tag(binding, &out[1..]);
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    pub(crate) fn open(&self, binding: &Binding<'_>, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if blob.len() < 1 + 16 + TAG_LEN || blob[0] != FORMAT {
            return Err(CryptoError::BlobIntegrity);
        }
        let (wrapped, tag) = blob[1..].split_at(blob.len() - 1 - TAG_LEN);
        let expected = self.tag(binding, wrapped);
        verify_slices_are_equal(expected.as_ref(), tag).map_err(|_| CryptoError::BlobIntegrity)?;
        let kek =
            AesKek::new(&AES_256, &self.kek_bytes[..]).map_err(|_| CryptoError::Unit("kek"))?;
        let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
        let n = kek
            .unwrap_with_padding(wrapped, &mut out)
            .map_err(|_| CryptoError::BlobIntegrity)?
            .len();
        out.truncate(n);
        Ok(out)
    }
}
