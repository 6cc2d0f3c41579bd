//! `teectl secrets` end to end on the simulator backend, without Home
//! Assistant (`cargo xtask ha-test` runs real Home Assistant Core): a
//! plaintext `secrets.yaml` with hostile values is imported, rendered, and
//! the rendering read with PyYAML's safe loader (Debian's python3-yaml,
//! the loader Home Assistant's `annotatedyaml` builds on), value for value
//! and type for type against the original; tampered, other-namespace,
//! non-UTF-8 and non-canonical blobs; `set`, `check`, `--force`,
//! `--merge`, partial-file safety; the board script
//! `hakeys-ha-secrets` and its units; the daemon path for callers that are
//! not root; and the Python package `hakeys` (unit tests, `pip install`).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use hakeys_e2e::{run_with_stdin, teectl_bin, teed_sim, Board};
use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";
const USAGE: i32 = 2;
const REFUSED: i32 = 4;
const REJECTED: i32 = 5;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn fixture() -> PathBuf {
    repo().join("tests/tests/fixtures/secrets-hostile.yaml")
}

/// A board with its key made, and a work folder.
fn board() -> Board {
    let b = Board::new();
    b.ok(&["init"], b"");
    b
}

fn work(b: &Board, name: &str) -> PathBuf {
    b.dir.path().join(name)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// `teectl secrets import --in IN --out OUT` + extra arguments.
fn import(b: &Board, input: &Path, out: &Path, extra: &[&str]) -> hakeys_e2e::Run {
    let mut args = vec!["secrets", "import", "--in", p(input), "--out", p(out)];
    args.extend_from_slice(extra);
    b.run(&args, b"")
}

fn render(b: &Board, input: &Path, out: &Path, extra: &[&str]) -> hakeys_e2e::Run {
    let mut args = vec!["secrets", "render", "--in", p(input), "--out", p(out)];
    args.extend_from_slice(extra);
    b.run(&args, b"")
}

/// Python's view of one or more YAML files: for each, `[[key, [type,
/// value]], ...]` in file order, floats as `repr` (NaN as "nan"), ints as
/// decimal text.
fn pyyaml(files: &[&Path]) -> Vec<Value> {
    const SCRIPT: &str = r#"
import json, math, sys
try:
    import yaml
except ImportError:
    sys.exit("python3-yaml is missing: `cargo xtask deps` installs it (apt-get install python3-yaml)")
def enc(v):
    if isinstance(v, bool): return ["bool", v]
    if isinstance(v, int): return ["int", str(v)]
    if isinstance(v, float): return ["float", "nan" if math.isnan(v) else repr(v)]
    if v is None: return ["null", None]
    if isinstance(v, str): return ["str", v]
    return ["other", repr(type(v))]
out = []
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as f:
        doc = yaml.load(f, Loader=yaml.SafeLoader)
    out.append([[k, enc(v)] for k, v in (doc or {}).items()])
json.dump(out, sys.stdout)
"#;
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(SCRIPT)
        .args(files)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "PyYAML could not read {files:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("JSON from python") {
        Value::Array(v) => v,
        v => panic!("{v}"),
    }
}

/// Python's view of one file as (key, type, value text).
fn loaded(path: &Path) -> Vec<(String, String, Value)> {
    let v = pyyaml(&[path]).remove(0);
    v.as_array()
        .expect("list")
        .iter()
        .map(|kv| {
            (
                kv[0].as_str().expect("key").to_string(),
                kv[1][0].as_str().expect("type").to_string(),
                kv[1][1].clone(),
            )
        })
        .collect()
}

fn value_of(entries: &[(String, String, Value)], key: &str) -> (String, Value) {
    entries
        .iter()
        .find(|(k, ..)| k == key)
        .map(|(_, t, v)| (t.clone(), v.clone()))
        .unwrap_or_else(|| panic!("no key {key}"))
}

