//! `teectl`: the command-line tool for boards, scripts and people.
//!
//! Data goes to stdout (blobs as one text line, plaintext byte-exact);
//! errors are one line on stderr with a documented exit code (see
//! `exit.rs` and the README). No secret is ever written to stderr.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hakeys_client::backend::{Backend, BackendKind};
use hakeys_client::client::{Client, ClientError};
use hakeys_client::{armor, sim};
use hakeys_proto::Status;
use teed_protocol::client::{with_retries, DaemonClient, DaemonError};
use teed_protocol::{Code, StatusAnswer};
use zeroize::Zeroizing;

mod exit;
mod luks;
mod recovery;
mod secrets;

#[derive(Parser)]
#[command(
    name = "teectl",
    version,
    about = "Hardware-backed secrets for Home Assistant OS boards",
    after_help = exit::HELP
)]
struct Cli {
    /// Which key engine to use: the TEE (default when /dev/tee0 exists) or
    /// the in-process simulator.
    #[arg(long, value_enum, global = true)]
    backend: Option<BackendArg>,
    /// Simulator state directory [env: TEECTL_STATE_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Go through the daemon (teed) for status, pubkey, seal and unseal.
    /// Also done without this flag when not root, with no --backend,
    /// --state-dir or TEECTL_STATE_DIR, and the daemon's socket exists.
    #[arg(long, global = true)]
    via_daemon: bool,
    /// The daemon's socket [env: HAKEYS_SOCKET] [default: /run/hakeys/teed.sock]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Give up with exit code 7 if the key engine has not answered within
    /// SECS seconds (0: wait forever). A TEE without a running supplicant
    /// otherwise blocks indefinitely. [env: TEECTL_TIMEOUT]
    #[arg(
        long,
        global = true,
        value_name = "SECS",
        env = "TEECTL_TIMEOUT",
        default_value_t = 30
    )]
    timeout: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum BackendArg {
    Sim,
    Tee,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the root key and device key (does nothing if already done;
    /// --new-identity replaces them).
    ///
    /// Never makes a key over lost or damaged state: that is exit 6, and
    /// only --new-identity replaces it.
    Init {
        /// DANGER: replace the device's root key and device key with new
        /// ones, whatever the device holds (also over lost or damaged
        /// state). Every secret sealed on this device so far, and every
        /// blob sealed to its old public key, can never be opened again.
        /// Needs --yes-destroy-every-sealed-secret.
        #[arg(long)]
        new_identity: bool,
        /// Confirms --new-identity.
        #[arg(long, requires = "new_identity")]
        yes_destroy_every_sealed_secret: bool,
    },
    /// Show whether the device is initialised, its epochs and boot phase.
    Status {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the device public key (PEM) that others can seal secrets to.
    Pubkey {
        /// Write a sealing key file: the line `hakeys-sealing-epoch: N` (the
        /// current epoch) before the PEM. Blobs sealed offline to it carry
        /// that epoch, so `retire` can end them; publish this form.
        #[arg(long, conflicts_with = "attestation")]
        with_epoch: bool,
        /// Print the attestation public key instead: it signs evidence
        /// (teectl attest) and nothing else; give it to `teectl verify`.
        #[arg(long)]
        attestation: bool,
    },
    /// Seal the secret on stdin; print the blob as one line.
    Seal {
        /// Namespace such as ha/core, addon/<slug>, boot/luks-data.
        #[arg(long, short = 'n')]
        namespace: String,
        /// Seal offline to this device public key (PEM, or a sealing key
        /// file from `teectl pubkey --with-epoch`, whose epoch the blob
        /// carries) instead of on this device; needs no TEE and no state.
        /// Boards refuse offline blobs in boot/ (see `rewrap --import-offline`).
        #[arg(long, value_name = "PUBKEY.pem")]
        to: Option<PathBuf>,
    },
    /// Open the blob on stdin; write the secret to stdout, byte-exact.
    Unseal {
        /// Refuse the blob unless it belongs to this namespace.
        #[arg(long, short = 'n')]
        namespace: Option<String>,
        /// Print one JSON object instead: namespace, kind (`device`: sealed
        /// on this board; `offline`: sealed to its public key, by anyone who
        /// has it), epoch (an offline blob's generation, 0 if unmarked) and
        /// the secret in base64.
        #[arg(long)]
        json: bool,
        /// Refuse blobs sealed offline to the public key: accept only blobs
        /// this board sealed itself.
        #[arg(long)]
        device_only: bool,
    },
    /// Start a new key epoch; new blobs are sealed under it.
    Rotate,
    /// Re-seal the blob on stdin under the current epoch (a blob sealed
    /// offline becomes a device blob).
    Rewrap {
        /// Import a blob sealed offline into a boot/ namespace, which boards
        /// refuse to unseal (anyone with the public key can make one: check
        /// where it came from first).
        #[arg(long)]
        import_offline: bool,
    },
    /// Refuse blobs of epochs below EPOCH from now on (cannot be undone);
    /// with --unmarked-offline, also blobs sealed offline without an epoch.
    #[command(group = clap::ArgGroup::new("what").required(true).multiple(true))]
    Retire {
        #[arg(long, value_name = "EPOCH", group = "what")]
        below: Option<u32>,
        /// Refuse unmarked blobs sealed offline (sealed to a bare public key,
        /// or before sealing key files existed) from now on.
        #[arg(long, group = "what")]
        unmarked_offline: bool,
    },
    /// Sign a challenge with the attestation key; print the evidence as one
    /// line.
    Attest {
        /// 1 to 64 bytes, hex.
        #[arg(long, value_name = "HEX")]
        challenge: String,
    },
    /// Check evidence on stdin against an attestation public key (`teectl
    /// pubkey --attestation`; for the first release's evidence, the device
    /// public key) and the challenge.
    Verify {
        #[arg(long, value_name = "PUBKEY.pem")]
        pubkey: PathBuf,
        #[arg(long, value_name = "HEX")]
        challenge: String,
    },
    /// End the boot phase: boot/ namespaces are refused until next boot.
    BootDone,
    /// Check that the key engine answers; time COUNT bare round trips.
    Ping {
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Seal blobs to another board: the engine opens each one and seals it
    /// to NEW.pem; the secret never leaves the engine.
    Reseal(recovery::ResealArgs),
    /// Make a recovery key (on any machine; no TEE needed).
    RecoveryKey(recovery::RecoveryKeyArgs),
    /// Export this device's keys sealed to a recovery key, as one line
    /// (hakeys-escrow:v1:...); the first escrow enrols that recovery key.
    Escrow(recovery::EscrowArgs),
    /// Open blobs of a dead board with its escrow and the recovery key (on
    /// any machine; no TEE): seal them to a new board, or print them.
    Recover(recovery::RecoverArgs),
    /// Home Assistant's secrets.yaml sealed at rest: import, render, set,
    /// check (docs/home-assistant.md).
    Secrets(secrets::SecretsArgs),
    /// Finish an in-place LUKS2 encryption whose every block is done but
    /// whose header still records it (a power cut at its very end, which
    /// cryptsetup cannot resume); no key and no TEE needed. Run by
    /// hakeys-encrypt-data.
    LuksFinish(luks::LuksFinishArgs),
}

/// A failure: the exit code and one line for stderr.
#[derive(Debug)]
struct Failure(i32, String);

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure(exit::for_client_error(&e), e.to_string())
    }
}

fn usage(msg: impl Into<String>) -> Failure {
    Failure(exit::USAGE, msg.into())
}

/// Read all of stdin, refusing more than `max` bytes.
fn read_stdin(max: usize, what: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let mut buf = Zeroizing::new(Vec::with_capacity(max.min(8192)));
    std::io::stdin()
        .lock()
        .take(max as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(|e| {
            Failure(
                exit::INTERNAL,
                format!("cannot read {what} from stdin: {e}"),
            )
        })?;
    if buf.len() > max {
        return Err(usage(format!("{what} on stdin is larger than {max} bytes")));
    }
    Ok(buf)
}

fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .map_err(|e| Failure(exit::INTERNAL, format!("cannot write to stdout: {e}")))
}

fn parse_hex(s: &str, what: &str) -> Result<Vec<u8>, Failure> {
    hex::decode(s.trim()).map_err(|_| usage(format!("{what} is not valid hex")))
}

fn read_pubkey(path: &Path) -> Result<p256::PublicKey, Failure> {
    read_sealing_key(path).map(|(pk, _)| pk)
}

/// A device public key file and its sealing epoch (`None`: a bare PEM).
fn read_sealing_key(path: &Path) -> Result<(p256::PublicKey, Option<u32>), Failure> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    armor::sealing_key_from_pem(&pem).map_err(|e| usage(format!("{}: {e}", path.display())))
}

