//! `hakeys-unlock-data`, the boot flow's script, run against stand-in
//! `teectl` and `cryptsetup` programs.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use super::tree;

/// Stand-ins for teectl and cryptsetup that log their arguments and stdin,
/// with exit codes from FAKE_* variables, and the files the script opens.
struct Fakes {
    dir: tempfile::TempDir,
}

impl Fakes {
    fn new() -> Fakes {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).expect("bin");
        let teectl = r#"#!/bin/sh
echo "teectl $*" >> "$FAKE_DIR/log"
case "$*" in
*unseal*)
	cat > "$FAKE_DIR/unseal.stdin"
	[ "${FAKE_UNSEAL_RC:-0}" = 0 ] && printf 'k3y\nbytes\001'
	exit "${FAKE_UNSEAL_RC:-0}" ;;
*boot-done*)
	# FAKE_DONE_FAILS: fail that many times first (with FAKE_DONE_RC or 7).
	n=$(cat "$FAKE_DIR/done.count" 2>/dev/null || echo 0)
	echo $((n + 1)) > "$FAKE_DIR/done.count"
	if [ "$n" -lt "${FAKE_DONE_FAILS:-0}" ]; then exit "${FAKE_DONE_RC:-7}"; fi
	exit "${FAKE_DONE_RC:-0}" ;;
*status*)
	printf '%s\n' "${FAKE_STATUS:-{\"boot_locked\":true}}"
	exit 0 ;;
esac
exit 99
"#;
        let cryptsetup = r#"#!/bin/sh
