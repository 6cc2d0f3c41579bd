//! The Buildroot BR2_EXTERNAL tree in `buildroot/`: what only this project
//! can check. Style (whitespace, indentation, variable order, help text,
//! hash file format ...) is Buildroot's own `utils/check-package`, run by
//! `cargo xtask check-buildroot --buildroot DIR` where a Buildroot checkout
//! is at hand (docs/buildroot.md).
//!
//! - here: the packages install our programs, the TA and the daemon's
//!   policy at the paths the QEMU image has (`qemu/make-initramfs.sh`), so
//!   the QEMU run vouches for the image layout; the packages' versions are
//!   the crates';
//! - [`symbols`]: every configuration symbol the tree names exists in the
//!   Buildroot, Linux and OP-TEE OS versions it names;
//! - [`unlock_script`]: the boot unlock script's behaviour, against
//!   stand-in `teectl` and `cryptsetup` programs.

#[path = "buildroot/symbols.rs"]
mod symbols;
#[path = "buildroot/unlock_script.rs"]
mod unlock_script;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

// ------------------------------------------------------------- helpers --

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn tree() -> PathBuf {
    repo().join("buildroot")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every file under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).unwrap_or_else(|e| panic!("cannot list {}: {e}", d.display())) {
            let p = e.expect("directory entry").path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The symbol a Kconfig `.config` line sets: `SYM=value` or
/// `# SYM is not set`; None for other comments and blank lines.
fn config_line(line: &str) -> Option<(&str, &str)> {
    if let Some(sym) = line
        .strip_prefix("# ")
        .and_then(|r| r.strip_suffix(" is not set"))
    {
        return Some((sym, "n"));
    }
    if line.trim().is_empty() || line.starts_with('#') {
        return None;
    }
    let (k, v) = line
        .split_once('=')
        .unwrap_or_else(|| panic!("not SYM=value: {line}"));
    Some((k, v.trim_matches('"')))
}

/// The QEMU defconfig, symbol -> value (quotes removed, "is not set" = n).
fn defconfig() -> BTreeMap<String, String> {
    read(&tree().join("configs/hakeys_qemu_aarch64_defconfig"))
        .lines()
        .filter_map(config_line)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Make's logical lines: backslash continuations joined with a space.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        match line.strip_suffix('\\') {
            Some(head) => {
                cur.push_str(head.trim_end());
                cur.push(' ');
            }
            None => {
                cur.push_str(line);
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    out
}

/// The value of `NAME = ...` in a .mk file (first assignment).
fn mk_var(text: &str, name: &str) -> Option<String> {
    logical_lines(text).into_iter().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim_end_matches(['+', ':', '?']).trim() == name).then(|| v.trim().to_string())
    })
}

/// Identifiers starting with `prefix` in `text`.
fn symbols<'a>(text: &'a str, prefix: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(move |w| w.starts_with(prefix))
}

// ----------------------------------------------------- install paths --

/// (source, destination) of every `$(INSTALL)` and `ln -sf` into the
/// target; any other use of $(TARGET_DIR) but `mkdir -p` is an error.
fn installs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mks = files_under(&tree().join("package"));
    for mk in mks
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "mk"))
    {
        let pkg = mk.file_name().expect("name").to_string_lossy();
        for line in logical_lines(&read(mk))
            .iter()
            .filter(|l| l.contains("$(TARGET_DIR)"))
        {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (src, dest) = if let Some(i) = words.iter().position(|w| *w == "$(INSTALL)") {
                let mut pos = Vec::new();
                let mut args = words[i + 1..].iter();
                while let Some(a) = args.next() {
                    match *a {
                        "-D" => {}
                        "-m" => {
                            args.next();
                        }
                        a => pos.push(a),
                    }
                }
                match pos[..] {
                    [src, dest] => (src, dest),
                    _ => panic!("{pkg}: not `$(INSTALL) [-D] [-m MODE] SRC DEST`: {line}"),
                }
            } else if let ["ln", "-sf", src, dest] = words[..] {
                (src, dest)
            } else if words.starts_with(&["mkdir", "-p"]) {
                continue;
            } else {
                panic!("{pkg}: unexpected use of $(TARGET_DIR): {line}")
            };
            let dest = dest
                .strip_prefix("$(TARGET_DIR)")
                .unwrap_or_else(|| panic!("{pkg}: destination outside the target: {line}"));
            out.push((src.to_string(), dest.to_string()));
        }
    }
    out
}