/// The kind of a blob and its epoch as its header says, after a local
/// strict parse (no key). Once the engine has opened the blob, the header
/// is authentic: it is the AES-GCM associated data.
fn blob_kind(blob: &[u8]) -> Result<(hakeys_engine::blob::Kind, u32, String), Failure> {
    let p = hakeys_engine::blob::parse(blob)
        .map_err(|_| Failure(exit::REJECTED, Status::BlobRejected.message().into()))?;
    Ok((p.kind, p.epoch, p.namespace.to_owned()))
}

/// `unseal --json`: one line; the secret in base64, wiped after.
fn unseal_json(
    namespace: &str,
    kind: hakeys_engine::blob::Kind,
    epoch: u32,
    plaintext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, Failure> {
    use base64::Engine as _;
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(plaintext));
    let line = serde_json::to_vec(&serde_json::json!({
        "namespace": namespace,
        "kind": kind.name(),
        "epoch": epoch,
        "plaintext": b64.as_str(),
    }))
    .map_err(|e| Failure(exit::INTERNAL, format!("cannot encode the answer: {e}")))?;
    let mut line = Zeroizing::new(line);
    line.push(b'\n');
    Ok(line)
}

/// Refused by `--device-only`: a blob sealed offline (its header says so;
/// a tampered header does not open).
fn device_only_refusal() -> Failure {
    Failure(
        exit::REFUSED,
        "refused: the blob was sealed offline to this board's public key (--device-only)".into(),
    )
}

