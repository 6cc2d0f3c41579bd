//! The `rpmb-sim` binary: create, show, serve (driven by the Rust client
//! and by an independent Python client), locking, errors, bench.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use common::KEY;
use rpmb_sim::client;
use rpmb_sim::frame::{REQ_READ_COUNTER, RESP_READ_COUNTER};
use rpmb_sim::serve::StreamTransport;
use rpmb_sim::{Frame, FRAME_LEN};

const BIN: &str = env!("CARGO_BIN_EXE_rpmb-sim");

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rpmb-sim-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run rpmb-sim")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `rpmb-sim create IMAGE EXTRA...`, which must succeed.
fn create(image: &Path, extra: &[&str]) {
    assert!(run(&[&["create", p(image)][..], extra].concat())
        .status
        .success());
}

fn spawn_serve(image: &Path) -> Child {
    Command::new(BIN)
        .args(["serve", p(image)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve")
}

#[test]
fn create_and_show() {
    let d = tmpdir("show");
    let img = d.join("a.img");
    let o = run(&[
        "create",
        p(&img),
        "--size-mult",
        "4",
        "--rel-wr-sec-c",
        "2",
        "--cid",
        "00112233445566778899AABBCCDDEEFF",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = run(&["show", p(&img)]);
    assert!(o.status.success());
    let s = text(&o.stdout);
    for want in [
        "CID:             00112233445566778899aabbccddeeff",
        "524288 bytes (size_mult 4 x 128 KiB, 2048 blocks",
        "rel_wr_sec_c:    2 (at most 4 blocks",
        "key programmed:  no",
        "write counter:   0",
        "blocks used:     0",
    ] {
        assert!(s.contains(want), "missing {want:?} in:\n{s}");
    }
    let o = run(&["show", "--json", p(&img)]);
    let j = text(&o.stdout);
    assert!(j.starts_with('{') && j.trim_end().ends_with('}'), "{j}");
    for want in [
        "\"size_mult\":4",
        "\"capacity_blocks\":2048",
        "\"rel_wr_sec_c\":2",
        "\"max_write_blocks\":4",
        "\"key_programmed\":false",
        "\"write_counter\":0",
        "\"used_blocks\":0",
        "\"cid\":\"00112233445566778899aabbccddeeff\"",
    ] {
        assert!(j.contains(want), "missing {want} in {j}");
    }
    // Defaults.
    let img2 = d.join("b.img");
    assert!(run(&["create", p(&img2)]).status.success());
    let j = text(&run(&["show", p(&img2), "--json"]).stdout);
    assert!(
        j.contains("\"size_mult\":16") && j.contains("\"rel_wr_sec_c\":1"),
        "{j}"
    );
    assert!(
        j.contains("\"cid\":\"52015352504d42534d10000000011ad7\""),
        "{j}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn errors_are_one_line_with_exit_codes() {
    let d = tmpdir("errors");
    let img = d.join("e.img");
    create(&img, &[]);

    let o = run(&["create", p(&img)]);
    assert_eq!(o.status.code(), Some(1));
    let e = text(&o.stderr);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("e.img") && e.contains("exists"), "{e}");

    let missing = d.join("missing.img");
    let o = run(&["show", p(&missing)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("missing.img"));

    let junk = d.join("junk.img");
    std::fs::write(&junk, vec![7u8; 100_000]).unwrap();
    let o = run(&["serve", p(&junk)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("corrupt"), "{}", text(&o.stderr));

    for args in [
        &[][..],
        &["frobnicate"][..],
        &["create"][..],
        &["create", "x", "--size-mult", "0"][..],
        &["create", "x", "--size-mult", "300"][..],
        &["create", "x", "--cid", "1234"][..],
        &["create", "x", "--bogus"][..],
        &["show", "a", "b"][..],
        &["bench", p(&d), "--seconds", "-1"][..],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
        assert_eq!(text(&o.stderr).lines().count(), 1, "{args:?}");
    }
    assert!(run(&["--help"]).status.success());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn serve_with_the_rust_client_and_persistence_across_processes() {
    let d = tmpdir("serve");
    let img = d.join("s.img");
    create(&img, &["--rel-wr-sec-c", "2"]);

    let mut child = spawn_serve(&img);
    {
        let mut t = StreamTransport::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
        client::program_key(&mut t, &KEY).unwrap();
        let blocks = [[1u8; 256], [2; 256], [3; 256], [4; 256]];
        assert_eq!(
            client::write_blocks(&mut t, &KEY, 8000, &blocks).unwrap(),
            1
        );
        let got = client::read_blocks(&mut t, &KEY, 8000, 4, &client::fresh_nonce()).unwrap();
        assert_eq!(got, blocks);

        // While serve holds the image, nobody else can open it.
        let o = run(&["show", p(&img)]);
        assert_eq!(o.status.code(), Some(1));
        let e = text(&o.stderr);
        assert!(e.contains("s.img") && e.contains("in use"), "{e}");
        let o = run(&["serve", p(&img)]);
        assert_eq!(o.status.code(), Some(1));
        // Dropping the transport closes stdin: serve ends cleanly.
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A new server process continues from the stored state.
    let mut child = spawn_serve(&img);
    {
        let mut t = StreamTransport::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
        assert_eq!(client::read_counter(&mut t, &KEY, &[5; 16]).unwrap(), 1);
        let got = client::read_blocks(&mut t, &KEY, 8002, 2, &[6; 16]).unwrap();
        assert_eq!(got, [[3u8; 256], [4; 256]]);
    }
    assert!(child.wait().unwrap().success());
    let j = text(&run(&["show", "--json", p(&img)]).stdout);
    assert!(j.contains("\"key_programmed\":true"), "{j}");
    assert!(j.contains("\"write_counter\":1"), "{j}");
    assert!(j.contains("\"used_blocks\":4"), "{j}");
    assert!(!j.contains("0101010101"), "show never prints the key");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn serve_answers_garbage_and_ignores_a_trailing_partial_frame() {
    let d = tmpdir("garbage");
    let img = d.join("g.img");
    create(&img, &["--size-mult", "1"]);
    let mut child = spawn_serve(&img);
    let mut input = Vec::new();
    input.extend_from_slice(&Frame::new_request(0xBEEF).0); // unknown: 1 frame
    let mut ctr = Frame::new_request(REQ_READ_COUNTER);
    ctr.set_nonce(&[3; 16]);
    input.extend_from_slice(&ctr.0); // 1 frame, key not programmed
    input.extend_from_slice(&[0u8; 100]); // incomplete frame
    {
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&input).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(out.stdout.len(), 2 * FRAME_LEN);
    let r0 = Frame::from_slice(&out.stdout[..FRAME_LEN]).unwrap();
    let r1 = Frame::from_slice(&out.stdout[FRAME_LEN..]).unwrap();
    assert_eq!(r0.result(), 0x0001);
    assert_eq!(
        (r1.req_resp(), r1.result(), r1.nonce()),
        (RESP_READ_COUNTER, 0x0007, [3; 16])
    );
    assert!(
        text(&out.stderr).contains("discarded 100 bytes"),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn serve_with_an_independent_python_client() {
    let d = tmpdir("python");
    let img = d.join("py.img");
    create(&img, &[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/serve_client.py");
    let o = Command::new("python3")
        .arg(&script)
        .args([BIN, p(&img)])
        .output()
        .unwrap_or_else(|e| panic!("python3 is required for {}: {e}", script.display()));
    assert!(o.status.success(), "{}{}", text(&o.stdout), text(&o.stderr));
    assert!(text(&o.stdout).contains("serve_client: ok"));
    let j = text(&run(&["show", "--json", p(&img)]).stdout);
    assert!(
        j.contains("\"write_counter\":1") && j.contains("\"used_blocks\":2"),
        "{j}"
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bench_runs_and_writes_its_table() {
    let d = tmpdir("bench");
    let out = d.join("bench.md");
    let o = run(&["bench", p(&d), "--seconds", "0.02", "--out", p(&out)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let table = std::fs::read_to_string(&out).unwrap();
    assert!(
        table.contains("| backend | fsync | 1-block writes/s"),
        "{table}"
    );
    assert_eq!(
        table
            .lines()
            .filter(|l| l.starts_with("| file") || l.starts_with("| memory"))
            .count(),
        3
    );
    // Only the table file is left: the scratch images were removed.
    assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn serve_killed_mid_stream_leaves_an_all_or_nothing_image() {
    let d = tmpdir("kill");
    for (round, delay_ms) in [(0u32, 15u64), (1, 40), (2, 90)] {
        let img = d.join(format!("k{round}.img"));
        create(&img, &["--size-mult", "1"]);
        let mut child = Command::new(BIN)
            .args(["serve", p(&img), "--no-sync"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut t = StreamTransport::new(child.stdout.take().unwrap(), child.stdin.take().unwrap());
        client::program_key(&mut t, &KEY).unwrap();
        let killer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            let _ = child.kill();
            child.wait().unwrap()
        });
        // Write i (counter i) fills block i % 8 with the byte i.
        let mut acknowledged = 0u32;
        while let Ok(c) = client::write_blocks_at_counter(
            &mut t,
            &KEY,
            (acknowledged % 8) as u16,
            acknowledged,
            &[[acknowledged as u8; 256]],
        ) {
            acknowledged = c;
            if acknowledged > 1_000_000 {
                break;
            }
        }
        let status = killer.join().unwrap();
        assert!(!status.success(), "serve was killed");
        drop(t);

        let mut dev = rpmb_sim::RpmbDevice::open(&img).unwrap();
        let c = client::read_counter(&mut dev, &KEY, &[0; 16]).unwrap();
        assert!(
            c == acknowledged || c == acknowledged + 1,
            "round {round}: counter {c}, acknowledged {acknowledged}"
        );
        let blocks = client::read_blocks(&mut dev, &KEY, 0, 8, &[1; 16]).unwrap();
        for (addr, b) in blocks.iter().enumerate() {
            // The last write at or below counter c that hit this block.
            let want = (0..c)
                .rev()
                .find(|i| i % 8 == addr as u32)
                .map_or(0u8, |i| i as u8);
            assert_eq!(
                b, &[want; 256],
                "round {round}: block {addr} at counter {c}"
            );
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}
