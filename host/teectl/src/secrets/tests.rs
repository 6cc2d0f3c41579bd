//! The file handling of `teectl secrets` without a key engine: parsing,
//! refusals, in-place rewriting, rendering.

use super::scalar::Kind;
use super::yaml::{self, Flavour, Item};
use super::*;

fn clear(doc: &Doc) -> Vec<(String, Kind, String)> {
    doc.entries
        .iter()
        .map(|e| match &e.item {
            Item::Clear(v) => (e.key.clone(), v.kind, v.text.to_string()),
            Item::Sealed { kind, blob } => (e.key.clone(), *kind, format!("sealed {blob}")),
        })
        .collect()
}

const SAMPLE: &str = "\u{feff}# My secrets\r\n---\r\n\r\na: plain value  # note\r\n\"b k\": 'it''s'\r\nc: |  # head\r\n  l1\r\n\r\n  l2\r\n\r\n\r\n# between\r\nd: >-\r\n  f1\r\n  f2\r\ne:\r\nf: \"x\\n\\\"y\"  # q\r\ng: 0x1F\r\nh: yes\r\ni: multi\r\n  line\r\n...\r\n";

#[test]
fn parses_values_and_ranges() {
    let doc = yaml::parse(SAMPLE, Flavour::Plain).unwrap();
    let got = clear(&doc);
    let want = [
        ("a", Kind::Str, "plain value"),
        ("b k", Kind::Str, "it's"),
        ("c", Kind::Str, "l1\n\nl2\n"),
        ("d", Kind::Str, "f1 f2"),
        ("e", Kind::Null, "null"),
        ("f", Kind::Str, "x\n\"y"),
        ("g", Kind::Int, "31"),
        ("h", Kind::Bool, "true"),
        ("i", Kind::Str, "multi line"),
    ];
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0.as_str(), g.1, g.2.as_str()), w);
    }
    let ranges: Vec<&str> = doc
        .entries
        .iter()
        .map(|e| &SAMPLE[e.range.clone()])
        .collect();
    assert_eq!(
        ranges,
        [
            "plain value",
            "'it''s'",
            "|  # head\r\n  l1\r\n\r\n  l2\r\n",
            ">-\r\n  f1\r\n  f2\r\n",
            "",
            "\"x\\n\\\"y\"",
            "0x1F",
            "yes",
            "multi\r\n  line"
        ]
    );
}

#[test]
fn rewriting_keeps_everything_but_the_values() {
    let doc = yaml::parse(SAMPLE, Flavour::Plain).unwrap();
    let mut n = 0;
    let out = yaml::rewrite(SAMPLE, &doc, |e| {
        n += 1;
        (e.key != "h").then(|| format!("hakeys:v1:AAA{n}"))
    });
    assert_eq!(
        out,
        "\u{feff}# My secrets\r\n---\r\n\r\na: hakeys:v1:AAA1  # note\r\n\"b k\": hakeys:v1:AAA2\r\nc: hakeys:v1:AAA3  # head\r\n\r\n\r\n# between\r\nd: hakeys:v1:AAA4\r\ne: hakeys:v1:AAA5\r\nf: hakeys:v1:AAA6  # q\r\ng: hakeys:v1:AAA7\r\nh: yes\r\ni: hakeys:v1:AAA9\r\n...\r\n"
    );
    let back = yaml::parse(&out, Flavour::Sealed).unwrap();
    assert_eq!(back.entries.len(), 9);
    // Appended lines go before the `...` end marker, with the file's breaks.
    let added = yaml::append(&out, &back, &["new: hakeys:v1:BBB".into()]);
    assert!(
        added.ends_with("i: hakeys:v1:AAA9\r\nnew: hakeys:v1:BBB\r\n...\r\n"),
        "{added}"
    );
}

#[test]
fn sealed_tags_and_clear_values() {
    let text = "a: !hakeys-int hakeys:v1:AAAA\nb: hakeys:v1:BBBB\nc: \"hakeys:v1:CCCC\"\nd: 5\n";
    let doc = yaml::parse(text, Flavour::Sealed).unwrap();
    assert_eq!(
        clear(&doc),
        [
            ("a".into(), Kind::Int, "sealed hakeys:v1:AAAA".into()),
            ("b".into(), Kind::Str, "sealed hakeys:v1:BBBB".into()),
            ("c".into(), Kind::Str, "hakeys:v1:CCCC".into()),
            ("d".into(), Kind::Int, "5".into()),
        ]
    );
    assert_eq!(
        &text[doc.entries[0].range.clone()],
        "!hakeys-int hakeys:v1:AAAA"
    );
    // A plaintext file holds no tags, and no plain blob.
    assert!(yaml::parse(text, Flavour::Plain).is_err());
    assert!(yaml::parse("b: hakeys:v1:BBBB\n", Flavour::Plain).is_err());
}