echo "cryptsetup $*" >> "$FAKE_DIR/log"
cat > "$FAKE_DIR/cryptsetup.stdin"
exit "${FAKE_CRYPT_RC:-0}"
"#;
        for (name, text) in [("teectl", teectl), ("cryptsetup", cryptsetup)] {
            let p = bin.join(name);
            fs::write(&p, text).expect("write fake");
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        fs::write(dir.path().join("tee0"), "").expect("tee");
        // A LUKS2 partition starts with the LUKS magic.
        fs::write(dir.path().join("data-partition"), b"LUKS\xba\xbe\x00\x02").expect("device");
        fs::write(dir.path().join("data.blob"), "hakeys:v1:BLOB\n").expect("blob");
        Fakes { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, env: &[(&str, &str)]) -> Output {
        self.run_script("hakeys-unlock-data", env)
    }

    fn run_script(&self, script: &str, env: &[(&str, &str)]) -> Output {
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("sh")
            .arg(tree().join("package/hakeys-boot").join(script))
            .env("PATH", path)
            .env("FAKE_DIR", self.dir.path())
            .env("TMPDIR", self.dir.path())
            .env("HAKEYS_TEE_DEVICE", self.path("tee0"))
            .env("HAKEYS_DATA_DEVICE", self.path("data-partition"))
            .env("HAKEYS_DATA_BLOB", self.path("data.blob"))
            .env("HAKEYS_DATA_NAME", "hakeys-test-no-such-mapping")
            .env("HAKEYS_WAIT_SECONDS", "1")
            .envs(env.iter().copied())
            .output()
            .unwrap_or_else(|e| panic!("run {script}: {e}"))
    }

    fn log(&self) -> Vec<String> {
        fs::read_to_string(self.path("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const UNSEAL: &str = "teectl --backend tee unseal --namespace boot/luks-data";
const BOOT_DONE: &str = "teectl --backend tee boot-done";

#[test]
fn unlock_script_opens_the_partition_then_ends_the_boot_phase() {
    let f = Fakes::new();
    let o = f.run(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let crypt = format!(
        "cryptsetup open --key-file - {} hakeys-test-no-such-mapping",
        f.path("data-partition").display()
    );
    // teectl and cryptsetup run side by side in the pipe: either logs first.
    let mut log = f.log();
    assert_eq!(
        log.pop().as_deref(),
        Some(BOOT_DONE),
        "boot-done comes last"
    );
    log.sort();
    assert_eq!(log, vec![crypt, UNSEAL.to_string()]);
    assert_eq!(
        fs::read(f.path("unseal.stdin")).expect("stdin"),
        b"hakeys:v1:BLOB\n"
    );
    assert_eq!(
        fs::read(f.path("cryptsetup.stdin")).expect("key"),
        b"k3y\nbytes\x01",
        "cryptsetup gets the unsealed key byte-exact"
    );
    assert!(!stderr(&o).contains("k3y"), "the key never reaches the log");
    let leftovers = fs::read_dir(f.dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("hakeys-unlock.")
        })
        .count();
    assert_eq!(leftovers, 0, "the status file is removed");
}

#[test]
fn unlock_script_leaves_a_partition_not_yet_converted_alone() {
    // A key was sealed, but the conversion never wrote the LUKS2 header:
    // nothing is unsealed or opened, the boot goes on, the phase ends.
    let f = Fakes::new();
    // Still plain ext4 (its superblock is at 1024; the start is zeros).
    fs::write(f.path("data-partition"), [0u8; 2048]).expect("device");
    let o = f.run(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stderr(&o).contains("not LUKS2 yet"), "{}", stderr(&o));
    assert_eq!(f.log(), vec![BOOT_DONE.to_string()]);
}

#[test]
fn unlock_script_failures_still_end_the_boot_phase() {
    // teectl refuses (each exit code has its own message); cryptsetup is
    // never told a wrong key.
    // Each failure: the unit fails with its own message, and the last thing
    // it did was end the boot phase (or try to).
    let fails_with = |f: &Fakes, env: &[(&str, &str)], words: &str| {
        let o = f.run(env);
        assert_eq!(o.status.code(), Some(1), "{env:?}");
        assert!(stderr(&o).contains(words), "{env:?}: {}", stderr(&o));
        assert_eq!(
            f.log().last().map(String::as_str),
            Some(BOOT_DONE),
            "{env:?}"
        );
    };
    for (rc, words) in [
        ("3", "never set up"),
        ("4", "boot phase is already over"),
        ("5", "another board"),
        ("6", "secure storage"),
        ("7", "does not answer"),
    ] {
        fails_with(&Fakes::new(), &[("FAKE_UNSEAL_RC", rc)], words);
    }
    fails_with(
        &Fakes::new(),
        &[("FAKE_CRYPT_RC", "2")],
        "cryptsetup could not open",
    );
    // boot-done itself fails: the unit fails.
    fails_with(
        &Fakes::new(),
        &[("FAKE_DONE_RC", "7")],
        "could not end the boot phase",
    );
    // The partition never appears.
    let f = Fakes::new();
    fs::remove_file(f.path("data-partition")).expect("rm");
    fails_with(&f, &[], "did not appear");
    assert_eq!(f.log(), vec![BOOT_DONE.to_string()]);
}

#[test]
fn unlock_script_without_a_sealed_key_or_a_tee() {
    // No blob: the data partition is not encrypted; only boot-done runs.
    let f = Fakes::new();
    fs::remove_file(f.path("data.blob")).expect("rm");
    let o = f.run(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(f.log(), vec![BOOT_DONE.to_string()]);
    assert!(stderr(&o).contains("nothing to unlock"));
    // No TEE: fail, and touch nothing (teectl would otherwise pick its
    // simulator backend).
    let f = Fakes::new();
    fs::remove_file(f.path("tee0")).expect("rm");
    let o = f.run(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no TEE"), "{}", stderr(&o));
    assert!(f.log().is_empty());
}

#[test]
fn boot_done_unit_retries_then_checks_the_engine() {
    let f = Fakes::new();
    let o = f.run_script("hakeys-boot-done", &[("FAKE_DONE_FAILS", "2")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let done = f.log().iter().filter(|l| l.contains("boot-done")).count();
    assert_eq!(done, 3, "two failures, then success: {:?}", f.log());
    assert!(f.log().last().is_some_and(|l| l.contains("status")));
    assert!(stderr(&o).contains("boot phase over"), "{}", stderr(&o));
}

#[test]
fn boot_done_unit_fails_closed() {
    // boot-done never succeeds: the unit fails (and with it, by RequiredBy=,
    // the container engine and the daemon).
    let f = Fakes::new();
    let o = f.run_script(
        "hakeys-boot-done",
        &[("FAKE_DONE_FAILS", "99"), ("HAKEYS_TRIES", "3")],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("failed 3 times") && stderr(&o).contains("not started"),
        "{}",
        stderr(&o)
    );
    // boot-done says yes but the engine still reports the phase open.
    let f = Fakes::new();
    let o = f.run_script(
        "hakeys-boot-done",
        &[("FAKE_STATUS", "{\"boot_locked\":false}")],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("still reports"), "{}", stderr(&o));
    // No TEE device at all.
    let f = Fakes::new();
    fs::remove_file(f.path("tee0")).expect("rm");
    let o = f.run_script("hakeys-boot-done", &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no TEE"), "{}", stderr(&o));
    assert!(f.log().is_empty(), "{:?}", f.log());
}

#[test]
fn boot_done_unit_is_required_by_what_serves_home_assistant() {
    let unit = std::fs::read_to_string(tree().join("package/hakeys-boot/hakeys-boot-done.service"))
        .expect("unit");
    let line = unit
        .lines()
        .find(|l| l.starts_with("RequiredBy="))
        .expect("RequiredBy=");
    for u in ["docker.service", "teed.service", "teed.socket"] {
        assert!(line.contains(u), "{line}");
        assert!(
            unit.lines()
                .any(|l| l.starts_with("Before=") && l.contains(u)),
            "not ordered before {u}"
        );
    }
    let preset = std::fs::read_to_string(tree().join("package/hakeys-boot/50-hakeys-boot.preset"))
        .expect("preset");
    assert!(preset.contains("enable hakeys-boot-done.service"));
}
