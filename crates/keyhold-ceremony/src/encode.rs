//! Length-prefixed encoding: unambiguous bytes to sign or to bind as AAD.

/// Appends `u32 big-endian length ‖ bytes`.
pub(crate) fn lp(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// The length-prefixed concatenation of `parts`.
pub(crate) fn lps(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for p in parts {
        lp(&mut out, p);
    }
    out
}

pub(crate) fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub(crate) fn unb64(text: &str, what: &str) -> crate::Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| crate::CeremonyError::Malformed(format!("{what} is not base64")))
}
