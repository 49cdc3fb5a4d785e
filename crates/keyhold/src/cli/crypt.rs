//! `keyhold encrypt` / `keyhold decrypt`: files of any size under a fresh data key wrapped
//! by a root key (format: keyhold_client::stream). The KMS is asked once per file; the
//! data itself never leaves this machine.

use std::fs::File;
use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use keyhold_client::envelope::Envelope;
use keyhold_client::model::state_name;
use keyhold_client::stream::{self, Header};
use keyhold_client::{Client, ClientError};
use tokio::runtime::Runtime;

use super::error::{CliError, CliResult};
use super::output;
use super::pipe::{ReadAhead, WriteBehind};
use super::profile::Output;

/// Files at least this large get a progress bar (when stderr is a terminal).
const PROGRESS_FROM: u64 = 64 * 1024 * 1024;

#[derive(Args, Debug)]
pub struct EncryptArgs {
    /// Root key id or alias that wraps the file's data key.
    #[arg(long, short = 'k')]
    pub key: String,
    /// Plaintext file (`-` for stdin).
    #[arg(value_name = "IN")]
    pub in_file: PathBuf,
    /// Encrypted file to write (`-` for stdout).
    #[arg(value_name = "OUT")]
    pub out_file: PathBuf,
    /// Plaintext bytes per segment (1024 ..= 16 MiB).
    #[arg(long, default_value_t = stream::DEFAULT_SEGMENT)]
    pub segment_size: u32,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Args, Debug)]
pub struct DecryptArgs {
    /// Encrypted file (`-` for stdin).
    #[arg(value_name = "IN")]
    pub in_file: PathBuf,
    /// Plaintext file to write (`-` for stdout).
    #[arg(value_name = "OUT")]
    pub out_file: PathBuf,
    #[arg(long)]
    pub no_progress: bool,
}

fn open_input(p: &Path) -> CliResult<(ReadAhead, Option<u64>)> {
    if p == Path::new("-") {
        return Ok((ReadAhead::new(Box::new(std::io::stdin()))?, None));
    }
    let f = File::open(p).map_err(|e| CliError::Local(format!("{}: {e}", p.display())))?;
    let len = f.metadata().ok().map(|m| m.len());
    Ok((ReadAhead::new(Box::new(f))?, len))
}

/// The output file, written under a temporary name and renamed only on success, so a
/// failed run (a refused segment, a full disk) never leaves a plausible-looking file.
struct Sink {
    writer: WriteBehind,
    temp: Option<(PathBuf, PathBuf)>,
}

impl Sink {
    fn create(p: &Path) -> CliResult<Sink> {
        if p == Path::new("-") {
            return Ok(Sink {
                writer: WriteBehind::new(Box::new(std::io::stdout()))?,
                temp: None,
            });
        }
        // A device or a pipe (/dev/null, a FIFO) is written in place: only regular files
        // get the temporary name and the rename.
        if std::fs::metadata(p).is_ok_and(|m| !m.is_file()) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(p)
                .map_err(|e| CliError::Local(format!("{}: {e}", p.display())))?;
            return Ok(Sink {
                writer: WriteBehind::new(Box::new(f))?,
                temp: None,
            });
        }
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temp = p.with_file_name(format!(".{name}.keyhold-partial-{}", std::process::id()));
        let f =
            File::create(&temp).map_err(|e| CliError::Local(format!("{}: {e}", temp.display())))?;
        Ok(Sink {
            writer: WriteBehind::new(Box::new(f))?,
            temp: Some((temp, p.to_path_buf())),
        })
    }

    fn finish(mut self) -> CliResult<()> {
        self.writer.finish()?;
        if let Some((temp, dest)) = self.temp.take() {
            std::fs::rename(&temp, &dest)
                .map_err(|e| CliError::Local(format!("{}: {e}", dest.display())))?;
        }
        Ok(())
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some((temp, _)) = &self.temp {
            // Stop the writer thread first, so nothing recreates the file.
            self.writer.abandon();
            let _ = std::fs::remove_file(temp);
        }
    }
}