/// A target path as it resolves on the image: merged /usr (Buildroot's
/// systemd selects BR2_ROOTFS_MERGED_USR; the QEMU image links lib to
/// usr/lib), and the TA's UUID filled in.
fn resolve(path: &str) -> String {
    let uuid = read(&repo().join("proto/uuid.txt")).trim().to_string();
    let p = path.replace("$$uuid", &uuid).replace("$UUID", &uuid);
    match p.strip_prefix("/lib/") {
        Some(rest) => format!("/usr/lib/{rest}"),
        None => p,
    }
}

/// Where `qemu/make-initramfs.sh` puts our binaries, the TA ("ta") and
/// files of `systemd/`: artifact -> path in the image.
fn qemu_image_layout() -> BTreeMap<String, String> {
    let script = read(&repo().join("qemu/make-initramfs.sh"));
    assert!(
        script.contains("ln -s usr/lib \"$R/lib\""),
        "make-initramfs.sh no longer links /lib to usr/lib"
    );
    let mut out = BTreeMap::new();
    for line in script.lines() {
        let words: Vec<String> = line
            .split_whitespace()
            .map(|w| w.trim_matches(['"', ';']).replace("$R/", "/"))
            .collect();
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        if let Some(i) = w.iter().position(|x| *x == "install_bin") {
            // [for b in A B; do] install_bin "$O/bin/NAME" DEST
            let name = w.get(i + 1).and_then(|s| s.strip_prefix("$O/bin/"));
            let (Some(name), Some(dest)) = (name, w.get(i + 2)) else {
                continue;
            };
            if let ["for", var, "in", rest @ ..] = &w[..] {
                for b in rest.iter().take_while(|x| **x != "do") {
                    out.insert(b.to_string(), dest.replace(&format!("${var}"), b));
                }
            } else {
                out.insert(name.to_string(), dest.to_string());
            }
        } else if let ["mv", from, to] = w[..] {
            for d in out.values_mut().filter(|d| **d == from) {
                *d = to.to_string();
            }
        } else if let ["cp", src, dest] = w[..] {
            if let Some(file) = src.strip_prefix("$ROOT/systemd/") {
                out.insert(format!("systemd/{file}"), dest.to_string());
            } else if src == "$O/ta/$UUID.ta" {
                out.insert("ta".to_string(), format!("{dest}$UUID.ta"));
            }
        }
    }
    out.into_iter().map(|(k, v)| (k, resolve(&v))).collect()
}

#[test]
fn packages_install_what_the_qemu_image_has() {
    let qemu = qemu_image_layout();
    for a in [
        "teectl",
        "teed",
        "hakeys-supplicant",
        "rpmb-sim",
        "ta",
        "systemd/teed-policy.toml",
    ] {
        assert!(
            qemu.contains_key(a),
            "cannot find where make-initramfs.sh installs {a}"
        );
    }
    let installs = installs();
    for (artifact, qemu_dest) in &qemu {
        let src = match artifact.as_str() {
            "ta" => "$(HAKEYS_TA_OUT)/$$uuid.ta".to_string(),
            a if a.starts_with("systemd/") => format!("$(@D)/{a}"),
            a => format!("$(HAKEYS_BIN_DIR)/{a}"),
        };
        let dests: Vec<String> = installs
            .iter()
            .filter(|(s, _)| *s == src)
            .map(|(_, d)| resolve(d))
            .collect();
        assert_eq!(
            dests,
            [qemu_dest.as_str()],
            "{artifact}: where Buildroot installs it"
        );
    }
    // No program the QEMU image lacks (the boot flow's script is in
    // /usr/libexec: the QEMU image runs its own scenario instead).
    for (src, dest) in &installs {
        if ["/usr/bin/", "/usr/sbin/", "/lib/optee_armtz/"]
            .iter()
            .any(|p| dest.starts_with(p))
        {
            assert!(
                qemu.values().any(|q| *q == resolve(dest)),
                "Buildroot installs {dest} ({src}), which the QEMU image does not have"
            );
        }
    }
    // The cargo build names exactly the binaries installed.
    let hakeys_mk = logical_lines(&read(&tree().join("package/hakeys/hakeys.mk")));
    let opts: Vec<&str> = hakeys_mk
        .iter()
        .filter(|l| l.starts_with("HAKEYS_CARGO_BUILD_OPTS"))
        .flat_map(|l| l.split_whitespace())
        .collect();
    let built: BTreeSet<&str> = opts
        .windows(2)
        .filter(|w| w[0] == "--bin")
        .map(|w| w[1])
        .collect();
    let installed: BTreeSet<&str> = installs
        .iter()
        .filter_map(|(s, _)| s.strip_prefix("$(HAKEYS_BIN_DIR)/"))
        .collect();
    assert_eq!(built, installed, "binaries built vs installed");
}

