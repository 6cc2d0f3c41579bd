//! What the operations are, and how a boot's checks are judged against
//! what the boot before it left.

use std::collections::HashMap;

use crate::qemu::{sha256_hex, Step};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Op {
    Init,
    FirstRotate,
    Rotate,
    Retire,
    NewIdentity,
    Migrate,
}

impl Op {
    pub(crate) const ALL: [Op; 6] = [
        Op::Init,
        Op::FirstRotate,
        Op::Rotate,
        Op::Retire,
        Op::NewIdentity,
        Op::Migrate,
    ];
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::Init => "init",
            Op::FirstRotate => "first-rotate",
            Op::Rotate => "rotate",
            Op::Retire => "retire",
            Op::NewIdentity => "new-identity",
            Op::Migrate => "migrate-v1",
        }
    }
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Op::Init => "`teectl init` on a blank board",
            Op::FirstRotate => "the first `rotate` after init (creates the second slot)",
            Op::Rotate => "`rotate` (both slots exist)",
            Op::Retire => "`retire --below <current epoch>`",
            Op::NewIdentity => "`init --new-identity --yes-destroy-every-sealed-secret`",
            Op::Migrate => "the first write (`rotate`) on a board initialised by the previous release (v1 state)",
        }
    }
    /// The operation as powercut.sh names it.
    pub(crate) fn guest(self) -> &'static str {
        match self {
            Op::Init => "init",
            Op::Retire => "retire",
            Op::NewIdentity => "new-identity",
            Op::FirstRotate | Op::Rotate | Op::Migrate => "rotate",
        }
    }
    /// How the board is prepared (powercut.sh's PC_SETUP).
    pub(crate) fn setup(self) -> &'static str {
        match self {
            Op::Init => "load",
            Op::FirstRotate => "init1",
            Op::Migrate => "v1",
            Op::Rotate | Op::Retire | Op::NewIdentity => "init2",
        }
    }
    /// Whether each cut needs a fresh copy of the prepared board.
    pub(crate) fn once_per_board(self) -> bool {
        matches!(self, Op::Init | Op::FirstRotate | Op::Migrate)
    }
    /// Whether `seen` is what a completed run from `old` leaves.
    pub(crate) fn is_new(self, old: &Seen, seen: &Seen) -> bool {
        match (self, old, seen) {
            (Op::Init, Seen::NotInitialised, Seen::Init { epoch, min, .. }) => {
                (*epoch, *min) == (1, 1)
            }
            (
                Op::NewIdentity,
                Seen::Init { pubkey: old_pk, .. },
                Seen::Init { epoch, min, pubkey },
            ) => (*epoch, *min) == (1, 1) && pubkey != old_pk,
            (Op::Retire, Seen::Init { epoch, pubkey, .. }, s) => {
                *s == Seen::Init {
                    epoch: *epoch,
                    min: *epoch,
                    pubkey: pubkey.clone(),
                }
            }
            (Op::FirstRotate | Op::Rotate | Op::Migrate, Seen::Init { epoch, min, pubkey }, s) => {
                *s == Seen::Init {
                    epoch: epoch + 1,
                    min: *min,
                    pubkey: pubkey.clone(),
                }
            }
            _ => false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Mode {
    Before,
    After,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Before => "before",
            Mode::After => "after",
        }
    }
}

/// The engine's state as the guest saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    NotInitialised,
    Init {
        epoch: u32,
        min: u32,
        pubkey: String,
    },
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::NotInitialised => f.write_str("not initialised"),
            Seen::Init { epoch, min, pubkey } => write!(
                f,
                "epoch {epoch}, oldest {min}, key {}",
                &sha256_hex(pubkey.as_bytes())[..12]
            ),
        }
    }
}

/// A blob sealed on the board, with what it must unseal to.
#[derive(Clone)]
pub(crate) struct Blob {
    pub(crate) name: String,
    pub(crate) text: String,
    pub(crate) epoch: u32,
    pub(crate) pubkey: String,
    pub(crate) plaintext: Vec<u8>,
}

/// What the previous boot leaves for the next check.
pub(crate) enum Prev {
    /// No cut: exactly this state.
    Exact(Seen),
    /// A cut in `op`, started from `old`.
    Cut { op: Op, old: Seen },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Old,
    New,
    Lost(String),
}

