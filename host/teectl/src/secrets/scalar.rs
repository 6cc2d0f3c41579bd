//! YAML scalar values as Home Assistant reads them, and as `render` writes
//! them.
//!
//! Home Assistant loads YAML with PyYAML (through `annotatedyaml`), which
//! resolves plain scalars by the YAML 1.1 rules of PyYAML's `Resolver` and
//! builds values with its `SafeConstructor`. [`resolve_plain`] is a port of
//! both (the regular expressions are PyYAML 6.0's, unchanged), so a value
//! keeps the type and value Home Assistant gave it before it was sealed.
//! Quoted and block scalars are always strings.
//!
//! Non-string values travel as their canonical text (decimal integers,
//! shortest round-trip floats, `true`/`false`, `null`), which is also what
//! `render` writes; [`canonical_ok`] is the strict check `render` applies to
//! a plaintext before writing it bare.

use std::sync::OnceLock;

use regex_lite::Regex;
use zeroize::Zeroizing;

/// The YAML type of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Int,
    Float,
    Bool,
    Null,
}

impl Kind {
    /// The local tag that marks a sealed value of this kind in the sealed
    /// file (strings have none).
    pub fn tag(self) -> Option<&'static str> {
        match self {
            Kind::Str => None,
            Kind::Int => Some("hakeys-int"),
            Kind::Float => Some("hakeys-float"),
            Kind::Bool => Some("hakeys-bool"),
            Kind::Null => Some("hakeys-null"),
        }
    }

    /// The kind a sealed-file tag (without `!`) stands for.
    pub fn from_tag(suffix: &str) -> Option<Kind> {
        [Kind::Int, Kind::Float, Kind::Bool, Kind::Null]
            .into_iter()
            .find(|k| k.tag() == Some(suffix))
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Str => "str",
            Kind::Int => "int",
            Kind::Float => "float",
            Kind::Bool => "bool",
            Kind::Null => "null",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        [Kind::Str, Kind::Int, Kind::Float, Kind::Bool, Kind::Null]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

/// A value: its kind and its text (the string itself for `Str`, the
/// canonical form otherwise).
pub struct Value {
    pub kind: Kind,
    pub text: Zeroizing<String>,
}

/// Why a plain scalar has no value this tool keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsupported {
    /// PyYAML would make a date or a datetime of it.
    Timestamp,
    /// `<<` (merge) or `=` (value): PyYAML's safe loader has no
    /// constructor for these (Home Assistant cannot load them either).
    NoConstructor,
    /// Matches a number pattern but PyYAML's constructor fails on it
    /// (for example `0b_`): Home Assistant cannot load it.
    BadNumber,
}

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unsupported::Timestamp => {
                "a date or time (YAML timestamp) is not supported; quote it to keep it a string"
            }
            Unsupported::NoConstructor => {
                "`<<` and `=` are not values Home Assistant's YAML loader accepts; quote it"
            }
            Unsupported::BadNumber => {
                "looks like a number but is not one Home Assistant's YAML loader accepts; quote it"
            }
        })
    }
}

struct Resolvers {
    bool_: Regex,
    float: Regex,
    int: Regex,
    merge: Regex,
    null: Regex,
    timestamp: Regex,
    value: Regex,
    canon_int: Regex,
    canon_float: Regex,
}

