//! Known-answer tests for the RPMB frame MAC against vectors made by an
//! independent implementation (Python's hmac/hashlib).

mod common;

use std::path::Path;
use std::process::Command;

use common::hex_decode;
use rpmb_sim::{client, Frame, FRAME_LEN};

const FIXTURE: &str = include_str!("vectors/mac_vectors.txt");

#[test]
fn frame_mac_matches_python_vectors() {
    let mut checked = 0;
    for line in FIXTURE.lines().filter(|l| !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts.len(), 5, "malformed vector line");
        let name = parts[0];
        let n: usize = parts[1].parse().expect("frame count");
        let key: [u8; 32] = hex_decode(parts[2]).try_into().expect("32-byte key");
        let bytes = hex_decode(parts[3]);
        assert_eq!(bytes.len(), n * FRAME_LEN, "{name}: frame bytes");
        let frames: Vec<Frame> = bytes
            .chunks(FRAME_LEN)
            .map(|c| Frame::from_slice(c).expect("frame"))
            .collect();
        let want: [u8; 32] = hex_decode(parts[4]).try_into().expect("32-byte mac");
        assert_eq!(client::mac(&key, &frames), want, "vector {name}");
        // The MAC ignores the stuff bytes and the key/MAC field.
        let mut altered = frames.clone();
        for f in &mut altered {
            f.0[..228].fill(0xEE);
        }
        assert_eq!(client::mac(&key, &altered), want, "vector {name} (altered)");
        checked += 1;
    }
    assert_eq!(checked, 8, "number of vectors");
}

#[test]
fn python_generator_reproduces_the_fixture() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/gen_mac_vectors.py");
    let out = Command::new("python3")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| panic!("python3 is required to re-run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "generator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout) == FIXTURE,
        "tests/vectors/mac_vectors.txt is not what gen_mac_vectors.py produces"
    );
}