#[test]
fn refusals_name_the_key_never_the_value() {
    for (text, what) in [
        ("a:\n  b: s3cr3t\n", "nested mappings"),
        ("a:\n  - s3cr3t\n", "lists"),
        ("a: &x s3cr3t\nb: *x\n", "anchors"),
        ("a: !include s3cr3t.yaml\n", "tags"),
        ("a: !!str s3cr3t\n", "tags"),
        ("a: !secret s3cr3t\n", "tags"),
        ("a: s3cr3t\na: other\n", "twice"),
        ("a: s3cr3t\n---\nb: x\n", "more than one YAML document"),
        ("? a\n: s3cr3t\n", "explicit keys"),
        ("1: s3cr3t\n", "not a string"),
        ("yes: s3cr3t\n", "not a string"),
        ("a: 2001-12-14\n", "date"),
        ("a: s3cr3t\u{2028}x\n", "U+2028"),
        ("a: s3cr3t\u{1}\n", "control character"),
        ("a: |\r  s3cr3t\r\n", "carriage return"),
        ("a:\t\"s3cr3t\"\n", "tab"),
        ("a: s3\u{feff}cr3t\n", "byte order mark"),
        ("{a: s3cr3t}\n", "flow mapping"),
        ("- s3cr3t\n", "must be a mapping"),
        ("a: \"s3cr3t\n", "not valid YAML"),
        ("a: <<\n", "`<<`"),
    ] {
        let e = match yaml::parse(text, Flavour::Plain) {
            Err(e) => e.0,
            Ok(_) => panic!("accepted {text:?}"),
        };
        assert!(e.contains(what), "{text:?}: {e}");
        assert!(
            !e.contains("s3cr3t"),
            "{text:?}: the message shows the value: {e}"
        );
        assert!(!e.contains('\n'), "{e}");
    }
}

#[test]
fn empty_and_comment_only_files_have_no_values() {
    for text in ["", "# nothing\n", "---\n", "---\n...\n", "\u{feff}"] {
        let doc = yaml::parse(text, Flavour::Plain).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(doc.entries.is_empty(), "{text:?}");
    }
}

#[test]
fn rendering_quotes_every_string_and_key() {
    let values = vec![
        (
            "k\"ey: #".to_string(),
            Kind::Str,
            Zeroizing::new("a\nb: c # d".to_string()),
        ),
        (
            "n".to_string(),
            Kind::Int,
            Zeroizing::new("-12".to_string()),
        ),
        (
            "t".to_string(),
            Kind::Bool,
            Zeroizing::new("true".to_string()),
        ),
    ];
    let out = render_yaml(&values);
    assert!(
        out.ends_with("\"k\\\"ey: #\": \"a\\nb: c # d\"\n\"n\": -12\n\"t\": true\n"),
        "{}",
        *out
    );
    assert!(render_yaml(&[]).ends_with("{}\n"));
}

#[test]
fn keys_added_to_a_file_are_quoted_when_needed() {
    assert_eq!(yaml::write_key("mqtt_password"), "mqtt_password");
    assert_eq!(yaml::write_key("yes"), "\"yes\"");
    assert_eq!(yaml::write_key("a b"), "\"a b\"");
    assert_eq!(yaml::write_key("1x"), "\"1x\"");
    assert_eq!(yaml::write_key("a\nb"), "\"a\\nb\"");
}

#[test]
fn multi_line_clear_values_become_one_line() {
    assert_eq!(single_line("|\n  a\n  b\n"), "\"a\\nb\\n\"");
    assert_eq!(single_line("\"x\""), "\"x\"");
}