fn open_backend(cli: &Cli) -> Result<Client<Backend>, Failure> {
    let kind = cli.backend.map(|k| match k {
        BackendArg::Sim => BackendKind::Sim,
        BackendArg::Tee => BackendKind::Tee,
    });
    Backend::open(kind, cli.state_dir.as_deref())
        .map(Client::new)
        .map_err(|e| Failure(exit::UNAVAILABLE, e.to_string()))
}

fn version_string(v: u32) -> String {
    format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff)
}

fn run(cli: &Cli) -> Result<(), Failure> {
    // Offline operations first: they need no key engine and touch no state.
    match &cli.command {
        Command::Seal {
            namespace,
            to: Some(pem),
        } => {
            let (pk, epoch) = read_sealing_key(pem)?;
            let pt = read_stdin(hakeys_proto::MAX_SECRET_LEN, "the secret")?;
            let blob = hakeys_engine::blob::seal_to_device_in(
                &pk,
                namespace,
                &pt,
                epoch.unwrap_or(0),
                &mut hakeys_client::OsEntropy,
            )
            .map_err(|e| Failure(exit::for_status(e.status()), e.status().message().into()))?;
            return write_stdout(format!("{}\n", armor::blob_to_text(&blob)).as_bytes());
        }
        Command::Verify { pubkey, challenge } => {
            let pk = read_pubkey(pubkey)?;
            let challenge = parse_hex(challenge, "the challenge")?;
            let input = read_stdin(4096, "the evidence")?;
            let ev = armor::evidence_from_input(&input)
                .map_err(|e| Failure(exit::REJECTED, e.to_string()))?;
            return match hakeys_engine::attest::verify(&pk, &challenge, &ev) {
                Ok(v) => write_stdout(verified_line(&v).as_bytes()),
                Err(hakeys_engine::attest::AttestError::BadChallenge) => {
                    Err(usage("the challenge must be 1 to 64 bytes"))
                }
                Err(hakeys_engine::attest::AttestError::ChallengeMismatch) => Err(Failure(
                    exit::REJECTED,
                    "evidence answers a different challenge".into(),
                )),
                Err(_) => Err(Failure(
                    exit::REJECTED,
                    "evidence is not signed by this device key".into(),
                )),
            };
        }
        Command::RecoveryKey(args) => return recovery::recovery_key(args),
        Command::LuksFinish(args) => return luks::run(args),
        Command::Recover(args) => return recovery::recover(args),
        Command::Secrets(args) => {
            let choice = secrets::EngineChoice {
                backend: cli.backend.map(|b| match b {
                    BackendArg::Sim => BackendKind::Sim,
                    BackendArg::Tee => BackendKind::Tee,
                }),
                state_dir: cli.state_dir.clone(),
                via_daemon: cli.via_daemon,
                socket: daemon_socket(cli),
            };
            return secrets::run(args, &choice);
        }
        _ => {}
    }
    if use_daemon(cli)? {
        return run_via_daemon(cli);
    }
    let mut c = open_backend(cli).map_err(|f| daemon_hint(cli, f))?;
    run_online(cli, &mut c).map_err(|f| {
        // Storage failures: add the backend's detail (never secret material).
        let corrupt = f.0 == exit::STORAGE && f.1 == Status::StorageCorrupt.message();
        let f = match (f.0 == exit::STORAGE)
            .then(|| c.transport_mut().storage_detail())
            .flatten()
        {
            Some(d) => Failure(f.0, format!("{}: {d}", f.1)),
            None => f,
        };
        with_lost_state_hint(cli, corrupt, f)
    })
}