// ---------------------------------------------------------- versions --

/// `version = "..."` of a Cargo manifest's `[package]` or
/// `[workspace.package]` table.
fn cargo_version(manifest: &Path) -> String {
    let mut table = "";
    for line in read(manifest).lines().map(str::trim) {
        if line.starts_with('[') {
            table = line;
        } else if ["[package]", "[workspace.package]"].contains(&table)
            && line.starts_with("version")
        {
            if let Some(v) = line.split('"').nth(1) {
                return v.to_string();
            }
        }
    }
    panic!("{} has no version", manifest.display())
}

#[test]
fn package_versions_are_the_crates_versions() {
    // Both packages build from the release tarball hakeys-<version>.tar.gz,
    // named after the workspace's version; the TA (a workspace of its own
    // in ta/) is versioned in step.
    let version = cargo_version(&repo().join("Cargo.toml"));
    assert_eq!(
        cargo_version(&repo().join("ta/Cargo.toml")),
        version,
        "ta/Cargo.toml's version"
    );
    for (pkg, var) in [
        ("hakeys", "HAKEYS_VERSION"),
        ("hakeys-ta", "HAKEYS_TA_VERSION"),
    ] {
        let mk = read(&tree().join(format!("package/{pkg}/{pkg}.mk")));
        assert_eq!(
            mk_var(&mk, var).as_deref(),
            Some(version.as_str()),
            "{pkg}.mk's {var}"
        );
    }
}

