//! Recovery: move secrets to a new board while the old one lives
//! (`reseal`), and get them back when it dies (`recovery-key`, `escrow`,
//! `recover`). Formats: `engine/SPEC.md` ("Reseal", "Recovery escrow"),
//! `host/SPEC.md` (recovery key forms, whole files); the trade-offs:
//! `docs/security-model.md`, "Recovery".
//!
//! `recovery-key` and `recover` need no key engine and touch no state;
//! `reseal` and `escrow` are engine operations that the daemon does not
//! offer. Errors never carry a secret, a key, a code or blob bytes.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use hakeys_client::backend::Backend;
use hakeys_client::client::{Client, ClientError};
use hakeys_client::{armor, recovery as keys};
use hakeys_engine::escrow::{self, EscrowError};
use hakeys_engine::EngineError;
use hakeys_proto::Status;
use zeroize::{Zeroize, Zeroizing};

use crate::{exit, read_pubkey, read_sealing_key, read_stdin, usage, write_stdout, Failure};

mod files;

#[cfg(test)]
mod tests;

use files::Converted;

/// Which blobs a command works on: one on stdin (default), a file, or a
/// directory of `*.blob` files.
#[derive(Args)]
pub struct FileArgs {
    /// Convert every blob (hakeys:v1:...) in FILE, such as a sealed
    /// secrets.yaml, keeping every other byte; the result goes to --out.
    #[arg(
        long = "in",
        value_name = "FILE",
        conflicts_with = "dir",
        requires = "out"
    )]
    input: Option<PathBuf>,
    /// Convert every *.blob file in DIR (one blob each, text or binary);
    /// the results go to the new directory --out.
    #[arg(long, value_name = "DIR", requires = "out")]
    dir: Option<PathBuf>,
    /// The output file (with --in) or directory (with --dir); written
    /// atomically, and only if every blob converted.
    #[arg(long, value_name = "PATH")]
    out: Option<PathBuf>,
    /// Replace --out if it exists (a directory's files one by one).
    #[arg(long)]
    force: bool,
}

/// `teectl reseal`
#[derive(Args)]
pub struct ResealArgs {
    /// The new board's public key (PEM, `teectl pubkey` on it).
    #[arg(long, value_name = "NEW.pem")]
    to: PathBuf,
    /// Also reseal boot/ secrets (possible only during the boot phase,
    /// before boot-done).
    #[arg(long)]
    allow_boot: bool,
    #[command(flatten)]
    files: FileArgs,
}

/// `teectl recovery-key`
#[derive(Args)]
pub struct RecoveryKeyArgs {
    #[command(subcommand)]
    action: RecoveryKeyAction,
}

#[derive(Subcommand)]
enum RecoveryKeyAction {
    /// Make a recovery key pair (on any machine; no TEE): DIR/recovery.pem
    /// (public) and DIR/recovery-key.pem (private, mode 0600); print its
    /// recovery code.
    New {
        /// Directory for the two files (created, mode 0700, if missing);
        /// existing files are never replaced.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `teectl escrow`
#[derive(Args)]
pub struct EscrowArgs {
    /// The recovery public key (recovery.pem).
    #[arg(long, value_name = "recovery.pem")]
    to: PathBuf,
    /// Replace the recovery key this device enrolled with its first escrow
    /// by this one (possible only during the boot phase, before boot-done).
    #[arg(long)]
    replace_recovery_key: bool,
}

/// `teectl recover`
#[derive(Args)]
pub struct RecoverArgs {
    /// The escrow of the board the blobs come from (hakeys-escrow:v1:...).
    #[arg(long, value_name = "ESCROW")]
    escrow: PathBuf,
    /// The private recovery key: recovery-key.pem (PKCS#8 or SEC1 PEM), or
    /// a file holding the recovery code (/dev/tty to type it).
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// Seal each secret to this board's public key (PEM).
    #[arg(
        long,
        value_name = "NEW.pem",
        required_unless_present = "plaintext",
        conflicts_with = "plaintext"
    )]
    to: Option<PathBuf>,
    /// Write the secrets themselves instead: a single blob's to stdout;
    /// with --in or --dir only with --allow-plaintext-files.
    #[arg(long)]
    plaintext: bool,
    /// With --plaintext and --in/--dir: write plaintext secrets into files
    /// (mode 0600). --in must be YAML whose blobs are whole values.
    #[arg(long, requires = "plaintext")]
    allow_plaintext_files: bool,
    #[command(flatten)]
    files: FileArgs,
}