/// Said with every report of lost or damaged state.
const LOST_STATE_HINT: &str = "the device's key state is lost or damaged and no new key was made; \
recover by restoring the state from a backup if you have one; or, if you exported an escrow, run \
`teectl init --new-identity --yes-destroy-every-sealed-secret` and move the secrets to the new \
identity with `teectl recover` (README, \"If your board dies\"); without either, that new \
identity leaves every secret sealed so far unopenable for good";

/// Add [`LOST_STATE_HINT`] to a failure that reports lost or damaged state
/// (except to the one command that makes a new identity).
fn with_lost_state_hint(cli: &Cli, corrupt: bool, f: Failure) -> Failure {
    let new_identity = matches!(
        cli.command,
        Command::Init {
            new_identity: true,
            ..
        }
    );
    if corrupt && !new_identity {
        Failure(f.0, format!("{}; {LOST_STATE_HINT}", f.1))
    } else {
        f
    }
}

fn init_new_identity(c: &mut Client<Backend>, confirmed: bool) -> Result<(), Failure> {
    if !confirmed {
        return Err(usage(
            "--new-identity makes a new root key and device key: every secret sealed on this device so far can never be opened again; add --yes-destroy-every-sealed-secret if that is what you want",
        ));
    }
    eprintln!(
        "teectl: WARNING: replacing this device's identity: every secret sealed on it so far, and every blob sealed to its old public key, becomes unopenable for good"
    );
    let r = c.call(hakeys_proto::InitNewIdentityRequest)?;
    write_stdout(
        format!(
            "new identity: new root key and device key, epoch {}; blobs sealed before can no longer be opened\n",
            r.epoch
        )
        .as_bytes(),
    )
}

