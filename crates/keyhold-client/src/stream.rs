//! The Keyhold encrypted-file format: a file of any size under one data encryption key
//! (DEK), in segments, with the online authenticated-encryption construction STREAM
//! (Hoang, Reyhanitabar, Rogaway, Vizár 2015) over AES-256-GCM.
//!
//! ```text
//! header   magic      8 bytes  "KEYHOLD\0"
//!          version    1 byte   1
//!          algorithm  1 byte   1 = AES-256-GCM STREAM
//!          seg_size   u32 BE   plaintext bytes per segment (1 KiB ..= 16 MiB; default 64 KiB)
//!          prefix     7 bytes  random nonce prefix, fresh for every file
//!          key_id     u16 BE length ‖ UTF-8   the root key's id (UUID)
//!          key_ver    u16 BE length ‖ UTF-8   the root key version that wrapped the DEK (informational)
//!          wrapped    u16 BE length ‖ ASCII   the wrapped DEK, as the KMS's wrap returned it
//! segments S_0 … S_n   each = AES-256-GCM(DEK, nonce_i, aad = header bytes, P_i) ‖ 16-byte tag
//!          nonce_i = prefix (7) ‖ i as u32 BE (4) ‖ last flag (1: 0x01 on S_n, else 0x00)
//!          P_0 … P_{n-1} are exactly seg_size bytes; P_n is 0 ..= seg_size bytes.
//! ```
//!
//! Why each part is there:
//! - the counter in the nonce refuses reordered, dropped or duplicated segments;
//! - the last-segment flag refuses truncation at a segment boundary (the new last
//!   segment was sealed with flag 0) and data appended after the end;
//! - the whole header is every segment's AAD, so editing the key id, the segment size or
//!   the wrapped DEK makes the first segment fail to open;
//! - a fresh random prefix per file keeps nonces unique even when a cached DEK encrypts
//!   several files (a 56-bit prefix: keep the uses of one DEK far below 2^28).
//!
//! Memory is bounded by one segment whatever the file size. Output written before a
//! segment fails to authenticate must be discarded: the decryptor's caller writes to a
//! temporary file and renames it only on success.

use std::io::{ErrorKind, Read, Write};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use zeroize::Zeroizing;

pub const MAGIC: &[u8; 8] = b"KEYHOLD\0";
pub const VERSION: u8 = 1;
pub const ALG_AES256GCM_STREAM: u8 = 1;
pub const DEFAULT_SEGMENT: u32 = 64 * 1024;
pub const MIN_SEGMENT: u32 = 1024;
pub const MAX_SEGMENT: u32 = 16 * 1024 * 1024;
pub const TAG_LEN: usize = 16;
pub const PREFIX_LEN: usize = 7;
const MAX_FIELD: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not a Keyhold encrypted file (bad magic)")]
    NotKeyhold,
    #[error("unsupported Keyhold file format version {0}")]
    UnsupportedVersion(u8),
    #[error("malformed Keyhold file header: {0}")]
    BadHeader(&'static str),
    #[error("the file is truncated: it ends before its last segment")]
    Truncated,
    #[error("segment {0} failed authentication: the file was truncated, reordered or modified, or the header does not belong to it")]
    Tampered(u64),
    #[error("file too large for one data key (2^32 segments)")]
    TooLong,
    #[error("invalid data key")]
    BadKey,
}

pub type Result<T> = std::result::Result<T, StreamError>;

/// A 256-bit data encryption key, zeroized on drop.
#[derive(Clone)]
pub struct Dek(Zeroizing<[u8; 32]>);

impl Dek {
    pub fn generate() -> Result<Dek> {
        let mut k = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(k.as_mut()).map_err(|_| StreamError::BadKey)?;
        Ok(Dek(k))
    }
    pub fn from_slice(b: &[u8]) -> Result<Dek> {
        let arr: [u8; 32] = b.try_into().map_err(|_| StreamError::BadKey)?;
        Ok(Dek(Zeroizing::new(arr)))
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Dek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dek(..)")
    }
}

/// The header fields. `encode` gives the exact bytes that are every segment's AAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub segment_size: u32,
    pub nonce_prefix: [u8; PREFIX_LEN],
    pub key_id: String,
    pub key_version: String,
    pub wrapped_dek: String,
}