/// Where the blobs come from and go to.
enum Io<'a> {
    Stdin,
    File { input: &'a Path, out: &'a Path },
    Dir { dir: &'a Path, out: &'a Path },
}

impl FileArgs {
    fn io(&self) -> Result<(Io<'_>, bool), Failure> {
        Ok((
            match (&self.input, &self.dir, &self.out) {
                (Some(input), None, Some(out)) => Io::File { input, out },
                (None, Some(dir), Some(out)) => Io::Dir { dir, out },
                (None, None, None) if !self.force => Io::Stdin,
                _ => return Err(usage("--out and --force go with --in FILE or --dir DIR")),
            },
            self.force,
        ))
    }
}

/// Run `convert` over the blobs that `args` names and write the results:
/// a single blob from stdin to stdout, or whole files. `plaintext` says
/// that the results are secrets (files mode 0600; YAML quoting for --in).
fn run_io(
    args: &FileArgs,
    plaintext: bool,
    verb: &str,
    convert: &mut dyn FnMut(&[u8]) -> Result<Converted, Failure>,
) -> Result<(), Failure> {
    let (io, force) = args.io()?;
    match io {
        Io::Stdin => {
            let input = read_stdin(16 * 1024, "the blob")?;
            let blob = armor::blob_from_input(&input)
                .map_err(|e| Failure(exit::REJECTED, e.to_string()))?;
            match convert(&blob)? {
                Converted::Blob(b) => {
                    write_stdout(format!("{}\n", armor::blob_to_text(&b)).as_bytes())
                }
                Converted::Plaintext(p) => write_stdout(&p),
            }
        }
        Io::File { input, out } => {
            let text = files::read_file(input)?;
            let mode = if plaintext {
                0o600
            } else {
                files::mode_of(input)?
            };
            if !force && std::fs::symlink_metadata(out).is_ok() {
                return Err(files::exists(out, "; add --force to replace it"));
            }
            let (converted, n) = files::convert_text(input, &text, plaintext, convert)?;
            files::write_file(out, &converted, mode, force)?;
            write_stdout(
                format!(
                    "{verb} {n} blob{} from {} into {}\n",
                    if n == 1 { "" } else { "s" },
                    input.display(),
                    out.display()
                )
                .as_bytes(),
            )
        }
        Io::Dir { dir, out } => {
            let list = files::blob_files(dir)?;
            if !force && std::fs::symlink_metadata(out).is_ok() {
                return Err(files::exists(out, "; add --force to replace its files"));
            }
            let mut results = Vec::with_capacity(list.len());
            for (name, path) in &list {
                let content = files::read_file(path)?;
                let bytes = files::convert_blob_file(path, &content, convert)?;
                let (name, mode) = if plaintext {
                    let stem = Path::new(name).file_stem().unwrap_or_default().to_owned();
                    (stem, 0o600)
                } else {
                    (name.clone(), files::mode_of(path)?)
                };
                results.push(files::OutFile { name, bytes, mode });
            }
            let dir_mode = if plaintext {
                0o700
            } else {
                files::mode_of(dir)?
            };
            files::write_dir(out, &results, dir_mode, force)?;
            write_stdout(
                format!(
                    "{verb} {} blob file{} from {} into {}\n",
                    results.len(),
                    if results.len() == 1 { "" } else { "s" },
                    dir.display(),
                    out.display()
                )
                .as_bytes(),
            )
        }
    }
}

// ---------------------------------------------------------------- reseal

/// `teectl reseal --to NEW.pem`: the engine opens each blob and seals it to
/// the new board; the plaintext never leaves the engine.
pub fn reseal(c: &mut Client<Backend>, args: &ResealArgs) -> Result<(), Failure> {
    let to = read_pubkey(&args.to)?;
    let allow_boot = args.allow_boot;
    run_io(&args.files, false, "resealed", &mut |blob| {
        c.reseal(blob, &to, allow_boot)
            .map(Converted::Blob)
            .map_err(|e| match e {
                ClientError::Status(Status::BootLocked) => Failure(
                    exit::REFUSED,
                    "refused: the boot phase has ended, and boot/ secrets are resealed only during it (before boot-done); otherwise use `teectl escrow` and `teectl recover`".into(),
                ),
                other => other.into(),
            })
    })
}

// ---------------------------------------------------------------- recovery keys