fn run_online(cli: &Cli, c: &mut Client<Backend>) -> Result<(), Failure> {
    match &cli.command {
        Command::Init {
            new_identity: true,
            yes_destroy_every_sealed_secret,
        } => init_new_identity(c, *yes_destroy_every_sealed_secret),
        Command::Init { .. } => {
            let r = c.init()?;
            let msg = if r.created {
                format!(
                    "initialised: new root key and device key, epoch {}\n",
                    r.epoch
                )
            } else {
                format!("already initialised (epoch {}); nothing changed\n", r.epoch)
            };
            write_stdout((msg + &recovery::init_advice(c)).as_bytes())
        }
        Command::Status { json } => {
            let s = c.status()?;
            print_status(
                *json,
                &StatusAnswer {
                    backend: c.transport_mut().kind().name().into(),
                    initialised: s.initialised,
                    epoch: s.epoch,
                    min_epoch: s.min_epoch,
                    boot_locked: s.boot_locked,
                    engine_version: version_string(s.engine_version),
                },
            )
        }
        Command::Pubkey {
            with_epoch,
            attestation,
        } => {
            let sec1 = if *attestation {
                c.attest_pubkey()?
            } else {
                c.pubkey()?
            };
            let pem = if *with_epoch {
                armor::sealing_key_to_pem(&sec1, c.status()?.epoch)
            } else {
                armor::pubkey_to_pem(&sec1)
            }
            .map_err(|e| Failure(exit::INTERNAL, e.to_string()))?;
            write_stdout(pem.as_bytes())
        }
        Command::Seal {
            namespace,
            to: None,
        } => {
            let pt = read_stdin(hakeys_proto::MAX_SECRET_LEN, "the secret")?;
            if pt.is_empty() {
                return Err(usage("the secret on stdin is empty"));
            }
            let blob = c.seal(namespace, &pt)?;
            write_stdout(format!("{}\n", armor::blob_to_text(&blob)).as_bytes())
        }
        Command::Unseal {
            namespace,
            json: false,
            device_only: false,
        } => {
            let input = read_stdin(16 * 1024, "the blob")?;
            let blob = armor::blob_from_input(&input)
                .map_err(|e| Failure(exit::REJECTED, e.to_string()))?;
            let mut r = c.unseal(&blob, namespace.as_deref())?;
            let res = write_stdout(&r.plaintext);
            zeroize::Zeroize::zeroize(r.plaintext.as_mut_slice());
            res
        }
        Command::Unseal {
            namespace,
            json,
            device_only,
        } => {
            // `open`: the engine says which kind it opened, and refuses
            // offline blobs itself with --device-only.
            let input = read_stdin(16 * 1024, "the blob")?;
            let blob = armor::blob_from_input(&input)
                .map_err(|e| Failure(exit::REJECTED, e.to_string()))?;
            let mut r = c
                .open(&blob, namespace.as_deref(), !*device_only)
                .map_err(|e| match e {
                    ClientError::Status(Status::UnknownOpcode) => Failure(
                        exit::INTERNAL,
                        "the key engine is older than 1.1.0: --json and --device-only need its `open` operation".into(),
                    ),
                    ClientError::Status(Status::OfflineRefused) if *device_only => {
                        device_only_refusal()
                    }
                    other => other.into(),
                })?;
            let res = if *json {
                let kind = if r.kind == hakeys_proto::BLOB_KIND_OFFLINE {
                    hakeys_engine::blob::Kind::ToDevice
                } else {
                    hakeys_engine::blob::Kind::Device
                };
                unseal_json(&r.namespace, kind, r.epoch, &r.plaintext)
                    .and_then(|line| write_stdout(&line))
            } else {
                write_stdout(&r.plaintext)
            };
            zeroize::Zeroize::zeroize(r.plaintext.as_mut_slice());
            res
        }
        Command::Rotate => {
            let r = c.rotate()?;
            write_stdout(
                format!("epoch {} (oldest accepted: {})\n", r.epoch, r.min_epoch).as_bytes(),
            )
        }
        Command::Rewrap { import_offline } => {
            let input = read_stdin(16 * 1024, "the blob")?;
            let blob = armor::blob_from_input(&input)
                .map_err(|e| Failure(exit::REJECTED, e.to_string()))?;
            let (kind, _, ns) = blob_kind(&blob)?;
            if kind == hakeys_engine::blob::Kind::ToDevice
                && !hakeys_engine::namespace::accepts_offline(&ns)
                && !import_offline
            {
                return Err(Failure(
                    exit::REFUSED,
                    format!(
                        "refused: this blob for {ns} was sealed offline to this board's public key, which anyone holding it can do; boards do not unseal such blobs in boot/. If you made it yourself, import it with `teectl rewrap --import-offline`"
                    ),
                ));
            }
            let new = c.rewrap(&blob)?;
            write_stdout(format!("{}\n", armor::blob_to_text(&new)).as_bytes())
        }
        Command::Retire {
            below,
            unmarked_offline,
        } => {
            let mut out = String::new();
            if let Some(below) = below {
                let r = c.retire(*below).map_err(|e| match e {
                    ClientError::Status(hakeys_proto::Status::InvalidArgument) => usage(format!(
                        "cannot retire below epoch {below}: the floor only rises and the current epoch cannot be retired"
                    )),
                    other => other.into(),
                })?;
                out += &format!("epoch {} (oldest accepted: {})\n", r.epoch, r.min_epoch);
            }
            if *unmarked_offline {
                c.retire_unmarked()?;
                out += "unmarked blobs sealed offline are refused from now on\n";
            }
            write_stdout(out.as_bytes())
        }
        Command::Attest { challenge } => {
            let challenge = parse_hex(challenge, "the challenge")?;
            if challenge.is_empty() || challenge.len() > hakeys_proto::MAX_CHALLENGE_LEN {
                return Err(usage("the challenge must be 1 to 64 bytes"));
            }
            let ev = c.attest(&challenge)?;
            write_stdout(format!("{}\n", armor::evidence_to_text(&ev)).as_bytes())
        }
        Command::BootDone => {
            c.boot_done()?;
            write_stdout(b"boot phase ended: boot/ namespaces are locked until the next boot\n")
        }
        Command::Ping { count } => {
            let mut lat = Vec::with_capacity(*count as usize);
            let mut version = 0;
            for _ in 0..(*count).max(1) {
                let t = std::time::Instant::now();
                version = c.ping()?.engine_version;
                lat.push(t.elapsed());
            }
            lat.sort();
            let total: std::time::Duration = lat.iter().sum();
            let us = |d: std::time::Duration| d.as_secs_f64() * 1e6;
            write_stdout(
                format!(
                    "engine {} answered {} pings: mean {:.0} us, p50 {:.0} us, p99 {:.0} us\n",
                    version_string(version),
                    lat.len(),
                    us(total) / lat.len() as f64,
                    us(lat[lat.len() / 2]),
                    us(lat[(lat.len() * 99 / 100).min(lat.len() - 1)])
                )
                .as_bytes(),
            )
        }
        Command::Reseal(args) => recovery::reseal(c, args),
        Command::Escrow(args) => recovery::escrow(c, args),
        Command::Seal { to: Some(_), .. }
        | Command::Verify { .. }
        | Command::RecoveryKey(_)
        | Command::LuksFinish(_)
        | Command::Recover(_)
        | Command::Secrets(_) => Ok(()),
    }
}