/// A small deterministic generator (xorshift64*), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A character, weighted towards the ones YAML treats specially.
    fn char(&mut self) -> char {
        const SPECIAL: &[char] = &[
            '"', '\'', '\\', ':', ' ', '#', '\n', '\r', '\t', '\0', '\u{7f}', '\u{85}', '\u{a0}',
            '\u{2028}', '\u{2029}', '\u{feff}', '\u{fffe}', '\u{ffff}', '-', '?', '*', '&', '!',
            '|', '>', '%', '@', '`', '{', '}', '[', ']', ',', '~', 'é', '😀',
        ];
        match self.below(4) {
            0 => SPECIAL[self.below(SPECIAL.len() as u64) as usize],
            1 => char::from_u32(self.below(0x80) as u32).unwrap_or('x'),
            2 => char::from_u32(self.below(0x11_0000) as u32).unwrap_or('\u{fffd}'),
            _ => char::from(b'a' + self.below(26) as u8),
        }
    }

    fn string(&mut self, max: u64) -> String {
        (0..self.below(max + 1)).map(|_| self.char()).collect()
    }
}

#[test]
fn any_string_renders_as_itself() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..300 {
        let values: Vec<(String, Kind, Zeroizing<String>)> = (0..8)
            .map(|i| {
                (
                    format!("{}{i}", rng.string(6)),
                    Kind::Str,
                    Zeroizing::new(rng.string(40)),
                )
            })
            .collect();
        let out = render_yaml(&values);
        let doc = yaml::parse(&out, Flavour::Plain).unwrap_or_else(|e| {
            panic!("round {round}: the rendering does not parse: {e}\n{}", *out)
        });
        let got = clear(&doc);
        assert_eq!(got.len(), values.len(), "round {round}");
        for ((k, kind, v), (gk, gkind, gv)) in values.iter().zip(&got) {
            assert_eq!(
                (k, *kind, v.as_str()),
                (gk, *gkind, gv.as_str()),
                "round {round}"
            );
        }
        // One line per value, after the two comment lines.
        assert_eq!(out.lines().count(), values.len() + 2, "round {round}");
    }
}

#[test]
fn canonical_numbers_read_back_as_themselves() {
    let mut rng = Rng(42);
    for _ in 0..2000 {
        let bits = rng.next();
        let x = f64::from_bits(bits);
        let text = scalar::canonical_float(x);
        assert!(scalar::canonical_ok(Kind::Float, &text), "{text}");
        let v = scalar::resolve_plain(&text).unwrap();
        assert_eq!((v.kind, v.text.as_str()), (Kind::Float, text.as_str()));
        if !x.is_nan() {
            assert_eq!(
                text.parse::<f64>().ok().or(match text.as_str() {
                    ".inf" => Some(f64::INFINITY),
                    "-.inf" => Some(f64::NEG_INFINITY),
                    _ => None,
                }),
                Some(x),
                "{text}"
            );
        }
        let n = (rng.next() as i64).to_string();
        let v = scalar::resolve_plain(&n).unwrap();
        assert_eq!((v.kind, v.text.as_str()), (Kind::Int, n.as_str()));
    }
}

#[test]
fn damaged_files_are_refused_or_read_never_a_panic() {
    let mut rng = Rng(7);
    let base = SAMPLE.as_bytes();
    for _ in 0..3000 {
        let mut b = base.to_vec();
        for _ in 0..=rng.below(4) {
            let i = rng.below(b.len() as u64) as usize;
            match rng.below(3) {
                0 => b[i] = rng.below(128) as u8,
                1 => {
                    b.remove(i);
                }
                _ => b.insert(
                    i,
                    *b"\"'|>:#-?&*!{[\n \t"
                        .get(rng.below(16) as usize)
                        .unwrap_or(&b' '),
                ),
            }
        }
        let Ok(text) = std::str::from_utf8(&b) else {
            continue;
        };
        for flavour in [Flavour::Plain, Flavour::Sealed] {
            if let Ok(doc) = yaml::parse(text, flavour) {
                // What parses can be rewritten, and the result parses again.
                let out = yaml::rewrite(text, &doc, |_| Some("hakeys:v1:QUFB".into()));
                let again = yaml::parse(&out, Flavour::Sealed)
                    .unwrap_or_else(|e| panic!("{text:?}\n=> {out:?}: {e}"));
                assert_eq!(
                    again.entries.len(),
                    doc.entries.len(),
                    "{text:?}\n=> {out:?}"
                );
            }
        }
    }
}
