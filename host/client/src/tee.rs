//! The TEE backend: encoded requests to the trusted application over the
//! TEE Client API (libteec, through `optee-teec`).
//!
//! One TEE context per process, shared by every backend opened in it (the
//! daemon's pool opens one backend, so one session, per worker); the TA is
//! single-instance and keep-alive, so every session (teectl's, the
//! daemon's) reaches the same engine and the same boot-phase lock. If the TA
//! or the supplicant restarts, the failed call reports a retryable error and
//! the next call opens a new session.

use hakeys_proto::{MAX_MESSAGE_LEN, TA_CMD_REQUEST, TA_UUID_STR};
use optee_teec::{
    ConnectionMethods, Context, ErrorKind, Operation, ParamNone, ParamTmpRef, Session, Uuid,
};

use crate::client::{Transport, TransportError};

/// The process's one TEE context, opened on first use.
static CONTEXT: std::sync::Mutex<Option<Context>> = std::sync::Mutex::new(None);

/// The TEE backend: one session on the shared context.
pub struct TeeBackend {
    session: Option<Session>,
}

/// The TEE could not be reached.
pub use crate::backend::BackendError as TeeError;

fn describe(e: &optee_teec::Error) -> String {
    match e.kind() {
        ErrorKind::ItemNotFound => format!(
            "the hakeys trusted application {TA_UUID_STR} is not installed (0x{:08x})",
            e.raw_code()
        ),
        ErrorKind::TargetDead => format!(
            "the trusted application died (0x{:08x}); retry",
            e.raw_code()
        ),
        ErrorKind::Busy => format!("the TEE is busy (0x{:08x}); retry", e.raw_code()),
        _ => format!("TEE error 0x{:08x} ({:?})", e.raw_code(), e.kind()),
    }
}

fn retryable(e: &optee_teec::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::TargetDead | ErrorKind::Busy | ErrorKind::Communication
    )
}

impl TeeBackend {
    /// Open the TEE context and a session to the TA.
    pub fn open() -> Result<TeeBackend, TeeError> {
        let mut b = TeeBackend { session: None };
        b.session().map_err(|e| TeeError(e.message))?;
        Ok(b)
    }

    fn session(&mut self) -> Result<&mut Session, TransportError> {
        if self.session.is_none() {
            let uuid = Uuid::parse_str(TA_UUID_STR).map_err(|_| TransportError {
                message: "invalid TA UUID".into(),
                retryable: false,
            })?;
            let mut guard = CONTEXT.lock().unwrap_or_else(|p| p.into_inner());
            if guard.is_none() {
                let ctx = Context::new().map_err(|e| TransportError {
                    message: format!(
                        "cannot open the TEE ({}): {}",
                        crate::backend::TEE_DEVICE,
                        describe(&e)
                    ),
                    retryable: retryable(&e),
                })?;
                *guard = Some(ctx);
            }
            let ctx = guard.as_mut().ok_or_else(|| TransportError {
                message: "no TEE context".into(),
                retryable: true,
            })?;
            // A user login: the kernel stamps the session with this
            // process's effective uid, and the TA allows lifecycle and
            // recovery operations only to root's (ta/src/main.rs `caller`).
            let s = ctx
                .open_session_with_login(uuid, ConnectionMethods::LoginUser)
                .map_err(|e| TransportError {
                    message: format!(
                        "cannot open a session to the trusted application: {}",
                        describe(&e)
                    ),
                    retryable: retryable(&e),
                })?;
            self.session = Some(s);
        }
        self.session.as_mut().ok_or_else(|| TransportError {
            message: "no session".into(),
            retryable: true,
        })
    }
}

impl Transport for TeeBackend {
    fn call(&mut self, request: &[u8], response: &mut [u8]) -> Result<usize, TransportError> {
        let out = response
            .get_mut(..MAX_MESSAGE_LEN)
            .ok_or_else(|| TransportError {
                message: "response buffer too small".into(),
                retryable: false,
            })?;
        let session = self.session()?;
        let mut op = Operation::new(
            0,
            ParamTmpRef::new_input(request),
            ParamTmpRef::new_output(out),
            ParamNone,
            ParamNone,
        );
        match session.invoke_command(TA_CMD_REQUEST, &mut op) {
            Ok(()) => {
                let (_, p1, _, _) = op.parameters();
                let n = p1.updated_size();
                if n > MAX_MESSAGE_LEN {
                    return Err(TransportError {
                        message: "the TA reported an impossible response size".into(),
                        retryable: false,
                    });
                }
                Ok(n)
            }
            Err(e) => {
                if retryable(&e) {
                    // Reconnect on the next call.
                    self.session = None;
                }
                Err(TransportError {
                    message: describe(&e),
                    retryable: retryable(&e),
                })
            }
        }
    }
}
