//! Reading a secrets file: a top-level mapping of scalars, with the byte
//! range of every value so that a value can be rewritten and everything
//! else kept byte for byte (keys, order, comments, blank lines, line ends).
//!
//! Parsed with `saphyr-parser` (a YAML 1.2 event parser that reports the
//! span of each event); what Home Assistant's YAML 1.1 loader would read
//! differently is refused: raw U+0085, U+2028, U+2029 (line breaks to
//! YAML 1.1, content to 1.2), a byte order mark after the start, and a
//! carriage return that is not part of `\r\n`. So is
//! everything this tool does not support, by key name and line, never by
//! value: nested mappings and sequences, anchors and aliases, tags (other
//! than the sealed file's own), explicit `? ` keys, keys that are not
//! strings, duplicate keys, more than one document.

use std::collections::HashSet;
use std::ops::Range;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};
use zeroize::Zeroizing;

use super::scalar::{self, Kind, Value};

/// A value in a secrets file.
pub enum Item {
    /// A value in the clear: its kind and text (see [`Value`]).
    Clear(Value),
    /// A sealed value: its kind (from the tag) and the blob's text.
    Sealed { kind: Kind, blob: String },
}

/// One `key: value` pair.
pub struct Entry {
    pub key: String,
    /// 1-based line of the key.
    pub line: usize,
    /// The bytes of the value (with its tag, block header and content
    /// lines; not the blank lines after it) in the source.
    pub range: Range<usize>,
    pub item: Item,
}

/// A parsed secrets file.
pub struct Doc {
    pub entries: Vec<Entry>,
    /// Where a new `key: value` line can be added: the end of the mapping
    /// (before a final `...`, trailing comments stay above it).
    pub append_at: usize,
}

/// Why a file was refused: where, and what; never a value.
#[derive(Debug)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which file is read: a plaintext `secrets.yaml` (no tags at all) or a
/// sealed file (`!hakeys-*` tags on sealed values).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    Plain,
    Sealed,
}

/// The longest secrets file read.
pub const MAX_FILE: usize = 1 << 20;

/// The text form of a blob in a sealed file: a plain scalar.
pub fn is_blob_text(s: &str) -> bool {
    s.strip_prefix(hakeys_client::armor::BLOB_PREFIX)
        .is_some_and(|b| {
            !b.is_empty()
                && b.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'=')
        })
}

/// A key for messages: quoted and escaped, so nothing in it can forge a
/// line or a terminal sequence.
pub fn show_key(k: &str) -> String {
    format!("{k:?}")
}

struct Src<'a> {
    text: &'a str,
    /// Byte offset of each char index, plus the length at the end.
    offsets: Vec<usize>,
}

impl Src<'_> {
    fn byte(&self, char_index: usize) -> usize {
        self.offsets
            .get(char_index)
            .copied()
            .unwrap_or(self.text.len())
    }

    fn span(&self, s: &Span) -> Range<usize> {
        self.byte(s.start.index())..self.byte(s.end.index())
    }

    fn at(&self, i: usize) -> u8 {
        self.text.as_bytes().get(i).copied().unwrap_or(0)
    }
}