/// What `verify` prints for verified evidence: one line.
fn verified_line(v: &hakeys_engine::attest::Verified) -> String {
    use hakeys_engine::attest::Verified;
    let c = v.claims();
    let mut line = format!(
        "verified: engine {} epoch {} oldest accepted epoch {}",
        version_string(c.engine_version),
        c.epoch,
        c.min_epoch
    );
    if let Verified::V2(v2) = v {
        line += &format!(
            "; boot phase {}; unmarked offline blobs {}; backend {} (a claim); TA version {}; sealing key {}",
            if v2.boot_phase_ended { "ended" } else { "open" },
            if v2.unmarked_offline_retired { "refused" } else { "accepted" },
            v2.backend.name(),
            version_string(v2.ta_version),
            hex::encode(v2.sealing_key)
        );
    }
    line + "\n"
}

fn print_status(json: bool, s: &StatusAnswer) -> Result<(), Failure> {
    let backend = &s.backend;
    let text = if json {
        serde_json::to_string(s)
            .map_err(|e| Failure(exit::INTERNAL, format!("cannot encode the status: {e}")))?
            + "\n"
    } else if s.initialised {
        format!(
            "backend: {backend}\ninitialised: yes\nepoch: {} (oldest accepted: {})\nboot phase: {}\nengine: {}\n",
            s.epoch,
            s.min_epoch,
            if s.boot_locked { "ended (boot/ namespaces locked)" } else { "open" },
            s.engine_version
        )
    } else {
        format!(
            "backend: {backend}\ninitialised: no (run `teectl init`)\nengine: {}\n",
            s.engine_version
        )
    };
    write_stdout(text.as_bytes())
}

