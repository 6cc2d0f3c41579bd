//! Whole-file handling: finding blobs, keeping every other byte, the YAML
//! positions that take a plaintext, and the quoting that keeps YAML valid.

use std::path::Path;

use super::files::*;
use crate::Failure;

fn toks(text: &str) -> Vec<&str> {
    tokens(text.as_bytes())
        .into_iter()
        .map(|t| &text[t.start..t.end])
        .collect()
}

#[test]
fn tokens_are_prefix_and_base64_with_padding() {
    assert_eq!(
        toks("a: hakeys:v1:QUJD\nb: 'hakeys:v1:QQ=='  # c\n- hakeys:v1:Q+/9=x"),
        ["hakeys:v1:QUJD", "hakeys:v1:QQ==", "hakeys:v1:Q+/9="]
    );
    assert_eq!(toks("hakeys:v1:hakeys:v1:QQ"), ["hakeys:v1:hakeys"]);
    assert_eq!(toks("hakeys:v1:"), ["hakeys:v1:"]);
    assert!(toks("hakeys:v2:QQ hakeys-escrow:v1:QQ").is_empty());
    assert_eq!(line_of(b"a\nb\nc", 4), 3);
    assert_eq!(line_of(b"abc", 0), 1);
}

fn span(text: &str) -> Result<String, ()> {
    let t = tokens(text.as_bytes())[0];
    let block = block_scalar_lines(text.as_bytes());
    yaml_value_span(text.as_bytes(), t, &block).map(|(s, e)| text[s..e].to_string())
}

#[test]
fn a_plaintext_goes_only_where_a_whole_yaml_value_is() {
    let b = "hakeys:v1:QUJD";
    for ok in [
        format!("pw: {b}"),
        format!("mqtt_password:   {b}   # the broker\r"),
        format!("  nested.key-1/x: {b}"),
        format!("- {b}"),
        format!("  - - {b}"),
        format!("- key: {b}"),
        format!("pw: \"{b}\""),
        format!("pw: '{b}' # quoted"),
        format!("pw: {b}\t"),
    ] {
        assert!(span(&ok).is_ok(), "{ok:?}");
    }
    assert_eq!(span(&format!("pw: \"{b}\"")).unwrap(), format!("\"{b}\""));
    assert_eq!(span(&format!("pw: {b} # c")).unwrap(), b);
    for bad in [
        b.to_string(),
        format!("   {b}"),
        format!("pw: x {b}"),
        format!("pw: \"text: {b}\""),
        format!("pw: [{b}]"),
        format!("pw: {{a: {b}}}"),
        format!("# old: {b}"),
        format!("pw: {b}#x"),
        format!("pw: {b} more"),
        format!("pw: \"{b}'"),
        format!("\"quoted key\": {b}"),
        format!("pw: !hakeys-int {b}"),
        format!("pw:{b}"),
        format!("text: |\n  - {b}"),
        format!("text: >-\n  x\n\n  key: {b}\nafter: 1"),
        format!("- |2\n   pw: {b}"),
    ] {
        assert!(span(&bad).is_err(), "{bad:?}");
    }
    // A block scalar ends at the first line indented no deeper than its key.
    assert!(span(&format!("text: |\n  body\npw: {b}")).is_ok());
}

