//! `teectl`: the command-line tool for boards, scripts and people.
//!
//! Data goes to stdout (blobs as one text line, plaintext byte-exact);
//! errors are one line on stderr with a documented exit code (see
//! `hakeys_host::exit` and the README). No secret is ever written to stderr.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use hakeys_host::backend::{Backend, BackendKind};
use hakeys_host::client::{Client, ClientError};
use hakeys_host::sim;
use hakeys_host::{armor, exit};
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(
    name = "teectl",
    version,
    about = "Hardware-backed secrets for Home Assistant OS boards"
)]
struct Cli {
    /// Which key engine to use: the TEE (default when /dev/tee0 exists) or
    /// the in-process simulator.
    #[arg(long, value_enum, global = true)]
    backend: Option<BackendArg>,
    /// Simulator state directory [env: TEECTL_STATE_DIR]
    #[arg(long, global = true, value_name = "DIR")]
    state_dir: Option<PathBuf>,
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
    /// Generate the root key and device key (does nothing if already done).
    Init,
    /// Show whether the device is initialised, its epochs and boot phase.
    Status {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print the device public key (PEM) that others can seal secrets to.
    Pubkey,
    /// Seal the secret on stdin; print the blob as one line.
    Seal {
        /// Namespace such as ha/core, addon/<slug>, boot/luks-data.
        #[arg(long, short = 'n')]
        namespace: String,
        /// Seal offline to this device public key (PEM) instead of on this
        /// device; needs no TEE and no state.
        #[arg(long, value_name = "PUBKEY.pem")]
        to: Option<PathBuf>,
    },
    /// Open the blob on stdin; write the secret to stdout, byte-exact.
    Unseal {
        /// Refuse the blob unless it belongs to this namespace.
        #[arg(long, short = 'n')]
        namespace: Option<String>,
    },
    /// Start a new key epoch; new blobs are sealed under it.
    Rotate,
    /// Re-seal the blob on stdin under the current epoch.
    Rewrap,
    /// Refuse blobs of epochs below EPOCH from now on (cannot be undone).
    Retire {
        #[arg(long, value_name = "EPOCH")]
        below: u32,
    },
    /// Sign a challenge with the device key; print the evidence as one line.
    Attest {
        /// 1 to 64 bytes, hex.
        #[arg(long, value_name = "HEX")]
        challenge: String,
    },
    /// Check evidence on stdin against a device public key and challenge.
    Verify {
        #[arg(long, value_name = "PUBKEY.pem")]
        pubkey: PathBuf,
        #[arg(long, value_name = "HEX")]
        challenge: String,
    },
    /// End the boot phase: boot/ namespaces are refused until next boot.
    BootDone,
}

/// A failure: the exit code and one line for stderr.
struct Failure(i32, String);

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        Failure(e.exit_code(), e.to_string())
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
    let pem = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read {}: {e}", path.display())))?;
    armor::pubkey_from_pem(&pem).map_err(|e| usage(format!("{}: {e}", path.display())))
}

fn open_backend(cli: &Cli) -> Result<Client<Backend>, Failure> {
    let kind = cli.backend.map(|k| match k {
        BackendArg::Sim => BackendKind::Sim,
        BackendArg::Tee => BackendKind::Tee,
    });
    Backend::open(kind, cli.state_dir.as_deref())
        .map(Client::new)
        .map_err(|e| Failure(e.exit_code, e.message))
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
            let pk = read_pubkey(pem)?;
            let pt = read_stdin(hakeys_proto::MAX_SECRET_LEN, "the secret")?;
            let blob =
                hakeys_engine::blob::seal_to_device(&pk, namespace, &pt, &mut sim::OsEntropy)
                    .map_err(|e| {
                        Failure(exit::for_status(e.status()), e.status().message().into())
                    })?;
            return write_stdout(format!("{}\n", armor::blob_to_text(&blob)).as_bytes());
        }
        Command::Verify { pubkey, challenge } => {
            let pk = read_pubkey(pubkey)?;
            let challenge = parse_hex(challenge, "the challenge")?;
            let input = read_stdin(4096, "the evidence")?;
            let ev = armor::evidence_from_input(&input)
                .map_err(|e| Failure(exit::REJECTED, e.to_string()))?;
            return match hakeys_engine::attest::verify(&pk, &challenge, &ev) {
                Ok(c) => write_stdout(
                    format!(
                        "verified: engine {} epoch {} oldest accepted epoch {}\n",
                        version_string(c.engine_version),
                        c.epoch,
                        c.min_epoch
                    )
                    .as_bytes(),
                ),
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
        _ => {}
    }
    let mut c = open_backend(cli)?;
    run_online(cli, &mut c).map_err(|f| {
        // Storage failures: add the backend's detail (never secret material).
        match (f.0 == exit::STORAGE)
            .then(|| c.transport_mut().storage_detail())
            .flatten()
        {
            Some(d) => Failure(f.0, format!("{}: {d}", f.1)),
            None => f,
        }
    })
}

