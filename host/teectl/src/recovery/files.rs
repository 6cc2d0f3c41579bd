//! Whole files for `reseal` and `recover`: find every blob in a file, keep
//! every other byte, quote plaintexts for YAML, and write results
//! atomically or not at all (`host/SPEC.md` §6).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::exit;
use crate::Failure;

/// The largest input file or `*.blob` file read.
pub const MAX_FILE: u64 = 16 * 1024 * 1024;

/// Where a blob sits in a text: `start..end` covers `hakeys:v1:` and the
/// base64 after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Token {
    pub start: usize,
    pub end: usize,
}

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'+' || b == b'/'
}

/// Every blob in `text`: each occurrence of `hakeys:v1:` followed by the
/// longest run of base64 characters and at most two `=`.
pub fn tokens(text: &[u8]) -> Vec<Token> {
    let prefix = hakeys_client::armor::BLOB_PREFIX.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(i) = text
        .get(at..)
        .and_then(|rest| rest.windows(prefix.len()).position(|w| w == prefix))
    {
        let start = at + i;
        let mut end = start + prefix.len();
        while text.get(end).is_some_and(|b| is_b64(*b)) {
            end += 1;
        }
        for _ in 0..2 {
            if text.get(end) == Some(&b'=') {
                end += 1;
            }
        }
        out.push(Token { start, end });
        at = end;
    }
    out
}

/// The 1-based line number of byte `at`.
pub fn line_of(text: &[u8], at: usize) -> usize {
    text.get(..at)
        .map_or(0, |t| t.iter().filter(|b| **b == b'\n').count())
        + 1
}

/// Why a blob's position in a YAML file does not take a plaintext value.
pub const NOT_A_YAML_VALUE: &str = "the blob is not a whole YAML value (`key: BLOB`, `- BLOB`, or either quoted, followed by nothing or a comment), so its plaintext cannot be written safely; use --dir with *.blob files or single blobs";

fn line_bounds(text: &[u8], at: usize) -> (usize, usize) {
    let start = text
        .get(..at)
        .and_then(|t| t.iter().rposition(|b| *b == b'\n'))
        .map_or(0, |i| i + 1);
    let end = text
        .get(at..)
        .and_then(|t| t.iter().position(|b| *b == b'\n'))
        .map_or(text.len(), |i| at + i);
    (start, end)
}

/// A plain mapping key as HA's secrets.yaml has them: `[A-Za-z0-9_]` then
/// `[A-Za-z0-9_.-/]`.
fn is_plain_key(k: &[u8]) -> bool {
    let mut it = k.iter();
    it.next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        && it.all(|c| c.is_ascii_alphanumeric() || b"_.-/".contains(c))
}

/// `pre` (the line before a value) is indentation, any number of `- `
/// sequence entries, and then optionally `KEY:` and spaces; at least one
/// entry or the key.
fn value_prefix_ok(pre: &[u8]) -> bool {
    let mut rest = pre;
    while let [b' ', tail @ ..] = rest {
        rest = tail;
    }
    let mut entries = 0;
    while let [b'-', b' ', tail @ ..] = rest {
        entries += 1;
        rest = tail;
        while let [b' ', tail @ ..] = rest {
            rest = tail;
        }
    }
    if rest.is_empty() {
        return entries > 0;
    }
    let Some(colon) = rest.iter().position(|b| *b == b':') else {
        return false;
    };
    let (key, after) = rest.split_at(colon);
    let spaces = after.get(1..).unwrap_or_default();
    is_plain_key(key) && !spaces.is_empty() && spaces.iter().all(|b| *b == b' ')
}

/// `post` (the line after a value) is nothing, or blanks, or blanks and a
/// comment; a final `\r` is allowed.
fn value_suffix_ok(post: &[u8]) -> bool {
    let post = post.strip_suffix(b"\r").unwrap_or(post);
    let blanks = post
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(post.len());
    match post.get(blanks..) {
        None | Some([]) => true,
        Some([b'#', ..]) => blanks > 0,
        Some(_) => false,
    }
}