fn progress(len: Option<u64>, disabled: bool) -> ProgressBar {
    match len {
        Some(n) if n >= PROGRESS_FROM && !disabled => {
            // indicatif draws nothing when stderr is not a terminal.
            let pb = ProgressBar::new(n);
            if let Ok(style) = ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            ) {
                pb.set_style(style);
            }
            pb
        }
        _ => ProgressBar::hidden(),
    }
}

pub fn encrypt(rt: &Runtime, c: &Client, out: Output, a: EncryptArgs) -> CliResult<()> {
    let (mut input, len) = open_input(&a.in_file)?;
    let env = Envelope::new(c.clone()).with_segment_size(a.segment_size);
    let (dek, header) = rt.block_on(env.begin_encrypt(&a.key))?;
    let mut sink = Sink::create(&a.out_file)?;
    let pb = progress(len, a.no_progress);
    let n = stream::encrypt(&dek, &header, &mut input, &mut sink.writer, &mut |done| {
        pb.set_position(done)
    })?;
    pb.finish_and_clear();
    sink.finish()?;
    report(out, &a.out_file, "encrypted", n, &header)
}

pub fn decrypt(rt: &Runtime, c: &Client, out: Output, a: DecryptArgs) -> CliResult<()> {
    let (mut input, len) = open_input(&a.in_file)?;
    let header = Header::read_from(&mut input)?;
    let env = Envelope::new(c.clone());
    let dek = match rt.block_on(env.open_dek(&header)) {
        Ok(d) => d,
        Err(keyhold_client::envelope::EnvelopeError::Kms(e)) => {
            return Err(unwrap_failure(rt, c, &header, e))
        }
        Err(e) => return Err(e.into()),
    };
    let mut sink = Sink::create(&a.out_file)?;
    let pb = progress(len, a.no_progress);
    let n = stream::decrypt(&dek, &header, &mut input, &mut sink.writer, &mut |done| {
        pb.set_position(done)
    })?;
    pb.finish_and_clear();
    sink.finish()?;
    report(out, &a.out_file, "decrypted", n, &header)
}

/// Says why the file's data key could not be unwrapped, in terms of the root key.
fn unwrap_failure(rt: &Runtime, c: &Client, h: &Header, e: ClientError) -> CliError {
    let id = &h.key_id;
    let hint = match (e.status(), e.code()) {
        (_, Some("KEY_ACTION_INVALID_STATE_ERR")) => {
            let state = rt
                .block_on(c.get_key_metadata(id))
                .map(|k| format!("{} ({})", state_name(k.state), k.state))
                .unwrap_or_else(|_| "not active".into());
            format!("the file's root key {id} is {state}: it cannot unwrap the file's data key until it is enabled (`keyhold keys enable {id}`)")
        }
        (Some(410), _) => format!("the file's root key {id} is deleted; restore it (`keyhold keys restore {id}`) to decrypt"),
        (Some(404), _) => format!("the file's root key {id} does not exist in this instance (wrong profile or instance?)"),
        (Some(401), _) | (Some(403), _) => {
            format!("this API key may not unwrap with the file's root key {id} (or is invalid)")
        }
        (Some(422), _) | (Some(400), _) => {
            "the file's wrapped data key was refused: the header was modified, or the file was made for another key".to_string()
        }
        _ => return CliError::Api(e),
    };
    CliError::Hinted { err: e, hint }
}

fn report(out: Output, path: &Path, verb: &str, n: u64, h: &Header) -> CliResult<()> {
    if path == Path::new("-") {
        // stdout carries the data; say nothing there.
        return Ok(());
    }
    output::done(
        out,
        &format!(
            "{verb} {n} bytes -> {} (root key {})",
            path.display(),
            h.key_id
        ),
        serde_json::json!({"bytes": n, "output": path.display().to_string(), "keyId": h.key_id,
            "keyVersion": h.key_version}),
    )
}