/// Parse `text` as a secrets file of `flavour`.
pub fn parse(text: &str, flavour: Flavour) -> Result<Doc, Refusal> {
    let refuse = |m: String| Err(Refusal(m));
    let line_of = |i: usize| text[..i].matches('\n').count() + 1;
    for (i, c) in text.char_indices() {
        match c {
            '\u{85}' | '\u{2028}' | '\u{2029}' => {
                return refuse(format!(
                    "line {}: a raw U+{:04X} (a line break to YAML 1.1, which Home Assistant reads, but not to YAML 1.2) is not supported; write it as an escape in double quotes (\\N, \\L, \\P)",
                    line_of(i),
                    c as u32
                ))
            }
            '\r' if text.as_bytes().get(i + 1) != Some(&b'\n') => {
                return refuse(format!(
                    "line {}: a carriage return that is not followed by a line feed is not supported (use \\n or \\r\\n line ends)",
                    line_of(i)
                ))
            }
            '\u{feff}' if i > 0 => {
                return refuse(format!(
                    "line {}: a byte order mark (U+FEFF) is only allowed at the start of the file; write it as \\uFEFF in double quotes",
                    line_of(i)
                ))
            }
            c if c != '\t' && c != '\n' && c != '\r' && (c < ' ' || c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) || c == '\u{fffe}' || c == '\u{ffff}') => {
                return refuse(format!(
                    "line {}: the control character U+{:04X} cannot appear raw in YAML; write it as an escape in double quotes",
                    line_of(i),
                    c as u32
                ))
            }
            _ => {}
        }
    }
    let mut offsets: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
    offsets.push(text.len());
    let src = Src { text, offsets };

    let mut parser = Parser::new_from_str(text);
    let mut events: Vec<(Event, Span)> = Vec::new();
    while let Some(ev) = parser.next_event() {
        match ev {
            Ok(e) => events.push(e),
            Err(e) => {
                return refuse(format!(
                    "line {}: not valid YAML: {}",
                    e.marker().line(),
                    e.info()
                ))
            }
        }
    }

    let mut entries: Vec<Entry> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut documents = 0;
    let mut append_at = text.len();
    let mut it = events.into_iter().peekable();
    // Top level: StreamStart, then at most one document holding a
    // mapping (or nothing: an empty file or only comments).
    while let Some((ev, span)) = it.next() {
        match ev {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return refuse(format!(
                        "line {}: more than one YAML document (`---`) is not supported",
                        span.start.line()
                    ));
                }
            }
            Event::DocumentEnd => {
                // Before a `...` end marker, if there is one.
                let r = src.span(&span);
                if text.get(r.clone()) == Some("...") {
                    append_at = r.start;
                }
            }
            Event::MappingStart(anchor, tag) => {
                if text
                    .get(src.span(&span))
                    .is_some_and(|s| s.starts_with('{'))
                {
                    return refuse(format!(
                        "line {}: a flow mapping (`{{...}}`) at the top level is not supported; write one `key: value` per line",
                        span.start.line()
                    ));
                }
                if anchor != 0 || tag.is_some() {
                    return refuse(format!(
                        "line {}: an anchor or tag on the top-level mapping is not supported",
                        span.start.line()
                    ));
                }
                mapping(&src, &mut it, flavour, &mut entries, &mut seen)?;
            }
            Event::Scalar(v, ..) if v.is_empty() => {}
            _ => {
                return refuse(format!(
                    "line {}: the top level must be a mapping of `key: value` lines",
                    span.start.line()
                ))
            }
        }
    }
    Ok(Doc { entries, append_at })
}

type Events<'a> = std::iter::Peekable<std::vec::IntoIter<(Event<'a>, Span)>>;