pub(crate) fn field<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = json.get(start..)?;
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest.get(..end).map(str::trim)
}

/// The state from a `... -status` and `... -pubkey` step pair.
pub(crate) fn seen(r: &HashMap<String, Step>, prefix: &str) -> std::result::Result<Seen, String> {
    let st = r
        .get(&format!("{prefix}-status"))
        .ok_or(format!("no {prefix}-status result"))?;
    if st.rc != 0 {
        return Err(format!(
            "`teectl status` exit {} ({})",
            st.rc,
            st.err.trim()
        ));
    }
    match field(&st.out, "initialised") {
        Some("false") => return Ok(Seen::NotInitialised),
        Some("true") => {}
        _ => return Err(format!("unexpected status {:?}", st.out)),
    }
    let num = |k| {
        field(&st.out, k)
            .and_then(|v| v.parse().ok())
            .ok_or(format!("no {k} in {:?}", st.out))
    };
    let pk = r
        .get(&format!("{prefix}-pubkey"))
        .ok_or(format!("no {prefix}-pubkey result"))?;
    if pk.rc != 0 || !pk.out.contains("PUBLIC KEY") {
        return Err(format!(
            "`teectl pubkey` exit {} ({})",
            pk.rc,
            pk.err.trim()
        ));
    }
    Ok(Seen::Init {
        epoch: num("epoch")?,
        min: num("min_epoch")?,
        pubkey: pk.out.trim().to_string(),
    })
}

/// Judge a boot's checks against what the previous boot left; on success
/// `blobs` drops those a completed new identity destroyed.
pub(crate) fn judge(
    r: &HashMap<String, Step>,
    prev: &Prev,
    blobs: &mut Vec<Blob>,
) -> (Outcome, Option<Seen>) {
    let s = match seen(r, "check") {
        Ok(s) => s,
        Err(e) => {
            return (
                Outcome::Lost(format!("the engine does not answer: {e}")),
                None,
            )
        }
    };
    let outcome = match prev {
        Prev::Exact(want) if *want == s => Outcome::Old,
        Prev::Exact(want) => {
            Outcome::Lost(format!("state changed with no operation: {s} (was {want})"))
        }
        Prev::Cut { old, .. } if *old == s => Outcome::Old,
        Prev::Cut { op, old } if op.is_new(old, &s) => Outcome::New,
        Prev::Cut { old, .. } => Outcome::Lost(format!("a third state: {s} (before: {old})")),
    };
    if let Outcome::Lost(_) = outcome {
        return (outcome, Some(s));
    }
    let mut bad = Vec::new();
    for b in blobs.iter() {
        let Some(u) = r.get(&format!("unseal-{}", b.name)) else {
            bad.push(format!("{}: not tried", b.name));
            continue;
        };
        let ok = match &s {
            Seen::Init { min, pubkey, .. } if *pubkey == b.pubkey => {
                if b.epoch >= *min {
                    u.rc == 0 && u.sha256 == sha256_hex(&b.plaintext)
                } else {
                    u.rc == 4
                }
            }
            // Another identity (or none): the blob must not open.
            _ => u.rc != 0,
        };
        if !ok {
            bad.push(format!(
                "{} (epoch {}): exit {} {}",
                b.name,
                b.epoch,
                u.rc,
                u.err.trim()
            ));
        }
    }
    if !bad.is_empty() {
        return (Outcome::Lost(format!("blobs: {}", bad.join("; "))), Some(s));
    }
    if let Seen::Init { pubkey, .. } = &s {
        blobs.retain(|b| b.pubkey == *pubkey);
    }
    // After an interrupted init, init must finish the job, never re-key.
    if let Some(f) = r.get("finish-init") {
        let pk = r.get("finish-pubkey").map(|p| p.out.trim()).unwrap_or("");
        let ok = match &s {
            Seen::NotInitialised => f.rc == 0 && f.out.contains("initialised: new root key"),
            Seen::Init { pubkey, .. } => {
                f.rc == 0 && f.out.contains("already initialised") && pk == pubkey
            }
        };
        if !ok {
            return (
                Outcome::Lost(format!(
                    "`teectl init` after the cut: exit {} {:?} {}",
                    f.rc, f.out, f.err
                )),
                Some(s),
            );
        }
    }
    (outcome, Some(s))
}