#[test]
fn plaintexts_are_quoted_so_yaml_reads_back_exactly_them() {
    let q = |s: &[u8]| yaml_double_quoted(s).map(|z| z.to_string());
    assert_eq!(q(b"simple").unwrap(), "\"simple\"");
    assert_eq!(
        q(b"a\"b\\c\nd\te\rf#g: h").unwrap(),
        r#""a\"b\\c\nd\te\rf#g: h""#
    );
    assert_eq!(q(b"\x00\x1b\x7f").unwrap(), r#""\x00\x1b\x7f""#);
    assert_eq!(
        q("é€😀\u{85}\u{2028}\u{feff}".as_bytes()).unwrap(),
        r#""\u00e9\u20ac\U0001f600\u0085\u2028\ufeff""#
    );
    assert_eq!(
        q(b"  leading and trailing  ").unwrap(),
        "\"  leading and trailing  \""
    );
    assert!(q(b"\xff\xfe").is_err(), "not UTF-8");
    // Everything written is printable ASCII.
    let all: Vec<u8> = (0u8..0x80).collect();
    assert!(q(&all).unwrap().bytes().all(|b| (b' '..=b'~').contains(&b)));
}

fn plain(pt: &[u8]) -> Result<Converted, Failure> {
    Ok(Converted::Plaintext(zeroize::Zeroizing::new(pt.to_vec())))
}

fn blob_text(b: &[u8]) -> String {
    hakeys_client::armor::blob_to_text(b)
}

#[test]
fn whole_files_keep_every_other_byte() {
    let b1 = blob_text(b"HKSB-one");
    let b2 = blob_text(b"HKSB-two");
    let text = format!("# secrets\r\nfirst: {b1}   # keep\r\n\nlist:\n  - '{b2}'\nother: plain\n");
    let mut seen = Vec::new();
    let (out, n) = convert_text(Path::new("f"), text.as_bytes(), false, &mut |b| {
        seen.push(b.to_vec());
        let mut r = b.to_vec();
        r.extend_from_slice(b"+");
        Ok(Converted::Blob(r))
    })
    .ok()
    .unwrap();
    assert_eq!(n, 2);
    assert_eq!(seen, [b"HKSB-one".to_vec(), b"HKSB-two".to_vec()]);
    let want = text
        .replace(&b1, &blob_text(b"HKSB-one+"))
        .replace(&b2, &blob_text(b"HKSB-two+"));
    assert_eq!(String::from_utf8(out.to_vec()).unwrap(), want);

    // As plaintext: quoted values, the quotes of a quoted blob replaced.
    let (out, _) = convert_text(Path::new("f"), text.as_bytes(), true, &mut |b| {
        plain(if b == b"HKSB-one" {
            b"pw: 1\n#"
        } else {
            b"two"
        })
    })
    .ok()
    .unwrap();
    assert_eq!(
        String::from_utf8(out.to_vec()).unwrap(),
        "# secrets\r\nfirst: \"pw: 1\\n#\"   # keep\r\n\nlist:\n  - \"two\"\nother: plain\n"
    );
}

#[test]
fn whole_files_fail_whole_with_the_line_and_no_content() {
    let good = blob_text(b"HKSB-good");
    let text = format!("a: {good}\nb: hakeys:v1:Q\nc: {good}\n");
    let r = convert_text(Path::new("s.yaml"), text.as_bytes(), false, &mut |b| {
        Ok(Converted::Blob(b.to_vec()))
    });
    let Err(Failure(code, msg)) = r else {
        panic!("accepted")
    };
    assert_eq!(code, crate::exit::REJECTED);
    assert!(msg.starts_with("s.yaml line 2: "), "{msg}");
    // A converter failure carries its code, with the line.
    let r = convert_text(
        Path::new("s.yaml"),
        format!("x: {good}").as_bytes(),
        false,
        &mut |_| Err(Failure(4, "refused".into())),
    );
    assert!(matches!(r, Err(Failure(4, m)) if m == "s.yaml line 1: refused"));
    // No blob at all.
    let r = convert_text(
        Path::new("e"),
        b"nothing here\n",
        false,
        &mut |_| unreachable!(),
    );
    assert!(matches!(r, Err(Failure(2, _))));
    // A plaintext that is not UTF-8, or in a place YAML cannot take it.
    let r = convert_text(
        Path::new("y"),
        format!("k: {good}").as_bytes(),
        true,
        &mut |_| plain(b"\xff"),
    );
    assert!(matches!(r, Err(Failure(2, m)) if m.contains("not UTF-8") && !m.contains('\u{fffd}')));
    let r = convert_text(
        Path::new("y"),
        format!("k: x {good}").as_bytes(),
        true,
        &mut |_| plain(b"secret-value"),
    );
    assert!(matches!(r, Err(Failure(2, m)) if m.contains("line 1") && !m.contains("secret")));
}

#[test]
fn blob_files_hold_exactly_one_blob() {
    let b = blob_text(b"HKSB-x");
    let conv = &mut |blob: &[u8]| {
        let mut r = blob.to_vec();
        r.push(b'!');
        Ok(Converted::Blob(r))
    };
    let out = convert_blob_file(Path::new("a.blob"), format!("{b}\n").as_bytes(), conv)
        .ok()
        .unwrap();
    assert_eq!(&out[..], format!("{}\n", blob_text(b"HKSB-x!")).as_bytes());
    let out = convert_blob_file(Path::new("a.blob"), b"HKSB-binary", conv)
        .ok()
        .unwrap();
    assert_eq!(&out[..], b"HKSB-binary!");
    let out = convert_blob_file(
        Path::new("a.blob"),
        format!("  {b}\r\n").as_bytes(),
        &mut |_| plain(b"secret\n"),
    )
    .ok()
    .unwrap();
    assert_eq!(&out[..], b"secret\n");
    for bad in [format!("{b}\n{b}\n"), format!("key: {b}"), "nothing".into()] {
        let r = convert_blob_file(Path::new("a.blob"), bad.as_bytes(), conv);
        assert!(matches!(r, Err(Failure(2, _))), "{bad:?}");
    }
}

#[test]
fn files_are_written_whole_and_never_over_an_existing_one() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile_dir();
    let p = d.join("out.yaml");
    write_file(&p, b"one", 0o600, false).ok().unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"one");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let r = write_file(&p, b"two", 0o600, false);
    assert!(matches!(r, Err(Failure(8, _))));
    assert_eq!(std::fs::read(&p).unwrap(), b"one");
    write_file(&p, b"two", 0o640, true).ok().unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"two");
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o640
    );
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["out.yaml"]);
    // A directory of results appears whole, and never over an existing one.
    let out = d.join("blobs");
    let files = [OutFile {
        name: "a.blob".into(),
        bytes: zeroize::Zeroizing::new(b"A".to_vec()),
        mode: 0o644,
    }];
    write_dir(&out, &files, 0o700, false).ok().unwrap();
    assert_eq!(std::fs::read(out.join("a.blob")).unwrap(), b"A");
    assert!(matches!(
        write_dir(&out, &files, 0o700, false),
        Err(Failure(8, _))
    ));
    assert!(matches!(
        write_dir(&p, &files, 0o700, true),
        Err(Failure(8, _))
    ));
    std::fs::remove_dir_all(&d).unwrap();
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!(
        "teectl-recovery-test-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir(&d).unwrap();
    d
}