fn run_online(cli: &Cli, c: &mut Client<Backend>) -> Result<(), Failure> {
    match &cli.command {
        Command::Init => {
            let r = c.init()?;
            let msg = if r.created {
                format!(
                    "initialised: new root key and device key, epoch {}\n",
                    r.epoch
                )
            } else {
                format!("already initialised (epoch {}); nothing changed\n", r.epoch)
            };
            write_stdout(msg.as_bytes())
        }
        Command::Status { json } => {
            let s = c.status()?;
            let backend = c.transport_mut().kind().name();
            let text = if *json {
                serde_json::json!({
                    "backend": backend,
                    "initialised": s.initialised,
                    "epoch": s.epoch,
                    "min_epoch": s.min_epoch,
                    "boot_locked": s.boot_locked,
                    "engine_version": version_string(s.engine_version),
                })
                .to_string()
                    + "\n"
            } else if s.initialised {
                format!(
                    "backend: {backend}\ninitialised: yes\nepoch: {} (oldest accepted: {})\nboot phase: {}\nengine: {}\n",
                    s.epoch,
                    s.min_epoch,
                    if s.boot_locked { "ended (boot/ namespaces locked)" } else { "open" },
                    version_string(s.engine_version)
                )
            } else {
                format!(
                    "backend: {backend}\ninitialised: no (run `teectl init`)\nengine: {}\n",
                    version_string(s.engine_version)
                )
            };
            write_stdout(text.as_bytes())
        }
        Command::Pubkey => {
            let sec1 = c.pubkey()?;
            let pem =
                armor::pubkey_to_pem(&sec1).map_err(|e| Failure(exit::INTERNAL, e.to_string()))?;
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
        Command::Unseal { namespace } => {
            let input = read_stdin(16 * 1024, "the blob")?;
            let blob = armor::blob_from_input(&input)
                .map_err(|e| Failure(exit::REJECTED, e.to_string()))?;
            let mut r = c.unseal(&blob, namespace.as_deref())?;
            let res = write_stdout(&r.plaintext);
            zeroize::Zeroize::zeroize(r.plaintext.as_mut_slice());
            res
        }
        Command::Rotate => {
            let r = c.rotate()?;
            write_stdout(
                format!("epoch {} (oldest accepted: {})\n", r.epoch, r.min_epoch).as_bytes(),
            )
        }
        Command::Rewrap => {
            let input = read_stdin(16 * 1024, "the blob")?;
            let blob = armor::blob_from_input(&input)
                .map_err(|e| Failure(exit::REJECTED, e.to_string()))?;
            let new = c.rewrap(&blob)?;
            write_stdout(format!("{}\n", armor::blob_to_text(&new)).as_bytes())
        }
        Command::Retire { below } => {
            let r = c.retire(*below).map_err(|e| match e {
                ClientError::Status(hakeys_proto::Status::InvalidArgument) => usage(format!(
                    "cannot retire below epoch {below}: the floor only rises and the current epoch cannot be retired"
                )),
                other => other.into(),
            })?;
            write_stdout(
                format!("epoch {} (oldest accepted: {})\n", r.epoch, r.min_epoch).as_bytes(),
            )
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
        Command::Seal { to: Some(_), .. } | Command::Verify { .. } => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, msg)) => {
            eprintln!("teectl: {msg}");
            ExitCode::from(code as u8)
        }
    }
}