// ---- Through the daemon (docs/daemon.md) ----

fn daemon_socket(cli: &Cli) -> PathBuf {
    teed_protocol::client::socket_path(cli.socket.as_deref())
}

/// Go through the daemon? With --via-daemon, or on its own for a non-root
/// caller that named no backend or state and finds the socket. Root goes to
/// the engine directly (and must, for the operations the daemon does not offer).
fn use_daemon(cli: &Cli) -> Result<bool, Failure> {
    let offered = matches!(
        cli.command,
        Command::Status { .. }
            | Command::Pubkey {
                with_epoch: false,
                attestation: false
            }
            | Command::Seal { to: None, .. }
            | Command::Unseal { .. }
    );
    if cli.via_daemon {
        if !offered {
            return Err(usage(
                "the daemon offers only status, pubkey, seal and unseal; run this command without --via-daemon, as root",
            ));
        }
        if cli.backend.is_some() || cli.state_dir.is_some() {
            return Err(usage(
                "--via-daemon cannot be combined with --backend or --state-dir",
            ));
        }
        return Ok(true);
    }
    Ok(offered
        && cli.backend.is_none()
        && cli.state_dir.is_none()
        && std::env::var_os(sim::STATE_DIR_ENV).is_none_or(|d| d.is_empty())
        && !hakeys_client::is_root()
        && daemon_socket(cli).exists())
}

/// The simulator is locked while teed runs on it: say so.
fn daemon_hint(cli: &Cli, f: Failure) -> Failure {
    let sim = match cli.backend {
        Some(b) => b == BackendArg::Sim,
        None => BackendKind::detect() == BackendKind::Sim,
    };
    let socket = daemon_socket(cli);
    if sim && f.0 == exit::UNAVAILABLE && std::os::unix::net::UnixStream::connect(&socket).is_ok() {
        Failure(
            f.0,
            format!(
                "{}; teed is serving on {} and holds the engine: stop it for this command, or use --via-daemon for status, pubkey, seal and unseal",
                f.1,
                socket.display()
            ),
        )
    } else {
        f
    }
}

impl From<DaemonError> for Failure {
    fn from(e: DaemonError) -> Self {
        Failure(exit::for_daemon_error(&e), e.to_string())
    }
}