fn mapping(
    src: &Src,
    it: &mut Events,
    flavour: Flavour,
    entries: &mut Vec<Entry>,
    seen: &mut HashSet<String>,
) -> Result<(), Refusal> {
    let text = src.text;
    loop {
        let Some((ev, kspan)) = it.next() else {
            return Err(Refusal("unexpected end of the YAML events".into()));
        };
        let kline = kspan.start.line();
        let (key, kstyle, kanchor, ktag) = match ev {
            Event::MappingEnd => return Ok(()),
            Event::Scalar(k, style, anchor, tag) => (k.into_owned(), style, anchor, tag),
            _ => {
                return Err(Refusal(format!(
                    "line {kline}: a key that is not a scalar is not supported"
                )))
            }
        };
        let shown = show_key(&key);
        let refuse = |what: &str| Err(Refusal(format!("line {kline}: key {shown}: {what}")));
        if kanchor != 0 || ktag.is_some() {
            return refuse("anchors and tags on keys are not supported");
        }
        let kstart = src.byte(kspan.start.index());
        let line_start = text[..kstart].rfind('\n').map_or(0, |i| i + 1);
        if !text[line_start..kstart]
            .trim_start_matches('\u{feff}')
            .chars()
            .all(|c| c == ' ')
        {
            return refuse(
                "explicit keys (`? `) and keys after other text on their line are not supported",
            );
        }
        match kstyle {
            ScalarStyle::Plain => match scalar::resolve_plain(&key) {
                Ok(v) if v.kind == Kind::Str => {}
                _ => return refuse("this key is not a string to Home Assistant's YAML loader (a number, boolean, null or date); quote it"),
            },
            ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => {}
            _ => return refuse("block scalars as keys are not supported"),
        }
        if !seen.insert(key.clone()) {
            return refuse("this key appears twice");
        }
        let kend = scalar_end(src, kstart, kstyle, src.byte(kspan.end.index()))
            .ok_or_else(|| Refusal(format!("line {kline}: key {shown}: cannot find its end")))?;

        let Some((vev, vspan)) = it.next() else {
            return refuse("no value");
        };
        let (value, vstyle, vanchor, vtag) = match vev {
            Event::Scalar(v, style, anchor, tag) => (Zeroizing::new(v.into_owned()), style, anchor, tag),
            Event::MappingStart(..) => return refuse("nested mappings are not supported: every value must be a single scalar (secrets.yaml holds `name: value` lines)"),
            Event::SequenceStart(..) => return refuse("lists are not supported: every value must be a single scalar"),
            Event::Alias(_) => return refuse("aliases (`*name`) are not supported"),
            _ => return refuse("unexpected YAML structure"),
        };
        if vanchor != 0 {
            return refuse("anchors (`&name`) are not supported");
        }
        let vr = src.span(&vspan);
        // Where the value starts: past the `:` after the key, then blanks,
        // line breaks and comments. An empty value is its (empty) span.
        let empty = value.is_empty() && vstyle == ScalarStyle::Plain && vtag.is_none();
        let colon = skip_blank(text, kend, true);
        if src.at(colon) != b':' {
            return refuse("cannot find the `:` after this key");
        }
        let (start, end) = if empty {
            (colon + 1, colon + 1)
        } else {
            let start = skip_blank(text, colon + 1, true);
            if start > vr.start {
                return refuse("cannot find the start of its value");
            }
            if text[colon + 1..start].contains('\t') {
                // (The YAML parser refuses a tab right after `:` before a
                // plain value, which is what the value becomes.)
                return refuse("a tab between `:` and the value is not supported; use a space");
            }
            let end = match vstyle {
                ScalarStyle::Literal | ScalarStyle::Folded => block_end(text, vr.clone()),
                style => scalar_end(src, vr.start, style, vr.end).ok_or_else(|| {
                    Refusal(format!(
                        "line {kline}: key {shown}: cannot find the end of its value"
                    ))
                })?,
            };
            (start, end)
        };

        let item = match (vtag, flavour) {
            (None, _) if vstyle == ScalarStyle::Plain => {
                if is_blob_text(&value) {
                    if flavour == Flavour::Plain {
                        return refuse("the value is already a sealed blob (`hakeys:v1:...`): is this the sealed file? To keep a blob as a secret's text, quote it");
                    }
                    Item::Sealed { kind: Kind::Str, blob: value.to_string() }
                } else {
                    Item::Clear(scalar::resolve_plain(&value).map_err(|e| {
                        Refusal(format!("line {kline}: key {shown}: {e}"))
                    })?)
                }
            }
            (None, _) => Item::Clear(Value { kind: Kind::Str, text: value }),
            (Some(tag), Flavour::Sealed) if tag.handle == "!" => {
                let Some(kind) = Kind::from_tag(&tag.suffix) else {
                    return refuse("tags are not supported (the sealed file knows only !hakeys-int, !hakeys-float, !hakeys-bool and !hakeys-null)");
                };
                if vstyle != ScalarStyle::Plain || !is_blob_text(&value) {
                    return refuse("a !hakeys-* tag must be followed by a sealed blob (hakeys:v1:...)");
                }
                Item::Sealed { kind, blob: value.to_string() }
            }
            (Some(_), _) => return refuse("tags (`!name`, `!!type`, `!include`, `!secret`, ...) are not supported; quote the value to keep it a string"),
        };
        entries.push(Entry {
            key,
            line: kline,
            range: start..end,
            item,
        });
    }
}

/// Skip spaces and tabs; with `lines`, also line breaks and comments.
fn skip_blank(text: &str, mut i: usize, lines: bool) -> usize {
    let b = text.as_bytes();
    while let Some(&c) = b.get(i) {
        match c {
            b' ' | b'\t' => i += 1,
            b'\r' | b'\n' if lines => i += 1,
            b'#' if lines => {
                while b.get(i).is_some_and(|c| *c != b'\n') {
                    i += 1;
                }
            }
            _ => break,
        }
    }
    i
}