/// `teectl recovery-key new --out DIR`
pub fn recovery_key(args: &RecoveryKeyArgs) -> Result<(), Failure> {
    let RecoveryKeyAction::New { out } = &args.action;
    if !out.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(out)
            .map_err(|e| {
                Failure(
                    exit::OUTPUT,
                    format!("cannot create {}: {e}", out.display()),
                )
            })?;
    }
    let private_path = out.join("recovery-key.pem");
    let public_path = out.join("recovery.pem");
    for p in [&private_path, &public_path] {
        if std::fs::symlink_metadata(p).is_ok() {
            return Err(files::exists(
                p,
                "; a recovery key is never replaced: choose another directory",
            ));
        }
    }
    let sk = keys::generate().map_err(|e| Failure(exit::INTERNAL, e.to_string()))?;
    let private = keys::private_pem(&sk).map_err(|e| Failure(exit::INTERNAL, e.to_string()))?;
    let public = armor::pubkey_to_pem(&hakeys_engine::crypto::sec1_uncompressed(&sk.public_key()))
        .map_err(|e| Failure(exit::INTERNAL, e.to_string()))?;
    files::write_file(&private_path, private.as_bytes(), 0o600, false)?;
    if let Err(f) = files::write_file(&public_path, public.as_bytes(), 0o644, false) {
        // Never leave half a key pair.
        let _ = std::fs::remove_file(&private_path);
        return Err(f);
    }
    let code = keys::code(&sk);
    let fp = keys::fingerprint_text(&keys::fingerprint(&sk.public_key()));
    let text = Zeroizing::new(format!(
        "recovery key made:\n  {}  private (mode 0600): keep it off the board, safe and backed up\n  {}  public: `teectl escrow --to` it on the board\nfingerprint: {fp}\n\nrecovery code (the private key, to write down; teectl accepts a file holding it\nwherever it takes recovery-key.pem):\n\n    {}\n\n",
        private_path.display(),
        public_path.display(),
        &*code
    ));
    write_stdout(text.as_bytes())
}

/// Read a private recovery key (PEM or recovery code) from `path`; a
/// terminal (`/dev/tty`) is read up to the end of the first line.
fn read_recovery_key(path: &Path) -> Result<p256::SecretKey, Failure> {
    let cannot = |e: std::io::Error| usage(format!("cannot read {}: {e}", path.display()));
    let tty = std::fs::metadata(path)
        .map(|m| m.file_type().is_char_device())
        .map_err(cannot)?;
    let mut f = std::fs::File::open(path).map_err(cannot)?;
    let mut buf = Zeroizing::new(String::new());
    if tty {
        let mut r = std::io::BufReader::new(f.take(4096));
        std::io::BufRead::read_line(&mut r, &mut buf).map_err(cannot)?;
    } else {
        (&mut f)
            .take(16 * 1024)
            .read_to_string(&mut buf)
            .map_err(cannot)?;
    }
    keys::key_from_text(&buf).map_err(|e| usage(format!("{}: {e}", path.display())))
}

// ---------------------------------------------------------------- escrow