fn run_via_daemon(cli: &Cli) -> Result<(), Failure> {
    // Input is read and checked once, before talking to the daemon.
    let input = match &cli.command {
        Command::Seal { .. } => {
            let pt = read_stdin(hakeys_proto::MAX_SECRET_LEN, "the secret")?;
            if pt.is_empty() {
                return Err(usage("the secret on stdin is empty"));
            }
            pt
        }
        Command::Unseal { device_only, .. } => {
            let input = read_stdin(16 * 1024, "the blob")?;
            let blob = armor::blob_from_input(&input)
                .map_err(|e| Failure(exit::REJECTED, e.to_string()))?;
            // The daemon does not take --device-only: refuse here, from the
            // header (a blob whose header lies does not open).
            if *device_only && blob_kind(&blob)?.0 == hakeys_engine::blob::Kind::ToDevice {
                return Err(device_only_refusal());
            }
            Zeroizing::new(armor::blob_to_text(&blob).into_bytes())
        }
        _ => Zeroizing::new(Vec::new()),
    };
    // `retry` and `busy` mean the engine is reconnecting: try a few times.
    let out =
        with_retries(&daemon_socket(cli), 4, |d| via_daemon_once(cli, d, &input)).map_err(|e| {
            let corrupt = e.code() == Some(Code::Engine(Status::StorageCorrupt));
            with_lost_state_hint(cli, corrupt, e.into())
        })?;
    match out {
        ViaDaemon::Out(bytes) => write_stdout(&bytes),
        ViaDaemon::Status(status) => print_status(
            matches!(cli.command, Command::Status { json: true }),
            &status,
        ),
    }
}

/// What one attempt through the daemon produced.
enum ViaDaemon {
    /// Bytes for stdout.
    Out(Zeroizing<Vec<u8>>),
    /// `status`'s answer, to print as the direct command does.
    Status(StatusAnswer),
}

fn via_daemon_once(
    cli: &Cli,
    d: &mut DaemonClient,
    input: &[u8],
) -> Result<ViaDaemon, DaemonError> {
    Ok(ViaDaemon::Out(match &cli.command {
        Command::Status { .. } => return d.status().map(ViaDaemon::Status),
        Command::Pubkey { .. } => Zeroizing::new(d.pubkey()?.into_bytes()),
        Command::Seal { namespace, .. } => {
            Zeroizing::new(format!("{}\n", d.seal(namespace, input)?).into_bytes())
        }
        Command::Unseal {
            namespace, json, ..
        } => {
            let text = std::str::from_utf8(input).unwrap_or_default();
            let (ns, plaintext) = d.unseal(text, namespace.as_deref())?;
            if !*json {
                plaintext
            } else {
                // The daemon opened exactly this blob, so its header (the
                // associated data) is authentic: its kind and epoch are.
                let blob = armor::blob_from_input(input)
                    .map_err(|e| DaemonError::Protocol(e.to_string()))?;
                let parsed = hakeys_engine::blob::parse(&blob)
                    .map_err(|e| DaemonError::Protocol(e.to_string()))?;
                unseal_json(&ns, parsed.kind, parsed.epoch, &plaintext)
                    .map_err(|f| DaemonError::Protocol(f.1))?
            }
        }
        _ => Zeroizing::new(Vec::new()),
    }))
}

fn main() -> ExitCode {
    // First of all, before any input is read: no core dump of this process
    // (it holds secrets, plaintexts and recovery keys in memory), and no
    // ptrace or /proc/PID/mem access by other processes of the same user.
    if let Err(e) = hakeys_client::forbid_core_dumps() {
        eprintln!("teectl: cannot forbid core dumps (prctl PR_SET_DUMPABLE, RLIMIT_CORE): {e}");
        return ExitCode::from(exit::INTERNAL as u8);
    }
    let cli = Cli::parse();
    // No key engine to wait for: a recovery code typed at /dev/tty or a
    // large file may take longer than any engine timeout.
    let offline = matches!(
        cli.command,
        Command::RecoveryKey(_) | Command::Recover(_) | Command::LuksFinish(_)
    );
    if cli.timeout > 0 && !offline {
        let secs = cli.timeout;
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(secs));
            eprintln!(
                "teectl: the key engine did not answer within {secs} s (is tee-supplicant running? is the TA installed?)"
            );
            std::process::exit(exit::UNAVAILABLE);
        });
    }
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            eprintln!("teectl: {msg}");
            ExitCode::from(code as u8)
        }
    }
}