impl Header {
    /// A header for a new file, with a fresh random nonce prefix.
    pub fn new(
        key_id: &str,
        key_version: &str,
        wrapped_dek: &str,
        segment_size: u32,
    ) -> Result<Header> {
        let mut nonce_prefix = [0u8; PREFIX_LEN];
        aws_lc_rs::rand::fill(&mut nonce_prefix).map_err(|_| StreamError::BadKey)?;
        let h = Header {
            segment_size,
            nonce_prefix,
            key_id: key_id.to_string(),
            key_version: key_version.to_string(),
            wrapped_dek: wrapped_dek.to_string(),
        };
        h.validate()?;
        Ok(h)
    }

    fn validate(&self) -> Result<()> {
        if !(MIN_SEGMENT..=MAX_SEGMENT).contains(&self.segment_size) {
            return Err(StreamError::BadHeader("segment size out of range"));
        }
        for f in [&self.key_id, &self.key_version, &self.wrapped_dek] {
            if f.len() > MAX_FIELD {
                return Err(StreamError::BadHeader("field too long"));
            }
        }
        if self.key_id.is_empty() || self.wrapped_dek.is_empty() {
            return Err(StreamError::BadHeader("empty key id or wrapped key"));
        }
        Ok(())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            32 + self.key_id.len() + self.key_version.len() + self.wrapped_dek.len(),
        );
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(ALG_AES256GCM_STREAM);
        out.extend_from_slice(&self.segment_size.to_be_bytes());
        out.extend_from_slice(&self.nonce_prefix);
        for f in [&self.key_id, &self.key_version, &self.wrapped_dek] {
            // validate() keeps every field below u16::MAX.
            out.extend_from_slice(&(f.len() as u16).to_be_bytes());
            out.extend_from_slice(f.as_bytes());
        }
        out
    }

    /// Parses a header from the start of `bytes`; answers it and its length.
    pub fn decode(bytes: &[u8]) -> Result<(Header, usize)> {
        let mut p = Parser { b: bytes, at: 0 };
        if p.take(MAGIC.len())? != MAGIC {
            return Err(StreamError::NotKeyhold);
        }
        let version = p.take(1)?[0];
        if version != VERSION {
            return Err(StreamError::UnsupportedVersion(version));
        }
        if p.take(1)?[0] != ALG_AES256GCM_STREAM {
            return Err(StreamError::BadHeader("unknown algorithm"));
        }
        let segment_size = u32::from_be_bytes(p.array()?);
        let nonce_prefix: [u8; PREFIX_LEN] = p.array()?;
        let key_id = p.string()?;
        let key_version = p.string()?;
        let wrapped_dek = p.string()?;
        let h = Header {
            segment_size,
            nonce_prefix,
            key_id,
            key_version,
            wrapped_dek,
        };
        h.validate()?;
        Ok((h, p.at))
    }

    /// Reads a header from a stream, consuming exactly its bytes.
    pub fn read_from<R: Read>(r: &mut R) -> Result<Header> {
        let mut fixed = vec![0u8; FIXED_LEN];
        read_header_part(r, &mut fixed)?;
        check_fixed(&fixed)?;
        for _ in 0..3 {
            let mut len = [0u8; 2];
            read_header_part(r, &mut len)?;
            let n = u16::from_be_bytes(len) as usize;
            if n > MAX_FIELD {
                return Err(StreamError::BadHeader("field too long"));
            }
            let start = fixed.len();
            fixed.extend_from_slice(&len);
            fixed.resize(start + 2 + n, 0);
            read_header_part(r, &mut fixed[start + 2..])?;
        }
        Header::decode(&fixed).map(|(h, _)| h)
    }

    /// [`Header::read_from`] for async readers.
    pub async fn read_from_async<R: AsyncRead + Unpin>(r: &mut R) -> Result<Header> {
        let mut fixed = vec![0u8; FIXED_LEN];
        read_header_part_async(r, &mut fixed).await?;
        check_fixed(&fixed)?;
        for _ in 0..3 {
            let mut len = [0u8; 2];
            read_header_part_async(r, &mut len).await?;
            let n = u16::from_be_bytes(len) as usize;
            if n > MAX_FIELD {
                return Err(StreamError::BadHeader("field too long"));
            }
            let start = fixed.len();
            fixed.extend_from_slice(&len);
            fixed.resize(start + 2 + n, 0);
            read_header_part_async(r, &mut fixed[start + 2..]).await?;
        }
        Header::decode(&fixed).map(|(h, _)| h)
    }
}

