//! `teectl secrets`: Home Assistant's `secrets.yaml`, sealed at rest.
//!
//! - `import` seals every value of a plaintext `secrets.yaml` into a sealed
//!   file that keeps its keys, order and comments byte for byte: each value
//!   becomes the text form of a blob whose plaintext is the value (a
//!   string's bytes, or a number's, boolean's or null's canonical text),
//!   with a `!hakeys-int`/`-float`/`-bool`/`-null` tag for non-strings;
//! - `render` opens every blob and writes a fresh plaintext YAML document
//!   (the view Home Assistant reads) atomically, mode 0600, or nothing;
//! - `set` adds or replaces one sealed value; `check` opens every blob.
//!
//! Formats: `host/SPEC.md` section 5; the board integration:
//! `docs/home-assistant.md`. Errors name keys and lines, never values.

use std::io::Read;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use hakeys_client::armor;
use hakeys_client::backend::{Backend, BackendKind};
use hakeys_client::client::Client;
use teed_protocol::client::{with_retries, DaemonError};
use zeroize::{Zeroize, Zeroizing};

use crate::{exit, usage, Failure};

mod file;
mod scalar;
mod yaml;

#[cfg(test)]
mod tests;

use scalar::Kind;
use yaml::{Doc, Entry, Flavour, Item};

/// The namespace Home Assistant Core's secrets are sealed in.
pub const DEFAULT_NAMESPACE: &str = "ha/core";

