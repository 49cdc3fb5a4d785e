//! Passphrases: from a file, an environment variable, or a prompt on the
//! terminal; never from the command line (it would show in `ps` and history).

use std::path::Path;

use zeroize::Zeroizing;

use super::CliError;

/// Where a passphrase comes from.
pub struct Source<'a> {
    /// e.g. "administrator key alice.key".
    pub what: String,
    pub file: Option<&'a Path>,
    pub env: &'static str,
}

const MIN_NEW_LEN: usize = 8;

fn from_file(path: &Path) -> Result<Zeroizing<String>, CliError> {
    let text = Zeroizing::new(
        std::fs::read_to_string(path)
            .map_err(|e| CliError::Io(format!("cannot read {}: {e}", path.display())))?,
    );
    let trimmed = text.strip_suffix('\n').unwrap_or(&text);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
    Ok(Zeroizing::new(trimmed.to_string()))
}

/// Reads the passphrase of an existing file.
pub fn existing(src: &Source<'_>) -> Result<Zeroizing<String>, CliError> {
    if let Some(f) = src.file {
        return from_file(f);
    }
    if let Ok(v) = std::env::var(src.env) {
        return Ok(Zeroizing::new(v));
    }
    rpassword::prompt_password(format!("Passphrase for {}: ", src.what))
        .map(Zeroizing::new)
        .map_err(|_| {
            CliError::Usage(format!(
                "no passphrase for {}: run at a terminal, or give it in a file or ${}",
                src.what, src.env
            ))
        })
}

/// Reads a new passphrase (asked twice at a terminal).
pub fn new(src: &Source<'_>) -> Result<Zeroizing<String>, CliError> {
    let p = if src.file.is_some() || std::env::var(src.env).is_ok() {
        existing(src)?
    } else {
        let a = existing(src)?;
        let b = rpassword::prompt_password("Repeat it: ")
            .map(Zeroizing::new)
            .map_err(|_| CliError::Usage("cannot read the passphrase again".into()))?;
        if *a != *b {
            return Err(CliError::Usage("the passphrases differ".into()));
        }
        a
    };
    if p.chars().count() < MIN_NEW_LEN {
        return Err(CliError::Usage(format!(
            "a passphrase has at least {MIN_NEW_LEN} characters"
        )));
    }
    Ok(p)
}