const FIXED_LEN: usize = 8 + 1 + 1 + 4 + PREFIX_LEN;

fn check_fixed(fixed: &[u8]) -> Result<()> {
    if &fixed[..MAGIC.len()] != MAGIC {
        return Err(StreamError::NotKeyhold);
    }
    if fixed[8] != VERSION {
        return Err(StreamError::UnsupportedVersion(fixed[8]));
    }
    Ok(())
}

fn eof_is_bad_header(e: std::io::Error) -> StreamError {
    if e.kind() == ErrorKind::UnexpectedEof {
        StreamError::BadHeader("file ends inside the header")
    } else {
        StreamError::Io(e)
    }
}

fn read_header_part<R: Read>(r: &mut R, buf: &mut [u8]) -> Result<()> {
    r.read_exact(buf).map_err(eof_is_bad_header)
}

async fn read_header_part_async<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> Result<()> {
    r.read_exact(buf)
        .await
        .map(|_| ())
        .map_err(eof_is_bad_header)
}

struct Parser<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Parser<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len());
        let end = end.ok_or(StreamError::BadHeader("file ends inside the header"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.take(N)?
            .try_into()
            .map_err(|_| StreamError::BadHeader("short field"))
    }
    fn string(&mut self) -> Result<String> {
        let n = u16::from_be_bytes(self.array()?) as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| StreamError::BadHeader("field is not UTF-8"))
    }
}

/// Seals or opens the segments of one file, in order.
pub struct Segments {
    key: LessSafeKey,
    prefix: [u8; PREFIX_LEN],
    aad: Vec<u8>,
    counter: u64,
    finished: bool,
}

impl Segments {
    pub fn new(dek: &Dek, header: &Header) -> Result<Segments> {
        let key = UnboundKey::new(&AES_256_GCM, dek.as_bytes()).map_err(|_| StreamError::BadKey)?;
        Ok(Segments {
            key: LessSafeKey::new(key),
            prefix: header.nonce_prefix,
            aad: header.encode(),
            counter: 0,
            finished: false,
        })
    }

    fn nonce(&self, last: bool) -> Result<Nonce> {
        let counter = u32::try_from(self.counter).map_err(|_| StreamError::TooLong)?;
        let mut n = [0u8; 12];
        n[..PREFIX_LEN].copy_from_slice(&self.prefix);
        n[PREFIX_LEN..11].copy_from_slice(&counter.to_be_bytes());
        n[11] = u8::from(last);
        Ok(Nonce::assume_unique_for_key(n))
    }

    /// Encrypts `buf` in place and answers the tag to write after it.
    pub fn seal(&mut self, buf: &mut [u8], last: bool) -> Result<[u8; TAG_LEN]> {
        if self.finished {
            return Err(StreamError::TooLong);
        }
        let nonce = self.nonce(last)?;
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&self.aad[..]), buf)
            .map_err(|_| StreamError::BadKey)?;
        self.counter += 1;
        self.finished = last;
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag.as_ref());
        Ok(t)
    }

    /// Decrypts one sealed segment (ciphertext ‖ tag) in place; answers the plaintext length.
    pub fn open(&mut self, buf: &mut [u8], last: bool) -> Result<usize> {
        let index = self.counter;
        if buf.len() < TAG_LEN {
            return Err(StreamError::Truncated);
        }
        let nonce = self.nonce(last)?;
        let n = self
            .key
            .open_in_place(nonce, Aad::from(&self.aad[..]), buf)
            .map_err(|_| StreamError::Tampered(index))?
            .len();
        self.counter += 1;
        self.finished = last;
        Ok(n)
    }
}