/// `teectl escrow --to recovery.pem`: one line, `hakeys-escrow:v1:...`.
pub fn escrow(c: &mut Client<Backend>, args: &EscrowArgs) -> Result<(), Failure> {
    let rk = read_pubkey(&args.to)?;
    match c.escrow(&rk, args.replace_recovery_key) {
        Ok(x) => write_stdout(format!("{}\n", armor::escrow_to_text(&x)).as_bytes()),
        Err(ClientError::Status(Status::RecoveryKeyMismatch)) => {
            let enrolled = c
                .recovery_status()
                .ok()
                .flatten()
                .map(|fp| keys::fingerprint_text(&fp))
                .unwrap_or_else(|| "?".into());
            let this = keys::fingerprint_text(&keys::fingerprint(&rk));
            let how = if args.replace_recovery_key {
                "the boot phase has ended, and the enrolled key is replaced only during it (before boot-done)"
            } else {
                "to replace it, run `teectl escrow --to NEW.pem --replace-recovery-key` during the boot phase (before boot-done)"
            };
            Err(Failure(
                exit::REFUSED,
                format!("refused: this device exports escrow only to the recovery key it enrolled with its first escrow ({enrolled}); {} is {this}; {how}", args.to.display()),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// What `teectl init` says about recovery: whether a recovery key is
/// enrolled (an escrow was exported), and how to make one.
pub fn init_advice(c: &mut Client<Backend>) -> String {
    match c.recovery_status() {
        Ok(Some(fp)) => format!(
            "recovery: an escrow was exported to recovery key {} (`teectl escrow --to recovery.pem` exports it again)\n",
            keys::fingerprint_text(&fp)
        ),
        Ok(None) => "\
recovery: NO ESCROW. If this board dies, every secret sealed on it dies with it.
  on another machine: teectl recovery-key new --out DIR
                      (keep DIR/recovery-key.pem and the printed code off the board)
  then on this board: teectl escrow --to recovery.pem > escrow.txt
                      (keep escrow.txt with your backups; see README, \"If your board dies\")
"
        .into(),
        Err(e) => format!("recovery: unknown ({e})\n"),
    }
}

// ---------------------------------------------------------------- recover

fn escrow_failure(e: EscrowError, path: &Path, key: &p256::SecretKey, escrow: &[u8]) -> Failure {
    let msg = match e {
        EscrowError::WrongRecoveryKey => {
            let made_for = escrow::header(escrow)
                .ok()
                .and_then(|h| hakeys_engine::crypto::parse_public_key(&h.recovery).ok())
                .map(|pk| keys::fingerprint_text(&keys::fingerprint(&pk)))
                .unwrap_or_else(|| "?".into());
            format!(
                "{}: the escrow was made for recovery key {made_for}, not for this one ({})",
                path.display(),
                keys::fingerprint_text(&keys::fingerprint(&key.public_key()))
            )
        }
        other => format!("{}: {other}", path.display()),
    };
    Failure(exit::REJECTED, msg)
}

fn recover_failure(e: EngineError, min_epoch: u32) -> Failure {
    match e {
        EngineError::EpochRetired => Failure(
            exit::REFUSED,
            format!("refused: the blob's key epoch was retired when this escrow was made (oldest accepted: {min_epoch}); an escrow made before that retire still opens it"),
        ),
        EngineError::Blob(_) => Failure(
            exit::REJECTED,
            "blob rejected: it does not open with this escrow (tampered, corrupted, or sealed by another board)".into(),
        ),
        other => Failure(exit::for_status(other.status()), other.to_string()),
    }
}

/// `teectl recover --escrow E --key K (--to NEW.pem | --plaintext)`: open
/// blobs through the escrow, off the board, and seal them to the new board
/// or write the secrets.
pub fn recover(args: &RecoverArgs) -> Result<(), Failure> {
    let (io, _) = args.files.io()?;
    let whole_files = !matches!(io, Io::Stdin);
    if args.plaintext && whole_files && !args.allow_plaintext_files {
        return Err(usage(
            "--plaintext with --in or --dir writes secrets into files: add --allow-plaintext-files if that is what you want (files are mode 0600)",
        ));
    }
    if args.allow_plaintext_files && !whole_files {
        return Err(usage("--allow-plaintext-files goes with --in or --dir"));
    }
    let key = read_recovery_key(&args.key)?;
    let text = files::read_file(&args.escrow)?;
    let raw = armor::escrow_from_input(&text)
        .map_err(|e| Failure(exit::REJECTED, format!("{}: {e}", args.escrow.display())))?;
    let opened =
        escrow::open(&key, &raw).map_err(|e| escrow_failure(e, &args.escrow, &key, &raw))?;
    // A sealing key file's epoch is the generation the new board will
    // retire these blobs by; a bare PEM gives unmarked blobs.
    let to = args.to.as_deref().map(read_sealing_key).transpose()?;
    let min_epoch = opened.min_epoch();
    let verb = if to.is_some() { "recovered" } else { "opened" };
    run_io(&args.files, to.is_none(), verb, &mut |blob| {
        let mut pt = hakeys_proto::Secret::new();
        let ns = opened
            .open_blob(blob, &mut pt)
            .map_err(|e| recover_failure(e, min_epoch))?;
        let out = match &to {
            Some((pk, epoch)) => hakeys_engine::blob::seal_to_device_in(
                pk,
                &ns,
                &pt,
                epoch.unwrap_or(0),
                &mut hakeys_client::OsEntropy,
            )
            .map(|b| Converted::Blob(b.to_vec()))
            .map_err(|e| Failure(exit::for_status(e.status()), e.to_string())),
            None => Ok(Converted::Plaintext(Zeroizing::new(pt.to_vec()))),
        };
        pt.as_mut_slice().zeroize();
        out
    })
}