/// Whether a line opens a block scalar (`key: |`, `- >-`, `|2` ...): its
/// content, comment removed, ends with `|` or `>` and indicators.
fn opens_block_scalar(line: &[u8]) -> bool {
    let content = match line.windows(2).position(|w| w == b" #") {
        Some(i) => line.get(..i).unwrap_or_default(),
        None => line,
    };
    let content = content.trim_ascii_end();
    let last_word = content
        .iter()
        .rposition(|b| *b == b' ')
        .map_or(content, |i| content.get(i + 1..).unwrap_or_default());
    matches!(last_word.first(), Some(b'|' | b'>'))
        && last_word
            .get(1..)
            .unwrap_or_default()
            .iter()
            .all(|b| b.is_ascii_digit() || *b == b'+' || *b == b'-')
}

fn indent(line: &[u8]) -> usize {
    line.iter().take_while(|b| **b == b' ').count()
}

/// For every line of `text`, whether it lies inside a block scalar
/// (`|`/`>`): more indented than the line that opened it, or blank.
pub fn block_scalar_lines(text: &[u8]) -> Vec<bool> {
    let mut out = Vec::new();
    let mut open: Option<usize> = None;
    for line in text.split(|b| *b == b'\n') {
        let blank = line.trim_ascii().is_empty();
        let inside = match open {
            Some(parent) => blank || indent(line) > parent,
            None => false,
        };
        if !inside {
            open = opens_block_scalar(line).then(|| indent(line));
        }
        out.push(inside);
    }
    out
}

/// The span a plaintext replaces for `tok` in a YAML `text`: the token, or
/// the token with its quotes; refused (with [`NOT_A_YAML_VALUE`]) unless
/// the blob is a whole value on its line and not inside a block scalar.
pub fn yaml_value_span(text: &[u8], tok: Token, block: &[bool]) -> Result<(usize, usize), ()> {
    if block
        .get(line_of(text, tok.start) - 1)
        .copied()
        .unwrap_or(false)
    {
        return Err(());
    }
    let (ls, le) = line_bounds(text, tok.start);
    let pre = text.get(ls..tok.start).ok_or(())?;
    let post = text.get(tok.end..le).ok_or(())?;
    let (pre, post, span) = match (pre.last(), post.first()) {
        (Some(q @ (b'"' | b'\'')), Some(q2)) if q == q2 => (
            pre.get(..pre.len() - 1).ok_or(())?,
            post.get(1..).ok_or(())?,
            (tok.start - 1, tok.end + 1),
        ),
        _ => (pre, post, (tok.start, tok.end)),
    };
    if value_prefix_ok(pre) && value_suffix_ok(post) {
        Ok(span)
    } else {
        Err(())
    }
}

/// `plaintext` as a YAML double-quoted scalar that every YAML 1.1 and 1.2
/// parser reads back as exactly these characters: ASCII only, with `"`,
/// `\`, control characters and everything beyond ASCII escaped. Refused if
/// the plaintext is not UTF-8 text (YAML cannot carry arbitrary bytes).
pub fn yaml_double_quoted(plaintext: &[u8]) -> Result<Zeroizing<String>, ()> {
    let text = std::str::from_utf8(plaintext).map_err(|_| ())?;
    let mut out = Zeroizing::new(String::with_capacity(text.len() + 2));
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    Ok(out)
}

/// What one blob became.
pub enum Converted {
    /// A blob (binary); written in the form the input had.
    Blob(Vec<u8>),
    /// A plaintext.
    Plaintext(Zeroizing<Vec<u8>>),
}

