//! The PKCS#11 library context (one `C_Initialize` per process and module) and the
//! session pool.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, OnceLock};

use cryptoki::context::{CInitializeArgs, Function, Pkcs11};
use cryptoki::error::{Error, RvError};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;

/// Contexts by module path. A module may be initialized once per process, and a
/// finalized context would invalidate every session of every unit in it, so
/// contexts live as long as the process (tests in one binary share them).
static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();

pub(super) fn context(module: &Path) -> Result<Pkcs11, String> {
    let map = CONTEXTS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map
        .lock()
        .map_err(|_| "PKCS#11 context registry poisoned".to_string())?;
    if let Some(ctx) = map.get(module) {
        return Ok(ctx.clone());
    }
    let ctx = Pkcs11::new(module)
        .map_err(|e| format!("cannot load the PKCS#11 module {}: {e}", module.display()))?;
    match ctx.initialize(CInitializeArgs::OsThreads) {
        Ok(()) => {}
        // Someone else in this process initialized the module: sessions still work.
        Err(Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => return Err(format!("C_Initialize of {} failed: {e}", module.display())),
    }
    map.insert(module.to_path_buf(), ctx.clone());
    Ok(ctx)
}

/// The slot holding the token labelled `label` (slot numbers change when tokens
/// are added, so the label is the stable name).
pub(super) fn find_slot(ctx: &Pkcs11, label: &str) -> Result<Slot, String> {
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| format!("C_GetSlotList failed: {e}"))?;
    let mut seen = Vec::new();
    for slot in slots {
        let Ok(info) = ctx.get_token_info(slot) else {
            continue;
        };
        if info.label().trim_end() == label {
            return Ok(slot);
        }
        seen.push(info.label().trim_end().to_string());
    }
    Err(format!(
        "no PKCS#11 token labelled {label:?} (tokens present: {seen:?})"
    ))
}

/// Errors after which a session (or the login, or the whole token connection) is
/// gone: reopen, log in again and retry once.
pub(super) fn session_lost(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(
            RvError::SessionHandleInvalid
                | RvError::SessionClosed
                | RvError::UserNotLoggedIn
                | RvError::DeviceRemoved
                | RvError::DeviceError
                | RvError::TokenNotPresent
                | RvError::CryptokiNotInitialized,
            _
        )
    )
}

/// Errors that mean an object handle we kept is no longer valid.
pub(super) fn handle_stale(e: &Error) -> bool {
    matches!(
        e,
        Error::Pkcs11(
            RvError::KeyHandleInvalid
                | RvError::ObjectHandleInvalid
                | RvError::WrappingKeyHandleInvalid
                | RvError::UnwrappingKeyHandleInvalid,
            _
        )
    )
}

/// Opens a read-write session and logs the user in (the login is shared by all
/// sessions of the process, so "already logged in" is success).
pub(super) fn open_logged_in(ctx: &Pkcs11, slot: Slot, pin: &AuthPin) -> Result<Session, Error> {
    let session = ctx.open_rw_session(slot)?;
    match session.login(UserType::User, Some(pin)) {
        Ok(()) | Err(Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(e) => Err(e),
    }
}

fn poisoned() -> Error {
    Error::Pkcs11(RvError::GeneralError, Function::OpenSession)
}

struct PoolState {
    idle: Vec<(u64, Session)>,
    open: usize,
    generation: u64,
}

/// About one session per core. Sessions are opened lazily; a session that failed
/// is dropped (closed) instead of returned, and a generation bump after a
/// recovery retires every session opened before it.
pub(super) struct Pool {
    ctx: Pkcs11,
    slot: Slot,
    pin: AuthPin,
    max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

pub(super) struct Lease<'a> {
    pool: &'a Pool,
    session: Option<(u64, Session)>,
}

impl Lease<'_> {
    pub(super) fn session(&self) -> Option<&Session> {
        self.session.as_ref().map(|(_, s)| s)
    }

    /// Closes the session instead of returning it to the pool.
    pub(super) fn discard(mut self) {
        if let Some((_, s)) = self.session.take() {
            drop(s);
            self.pool.release(None);
        }
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.session.take() {
            self.pool.release(Some(entry));
        }
    }
}

impl Pool {
    pub(super) fn new(ctx: Pkcs11, slot: Slot, pin: AuthPin, max: usize) -> Self {
        Pool {
            ctx,
            slot,
            pin,
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                generation: 0,
            }),
            freed: Condvar::new(),
        }
    }

    pub(super) fn open_session(&self) -> Result<Session, Error> {
        open_logged_in(&self.ctx, self.slot, &self.pin)
    }

    pub(super) fn get(&self) -> Result<Lease<'_>, Error> {
        let mut st = self.state.lock().map_err(|_| poisoned())?;
        loop {
            if let Some(entry) = st.idle.pop() {
                return Ok(Lease {
                    pool: self,
                    session: Some(entry),
                });
            }
            if st.open < self.max {
                st.open += 1;
                let generation = st.generation;
                drop(st);
                return match self.open_session() {
                    Ok(s) => Ok(Lease {
                        pool: self,
                        session: Some((generation, s)),
                    }),
                    Err(e) => {
                        self.release(None);
                        Err(e)
                    }
                };
            }
            st = self.freed.wait(st).map_err(|_| poisoned())?;
        }
    }

    fn release(&self, entry: Option<(u64, Session)>) {
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        match entry {
            Some((generation, s)) if generation == st.generation => st.idle.push((generation, s)),
            // Retired or failed: closing it (drop) frees the slot for a fresh one.
            _ => st.open = st.open.saturating_sub(1),
        }
        drop(st);
        self.freed.notify_one();
    }

    /// Retires every pooled session (after a lost login or token connection).
    pub(super) fn retire_all(&self) {
        let old = match self.state.lock() {
            Ok(mut st) => {
                st.generation += 1;
                let old = std::mem::take(&mut st.idle);
                st.open = st.open.saturating_sub(old.len());
                old
            }
            Err(_) => return,
        };
        drop(old);
        self.freed.notify_all();
    }
}