/// `teectl secrets ...`
#[derive(Args)]
pub struct SecretsArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Seal every value of a plaintext secrets.yaml into a sealed file that
    /// keeps its keys, order and comments (and each value's YAML type).
    Import {
        /// The plaintext secrets.yaml.
        #[arg(long = "in", value_name = "SECRETS.yaml")]
        input: PathBuf,
        /// The sealed file to write.
        #[arg(long = "out", value_name = "SEALED.yaml")]
        output: PathBuf,
        /// Seal into this namespace.
        #[arg(long, short = 'n', default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        /// Replace the sealed file if it exists.
        #[arg(long)]
        force: bool,
        /// Merge into an existing sealed file: the input's values replace
        /// those of the same names, new names are added at the end, the
        /// others stay (for a plaintext secrets.yaml that reappeared).
        #[arg(long, conflicts_with = "force")]
        merge: bool,
        /// Keep this value in the clear, unchanged (repeatable).
        #[arg(long = "clear", value_name = "NAME")]
        clear: Vec<String>,
    },
    /// Write the plaintext view of a sealed file (mode 0600, atomically; if
    /// any value does not open, nothing is written).
    Render {
        #[arg(long = "in", value_name = "SEALED.yaml")]
        input: PathBuf,
        #[arg(long = "out", value_name = "PATH")]
        output: PathBuf,
        /// Refuse any blob of another namespace.
        #[arg(long, short = 'n', default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// Add or replace one value, sealed, read from stdin (byte-exact: use
    /// printf '%s', not echo).
    Set {
        #[arg(long, value_name = "SEALED.yaml")]
        file: PathBuf,
        /// The secret's name.
        name: String,
        #[arg(long, short = 'n', default_value = DEFAULT_NAMESPACE)]
        namespace: String,
        /// The value's YAML type; a number, boolean or null is read as YAML
        /// would read it unquoted (surrounding blanks ignored).
        #[arg(long = "type", value_name = "TYPE", default_value = "str", value_parser = ["str", "int", "float", "bool", "null"])]
        kind: String,
    },
    /// Check that every value of a sealed file opens; print names only.
    Check {
        #[arg(long = "in", value_name = "SEALED.yaml")]
        input: PathBuf,
        #[arg(long, short = 'n', default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

/// How to reach the key engine, from teectl's global options.
pub struct EngineChoice {
    pub backend: Option<BackendKind>,
    pub state_dir: Option<PathBuf>,
    pub via_daemon: bool,
    pub socket: PathBuf,
}

enum Engine {
    Direct(Box<Client<Backend>>),
    Daemon(PathBuf),
}

impl Engine {
    /// As `teectl unseal` chooses: through the daemon with --via-daemon,
    /// or for a caller that is not root, named no backend or state, and
    /// finds the socket; else the engine directly.
    fn open(c: &EngineChoice) -> Result<Engine, Failure> {
        if c.via_daemon {
            if c.backend.is_some() || c.state_dir.is_some() {
                return Err(usage(
                    "--via-daemon cannot be combined with --backend or --state-dir",
                ));
            }
            return Ok(Engine::Daemon(c.socket.clone()));
        }
        if c.backend.is_none()
            && c.state_dir.is_none()
            && std::env::var_os(hakeys_client::sim::STATE_DIR_ENV).is_none_or(|d| d.is_empty())
            && !hakeys_client::is_root()
            && c.socket.exists()
        {
            return Ok(Engine::Daemon(c.socket.clone()));
        }
        Backend::open(c.backend, c.state_dir.as_deref())
            .map(|b| Engine::Direct(Box::new(Client::new(b))))
            .map_err(|e| Failure(exit::UNAVAILABLE, e.to_string()))
    }

    fn seal(&mut self, namespace: &str, plaintext: &[u8]) -> Result<String, Failure> {
        match self {
            Engine::Direct(c) => Ok(armor::blob_to_text(&c.seal(namespace, plaintext)?)),
            Engine::Daemon(s) => Ok(with_retries(s, 4, |d| d.seal(namespace, plaintext))?),
        }
    }

    fn unseal(&mut self, blob: &str, namespace: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
        match self {
            Engine::Direct(c) => {
                let bytes = armor::blob_from_input(blob.as_bytes())
                    .map_err(|e| Failure(exit::REJECTED, e.to_string()))?;
                let mut r = c.unseal(&bytes, Some(namespace))?;
                let out = Zeroizing::new(r.plaintext.to_vec());
                r.plaintext.as_mut_slice().zeroize();
                Ok(out)
            }
            Engine::Daemon(s) => {
                let r: Result<_, DaemonError> =
                    with_retries(s, 4, |d| d.unseal(blob, Some(namespace)));
                Ok(r?.1)
            }
        }
    }
}

/// Run `teectl secrets ...`.
pub fn run(args: &SecretsArgs, engine: &EngineChoice) -> Result<(), Failure> {
    match &args.action {
        Action::Import {
            input,
            output,
            namespace,
            force,
            merge,
            clear,
        } => import(engine, input, output, namespace, *force, *merge, clear),
        Action::Render {
            input,
            output,
            namespace,
        } => render(engine, input, output, namespace),
        Action::Set {
            file,
            name,
            namespace,
            kind,
        } => set(engine, file, name, namespace, kind),
        Action::Check { input, namespace } => check(engine, input, namespace),
    }
}

fn bad_input(path: &Path, e: impl std::fmt::Display) -> Failure {
    Failure(exit::USAGE, format!("{}: {e}", path.display()))
}

/// Read and parse a secrets file.
fn load(path: &Path, flavour: Flavour) -> Result<(Zeroizing<String>, Doc), Failure> {
    let bytes = file::read_bounded(path, yaml::MAX_FILE).map_err(|e| Failure(exit::USAGE, e))?;
    let text = Zeroizing::new(
        std::str::from_utf8(&bytes)
            .map_err(|_| bad_input(path, "not UTF-8 text"))?
            .to_owned(),
    );
    let doc = yaml::parse(&text, flavour).map_err(|e| bad_input(path, e))?;
    Ok((text, doc))
}

fn check_namespace(ns: &str) -> Result<(), Failure> {
    hakeys_proto::Namespace::try_from(ns)
        .map(|_| ())
        .map_err(|_| usage(format!("invalid namespace {ns:?}")))
}

/// The plaintext a value is sealed as, or None for a value that stays in
/// the clear (an empty string has nothing to hide and cannot be sealed).
fn plaintext_of(v: &scalar::Value) -> Option<&[u8]> {
    (!v.text.is_empty()).then_some(v.text.as_bytes())
}

/// The sealed file's token for a blob of `kind`.
fn sealed_token(kind: Kind, blob: &str) -> String {
    match kind.tag() {
        Some(tag) => format!("!{tag} {blob}"),
        None => blob.to_string(),
    }
}

/// Seal every value of `doc` (but those in `clear`); the replacement tokens
/// by entry index (None: kept as it is).
fn seal_values(
    engine: &mut Engine,
    doc: &Doc,
    namespace: &str,
    clear: &[String],
) -> Result<Vec<Option<String>>, Failure> {
    let mut out = Vec::with_capacity(doc.entries.len());
    for e in &doc.entries {
        let v = match &e.item {
            Item::Clear(v) if !clear.contains(&e.key) => v,
            _ => {
                out.push(None);
                continue;
            }
        };
        let Some(pt) = plaintext_of(v) else {
            out.push(None);
            continue;
        };
        if pt.len() > hakeys_proto::MAX_SECRET_LEN {
            return Err(usage(format!(
                "line {}: key {}: the value is longer than {} bytes, the most a blob holds",
                e.line,
                yaml::show_key(&e.key),
                hakeys_proto::MAX_SECRET_LEN
            )));
        }
        let blob = engine
            .seal(namespace, pt)
            .map_err(|f| Failure(f.0, format!("key {}: {}", yaml::show_key(&e.key), f.1)))?;
        out.push(Some(sealed_token(v.kind, &blob)));
    }
    Ok(out)
}

fn import(
    choice: &EngineChoice,
    input: &Path,
    output: &Path,
    namespace: &str,
    force: bool,
    merge: bool,
    clear: &[String],
) -> Result<(), Failure> {
    check_namespace(namespace)?;
    let (text, doc) = load(input, Flavour::Plain)?;
    for name in clear {
        if !doc.entries.iter().any(|e| &e.key == name) {
            return Err(usage(format!(
                "--clear {}: {} has no such key",
                yaml::show_key(name),
                input.display()
            )));
        }
    }
    let exists = std::fs::symlink_metadata(output).is_ok();
    if exists && !force && !merge {
        return Err(usage(format!(
            "{} exists; add --force to replace it (or --merge to merge into it)",
            output.display()
        )));
    }
    let base = if merge && exists {
        Some(load(output, Flavour::Sealed)?)
    } else {
        None
    };
    let mut engine = Engine::open(choice)?;
    let tokens = seal_values(&mut engine, &doc, namespace, clear)?;
    let result = match &base {
        None => {
            let mut i = 0;
            yaml::rewrite(&text, &doc, |_| {
                let t = tokens.get(i).cloned().flatten();
                i += 1;
                t
            })
        }
        Some((sealed_text, sealed_doc)) => {
            // The input's values, as the sealed file writes them.
            // (A value kept in the clear is written on one line.)
            let token_of = |e: &Entry, t: &Option<String>| -> String {
                t.clone()
                    .unwrap_or_else(|| single_line(&text[e.range.clone()]))
            };
            let replaced = yaml::rewrite(sealed_text, sealed_doc, |s| {
                doc.entries
                    .iter()
                    .zip(&tokens)
                    .find(|(e, _)| e.key == s.key)
                    .map(|(e, t)| token_of(e, t))
            });
            let reparsed = yaml::parse(&replaced, Flavour::Sealed).map_err(|e| {
                Failure(
                    exit::INTERNAL,
                    format!("merging produced a file that does not parse: {e}"),
                )
            })?;
            let new_lines: Vec<String> = doc
                .entries
                .iter()
                .zip(&tokens)
                .filter(|(e, _)| !sealed_doc.entries.iter().any(|s| s.key == e.key))
                .map(|(e, t)| format!("{}: {}", yaml::write_key(&e.key), token_of(e, t)))
                .collect();
            yaml::append(&replaced, &reparsed, &new_lines)
        }
    };
    verify_sealed(&result)?;
    file::write_atomic(output, result.as_bytes(), 0o600).map_err(|e| Failure(exit::INTERNAL, e))?;
    let sealed = tokens.iter().filter(|t| t.is_some()).count();
    crate::write_stdout(
        format!(
            "{}: {} values sealed in namespace {namespace}, {} kept in the clear\n",
            output.display(),
            sealed,
            doc.entries.len() - sealed
        )
        .as_bytes(),
    )
}

/// A value kept in the clear, for a line added at the end of a file: a
/// multi-line original is rewritten double-quoted.
fn single_line(token: &str) -> String {
    if token.contains(['\n', '\r']) {
        // Only clear strings can span lines (blobs are one token).
        match yaml::parse(&format!("k: {token}\n"), Flavour::Plain)
            .ok()
            .and_then(|d| d.entries.into_iter().next())
        {
            Some(Entry {
                item: Item::Clear(v),
                ..
            }) if v.kind == Kind::Str => {
                let mut s = String::new();
                scalar::push_double_quoted(&mut s, &v.text);
                s
            }
            _ => token.replace(['\n', '\r'], " "),
        }
    } else {
        token.to_string()
    }
}

/// What this tool writes as a sealed file must read back as one.
fn verify_sealed(text: &str) -> Result<(), Failure> {
    yaml::parse(text, Flavour::Sealed).map(|_| ()).map_err(|e| {
        Failure(
            exit::INTERNAL,
            format!("the sealed file written would not read back: {e}"),
        )
    })
}

/// Open every value of a sealed file: (key, kind, text) in file order.
fn open_all(
    engine: &mut Engine,
    doc: &Doc,
    namespace: &str,
) -> Result<Vec<(String, Kind, Zeroizing<String>)>, Failure> {
    let mut out = Vec::with_capacity(doc.entries.len());
    for e in &doc.entries {
        let key = yaml::show_key(&e.key);
        let (kind, text) = match &e.item {
            Item::Clear(v) => (v.kind, v.text.clone()),
            Item::Sealed { kind, blob } => {
                let pt = engine
                    .unseal(blob, namespace)
                    .map_err(|f| Failure(f.0, format!("key {key}: {}", f.1)))?;
                let text = match std::str::from_utf8(&pt) {
                    Ok(s) => Zeroizing::new(s.to_owned()),
                    Err(_) => {
                        return Err(Failure(
                            exit::REJECTED,
                            format!("key {key}: the sealed value is not UTF-8 text, which a YAML string must be"),
                        ))
                    }
                };
                if !scalar::canonical_ok(*kind, &text) {
                    return Err(Failure(
                        exit::REJECTED,
                        format!(
                            "key {key}: the sealed value is not the canonical text of a YAML {}",
                            kind.name()
                        ),
                    ));
                }
                (*kind, text)
            }
        };
        out.push((e.key.clone(), kind, text));
    }
    Ok(out)
}

/// The plaintext YAML document for `values`: one `"key": value` line each,
/// keys and strings double-quoted and escaped, other values canonical.
fn render_yaml(values: &[(String, Kind, Zeroizing<String>)]) -> Zeroizing<String> {
    const HEADER: &str = "# Rendered by `teectl secrets render`: a plaintext view in RAM. Do not edit:\n# change the sealed file (teectl secrets set), then render again.\n";
    let bound = HEADER.len()
        + 3
        + values
            .iter()
            .map(|(k, _, v)| scalar::double_quoted_bound(k) + scalar::double_quoted_bound(v) + 3)
            .sum::<usize>();
    let mut out = Zeroizing::new(String::with_capacity(bound));
    out.push_str(HEADER);
    if values.is_empty() {
        out.push_str("{}\n");
    }
    for (k, kind, v) in values {
        scalar::push_double_quoted(&mut out, k);
        out.push_str(": ");
        if *kind == Kind::Str {
            scalar::push_double_quoted(&mut out, v);
        } else {
            out.push_str(v);
        }
        out.push('\n');
    }
    out
}

fn render(
    choice: &EngineChoice,
    input: &Path,
    output: &Path,
    namespace: &str,
) -> Result<(), Failure> {
    check_namespace(namespace)?;
    if std::fs::symlink_metadata(output).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(usage(format!(
            "{} is a symbolic link; give the path it points to (replacing the link would put the plaintext where the link is)",
            output.display()
        )));
    }
    let (_text, doc) = load(input, Flavour::Sealed)?;
    let mut engine = Engine::open(choice)?;
    let values = open_all(&mut engine, &doc, namespace)?;
    let yaml = render_yaml(&values);
    // An unchanged rendering is left alone (no write, no change event for
    // whoever watches it).
    if std::fs::symlink_metadata(output).is_ok_and(|m| m.is_file() && m.len() == yaml.len() as u64)
        && file::read_bounded(output, yaml.len()).is_ok_and(|old| old[..] == *yaml.as_bytes())
    {
        return Ok(());
    }
    file::write_atomic(output, yaml.as_bytes(), 0o600).map_err(|e| Failure(exit::INTERNAL, e))
}

fn check(choice: &EngineChoice, input: &Path, namespace: &str) -> Result<(), Failure> {
    check_namespace(namespace)?;
    let (_text, doc) = load(input, Flavour::Sealed)?;
    let mut engine = Engine::open(choice)?;
    let values = open_all(&mut engine, &doc, namespace)?;
    let mut out = String::new();
    for (e, (_, kind, _)) in doc.entries.iter().zip(&values) {
        let how = match e.item {
            Item::Sealed { .. } => "sealed",
            Item::Clear(_) => "clear ",
        };
        out.push_str(&format!(
            "{how} {:<5} {}\n",
            kind.name(),
            yaml::show_key(&e.key)
        ));
    }
    out.push_str(&format!(
        "{} values open in namespace {namespace}\n",
        values.len()
    ));
    crate::write_stdout(out.as_bytes())
}

fn set(
    choice: &EngineChoice,
    file_path: &Path,
    name: &str,
    namespace: &str,
    kind: &str,
) -> Result<(), Failure> {
    check_namespace(namespace)?;
    let kind = Kind::from_name(kind)
        .ok_or_else(|| usage("--type is one of str, int, float, bool, null"))?;
    if name.is_empty() {
        return Err(usage("the secret's name is empty"));
    }
    if !std::fs::symlink_metadata(file_path).is_ok_and(|m| m.is_file()) {
        return Err(usage(format!(
            "{} is not a sealed file (create one with `teectl secrets import`, or start from an empty file)",
            file_path.display()
        )));
    }
    let (text, doc) = load(file_path, Flavour::Sealed)?;
    let mut raw = Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take(hakeys_proto::MAX_SECRET_LEN as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| {
            Failure(
                exit::INTERNAL,
                format!("cannot read the value from stdin: {e}"),
            )
        })?;
    if raw.len() > hakeys_proto::MAX_SECRET_LEN {
        return Err(usage(format!(
            "the value on stdin is longer than {} bytes",
            hakeys_proto::MAX_SECRET_LEN
        )));
    }
    let value = std::str::from_utf8(&raw)
        .map_err(|_| usage("the value on stdin is not UTF-8 text, which a YAML value must be"))?;
    let value = match kind {
        Kind::Str => scalar::Value {
            kind,
            text: Zeroizing::new(value.to_owned()),
        },
        _ => {
            let v = scalar::resolve_plain(value.trim_matches([' ', '\t', '\r', '\n']))
                .ok()
                .filter(|v| v.kind == kind)
                .ok_or_else(|| {
                    usage(format!("the value on stdin is not a YAML {}", kind.name()))
                })?;
            v
        }
    };
    let token = match plaintext_of(&value) {
        Some(pt) => {
            let mut engine = Engine::open(choice)?;
            sealed_token(kind, &engine.seal(namespace, pt)?)
        }
        None => "\"\"".to_string(),
    };
    let result = if doc.entries.iter().any(|e| e.key == name) {
        yaml::rewrite(&text, &doc, |e| (e.key == name).then(|| token.clone()))
    } else {
        yaml::append(
            &text,
            &doc,
            &[format!("{}: {token}", yaml::write_key(name))],
        )
    };
    verify_sealed(&result)?;
    file::write_atomic(file_path, result.as_bytes(), 0o600)
        .map_err(|e| Failure(exit::INTERNAL, e))?;
    crate::write_stdout(
        format!("{}: {} sealed\n", file_path.display(), yaml::show_key(name)).as_bytes(),
    )
}