/// Convert every blob of a text file. Errors name the file and line.
pub fn convert_text(
    path: &Path,
    text: &[u8],
    yaml_plaintext: bool,
    convert: &mut dyn FnMut(&[u8]) -> Result<Converted, Failure>,
) -> Result<(Zeroizing<Vec<u8>>, usize), Failure> {
    let toks = tokens(text);
    if toks.is_empty() {
        return Err(crate::usage(format!(
            "{}: no blob (hakeys:v1:...) in this file",
            path.display()
        )));
    }
    let block = if yaml_plaintext {
        block_scalar_lines(text)
    } else {
        Vec::new()
    };
    let at = |tok: Token, f: Failure| {
        Failure(
            f.0,
            format!(
                "{} line {}: {}",
                path.display(),
                line_of(text, tok.start),
                f.1
            ),
        )
    };
    let mut out = Zeroizing::new(Vec::with_capacity(text.len()));
    let mut copied = 0;
    for tok in &toks {
        let (start, end) = if yaml_plaintext {
            yaml_value_span(text, *tok, &block)
                .map_err(|_| at(*tok, crate::usage(NOT_A_YAML_VALUE)))?
        } else {
            (tok.start, tok.end)
        };
        let token_text = text.get(tok.start..tok.end).unwrap_or_default();
        let blob = hakeys_client::armor::blob_from_input(token_text)
            .map_err(|e| at(*tok, Failure(exit::REJECTED, e.to_string())))?;
        let converted = convert(&blob).map_err(|f| at(*tok, f))?;
        out.extend_from_slice(text.get(copied..start).unwrap_or_default());
        match converted {
            Converted::Blob(b) => {
                out.extend_from_slice(hakeys_client::armor::blob_to_text(&b).as_bytes())
            }
            Converted::Plaintext(p) => {
                let quoted = yaml_double_quoted(&p).map_err(|_| {
                    at(
                        *tok,
                        crate::usage(
                            "the secret is not UTF-8 text, so it cannot be a YAML value; use --dir with *.blob files or single blobs",
                        ),
                    )
                })?;
                out.extend_from_slice(quoted.as_bytes());
            }
        }
        copied = end;
    }
    out.extend_from_slice(text.get(copied..).unwrap_or_default());
    Ok((out, toks.len()))
}

/// Convert one `*.blob` file: a binary blob (output: the converted blob in
/// binary, or the plaintext), or text holding exactly one blob and blanks
/// (output: the blanks kept around the converted blob, or the plaintext
/// alone).
pub fn convert_blob_file(
    path: &Path,
    content: &[u8],
    convert: &mut dyn FnMut(&[u8]) -> Result<Converted, Failure>,
) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let named = |f: Failure| Failure(f.0, format!("{}: {}", path.display(), f.1));
    if content.starts_with(&hakeys_engine::blob::BLOB_MAGIC) {
        return Ok(match convert(content).map_err(named)? {
            Converted::Blob(b) => Zeroizing::new(b),
            Converted::Plaintext(p) => p,
        });
    }
    let toks = tokens(content);
    let one_blob = match toks.as_slice() {
        [t] => content
            .get(..t.start)
            .zip(content.get(t.end..))
            .is_some_and(|(pre, post)| {
                pre.iter().all(u8::is_ascii_whitespace) && post.iter().all(u8::is_ascii_whitespace)
            }),
        _ => false,
    };
    if !one_blob {
        return Err(named(crate::usage(
            "a .blob file must hold exactly one blob (text or binary)",
        )));
    }
    let tok = toks[0];
    let blob =
        hakeys_client::armor::blob_from_input(content.get(tok.start..tok.end).unwrap_or_default())
            .map_err(|e| named(Failure(exit::REJECTED, e.to_string())))?;
    Ok(match convert(&blob).map_err(named)? {
        Converted::Plaintext(p) => p,
        Converted::Blob(b) => {
            let mut out = Zeroizing::new(content.get(..tok.start).unwrap_or_default().to_vec());
            out.extend_from_slice(hakeys_client::armor::blob_to_text(&b).as_bytes());
            out.extend_from_slice(content.get(tok.end..).unwrap_or_default());
            out
        }
    })
}

/// Read a whole file, refusing more than [`MAX_FILE`] bytes.
pub fn read_file(path: &Path) -> Result<Zeroizing<Vec<u8>>, Failure> {
    let f = std::fs::File::open(path)
        .map_err(|e| crate::usage(format!("cannot read {}: {e}", path.display())))?;
    let mut buf = Zeroizing::new(Vec::new());
    f.take(MAX_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|e| crate::usage(format!("cannot read {}: {e}", path.display())))?;
    if buf.len() as u64 > MAX_FILE {
        return Err(crate::usage(format!(
            "{} is larger than {MAX_FILE} bytes",
            path.display()
        )));
    }
    Ok(buf)
}

/// The permission bits of an existing path (for copying them).
pub fn mode_of(path: &Path) -> Result<u32, Failure> {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o777)
        .map_err(|e| crate::usage(format!("cannot read {}: {e}", path.display())))
}

fn output_failure(path: &Path, e: std::io::Error) -> Failure {
    Failure(
        exit::OUTPUT,
        format!("cannot write {}: {e}; nothing was written", path.display()),
    )
}

