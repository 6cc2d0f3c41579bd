//! What a release build of `teectl` (as users and boards get it) does
//! differently from the test build: it honours no test hook.

use std::process::Command;

use hakeys_e2e::{run_with_stdin, teectl_bin, teectl_release_bin};

/// Run `bin` on the simulator state in `dir`, claiming boot id `boot`.
fn teectl(
    bin: &std::path::Path,
    dir: &std::path::Path,
    boot: &str,
    args: &[&str],
    stdin: &[u8],
) -> std::process::Output {
    let mut c = Command::new(bin);
    c.args(["--backend", "sim", "--state-dir"])
        .arg(dir)
        .args(args)
        .env("HAKEYS_SIM_BOOT_ID", boot)
        .env_remove("TEECTL_STATE_DIR");
    run_with_stdin(&mut c, stdin)
}

#[test]
fn a_release_build_ignores_the_boot_id_override() {
    for (bin, honours) in [(teectl_bin(), true), (teectl_release_bin(), false)] {
        let top = tempfile::tempdir().expect("tempdir");
        let dir = top.path().join("state");
        let run = |boot: &str, args: &[&str], stdin: &[u8]| teectl(bin, &dir, boot, args, stdin);
        let ok = |o: std::process::Output| {
            assert!(
                o.status.success(),
                "{}: {}",
                bin.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            o.stdout
        };
        ok(run("boot-1", &["init"], b""));
        let blob = ok(run(
            "boot-1",
            &["seal", "--namespace", "boot/luks-data"],
            b"disk key",
        ));
        ok(run("boot-1", &["boot-done"], b""));
        // Claim a new boot through the environment.
        let after = run("boot-2", &["unseal"], blob.as_slice());
        if honours {
            assert_eq!(
                after.stdout, b"disk key",
                "the test build simulates a reboot"
            );
        } else {
            assert_eq!(
                after.status.code(),
                Some(4),
                "a release build must keep boot/ locked whatever the environment says: {}",
                String::from_utf8_lossy(&after.stderr)
            );
        }
    }
}