/// Every blob token (with its `!hakeys-*` tag) replaced by `BLOB`/`!tag BLOB`.
fn shape(sealed: &str) -> String {
    let mut out = String::new();
    let mut rest = sealed;
    while let Some(i) = rest.find("hakeys:v1:") {
        let tail = &rest[i + "hakeys:v1:".len()..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/' || c == '='))
            .unwrap_or(tail.len());
        out.push_str(&rest[..i]);
        out.push_str(if len == 0 { "hakeys:v1:" } else { "BLOB" });
        rest = &tail[len..];
    }
    out.push_str(rest);
    out
}

/// Bytes, inode and mtime: a file that was not touched keeps all three.
fn snapshot(path: &Path) -> (Vec<u8>, u64, SystemTime) {
    let m = fs::metadata(path).expect("metadata");
    (
        fs::read(path).expect("read"),
        m.ino(),
        m.modified().expect("mtime"),
    )
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Names of the files in `dir`.
fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Replace the value token on `key`'s line of a sealed file.
fn with_value(sealed: &str, key: &str, token: &str) -> String {
    sealed
        .lines()
        .map(|l| match l.strip_prefix(&format!("{key}: ")) {
            Some(_) => format!("{key}: {token}"),
            None => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

fn blob_on_line<'a>(sealed: &'a str, key: &str) -> &'a str {
    let line = sealed
        .lines()
        .find(|l| l.starts_with(&format!("{key}: ")))
        .unwrap_or_else(|| panic!("no line for {key}"));
    let i = line.find("hakeys:v1:").expect("a blob");
    line[i..].split_whitespace().next().unwrap()
}

// ------------------------------------------------------------------ tests --

#[test]
fn hostile_values_survive_import_and_render_byte_and_type_exact() {
    let b = board();
    let sealed = work(&b, "secrets.sealed.yaml");
    let out = import(&b, &fixture(), &sealed, &[]).success();
    let summary = String::from_utf8(out).unwrap();
    assert!(
        summary.contains("62 values sealed") && summary.contains("1 kept in the clear"),
        "{summary}"
    );
    assert_eq!(mode(&sealed), 0o600);

    // Everything but the values is kept byte for byte.
    let sealed_text = fs::read_to_string(&sealed).unwrap();
    let golden =
        fs::read_to_string(repo().join("tests/tests/fixtures/secrets-hostile.sealed-shape.yaml"))
            .unwrap();
    assert_eq!(shape(&sealed_text), golden, "the sealed file's shape");
    // Outside the blobs (whose random base64 may contain any short string),
    // no value is left in the clear.
    let outside_blobs: String = sealed_text
        .split_inclusive(|c: char| c.is_whitespace() || c == '"' || c == '\'')
        .filter(|t| !t.starts_with("hakeys:v1:"))
        .collect();
    assert!(outside_blobs.len() < sealed_text.len(), "blobs were found");
    for marker in ["HKT", "hunter2", "8883", "0755", "3.14"] {
        assert!(
            !outside_blobs.contains(marker),
            "the sealed file holds {marker}"
        );
    }

    // The rendering reads, with PyYAML's safe loader, exactly as the
    // original does: same keys in the same order, same types, same values.
    let rendered = work(&b, "rendered.yaml");
    render(&b, &sealed, &rendered, &[]).success();
    assert_eq!(mode(&rendered), 0o600);
    let both = pyyaml(&[&fixture(), &rendered]);
    assert_eq!(both[0], both[1], "the rendering differs from the original");
    let r = loaded(&rendered);
    assert_eq!(r.len(), 63);
    // The loader is checked against values written out here, too.
    for (key, ty, v) in [
        ("newline", "str", "line1 HKT\nline2: nested? no\n- item\n"),
        (
            "nul_and_controls",
            "str",
            "\0\u{1}\u{7}\u{1b}[31m\u{7f} HKT",
        ),
        ("nel", "str", "x\u{85}y HKT"),
        ("line_separator", "str", "x\u{2028}y HKT"),
        ("paragraph_separator", "str", "x\u{2029}y HKT"),
        ("bom", "str", "\u{feff}starts with a byte order mark HKT"),
        ("leading_trailing_spaces", "str", "   padded HKT   "),
        ("empty_string", "str", ""),
        ("looks_like_bool", "str", "yes"),
        ("looks_like_blob", "str", "hakeys:v1:AAAA"),
        ("literal_keep", "str", "keeps its newlines HKT\n\n\n"),
        ("non_ascii", "str", "pässwörd ✓ 密码 🔑 HKT"),
        (
            "quoted key: with colon",
            "str",
            "value under a quoted key HKT",
        ),
        ("port", "int", "8883"),
        ("octal", "int", "493"),
        ("sexagesimal", "int", "90"),
        ("big_int", "int", "123456789012345678901234567890"),
        ("zip_code", "str", "08001"),
        ("exp_float", "float", "6.02e+23"),
        ("exp_without_sign", "str", "1e5"),
        ("negative_inf", "float", "-inf"),
        ("not_a_number", "float", "nan"),
        ("bool_yes", "bool", "true"),
        ("bool_off", "bool", "false"),
        ("null_empty", "null", "null"),
    ] {
        let (t, got) = value_of(&r, key);
        assert_eq!(t, ty, "{key}");
        let got = match got {
            Value::String(s) => s,
            Value::Bool(x) => x.to_string(),
            Value::Null => "null".into(),
            other => other.to_string(),
        };
        assert_eq!(got, v, "{key}");
    }
    // The rendering writes every string double-quoted on one line.
    let text = fs::read_to_string(&rendered).unwrap();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with('"'), "{line}");
    }

    // Each sealed value is an ordinary blob: `teectl unseal` gives the
    // secret itself (a number's canonical text).
    let pt = b.ok(
        &["unseal", "--namespace", "ha/core"],
        blob_on_line(&sealed_text, "newline").as_bytes(),
    );
    assert_eq!(pt, b"line1 HKT\nline2: nested? no\n- item\n");
    let pt = b.ok(&["unseal"], blob_on_line(&sealed_text, "octal").as_bytes());
    assert_eq!(pt, b"493");

    // `check` opens every value and prints names and types, no value.
    let out = String::from_utf8(b.ok(&["secrets", "check", "--in", p(&sealed)], b"")).unwrap();
    assert!(out.contains("sealed str   \"plain_password\""), "{out}");
    assert!(out.contains("sealed int   \"port\""), "{out}");
    assert!(out.contains("clear  str   \"empty_string\""), "{out}");
    assert!(out.contains("63 values open in namespace ha/core"), "{out}");
    assert!(!out.contains("HKT") && !out.contains("8883"), "{out}");

    // Rendering again with nothing changed leaves the file untouched.
    let before = snapshot(&rendered);
    std::thread::sleep(Duration::from_millis(20));
    render(&b, &sealed, &rendered, &[]).success();
    assert_eq!(snapshot(&rendered), before);
}

#[test]
fn a_value_that_does_not_open_makes_render_write_nothing_and_name_the_key() {
    let b = board();
    let sealed = work(&b, "s.yaml");
    let input = work(&b, "in.yaml");
    fs::write(&input, "# c\nmqtt: s3cret-HKT\nport: 1883\nother: x-HKT\n").unwrap();
    import(&b, &input, &sealed, &[]).success();
    let good = fs::read_to_string(&sealed).unwrap();
    let rendered = work(&b, "r.yaml");
    render(&b, &sealed, &rendered, &[]).success();
    let previous = snapshot(&rendered);

    let bad = work(&b, "bad.yaml");
    let check = |text: String, code: i32, key: &str, what: &str| {
        fs::write(&bad, &text).unwrap();
        let err = render(&b, &bad, &rendered, &[]).fails_with(code);
        assert!(err.contains(&format!("key \"{key}\"")), "{err}");
        assert!(err.contains(what), "{err}");
        assert!(!err.contains("HKT") && !err.contains("1883"), "{err}");
        assert_eq!(
            snapshot(&rendered),
            previous,
            "the previous rendering changed"
        );
        assert_eq!(
            files_in(b.dir.path())
                .iter()
                .filter(|f| f.contains(".tmp"))
                .count(),
            0
        );
        let err = b
            .run(&["secrets", "check", "--in", p(&bad)], b"")
            .fails_with(code);
        assert!(err.contains(&format!("key \"{key}\"")), "{err}");
    };
    // One byte of one blob changed (a typed one).
    let blob = blob_on_line(&good, "port");
    let mut tampered = blob.as_bytes().to_vec();
    let i = tampered.len() / 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    check(good.replace(blob, &tampered), REJECTED, "port", "");
    // A blob of another namespace.
    let other = String::from_utf8(b.seal("ha/other", b"elsewhere-HKT")).unwrap();
    check(
        with_value(&good, "other", other.trim()),
        REFUSED,
        "other",
        "namespace",
    );
    // A blob of another board.
    let b2 = board();
    let foreign = String::from_utf8(b2.seal("ha/core", b"foreign-HKT")).unwrap();
    check(
        with_value(&good, "mqtt", foreign.trim()),
        REJECTED,
        "mqtt",
        "",
    );
    // A string whose plaintext is not UTF-8.
    let binary = String::from_utf8(b.seal("ha/core", b"\xff\xfeHKT")).unwrap();
    check(
        with_value(&good, "other", binary.trim()),
        REJECTED,
        "other",
        "not UTF-8",
    );
    // A typed value whose plaintext is not that type's canonical text.
    let loose = String::from_utf8(b.seal("ha/core", b"0123")).unwrap();
    check(
        with_value(&good, "port", &format!("!hakeys-int {}", loose.trim())),
        REJECTED,
        "port",
        "canonical",
    );
    let injected = String::from_utf8(b.seal("ha/core", b"1\nevil: 2")).unwrap();
    check(
        with_value(&good, "port", &format!("!hakeys-int {}", injected.trim())),
        REJECTED,
        "port",
        "canonical",
    );
    // A blob of a retired epoch.
    let old_blob = String::from_utf8(b.seal("ha/core", b"old-epoch-HKT")).unwrap();
    b.ok(&["rotate"], b"");
    b.ok(&["retire", "--below", "2"], b"");
    check(
        with_value(&good, "mqtt", old_blob.trim()),
        REFUSED,
        "mqtt",
        "retired",
    );
    // The namespace asked for is the one every blob must have.
    let err = render(&b, &sealed, &rendered, &["--namespace", "ha/other"]).fails_with(REFUSED);
    assert!(err.contains("key \"mqtt\""), "{err}");
    assert_eq!(snapshot(&rendered), previous);
    // A symlink as --out is refused (it would put the plaintext where the
    // link is), and the link is left alone.
    let link = work(&b, "link.yaml");
    std::os::unix::fs::symlink(&rendered, &link).unwrap();
    let err = render(&b, &sealed, &link, &[]).fails_with(USAGE);
    assert!(err.contains("symbolic link"), "{err}");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
}

#[test]
fn set_adds_and_replaces_one_value_sealed() {
    let b = board();
    let sealed = work(&b, "s.yaml");
    let input = work(&b, "in.yaml");
    fs::write(&input, "# top\na: one-HKT  # keep me\nport: 1883\n# end\n").unwrap();
    import(&b, &input, &sealed, &[]).success();
    let set = |name: &str, value: &[u8], extra: &[&str]| {
        let mut args = vec!["secrets", "set", "--file", p(&sealed), name];
        args.extend_from_slice(extra);
        b.run(&args, value)
    };
    let out = set("new key", b"n3w: value\n# x HKT", &[]).success();
    assert!(!String::from_utf8_lossy(&out).contains("HKT"));
    set("port", b" 8883\n", &["--type", "int"]).success();
    set("a", b"two-HKT", &[]).success();
    set("flag", b"on", &["--type", "bool"]).success();
    set("blank", b"", &[]).success();
    let text = fs::read_to_string(&sealed).unwrap();
    assert_eq!(
        shape(&text),
        "# top\na: BLOB  # keep me\nport: !hakeys-int BLOB\n# end\n\"new key\": BLOB\nflag: !hakeys-bool BLOB\nblank: \"\"\n"
    );
    assert_eq!(mode(&sealed), 0o600);
    let rendered = work(&b, "r.yaml");
    render(&b, &sealed, &rendered, &[]).success();
    let r = loaded(&rendered);
    assert_eq!(
        value_of(&r, "new key"),
        ("str".into(), Value::from("n3w: value\n# x HKT"))
    );
    assert_eq!(value_of(&r, "port"), ("int".into(), Value::from("8883")));
    assert_eq!(value_of(&r, "a"), ("str".into(), Value::from("two-HKT")));
    assert_eq!(value_of(&r, "flag"), ("bool".into(), Value::from(true)));
    assert_eq!(value_of(&r, "blank"), ("str".into(), Value::from("")));

    // Bad input: a clear error, and the file as it was.
    let before = snapshot(&sealed);
    for (name, value, extra, what) in [
        (
            "port",
            &b"abc"[..],
            &["--type", "int"][..],
            "not a YAML int",
        ),
        ("port", b"1.5", &["--type", "int"], "not a YAML int"),
        ("x", b"\xff", &[], "not UTF-8"),
        ("x", &[b'a'; 4097], &[], "longer than 4096"),
        ("x", b"v", &["--namespace", "Bad NS"], "invalid namespace"),
        ("", b"v", &[], "empty"),
    ] {
        let err = set(name, value, extra).fails_with(USAGE);
        assert!(err.contains(what), "{err}");
        assert_eq!(snapshot(&sealed), before);
    }
    let err = b
        .run(
            &[
                "secrets",
                "set",
                "--file",
                p(&work(&b, "missing.yaml")),
                "x",
            ],
            b"v",
        )
        .fails_with(USAGE);
    assert!(err.contains("not a sealed file"), "{err}");
    assert!(!work(&b, "missing.yaml").exists());
    // An empty file is a sealed file with no values.
    let empty = work(&b, "empty.yaml");
    fs::write(&empty, "").unwrap();
    b.run(&["secrets", "set", "--file", p(&empty), "k"], b"v-HKT")
        .success();
    assert_eq!(shape(&fs::read_to_string(&empty).unwrap()), "k: BLOB\n");
}

#[test]
fn import_refuses_to_overwrite_without_force_and_merges_with_merge() {
    let b = board();
    let input = work(&b, "in.yaml");
    let sealed = work(&b, "s.yaml");
    fs::write(&input, "# mine\na: 1-HKT\nb: 2-HKT\n").unwrap();
    import(&b, &input, &sealed, &[]).success();
    let before = snapshot(&sealed);
    let err = import(&b, &input, &sealed, &[]).fails_with(USAGE);
    assert!(err.contains("--force"), "{err}");
    assert_eq!(snapshot(&sealed), before);
    import(&b, &input, &sealed, &["--force"]).success();
    assert_ne!(fs::read(&sealed).unwrap(), before.0, "new blobs");

    // --merge: the input's values replace those of the same name, new ones
    // are added at the end, the rest (and the comments) stay.
    let kept_b = blob_on_line(&fs::read_to_string(&sealed).unwrap(), "b").to_string();
    let update = work(&b, "update.yaml");
    fs::write(
        &update,
        "a: changed-HKT\nc: |\n  multi\n  line\nkeep: \"\"\n",
    )
    .unwrap();
    import(&b, &update, &sealed, &["--merge", "--clear", "keep"]).success();
    let text = fs::read_to_string(&sealed).unwrap();
    assert_eq!(
        shape(&text),
        "# mine\na: BLOB\nb: BLOB\nc: BLOB\nkeep: \"\"\n"
    );
    assert_eq!(blob_on_line(&text, "b"), kept_b);
    let rendered = work(&b, "r.yaml");
    render(&b, &sealed, &rendered, &[]).success();
    let r = loaded(&rendered);
    assert_eq!(value_of(&r, "a").1, Value::from("changed-HKT"));
    assert_eq!(value_of(&r, "c").1, Value::from("multi\nline\n"));

    // --clear keeps a value as it was written, and names must exist.
    let clear_in = work(&b, "clear.yaml");
    fs::write(&clear_in, "host: 'mqtt.local'   # public\npw: pw-HKT\n").unwrap();
    let out2 = work(&b, "clear.sealed.yaml");
    let err = import(&b, &clear_in, &out2, &["--clear", "hots"]).fails_with(USAGE);
    assert!(err.contains("\"hots\""), "{err}");
    assert!(!out2.exists());
    import(&b, &clear_in, &out2, &["--clear", "host"]).success();
    assert_eq!(
        shape(&fs::read_to_string(&out2).unwrap()),
        "host: 'mqtt.local'   # public\npw: BLOB\n"
    );
}

#[test]
fn refused_input_writes_nothing_and_never_shows_a_value() {
    let b = board();
    let out = work(&b, "s.yaml");
    for (text, what) in [
        (
            "a: ok\nnested:\n  user: s3cret-HKT\n",
            "key \"nested\": nested mappings",
        ),
        ("list:\n  - s3cret-HKT\n", "key \"list\": lists"),
        ("a: &x s3cret-HKT\nb: *x\n", "anchors"),
        ("a: !include s3cret-HKT.yaml\n", "tags"),
        ("a: s3cret-HKT\na: again-HKT\n", "appears twice"),
        ("a: s3cret-HKT\n---\nb: x\n", "more than one YAML document"),
        ("when: 2001-12-14\n", "date"),
        ("a: s3cret-HKT\u{2028}\n", "U+2028"),
        ("a: hakeys:v1:AAAA\n", "already a sealed blob"),
        ("big: \"", "not valid YAML"),
    ] {
        let input = work(&b, "in.yaml");
        fs::write(&input, text).unwrap();
        let err = import(&b, &input, &out, &[]).fails_with(USAGE);
        assert!(err.contains(what), "{text:?}: {err}");
        assert!(!err.contains("s3cret"), "{err}");
        assert!(!out.exists());
    }
    // A value the engine cannot hold: nothing is written, no temporary file
    // is left.
    let input = work(&b, "in.yaml");
    fs::write(&input, format!("a: x-HKT\nhuge: {}\n", "A".repeat(4097))).unwrap();
    let err = import(&b, &input, &out, &[]).fails_with(USAGE);
    assert!(
        err.contains("key \"huge\"") && err.contains("4096"),
        "{err}"
    );
    fs::write(&input, "a: x-HKT\n").unwrap();
    // An engine that is not initialised: the seal fails, nothing written.
    let fresh = Board::new();
    let err = import(&fresh, &input, &out, &[]).fails_with(3);
    assert!(err.contains("key \"a\""), "{err}");
    assert!(!out.exists());
    let leftovers: Vec<String> = files_in(b.dir.path())
        .into_iter()
        .filter(|f| f.contains("tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let err = import(&b, &input, &out, &["--namespace", "Not/A/Namespace"]).fails_with(USAGE);
    assert!(err.contains("invalid namespace"), "{err}");
}

#[test]
fn a_killed_import_never_leaves_a_partial_sealed_file() {
    let b = board();
    let input = work(&b, "in.yaml");
    let text: String = (0..300)
        .map(|i| format!("key{i}: value-{i}-HKT\n"))
        .collect();
    fs::write(&input, &text).unwrap();
    let out = work(&b, "s.yaml");
    for delay_ms in [5u64, 40, 80, 150, 400] {
        let _ = fs::remove_file(&out);
        let mut child = b
            .command(&["secrets", "import", "--in", p(&input), "--out", p(&out)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let _ = child.wait();
        if out.exists() {
            // Complete, or not there at all.
            let sealed = fs::read_to_string(&out).unwrap();
            assert_eq!(sealed.lines().count(), 300);
            assert!(sealed.ends_with("\n") && sealed.contains("key299: hakeys:v1:"));
        }
        // (A kill between create and rename leaves the temporary file.)
        for f in files_in(b.dir.path())
            .iter()
            .filter(|f| f.starts_with(".s.yaml."))
        {
            fs::remove_file(b.dir.path().join(f)).unwrap();
        }
    }
}

// ---------------------------------------------------- the board script --

/// A Home Assistant OS layout in miniature: Core's /config, a tmpfs folder
/// for the rendering, and `teectl` on the simulator.
struct Ha {
    board: Board,
    config: PathBuf,
    run_dir: tempfile::TempDir,
}

impl Ha {
    fn new() -> Ha {
        let board = board();
        let config = board.dir.path().join("homeassistant");
        fs::create_dir(&config).unwrap();
        let run_dir = tempfile::Builder::new()
            .prefix("hakeys-ha-test-")
            .tempdir_in("/dev/shm")
            .expect("a folder on /dev/shm (tmpfs)");
        Ha {
            board,
            config,
            run_dir,
        }
    }

    fn render_dir(&self) -> PathBuf {
        self.run_dir.path().join("hakeys")
    }

    fn secrets(&self) -> PathBuf {
        self.config.join("secrets.yaml")
    }

    fn sealed(&self) -> PathBuf {
        self.config.join("secrets.sealed.yaml")
    }

    fn script(&self, arg: &str, render_dir: &Path) -> Output {
        Command::new("sh")
            .arg(repo().join("buildroot/package/hakeys-boot/hakeys-ha-secrets"))
            .args(arg.split(' '))
            .env("HAKEYS_HA_CONFIG", &self.config)
            .env("HAKEYS_HA_RENDER_DIR", render_dir)
            .env(
                "HAKEYS_TEECTL",
                format!(
                    "{} --backend sim --state-dir {}",
                    teectl_bin().display(),
                    self.board.state().display()
                ),
            )
            .env("HAKEYS_SIM_BOOT_ID", &self.board.boot_id)
            .env_remove("TEECTL_STATE_DIR")
            .output()
            .expect("run hakeys-ha-secrets")
    }

    fn sync(&self, arg: &str) -> Output {
        self.script(arg, &self.render_dir())
    }
}

fn ok(o: Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "failed ({}): {err}", o.status);
    err
}

fn fails(o: Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(1), "{err}");
    err
}

#[test]
fn the_board_script_seals_links_wipes_and_takes_back_plaintext() {
    let ha = Ha::new();
    let plaintext = "# mine\nmqtt: first-HKT\nport: 1883\n";
    fs::write(ha.secrets(), plaintext).unwrap();
    // Not enabled: nothing happens.
    let err = ok(ha.sync("sync"));
    assert!(err.contains("not enabled"), "{err}");
    assert_eq!(fs::read_to_string(ha.secrets()).unwrap(), plaintext);

    // Core too old for /run/supervisor: refused, nothing touched.
    fs::write(ha.config.join(".HA_VERSION"), "2026.4.3").unwrap();
    let err = fails(ha.sync("enable"));
    assert!(err.contains("older than 2026.5.1"), "{err}");
    assert_eq!(fs::read_to_string(ha.secrets()).unwrap(), plaintext);
    assert!(!ha.sealed().exists());
    // A rendering folder that is not on tmpfs: refused.
    let err = fails(ha.script("enable", &ha.config.join("not-tmpfs")));
    assert!(err.contains("not on tmpfs"), "{err}");
    assert!(!ha.sealed().exists());

    // Enable: sealed, linked, the plaintext wiped (a second name for its
    // inode shows what became of its bytes).
    fs::write(ha.config.join(".HA_VERSION"), "2026.5.1").unwrap();
    let witness = ha.board.dir.path().join("witness");
    fs::hard_link(ha.secrets(), &witness).unwrap();
    let err = fails(ha.sync("enable --clear"));
    assert!(err.contains("usage"), "{err}");
    ok(ha.sync("enable --clear port"));
    assert!(fs::read_to_string(ha.sealed())
        .unwrap()
        .contains("\nport: 1883\n"));
    let rendered = ha.render_dir().join("secrets.yaml");
    assert_eq!(fs::read_link(ha.secrets()).unwrap(), rendered);
    let wiped = fs::read(&witness).unwrap();
    assert!(
        wiped.len() >= plaintext.len() && wiped.iter().all(|b| *b == 0),
        "not wiped"
    );
    assert_eq!(
        fs::metadata(&witness).unwrap().nlink(),
        1,
        "the plaintext still has a name"
    );
    assert_eq!(mode(&ha.render_dir()), 0o700);
    assert_eq!(mode(&rendered), 0o600);
    let r = loaded(&ha.secrets());
    assert_eq!(value_of(&r, "mqtt").1, Value::from("first-HKT"));
    assert_eq!(value_of(&r, "port"), ("int".into(), Value::from("1883")));
    assert!(!fs::read_to_string(ha.sealed()).unwrap().contains("HKT"));
    assert_eq!(
        files_in(&ha.config),
        [".HA_VERSION", "secrets.sealed.yaml", "secrets.yaml"]
    );

    // An editor (or the Samba add-on) replaced the link with a plaintext
    // file: merged into the sealed file, the link back, the plaintext gone.
    fs::remove_file(ha.secrets()).unwrap();
    fs::write(ha.secrets(), "mqtt: second-HKT\nnew: added-HKT\n").unwrap();
    fs::hard_link(ha.secrets(), ha.board.dir.path().join("witness2")).unwrap();
    let err = ok(ha.sync("sync"));
    assert!(err.contains("merged") && err.contains("wiped"), "{err}");
    assert!(fs::read(ha.board.dir.path().join("witness2"))
        .unwrap()
        .iter()
        .all(|b| *b == 0));
    assert_eq!(fs::read_link(ha.secrets()).unwrap(), rendered);
    let r = loaded(&ha.secrets());
    assert_eq!(
        r.iter().map(|(k, ..)| k.as_str()).collect::<Vec<_>>(),
        ["mqtt", "port", "new"]
    );
    assert_eq!(value_of(&r, "mqtt").1, Value::from("second-HKT"));
    assert!(fs::read_to_string(ha.sealed())
        .unwrap()
        .starts_with("# mine\n"));

    // A sealed file that does not open: the unit fails, the rendering
    // Core reads stays as it was.
    let before = snapshot(&rendered);
    let good = fs::read_to_string(ha.sealed()).unwrap();
    let other = String::from_utf8(ha.board.seal("ha/other", b"x")).unwrap();
    fs::write(ha.sealed(), with_value(&good, "new", other.trim())).unwrap();
    let err = fails(ha.sync("sync"));
    assert!(
        err.contains("key \"new\"") && err.contains("unchanged"),
        "{err}"
    );
    assert_eq!(snapshot(&rendered), before);
    fs::write(ha.sealed(), &good).unwrap();

    // The way back: a plaintext secrets.yaml again.
    ok(ha.sync("disable"));
    assert!(fs::symlink_metadata(ha.secrets()).unwrap().is_file());
    assert_eq!(
        value_of(&loaded(&ha.secrets()), "new").1,
        Value::from("added-HKT")
    );
    assert!(!rendered.exists());
    assert!(ha.config.join("secrets.sealed.yaml.disabled").exists());
    let err = ok(ha.sync("sync"));
    assert!(err.contains("not enabled"), "{err}");
}

#[test]
fn the_units_render_before_core_and_watch_both_files() {
    let dir = repo().join("buildroot/package/hakeys-boot");
    let service = fs::read_to_string(dir.join("hakeys-ha-secrets.service")).unwrap();
    for line in [
        "After=dev-tee0.device hakeys-boot-done.service",
        "Before=docker.service hassos-supervisor.service",
        "ExecStart=/usr/libexec/hakeys-ha-secrets sync",
        "ConditionPathExists=/mnt/data/supervisor/homeassistant/secrets.sealed.yaml",
        "RequiresMountsFor=/mnt/data/supervisor",
    ] {
        assert!(service.lines().any(|l| l.starts_with(line)), "{line}");
    }
    let path = fs::read_to_string(dir.join("hakeys-ha-secrets.path")).unwrap();
    for line in [
        "PathChanged=/mnt/data/supervisor/homeassistant/secrets.sealed.yaml",
        "PathChanged=/mnt/data/supervisor/homeassistant/secrets.yaml",
        "Unit=hakeys-ha-secrets.service",
    ] {
        assert!(path.lines().any(|l| l == line), "{line}");
    }
    let preset = fs::read_to_string(dir.join("50-hakeys-boot.preset")).unwrap();
    assert!(
        preset.contains("enable hakeys-ha-secrets.service")
            && preset.contains("enable hakeys-ha-secrets.path")
    );
    // The script's defaults are HA OS's paths, the units' too.
    let script = fs::read_to_string(dir.join("hakeys-ha-secrets")).unwrap();
    assert!(script.contains("config=${HAKEYS_HA_CONFIG:-/mnt/data/supervisor/homeassistant}"));
    assert!(script.contains("render_dir=${HAKEYS_HA_RENDER_DIR:-/run/supervisor/hakeys}"));
}

// ------------------------------------------------------- through teed --

fn test_user() -> (u32, u32) {
    let name = "hakeys-t-ha";
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, name]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    assert!(
        rustix::process::geteuid().is_root(),
        "this test runs teectl as another user: run it as root (CI does)"
    );
    if id("-u").is_none() {
        let st = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ])
            .status()
            .expect("useradd");
        assert!(st.success() || st.code() == Some(9), "useradd: {st}");
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

struct Teed(std::process::Child);

impl Drop for Teed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_caller_that_is_not_root_renders_through_the_daemon() {
    let (uid, gid) = test_user();
    let b = board();
    fs::set_permissions(b.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let home = b.dir.path().join("ha");
    fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
    let teectl = b.dir.path().join("teectl");
    fs::copy(teectl_bin(), &teectl).unwrap();
    fs::set_permissions(&teectl, fs::Permissions::from_mode(0o755)).unwrap();
    let policy = b.dir.path().join("policy.toml");
    fs::write(
        &policy,
        format!("version = 1\n[[rule]]\nuid = {uid}\nnamespaces = [\"ha/*\"]\noperations = [\"unseal\", \"seal\", \"pubkey\", \"status\"]\n"),
    )
    .unwrap();
    let socket = b.dir.path().join("teed.sock");
    let addon_blob = String::from_utf8(b.seal("addon/x", b"addon-HKT")).unwrap();
    let _teed = Teed(
        teed_sim(&b.state(), &socket, &policy, &b.boot_id)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start teed"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline, "teed did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let as_user = |args: &[&str]| -> Output {
        let mut c = Command::new(&teectl);
        c.args(args)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("HAKEYS_SOCKET", &socket)
            .current_dir(&home)
            .uid(uid)
            .gid(gid);
        run_with_stdin(&mut c, b"")
    };
    fs::write(home.join("in.yaml"), "pw: via-daemon-HKT\nn: 7\n").unwrap();
    let o = as_user(&["secrets", "import", "--in", "in.yaml", "--out", "s.yaml"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = as_user(&["secrets", "render", "--in", "s.yaml", "--out", "r.yaml"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r = loaded(&home.join("r.yaml"));
    assert_eq!(value_of(&r, "pw").1, Value::from("via-daemon-HKT"));
    assert_eq!(value_of(&r, "n"), ("int".into(), Value::from("7")));
    // The policy decides: a blob of a namespace this caller may not open.
    let sealed = fs::read_to_string(home.join("s.yaml")).unwrap();
    fs::write(
        home.join("s.yaml"),
        with_value(&sealed, "pw", addon_blob.trim()),
    )
    .unwrap();
    let o = as_user(&["secrets", "render", "--in", "s.yaml", "--out", "r.yaml"]);
    assert_eq!(
        o.status.code(),
        Some(REFUSED),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("key \"pw\""));
    assert_eq!(
        value_of(&loaded(&home.join("r.yaml")), "pw").1,
        Value::from("via-daemon-HKT")
    );
}

// ----------------------------------------------------- Python package --

#[test]
fn the_python_package_passes_its_tests_and_installs_with_pip() {
    let python = repo().join("python");
    let unit = |py: &Path, env: &[(&str, &str)]| {
        let mut c = Command::new(py);
        c.args(["-m", "unittest", "discover", "-v", "-s"])
            .arg(python.join("tests"))
            .env("PYTHONDONTWRITEBYTECODE", "1");
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().expect("run python");
        assert!(
            o.status.success(),
            "python unit tests failed:\n{}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    // From the source tree.
    unit(Path::new(PYTHON), &[("PYTHONPATH", p(&python.join("src")))]);
    // `pip install` from the repository into a fresh virtual environment
    // (pip fetches the build backend, setuptools, if the venv lacks it).
    let venv = tempfile::tempdir().unwrap();
    let st = Command::new(PYTHON)
        .args(["-m", "venv"])
        .arg(venv.path())
        .status()
        .expect("python3 -m venv (python3-venv)");
    assert!(st.success(), "python3 -m venv failed");
    let vpy = venv.path().join("bin/python");
    let o = Command::new(&vpy)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(&python)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pip install ./python failed:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        venv.path().join("bin/hakeys").exists(),
        "the `hakeys` command was not installed"
    );
    // The installed package, not the source tree, from another folder.
    unit(&vpy, &[("HAKEYS_TEST_INSTALLED", "1")]);
    let o = Command::new(&vpy)
        .args(["-c", "import hakeys, sys; print(hakeys.__file__)"])
        .current_dir(venv.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).starts_with(p(venv.path())));
}