/// A failure for an output that exists.
pub fn exists(path: &Path, hint: &str) -> Failure {
    Failure(
        exit::OUTPUT,
        format!(
            "{} already exists; nothing was written{hint}",
            path.display()
        ),
    )
}

fn temp_name(path: &Path) -> PathBuf {
    let mut r = [0u8; 6];
    // A name collision only makes the exclusive create fail: no harm.
    let _ = getrandom_fill(&mut r);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        hex::encode(r)
    ))
}

fn getrandom_fill(out: &mut [u8]) -> Result<(), hakeys_engine::EntropyError> {
    hakeys_engine::Entropy::fill(&mut hakeys_client::OsEntropy, out)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    let d = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(d)?.sync_all()
}

fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Write `bytes` to `path` with `mode`, atomically: a temporary file in the
/// same directory, written and synced, then linked into place (refused if
/// `path` exists) or, with `replace`, renamed over it. The reader sees the
/// old file or the whole new one, never a part.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32, replace: bool) -> Result<(), Failure> {
    if !replace && std::fs::symlink_metadata(path).is_ok() {
        return Err(exists(path, "; add --force to replace it"));
    }
    let tmp = temp_name(path);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode given to open() is filtered by the umask: set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        if replace {
            std::fs::rename(&tmp, path)
        } else {
            std::fs::hard_link(&tmp, path).and_then(|_| std::fs::remove_file(&tmp))
        }?;
        sync_dir(parent(path))
    })();
    match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            if e.kind() == std::io::ErrorKind::AlreadyExists && !replace {
                Err(exists(path, "; add --force to replace it"))
            } else {
                Err(output_failure(path, e))
            }
        }
    }
}

/// The regular `*.blob` files of `dir` (not hidden), sorted by name.
pub fn blob_files(dir: &Path) -> Result<Vec<(OsString, PathBuf)>, Failure> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| crate::usage(format!("cannot read the directory {}: {e}", dir.display())))?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| {
            crate::usage(format!("cannot read the directory {}: {e}", dir.display()))
        })?;
        let name = entry.file_name();
        let s = name.to_string_lossy();
        if s.starts_with('.') || !s.ends_with(".blob") {
            continue;
        }
        let path = entry.path();
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            out.push((name, path));
        }
    }
    if out.is_empty() {
        return Err(crate::usage(format!(
            "no *.blob files in {}",
            dir.display()
        )));
    }
    out.sort();
    Ok(out)
}

/// One file of a directory result.
pub struct OutFile {
    pub name: OsString,
    pub bytes: Zeroizing<Vec<u8>>,
    pub mode: u32,
}

/// Write `files` as the directory `out` (mode `dir_mode`). If `out` does
/// not exist, the files go into a temporary directory next to it, which is
/// renamed into place when all are written and synced: the directory
/// appears whole or not at all. With `replace` and an existing directory,
/// each file is replaced atomically on its own (other files are left).
pub fn write_dir(
    out: &Path,
    files: &[OutFile],
    dir_mode: u32,
    replace: bool,
) -> Result<(), Failure> {
    match std::fs::symlink_metadata(out) {
        Ok(m) if replace && m.is_dir() => {
            for f in files {
                write_file(&out.join(&f.name), &f.bytes, f.mode, true)?;
            }
            return Ok(());
        }
        Ok(_) if replace => {
            return Err(Failure(
                exit::OUTPUT,
                format!(
                    "{} exists and is not a directory; nothing was written",
                    out.display()
                ),
            ))
        }
        Ok(_) => return Err(exists(out, "; add --force to replace its files")),
        Err(_) => {}
    }
    let tmp = temp_name(out);
    let result = (|| {
        std::fs::DirBuilder::new().mode(dir_mode).create(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(dir_mode))?;
        for f in files {
            let path = tmp.join(&f.name);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(f.mode)
                .open(&path)?;
            file.set_permissions(std::fs::Permissions::from_mode(f.mode))?;
            file.write_all(&f.bytes)?;
            file.sync_all()?;
        }
        sync_dir(&tmp)?;
        if std::fs::symlink_metadata(out).is_ok() {
            return Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists));
        }
        std::fs::rename(&tmp, out)?;
        sync_dir(parent(out))
    })();
    result.map_err(|e| {
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let _ = std::fs::remove_dir(&tmp);
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            exists(out, "; add --force to replace its files")
        } else {
            output_failure(out, e)
        }
    })
}