/// PyYAML 6.0's implicit resolvers (`yaml/resolver.py`), each with the
/// first characters it is tried for, and the canonical forms.
fn resolvers() -> &'static Resolvers {
    static R: OnceLock<Resolvers> = OnceLock::new();
    R.get_or_init(|| {
        let re = |s: &str| Regex::new(s).unwrap_or_else(|e| unreachable!("bad pattern {s}: {e}"));
        Resolvers {
            bool_: re(r"(?x)^(?:yes|Yes|YES|no|No|NO
                    |true|True|TRUE|false|False|FALSE
                    |on|On|ON|off|Off|OFF)$"),
            float: re(r"(?x)^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?
                    |\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
                    |[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$"),
            int: re(r"(?x)^(?:[-+]?0b[0-1_]+
                    |[-+]?0[0-7_]+
                    |[-+]?(?:0|[1-9][0-9_]*)
                    |[-+]?0x[0-9a-fA-F_]+
                    |[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$"),
            merge: re(r"^(?:<<)$"),
            null: re(r"(?x)^(?: ~
                    |null|Null|NULL
                    | )$"),
            timestamp: re(r"(?x)^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]
                    |[0-9][0-9][0-9][0-9] -[0-9][0-9]? -[0-9][0-9]?
                     (?:[Tt]|[\ \t]+)[0-9][0-9]?
                     :[0-9][0-9] :[0-9][0-9] (?:\.[0-9]*)?
                     (?:[\ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$"),
            value: re(r"^(?:=)$"),
            canon_int: re(r"^(?:0|-?[1-9][0-9]*)$"),
            canon_float: re(
                r"^(?:-?(?:0|[1-9][0-9]*)\.[0-9]+|-?[1-9]\.[0-9]+e[-+][1-9][0-9]*|-?\.inf|\.nan)$",
            ),
        }
    })
}

/// The tag PyYAML's resolver gives a plain scalar, in its resolver order:
/// the resolvers registered for the first character, first match wins.
#[derive(Debug, PartialEq, Eq)]
enum Implicit {
    Bool,
    Float,
    Int,
    Merge,
    Null,
    Timestamp,
    Value,
    Str,
}

fn implicit(v: &str) -> Implicit {
    let r = resolvers();
    let first = v.chars().next();
    let firsts = |set: &str| first.is_some_and(|c| set.contains(c));
    // Registration order in resolver.py: bool, float, int, merge, null,
    // timestamp, value. Null is also registered for the empty string.
    if firsts("yYnNtTfFoO") && r.bool_.is_match(v) {
        Implicit::Bool
    } else if firsts("-+0123456789.") && r.float.is_match(v) {
        Implicit::Float
    } else if firsts("-+0123456789") && r.int.is_match(v) {
        Implicit::Int
    } else if firsts("<") && r.merge.is_match(v) {
        Implicit::Merge
    } else if (v.is_empty() || firsts("~nN")) && r.null.is_match(v) {
        Implicit::Null
    } else if firsts("0123456789") && r.timestamp.is_match(v) {
        Implicit::Timestamp
    } else if firsts("=") && r.value.is_match(v) {
        Implicit::Value
    } else {
        Implicit::Str
    }
}

/// The value PyYAML's safe loader makes of a plain (unquoted, untagged)
/// scalar whose folded text is `v`.
pub fn resolve_plain(v: &str) -> Result<Value, Unsupported> {
    let value = |kind, text: String| Value {
        kind,
        text: Zeroizing::new(text),
    };
    Ok(match implicit(v) {
        Implicit::Str => value(Kind::Str, v.to_owned()),
        Implicit::Null => value(Kind::Null, "null".into()),
        Implicit::Bool => value(
            Kind::Bool,
            // construct_yaml_bool: bool_values[value.lower()]
            if matches!(v.to_ascii_lowercase().as_str(), "yes" | "true" | "on") {
                "true".into()
            } else {
                "false".into()
            },
        ),
        Implicit::Int => value(Kind::Int, construct_int(v)?),
        Implicit::Float => value(Kind::Float, construct_float(v)?),
        Implicit::Timestamp => return Err(Unsupported::Timestamp),
        Implicit::Merge | Implicit::Value => return Err(Unsupported::NoConstructor),
    })
}

/// `SafeConstructor.construct_yaml_int`, to canonical decimal text.
fn construct_int(v: &str) -> Result<String, Unsupported> {
    let v: String = v.chars().filter(|c| *c != '_').collect();
    let (negative, v) = match v.as_bytes().first() {
        Some(b'-') => (true, &v[1..]),
        Some(b'+') => (false, &v[1..]),
        _ => (false, v.as_str()),
    };
    let digits = if v == "0" {
        Decimal::zero()
    } else if let Some(b) = v.strip_prefix("0b") {
        Decimal::from_radix(b, 2)?
    } else if let Some(h) = v.strip_prefix("0x") {
        Decimal::from_radix(h, 16)?
    } else if v.starts_with('0') {
        Decimal::from_radix(v, 8)?
    } else if v.contains(':') {
        let mut d = Decimal::zero();
        for part in v.split(':') {
            d.mul_add(60, 0);
            d.add(&Decimal::from_radix(part, 10)?);
        }
        d
    } else {
        Decimal::from_radix(v, 10)?
    };
    Ok(digits.to_signed_string(negative))
}

/// `SafeConstructor.construct_yaml_float`, to canonical text.
fn construct_float(v: &str) -> Result<String, Unsupported> {
    let v: String = v
        .chars()
        .filter(|c| *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    let (sign, v) = match v.as_bytes().first() {
        Some(b'-') => (-1.0, &v[1..]),
        Some(b'+') => (1.0, &v[1..]),
        _ => (1.0, v.as_str()),
    };
    let x = if v == ".inf" {
        sign * f64::INFINITY
    } else if v == ".nan" {
        f64::NAN
    } else if v.contains(':') {
        // digits.reverse(); value += digit*base; base *= 60 -- in f64, in
        // this order, as Python does.
        let mut parts = Vec::new();
        for p in v.split(':') {
            parts.push(py_float(p)?);
        }
        let (mut base, mut value) = (1.0f64, 0.0f64);
        for d in parts.into_iter().rev() {
            value += d * base;
            base *= 60.0;
        }
        sign * value
    } else {
        sign * py_float(v)?
    };
    Ok(canonical_float(x))
}

/// Python's `float()` on the texts the float pattern admits (after `_` is
/// removed): digits with an optional `.`, optional fraction and exponent.
fn py_float(s: &str) -> Result<f64, Unsupported> {
    // Rust's parser is correctly rounded, as Python's is; it wants a digit
    // on both sides of the point.
    let mut t = String::with_capacity(s.len() + 2);
    let (mantissa, exp) = match s.find('e') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, ""),
    };
    if mantissa.starts_with('.') {
        t.push('0');
    }
    t.push_str(mantissa);
    if mantissa.ends_with('.') {
        t.push('0');
    }
    t.push_str(exp);
    t.parse::<f64>().map_err(|_| Unsupported::BadNumber)
}

/// The canonical text of a float: `.nan`, `.inf`, `-.inf`, else the
/// shortest decimal that reads back as the same double, always with a
/// point, in exponent form (with a signed exponent, as YAML 1.1 requires)
/// outside 1e-4 <= |x| < 1e16, as Python's `repr` chooses.
pub fn canonical_float(x: f64) -> String {
    if x.is_nan() {
        return ".nan".into();
    }
    if x.is_infinite() {
        return if x > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    let a = x.abs();
    if a == 0.0 || (1e-4..1e16).contains(&a) {
        let s = format!("{x}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        // {:e} is the shortest round-trip form, like "1.5e300" or "1e-7".
        let s = format!("{x:e}");
        let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
        let m = if m.contains('.') {
            m.to_string()
        } else {
            format!("{m}.0")
        };
        let e = match e.strip_prefix('-') {
            Some(rest) => format!("-{rest}"),
            None => format!("+{e}"),
        };
        format!("{m}e{e}")
    }
}

/// Whether `text` is the canonical form of a value of `kind` (what
/// `render` may write without quotes).
pub fn canonical_ok(kind: Kind, text: &str) -> bool {
    let r = resolvers();
    match kind {
        Kind::Str => true,
        Kind::Int => r.canon_int.is_match(text),
        Kind::Float => {
            r.canon_float.is_match(text)
                && (matches!(text, ".inf" | "-.inf" | ".nan")
                    || text
                        .parse::<f64>()
                        .is_ok_and(|x| canonical_float(x) == text))
        }
        Kind::Bool => text == "true" || text == "false",
        Kind::Null => text == "null",
    }
}

/// A non-negative integer as decimal digits, most significant first: the
/// integers PyYAML makes are unbounded.
struct Decimal(Vec<u8>);

impl Decimal {
    fn zero() -> Decimal {
        Decimal(vec![0])
    }

    /// `self = self * m + a`.
    fn mul_add(&mut self, m: u32, a: u32) {
        let mut carry = a;
        for d in self.0.iter_mut().rev() {
            let v = u32::from(*d) * m + carry;
            *d = (v % 10) as u8;
            carry = v / 10;
        }
        while carry > 0 {
            self.0.insert(0, (carry % 10) as u8);
            carry /= 10;
        }
    }

    fn add(&mut self, other: &Decimal) {
        let n = self.0.len().max(other.0.len());
        let mut out = vec![0u8; n];
        let mut carry = 0u8;
        for (i, slot) in out.iter_mut().rev().enumerate() {
            let a = self.0.len().checked_sub(i + 1).map_or(0, |j| self.0[j]);
            let b = other.0.len().checked_sub(i + 1).map_or(0, |j| other.0[j]);
            let s = a + b + carry;
            *slot = s % 10;
            carry = s / 10;
        }
        if carry > 0 {
            out.insert(0, carry);
        }
        self.0 = out;
    }

    /// Python's `int(s, radix)` for the digit strings the patterns admit
    /// (no sign, no underscores); empty is an error, as in Python.
    fn from_radix(s: &str, radix: u32) -> Result<Decimal, Unsupported> {
        if s.is_empty() {
            return Err(Unsupported::BadNumber);
        }
        let mut d = Decimal::zero();
        for c in s.chars() {
            let v = c.to_digit(radix).ok_or(Unsupported::BadNumber)?;
            d.mul_add(radix, v);
        }
        Ok(d)
    }

    fn to_signed_string(&self, negative: bool) -> String {
        let digits: String = self
            .0
            .iter()
            .skip_while(|d| **d == 0)
            .map(|d| char::from(b'0' + d))
            .collect();
        match (digits.is_empty(), negative) {
            (true, _) => "0".into(),
            (false, true) => format!("-{digits}"),
            (false, false) => digits,
        }
    }
}

/// Append `s` as a YAML double-quoted scalar that every YAML 1.1 and 1.2
/// reader (PyYAML, `annotatedyaml`, libyaml) reads back as exactly `s`:
/// printable characters as they are, everything else escaped -- C0 and C1
/// controls, DEL, `"` and `\`, the YAML 1.1 line breaks U+0085, U+2028 and
/// U+2029, the byte order mark U+FEFF, and U+FFFE/U+FFFF (not printable
/// for YAML). Nothing in the result can end the scalar or start a line.
pub fn push_double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\u{85}' => out.push_str("\\N"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if (c as u32) < 0x20 || ('\u{7f}'..='\u{9f}').contains(&c) => {
                out.push_str(&format!("\\x{:02X}", c as u32));
            }
            '\u{feff}' | '\u{fffe}' | '\u{ffff}' => {
                out.push_str(&format!("\\u{:04X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The most bytes [`push_double_quoted`] writes for `s`.
pub fn double_quoted_bound(s: &str) -> usize {
    s.len() * 6 + 2
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &str) -> (Kind, String) {
        let x = resolve_plain(v).unwrap_or_else(|e| panic!("{v}: {e}"));
        (x.kind, x.text.to_string())
    }

    #[test]
    fn plain_scalars_resolve_as_pyyaml_does() {
        use Kind::*;
        for (v, kind, text) in [
            ("hello", Str, "hello"),
            ("", Null, "null"),
            ("~", Null, "null"),
            ("Null", Null, "null"),
            ("nULL", Str, "nULL"),
            ("yes", Bool, "true"),
            ("Off", Bool, "false"),
            ("oN", Str, "oN"),
            ("y", Str, "y"),
            ("0", Int, "0"),
            ("-0", Int, "0"),
            ("+12", Int, "12"),
            ("1_000", Int, "1000"),
            ("0123", Int, "83"),
            ("08", Str, "08"),
            ("0o17", Str, "0o17"),
            ("0x1F", Int, "31"),
            ("-0x_ff", Int, "-255"),
            ("0b1010", Int, "10"),
            ("1:30", Int, "90"),
            ("-1:0:0", Int, "-3600"),
            (
                "123456789012345678901234567890",
                Int,
                "123456789012345678901234567890",
            ),
            (
                "0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
                Int,
                "340282366920938463463374607431768211455",
            ),
            ("12e3", Str, "12e3"),
            ("1.5e+3", Float, "1500.0"),
            ("1.", Float, "1.0"),
            (".5", Float, "0.5"),
            ("-.inf", Float, "-.inf"),
            ("+.Inf", Float, ".inf"),
            (".NaN", Float, ".nan"),
            ("1_0.2_5", Float, "10.25"),
            ("190:20:30.15", Float, "685230.15"),
            ("1e16", Str, "1e16"),
            ("1.0e+16", Float, "1.0e+16"),
            ("1.0e-5", Float, "1.0e-5"),
            ("-0.0", Float, "-0.0"),
            ("0.1", Float, "0.1"),
            ("3.14159265358979323846", Float, "3.141592653589793"),
        ] {
            assert_eq!(r(v), (kind, text.to_string()), "{v:?}");
            assert!(canonical_ok(kind, text), "{text} canonical");
        }
        for (v, e) in [
            ("2001-12-14", Unsupported::Timestamp),
            ("2001-12-14t21:59:43.10-05:00", Unsupported::Timestamp),
            ("<<", Unsupported::NoConstructor),
            ("=", Unsupported::NoConstructor),
            ("0b_", Unsupported::BadNumber),
        ] {
            assert_eq!(resolve_plain(v).err(), Some(e), "{v}");
        }
    }

    #[test]
    fn canonical_forms_are_strict() {
        for (k, t) in [
            (Kind::Int, "012"),
            (Kind::Int, "+1"),
            (Kind::Int, "-0"),
            (Kind::Int, "1 "),
            (Kind::Float, "1"),
            (Kind::Float, "1.50"),
            (Kind::Float, "1e5"),
            (Kind::Float, "nan"),
            (Kind::Float, "1.0\n"),
            (Kind::Bool, "True"),
            (Kind::Null, "~"),
            (Kind::Null, ""),
        ] {
            assert!(!canonical_ok(k, t), "{k:?} {t:?}");
        }
    }

    #[test]
    fn floats_print_in_a_form_yaml_11_reads() {
        for (x, s) in [
            (1e300, "1.0e+300"),
            (1.5e-7, "1.5e-7"),
            (123456789.0, "123456789.0"),
            (1e16, "1.0e+16"),
            (0.0001, "0.0001"),
            (f64::MIN_POSITIVE, "2.2250738585072014e-308"),
        ] {
            assert_eq!(canonical_float(x), s);
            assert!(canonical_ok(Kind::Float, s), "{s}");
        }
    }

    #[test]
    fn double_quoting_escapes_everything_structural() {
        let mut out = String::new();
        push_double_quoted(
            &mut out,
            "a\"b\\c\n\r\t\0\u{7f}\u{85}\u{9f}\u{2028}\u{2029}\u{feff}é😀",
        );
        assert_eq!(
            out,
            "\"a\\\"b\\\\c\\n\\r\\t\\x00\\x7F\\N\\x9F\\L\\P\\uFEFFé😀\""
        );
        assert!(
            out.len()
                <= double_quoted_bound(
                    "a\"b\\c\n\r\t\0\u{7f}\u{85}\u{9f}\u{2028}\u{2029}\u{feff}é😀"
                )
        );
    }
}