/// The end of a flow scalar (plain or quoted) starting at `start`. The
/// parser's end of a quoted scalar may run on over blanks and a comment,
/// so quotes are matched here.
fn scalar_end(src: &Src, start: usize, style: ScalarStyle, parser_end: usize) -> Option<usize> {
    let b = src.text.as_bytes();
    match style {
        ScalarStyle::Plain => {
            let s = src.text.get(start..parser_end)?;
            Some(start + s.trim_end_matches([' ', '\t', '\r', '\n']).len())
        }
        ScalarStyle::DoubleQuoted => {
            if b.get(start) != Some(&b'"') {
                return None;
            }
            let mut i = start + 1;
            loop {
                match b.get(i)? {
                    b'\\' => i += 2,
                    b'"' => return Some(i + 1),
                    _ => i += 1,
                }
            }
        }
        ScalarStyle::SingleQuoted => {
            if b.get(start) != Some(&b'\'') {
                return None;
            }
            let mut i = start + 1;
            loop {
                match (b.get(i)?, b.get(i + 1)) {
                    (b'\'', Some(b'\'')) => i += 2,
                    (b'\'', _) => return Some(i + 1),
                    _ => i += 1,
                }
            }
        }
        _ => None,
    }
}

/// The end of a block scalar's content: after the line break of its last
/// line that is not blank (its trailing blank lines stay in the file).
fn block_end(text: &str, content: Range<usize>) -> usize {
    let s = &text[content.clone()];
    let last = s.trim_end_matches([' ', '\t', '\r', '\n']).len();
    let mut end = content.start + last;
    let b = text.as_bytes();
    if b.get(end) == Some(&b'\r') {
        end += 1;
    }
    if b.get(end) == Some(&b'\n') {
        end += 1;
    }
    end
}

/// The line break a file uses (`\r\n` if its first line ends so).
pub fn line_break(text: &str) -> &'static str {
    match text.find('\n') {
        Some(i) if i > 0 && text.as_bytes().get(i - 1) == Some(&b'\r') => "\r\n",
        _ => "\n",
    }
}

/// `text` with each entry's value range replaced by `new(entry)` (entries
/// for which it gives `None` are kept). The replacement is written as one
/// plain token; a space is added where it would otherwise touch the text
/// around it, and a block scalar's replacement ends its line.
pub fn rewrite(text: &str, doc: &Doc, mut new: impl FnMut(&Entry) -> Option<String>) -> String {
    let nl = line_break(text);
    let mut out = String::with_capacity(text.len() * 2);
    let mut at = 0;
    for e in &doc.entries {
        let Some(token) = new(e) else { continue };
        let r = e.range.clone();
        out.push_str(&text[at..r.start]);
        let before = if r.start == 0 {
            b'\n'
        } else {
            text.as_bytes()[r.start - 1]
        };
        if !matches!(before, b' ' | b'\t' | b'\n' | b'\r') {
            out.push(' ');
        }
        out.push_str(&token);
        let replaced = &text[r.clone()];
        if replaced.ends_with('\n') {
            // A block scalar: its header comment, if any, follows the token.
            let header = replaced.lines().next().unwrap_or("");
            let rest = header.trim_start_matches(|c: char| "|>+-0123456789".contains(c));
            if rest.trim_start().starts_with('#') {
                out.push_str(rest.trim_end_matches('\r'));
            }
            out.push_str(nl);
        } else if !matches!(
            text.as_bytes().get(r.end),
            None | Some(b' ' | b'\t' | b'\r' | b'\n')
        ) {
            out.push(' ');
        }
        at = r.end;
    }
    out.push_str(&text[at..]);
    out
}

/// `text` with `lines` (each `key: value`, without a line break) added at
/// the end of the mapping.
pub fn append(text: &str, doc: &Doc, lines: &[String]) -> String {
    if lines.is_empty() {
        return text.to_string();
    }
    let nl = line_break(text);
    let at = doc.append_at.min(text.len());
    let mut out =
        String::with_capacity(text.len() + lines.iter().map(|l| l.len() + 2).sum::<usize>());
    out.push_str(&text[..at]);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push_str(nl);
    }
    for l in lines {
        out.push_str(l);
        out.push_str(nl);
    }
    out.push_str(&text[at..]);
    out
}

/// A key as it is written in a file this tool adds a line to: plain when
/// that is unambiguous, else double-quoted.
pub fn write_key(key: &str) -> String {
    let simple = !key.is_empty()
        && key
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.')
        && key
            .as_bytes()
            .first()
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
        && scalar::resolve_plain(key).is_ok_and(|v| v.kind == Kind::Str);
    if simple {
        key.to_string()
    } else {
        let mut s = String::new();
        scalar::push_double_quoted(&mut s, key);
        s
    }
}