/// `CFG_X=value` lines of one of our OP-TEE configuration fragments.
fn optee_fragment(name: &str) -> BTreeMap<String, String> {
    read(&tree().join("optee").join(name))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn a_board_never_gets_the_qemu_targets_insecure_optee_settings() {
    // The QEMU target programs a well-known RPMB test key; a board that did
    // so would give its RPMB key to anyone who reads OP-TEE's source.
    let board = optee_fragment("optee-os-board.conf");
    for (k, v) in [
        ("CFG_RPMB_TESTKEY", "n"),
        ("CFG_RPMB_WRITE_KEY", "n"),
        ("CFG_INSECURE", "n"),
        ("CFG_RPMB_ANNOUNCE_PROBE_CAP", "y"),
    ] {
        assert_eq!(
            board.get(k).map(String::as_str),
            Some(v),
            "optee-os-board.conf {k}"
        );
    }
    let common = optee_fragment("optee-os-rpmb.conf");
    for k in board.keys() {
        assert!(
            !common.contains_key(k),
            "{k} is in both the common and the board fragment"
        );
    }
}

#[test]
fn the_ta_rollback_version_follows_the_release() {
    // OP-TEE refuses to load a TA older than the newest it ran, by the
    // number given to sign_encrypt.py; a fixed number would let anyone
    // reinstall an older, vulnerable TA.
    let mk = read(&tree().join("package/hakeys-ta/hakeys-ta.mk"));
    let script = read(&repo().join("qemu/build-ta.sh"));
    for (name, text) in [("hakeys-ta.mk", &mk), ("qemu/build-ta.sh", &script)] {
        assert!(
            !text.contains("--ta-version 1 ") && text.contains("--ta-version"),
            "{name} signs with a fixed TA version"
        );
    }
    // Evaluate the package's definition with make, for the crate's version.
    let version = cargo_version(&repo().join("Cargo.toml"));
    let def = logical_lines(&mk)
        .into_iter()
        .find(|l| l.starts_with("HAKEYS_TA_ROLLBACK_VERSION ="))
        .expect("HAKEYS_TA_ROLLBACK_VERSION");
    let dir = tempfile::tempdir().expect("tempdir");
    let makefile = dir.path().join("Makefile");
    std::fs::write(
        &makefile,
        format!(
            "HAKEYS_TA_VERSION = {version}\n{def}\nall:\n\t@echo $(HAKEYS_TA_ROLLBACK_VERSION)\n"
        ),
    )
    .expect("write");
    let got: u32 = make_output(&makefile).trim().parse().expect("a number");
    let parts: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
    assert_eq!(got, parts[0] * 65536 + parts[1] * 256 + parts[2]);
    assert!(
        got > 1,
        "above the fixed 1 that earlier images were signed with"
    );
}

/// `make` evaluates `mk` (a package's .mk file) in release mode with the
/// release site `site`, Buildroot's helpers stubbed, and prints `vars`.
fn release_mode_vars(mk: &Path, site: &str, vars: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let makefile = dir.path().join("Makefile");
    let mut text = format!(
        "BR2_PACKAGE_HAKEYS_SITE_RELEASE = y\nBR2_PACKAGE_HAKEYS_RELEASE_SITE = \"{site}\"\n\
         qstrip = $(strip $(subst \",,$(1)))\ncargo-package =\ninclude {}\nall:\n",
        mk.display()
    );
    for v in vars {
        text += &format!("\t@echo '$({v})'\n");
    }
    std::fs::write(&makefile, text).expect("write");
    make_output(&makefile).lines().map(str::to_string).collect()
}

/// What `make -s -f makefile` prints; it must succeed.
fn make_output(makefile: &Path) -> String {
    let out = std::process::Command::new("make")
        .arg("-s")
        .arg("-f")
        .arg(makefile)
        .output()
        .expect("make");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn release_mode_downloads_the_published_tarball() {
    // Buildroot's cargo infrastructure stores a package's source as
    // <name>-<version>-cargoN.tar.gz and fetches $(SITE)/$(SOURCE): a SITE
    // that is only the directory asks the server for a file nobody
    // publishes. The SITE names the published file, with Buildroot's
    // `?buildroot-path=filename` tail, so the URL fetched is that file
    // whatever name Buildroot stores it under (checked against Buildroot
    // 2026.05.1's printvars: docs/buildroot.md).
    let version = cargo_version(&repo().join("Cargo.toml"));
    let site = "https://example.org/releases";
    for (pkg, var) in [("hakeys", "HAKEYS"), ("hakeys-ta", "HAKEYS_TA")] {
        let mk = tree().join(format!("package/{pkg}/{pkg}.mk"));
        assert!(
            mk_var(&read(&mk), &format!("{var}_SOURCE")).is_none(),
            "{pkg}: Buildroot names the stored file; the .mk must not"
        );
        let got = release_mode_vars(&mk, site, &[&format!("{var}_SITE")]);
        let stored = format!("{pkg}-{version}-cargo6.tar.gz");
        let url = format!("{}/{stored}", got[0]);
        let (path, query) = url.split_once('?').expect("a query");
        assert_eq!(path, format!("{site}/hakeys-{version}.tar.gz"), "{pkg}");
        assert_eq!(query, format!("buildroot-path=filename/{stored}"), "{pkg}");
    }
}

#[test]
fn the_packages_declare_their_license_file_with_its_hash() {
    // `make legal-info` saves LICENSE_FILES and checks them against the
    // .hash file.
    let license = std::fs::read(repo().join("LICENSE")).expect("LICENSE");
    let want = {
        use sha2::Digest;
        hex_lower(&sha2::Sha256::digest(&license))
    };
    for (pkg, var) in [("hakeys", "HAKEYS"), ("hakeys-ta", "HAKEYS_TA")] {
        let mk = read(&tree().join(format!("package/{pkg}/{pkg}.mk")));
        assert_eq!(
            mk_var(&mk, &format!("{var}_LICENSE_FILES")).as_deref(),
            Some("LICENSE"),
            "{pkg}"
        );
        let hash = read(&tree().join(format!("package/{pkg}/{pkg}.hash")));
        assert!(
            hash.lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["sha256", &want, "LICENSE"]),
            "{pkg}.hash has no `sha256  {want}  LICENSE` line"
        );
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