/// Fills `buf` from `r` as far as it goes; answers how many bytes it holds.
fn fill<R: Read>(r: &mut R, buf: &mut [u8], mut filled: usize) -> std::io::Result<usize> {
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

async fn fill_async<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
    mut filled: usize,
) -> std::io::Result<usize> {
    while filled < buf.len() {
        match r.read(&mut buf[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

// Both loops read one byte past a segment: only a reader that has reached its end tells
// that the segment in hand is the last one, which STREAM must know before sealing it.

/// Writes the header, then `r` encrypted, to `w`. `progress` gets the plaintext bytes
/// done after each segment. Answers the plaintext length.
pub fn encrypt<R: Read, W: Write>(
    dek: &Dek,
    header: &Header,
    r: &mut R,
    w: &mut W,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let mut seg = Segments::new(dek, header)?;
    w.write_all(&header.encode())?;
    let size = header.segment_size as usize;
    let mut buf = Zeroizing::new(vec![0u8; size + 1]);
    let mut filled = 0;
    let mut total = 0u64;
    loop {
        filled = fill(r, &mut buf, filled)?;
        let last = filled <= size;
        let n = filled.min(size);
        let tag = seg.seal(&mut buf[..n], last)?;
        w.write_all(&buf[..n])?;
        w.write_all(&tag)?;
        total += n as u64;
        progress(total);
        if last {
            break;
        }
        buf[0] = buf[size];
        filled = 1;
    }
    w.flush()?;
    Ok(total)
}

/// Decrypts the segments that follow a header already read from `r` (see
/// [`Header::read_from`]) into `w`. Answers the plaintext length.
pub fn decrypt<R: Read, W: Write>(
    dek: &Dek,
    header: &Header,
    r: &mut R,
    w: &mut W,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let mut seg = Segments::new(dek, header)?;
    let size = header.segment_size as usize + TAG_LEN;
    let mut buf = Zeroizing::new(vec![0u8; size + 1]);
    let mut filled = 0;
    let mut total = 0u64;
    loop {
        filled = fill(r, &mut buf, filled)?;
        let last = filled <= size;
        let n = filled.min(size);
        let pt = seg.open(&mut buf[..n], last)?;
        w.write_all(&buf[..pt])?;
        total += pt as u64;
        progress(total);
        if last {
            break;
        }
        buf[0] = buf[size];
        filled = 1;
    }
    w.flush()?;
    Ok(total)
}

/// [`encrypt`] over tokio's async reader and writer.
pub async fn encrypt_async<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    dek: &Dek,
    header: &Header,
    r: &mut R,
    w: &mut W,
) -> Result<u64> {
    let mut seg = Segments::new(dek, header)?;
    w.write_all(&header.encode()).await?;
    let size = header.segment_size as usize;
    let mut buf = Zeroizing::new(vec![0u8; size + 1]);
    let mut filled = 0;
    let mut total = 0u64;
    loop {
        filled = fill_async(r, &mut buf, filled).await?;
        let last = filled <= size;
        let n = filled.min(size);
        let tag = seg.seal(&mut buf[..n], last)?;
        w.write_all(&buf[..n]).await?;
        w.write_all(&tag).await?;
        total += n as u64;
        if last {
            break;
        }
        buf[0] = buf[size];
        filled = 1;
    }
    w.flush().await?;
    Ok(total)
}

/// [`decrypt`] over tokio's async reader and writer.
pub async fn decrypt_async<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    dek: &Dek,
    header: &Header,
    r: &mut R,
    w: &mut W,
) -> Result<u64> {
    let mut seg = Segments::new(dek, header)?;
    let size = header.segment_size as usize + TAG_LEN;
    let mut buf = Zeroizing::new(vec![0u8; size + 1]);
    let mut filled = 0;
    let mut total = 0u64;
    loop {
        filled = fill_async(r, &mut buf, filled).await?;
        let last = filled <= size;
        let n = filled.min(size);
        let pt = seg.open(&mut buf[..n], last)?;
        w.write_all(&buf[..pt]).await?;
        total += pt as u64;
        if last {
            break;
        }
        buf[0] = buf[size];
        filled = 1;
    }
    w.flush().await?;
    Ok(total)
}

#[cfg(test)]
mod tests;
