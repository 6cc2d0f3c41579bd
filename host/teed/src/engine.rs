//! The daemon's side of the key engine: a bounded pool of engine sessions,
//! each owned by one thread for its whole life (so a backend need not be
//! `Send`), fed from one bounded queue.
//!
//! Each session is a [`Client`] over a transport opened by the pool's
//! opener — in `teed`, [`hakeys_client::backend::Backend::open`], so the simulator
//! and the TEE go through exactly this code. When a call fails in the
//! transport (the TA or tee-supplicant restarted, the TEE is busy), the
//! session is dropped and the caller gets `retry`; the next request opens a
//! new one. Plaintexts travel in wiped-on-drop buffers.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hakeys_proto::{Status, StatusResponse};
use zeroize::{Zeroize, Zeroizing};

use hakeys_client::client::{Client, ClientError, Transport};
use teed_protocol::Code;

/// One request for the engine.
pub enum Job {
    /// Open `blob`, requiring it to belong to `namespace`.
    Unseal {
        blob: Vec<u8>,
        namespace: String,
    },
    Seal {
        namespace: String,
        plaintext: Zeroizing<Vec<u8>>,
    },
    Pubkey,
    Status,
    /// End the boot phase (teed's start-up check, never a caller's request).
    BootDone,
}

/// The engine's answer.
pub enum Answer {
    Unseal {
        namespace: String,
        plaintext: Zeroizing<Vec<u8>>,
    },
    Seal {
        blob: Vec<u8>,
    },
    Pubkey {
        sec1: Vec<u8>,
    },
    Status(StatusResponse),
    BootDone,
}

/// Why a job failed: the code for the caller and one line without secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: Code,
    pub message: String,
}

fn failure(code: Code, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

type Reply = SyncSender<Result<Answer, Failure>>;

/// Opens one engine session (for `teed`, a [`hakeys_client::backend::Backend`]).
pub type Opener<T> = dyn Fn() -> Result<T, String> + Send + Sync;

/// A handle to the pool; cheap to share between connection threads.
pub struct EnginePool {
    queue: SyncSender<(Job, Reply)>,
    /// How long a caller waits for the engine before getting `retry`.
    pub timeout: Duration,
}

/// Jobs waiting for a session, at most.
pub const QUEUE_LEN: usize = 256;

impl EnginePool {
    /// Start `sessions` session threads (at least one). Each opens its
    /// session at once; if any cannot, this fails with its reason.
    pub fn start<T: Transport + 'static>(
        sessions: usize,
        opener: Arc<Opener<T>>,
        timeout: Duration,
    ) -> Result<EnginePool, String> {
        let (queue, rx) = mpsc::sync_channel::<(Job, Reply)>(QUEUE_LEN);
        let rx = Arc::new(Mutex::new(rx));
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let sessions = sessions.max(1);
        for i in 0..sessions {
            let rx = Arc::clone(&rx);
            let opener = Arc::clone(&opener);
            let ready = ready_tx.clone();
            std::thread::Builder::new()
                .name(format!("engine-{i}"))
                .spawn(move || session_thread(opener, rx, ready))
                .map_err(|e| format!("cannot start an engine thread: {e}"))?;
        }
        drop(ready_tx);
        for _ in 0..sessions {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("an engine thread stopped while starting".into()),
            }
        }
        Ok(EnginePool { queue, timeout })
    }

    /// Run `job` on the next free session.
    pub fn call(&self, job: Job) -> Result<Answer, Failure> {
        let (tx, rx) = mpsc::sync_channel(1);
        match self.queue.try_send((job, tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(failure(
                    Code::Engine(Status::Busy),
                    "the key engine is busy; retry",
                ))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(failure(
                    Code::Engine(Status::Internal),
                    "the key engine has stopped",
                ))
            }
        }
        match rx.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(failure(
                Code::Retry,
                "the key engine did not answer in time; retry",
            )),
            Err(RecvTimeoutError::Disconnected) => Err(failure(
                Code::Engine(Status::Internal),
                "the key engine stopped while answering",
            )),
        }
    }
}

fn session_thread<T: Transport>(
    opener: Arc<Opener<T>>,
    rx: Arc<Mutex<Receiver<(Job, Reply)>>>,
    ready: mpsc::Sender<Result<(), String>>,
) {
    let mut session: Option<Client<T>> = match opener() {
        Ok(t) => {
            let _ = ready.send(Ok(()));
            Some(Client::new(t))
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    drop(ready);
    loop {
        let next = match rx.lock() {
            Ok(guard) => guard.recv(),
            Err(_) => return,
        };
        let Ok((job, reply)) = next else {
            // The pool is gone.
            return;
        };
        if session.is_none() {
            match opener() {
                Ok(t) => session = Some(Client::new(t)),
                Err(e) => {
                    let _ = reply.send(Err(failure(
                        Code::Retry,
                        format!("key engine unavailable, reconnecting: {e}"),
                    )));
                    continue;
                }
            }
        }
        let Some(client) = session.as_mut() else {
            continue;
        };
        let result = run(client, job);
        let answer = match result {
            Ok(a) => Ok(a),
            Err(ClientError::Status(s)) => Err(failure(Code::Engine(s), s.message())),
            Err(ClientError::Transport(t)) => {
                // Drop the session; the next request reconnects.
                session = None;
                Err(if t.retryable {
                    failure(Code::Retry, format!("key engine restarting, retry: {t}"))
                } else {
                    failure(
                        Code::Engine(Status::Internal),
                        format!("key engine unavailable: {t}"),
                    )
                })
            }
            Err(ClientError::Protocol(e)) => Err(failure(
                Code::Engine(Status::Internal),
                format!("invalid response from the key engine: {e}"),
            )),
            Err(ClientError::Request(m)) => Err(failure(Code::Engine(Status::BadMessage), m)),
        };
        // If the caller gave up waiting, the answer is dropped (and wiped).
        let _ = reply.send(answer);
    }
}

fn run<T: Transport>(c: &mut Client<T>, job: Job) -> Result<Answer, ClientError> {
    match job {
        Job::Unseal { blob, namespace } => {
            let mut r = c.unseal(&blob, Some(&namespace))?;
            let plaintext = Zeroizing::new(r.plaintext.to_vec());
            r.plaintext.as_mut_slice().zeroize();
            Ok(Answer::Unseal {
                namespace: r.namespace.to_string(),
                plaintext,
            })
        }
        Job::Seal {
            namespace,
            plaintext,
        } => Ok(Answer::Seal {
            blob: c.seal(&namespace, &plaintext)?,
        }),
        Job::Pubkey => Ok(Answer::Pubkey { sec1: c.pubkey()? }),
        Job::Status => Ok(Answer::Status(c.status()?)),
        Job::BootDone => c.boot_done().map(|()| Answer::BootDone),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hakeys_client::client::TransportError;
    use hakeys_engine::{Engine, MemoryStorage, ObjectId, SecureStorage, StorageError};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Storage shared by every session the opener makes (the TA's RPMB).
    #[derive(Clone, Default)]
    struct Mem(Arc<Mutex<MemoryStorage>>);

    impl SecureStorage for Mem {
        fn read(&mut self, id: ObjectId, buf: &mut [u8]) -> Result<Option<usize>, StorageError> {
            self.0.lock().map_err(|_| StorageError::Io)?.read(id, buf)
        }
        fn write(&mut self, id: ObjectId, data: &[u8]) -> Result<(), StorageError> {
            self.0.lock().map_err(|_| StorageError::Io)?.write(id, data)
        }
    }

    /// An engine session that "dies" (like a TA after a crash) on chosen calls.
    struct Flaky {
        engine: Engine<Mem, hakeys_client::OsEntropy>,
        calls: Arc<AtomicUsize>,
        die_on: usize,
    }

    impl Transport for Flaky {
        fn call(&mut self, req: &[u8], out: &mut [u8]) -> Result<usize, TransportError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n == self.die_on {
                return Err(TransportError {
                    message: "the trusted application died".into(),
                    retryable: true,
                });
            }
            Ok(self.engine.handle(req, out))
        }
    }

    #[test]
    fn a_dead_session_costs_one_retry_then_reconnects() {
        let storage = Mem::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let opens = Arc::new(AtomicUsize::new(0));
        let (s, c, o) = (storage.clone(), Arc::clone(&calls), Arc::clone(&opens));
        let opener: Arc<Opener<Flaky>> = Arc::new(move || {
            o.fetch_add(1, Ordering::SeqCst);
            Ok(Flaky {
                engine: Engine::new(s.clone(), hakeys_client::OsEntropy),
                calls: Arc::clone(&c),
                die_on: 3,
            })
        });
        let pool = EnginePool::start(1, opener, Duration::from_secs(10)).unwrap();
        // Initialise through a direct engine on the same storage.
        let mut admin = Client::new(Flaky {
            engine: Engine::new(storage.clone(), hakeys_client::OsEntropy),
            calls: Arc::new(AtomicUsize::new(0)),
            die_on: usize::MAX,
        });
        admin.init().unwrap();
        let Ok(Answer::Seal { blob }) = pool.call(Job::Seal {
            namespace: "ha/core".into(),
            plaintext: Zeroizing::new(b"pw".to_vec()),
        }) else {
            panic!("seal failed")
        };
        let unseal = || {
            pool.call(Job::Unseal {
                blob: blob.clone(),
                namespace: "ha/core".into(),
            })
        };
        assert!(matches!(unseal(), Ok(Answer::Unseal { .. })));
        assert!(matches!(pool.call(Job::Status), Ok(Answer::Status(_))));
        // Call number 3 dies: the caller sees `retry`, nothing worse ...
        match unseal() {
            Err(f) => assert_eq!(f.code, Code::Retry, "{f:?}"),
            Ok(_) => panic!("expected a retryable failure"),
        }
        // ... and the next request reconnects and works.
        match unseal() {
            Ok(Answer::Unseal {
                plaintext,
                namespace,
            }) => {
                assert_eq!(plaintext.as_slice(), b"pw");
                assert_eq!(namespace, "ha/core");
            }
            _ => panic!("no reconnect"),
        }
        assert_eq!(opens.load(Ordering::SeqCst), 2);
        // Engine statuses pass through unchanged.
        match pool.call(Job::Unseal {
            blob: blob.clone(),
            namespace: "ha/other".into(),
        }) {
            Err(f) => assert_eq!(f.code, Code::Engine(Status::NamespaceMismatch)),
            Ok(_) => panic!("namespace not enforced"),
        }
    }

    #[test]
    fn an_engine_that_cannot_open_fails_the_start() {
        let opener: Arc<Opener<Flaky>> = Arc::new(|| Err("no TEE here".into()));
        let e = EnginePool::start(2, opener, Duration::from_secs(1))
            .err()
            .unwrap();
        assert!(e.contains("no TEE"));
    }
}
