//! The Buildroot BR2_EXTERNAL tree in `buildroot/` (issue #6), checked
//! without a Buildroot build (that needs the network):
//!
//! - the tree's structure: `external.desc`, `external.mk`, every package
//!   with a `Config.in` and a `.mk`, every `Config.in` sourced;
//! - Buildroot's `utils/check-package` rules, reimplemented here (the list
//!   is in `docs/buildroot.md`), plus hash files and license variables;
//! - every option the tree sets exists in the versions it names: Buildroot
//!   symbols in our `Config.in` files or in [`UPSTREAM_BR2_SYMBOLS`]
//!   (verified by reading Buildroot 2026.05.1), kernel options in Debian's
//!   Linux 6.12 arm64 configuration, OP-TEE options in the OP-TEE OS 4.10
//!   source — the last two from the QEMU target's cache (`.cache/qemu`,
//!   fetched with `qemu/fetch.sh` if missing, which needs root);
//! - the QEMU defconfig builds the same stack as the QEMU target
//!   (`qemu/build-firmware.sh`), and the packages install the same files
//!   as the QEMU image (`qemu/make-initramfs.sh`), so the QEMU run vouches
//!   for the image layout; the daemon's units and user are the ones in
//!   `systemd/`;
//! - the boot unit's ordering, and its script's behaviour against stand-in
//!   `teectl` and `cryptsetup` programs.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

// ------------------------------------------------------------ versions --

/// The Buildroot release the tree is written for: the first whose Rust
/// (1.96) builds our lockfile (which needs >= 1.89).
const BUILDROOT: &str = "2026.05.1";
/// The Linux series of the kernel options (Home Assistant OS and the QEMU
/// target both run 6.12).
const LINUX_SERIES: &str = "6.12";
/// The OP-TEE OS release of the OP-TEE options (as the QEMU target).
const OPTEE_OS: &str = "4.10.0";

/// Upstream Buildroot symbols the tree uses, each verified to be defined
/// (`config`/`menuconfig`) in Buildroot 2026.05.1, in the file named.
const UPSTREAM_BR2_SYMBOLS: &[(&str, &str)] = &[
    ("BR2_aarch64", "arch/Config.in"),
    ("BR2_cortex_a57", "arch/Config.in.arm"),
    ("BR2_USE_MMU", "arch/Config.in"),
    ("BR2_ENABLE_DEBUG", "Config.in"),
    ("BR2_INIT_SYSTEMD", "system/Config.in"),
    ("BR2_ROOTFS_POST_IMAGE_SCRIPT", "system/Config.in"),
    ("BR2_TARGET_GENERIC_GETTY_PORT", "system/Config.in"),
    ("BR2_TOOLCHAIN_HAS_SYNC_4", "toolchain/Config.in"),
    ("BR2_TOOLCHAIN_HAS_THREADS", "toolchain/Config.in"),
    ("BR2_TOOLCHAIN_HEADERS_AT_LEAST_4_3", "toolchain/Config.in"),
    ("BR2_TOOLCHAIN_USES_GLIBC", "toolchain/Config.in"),
    (
        "BR2_PACKAGE_HOST_LINUX_HEADERS_CUSTOM_6_12",
        "package/linux-headers/Config.in.host",
    ),
    ("BR2_PACKAGE_HOST_RUSTC", "package/rustc/Config.in.host"),
    (
        "BR2_PACKAGE_HOST_RUSTC_TARGET_ARCH_SUPPORTS",
        "package/rustc/Config.in.host",
    ),
    ("BR2_PACKAGE_CRYPTSETUP", "package/cryptsetup/Config.in"),
    ("BR2_PACKAGE_OPTEE_CLIENT", "package/optee-client/Config.in"),
    (
        "BR2_PACKAGE_OPTEE_CLIENT_RPMB_EMU",
        "package/optee-client/Config.in",
    ),
    ("BR2_LINUX_KERNEL", "linux/Config.in"),
    ("BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES", "linux/Config.in"),
    ("BR2_LINUX_KERNEL_CUSTOM_VERSION", "linux/Config.in"),
    ("BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE", "linux/Config.in"),
    ("BR2_LINUX_KERNEL_NEEDS_HOST_OPENSSL", "linux/Config.in"),
    (
        "BR2_LINUX_KERNEL_USE_ARCH_DEFAULT_CONFIG",
        "linux/Config.in",
    ),
    ("BR2_TARGET_ROOTFS_EXT2", "fs/ext2/Config.in"),
    ("BR2_TARGET_ROOTFS_EXT2_4", "fs/ext2/Config.in"),
    ("BR2_TARGET_ROOTFS_EXT2_SIZE", "fs/ext2/Config.in"),
    ("BR2_TARGET_ROOTFS_TAR", "fs/tar/Config.in"),
    (
        "BR2_TARGET_ARM_TRUSTED_FIRMWARE",
        "boot/arm-trusted-firmware/Config.in",
    ),
    (
        "BR2_TARGET_ARM_TRUSTED_FIRMWARE_ADDITIONAL_VARIABLES",
        "boot/arm-trusted-firmware/Config.in",
    ),
    (
        "BR2_TARGET_ARM_TRUSTED_FIRMWARE_BL32_OPTEE",
        "boot/arm-trusted-firmware/Config.in",
    ),
    (
        "BR2_TARGET_ARM_TRUSTED_FIRMWARE_FIP",
        "boot/arm-trusted-firmware/Config.in",
    ),
    (
        "BR2_TARGET_ARM_TRUSTED_FIRMWARE_LATEST_LTS_2_12_VERSION",
        "boot/arm-trusted-firmware/Config.in",
    ),
    (
        "BR2_TARGET_ARM_TRUSTED_FIRMWARE_PLATFORM",
        "boot/arm-trusted-firmware/Config.in",
    ),
    (
        "BR2_TARGET_ARM_TRUSTED_FIRMWARE_UBOOT_AS_BL33",
        "boot/arm-trusted-firmware/Config.in",
    ),
    ("BR2_TARGET_OPTEE_OS", "boot/optee-os/Config.in"),
    (
        "BR2_TARGET_OPTEE_OS_ADDITIONAL_VARIABLES",
        "boot/optee-os/Config.in",
    ),
    (
        "BR2_TARGET_OPTEE_OS_CUSTOM_VERSION",
        "boot/optee-os/Config.in",
    ),
    (
        "BR2_TARGET_OPTEE_OS_CUSTOM_VERSION_VALUE",
        "boot/optee-os/Config.in",
    ),
    ("BR2_TARGET_OPTEE_OS_NEEDS_DTC", "boot/optee-os/Config.in"),
    (
        "BR2_TARGET_OPTEE_OS_NEEDS_PYTHON_CRYPTOGRAPHY",
        "boot/optee-os/Config.in",
    ),
    ("BR2_TARGET_OPTEE_OS_PLATFORM", "boot/optee-os/Config.in"),
    ("BR2_TARGET_OPTEE_OS_SDK", "boot/optee-os/Config.in"),
    ("BR2_TARGET_UBOOT", "boot/uboot/Config.in"),
    ("BR2_TARGET_UBOOT_BOARD_DEFCONFIG", "boot/uboot/Config.in"),
    (
        "BR2_TARGET_UBOOT_BUILD_SYSTEM_KCONFIG",
        "boot/uboot/Config.in",
    ),
    ("BR2_TARGET_UBOOT_CUSTOM_VERSION", "boot/uboot/Config.in"),
    (
        "BR2_TARGET_UBOOT_CUSTOM_VERSION_VALUE",
        "boot/uboot/Config.in",
    ),
    ("BR2_TARGET_UBOOT_NEEDS_GNUTLS", "boot/uboot/Config.in"),
    ("BR2_TARGET_UBOOT_NEEDS_OPENSSL", "boot/uboot/Config.in"),
];

/// OP-TEE build variables Buildroot's `boot/optee-os/optee-os.mk`
/// (2026.05.1) passes itself on aarch64, so a defconfig does not repeat
/// them.
const OPTEE_OPTS_SET_BY_BUILDROOT: &[&str] = &["CFG_ARM64_core=y", "CFG_USER_TA_TARGETS=ta_arm64"];

/// Options `qemu/build-firmware.sh` passes that OP-TEE OS 4.10 no longer
/// defines anywhere (harmless there; the defconfig leaves them out). The
/// test checks they are still undefined, so the list cannot go stale.
const OPTEE_OPTS_GONE_IN_4_10: &[&str] = &["CFG_TEE_BENCHMARK", "CFG_VIRTUALIZATION"];

/// The user and group optee-client (>= 4.4) runs `tee-supplicant@.service`
/// as (its CMake defaults CFG_TEE_SUPPL_USER/GROUP, read in 4.10's
/// tee-supplicant/CMakeLists.txt); Buildroot's optee-client creates
/// neither, so the hakeys package does.
const TEE_SUPPLICANT_USER: &str = "teesuppl";

/// Units the tree's units may name that other parts of the image provide.
const KNOWN_UNITS: &[(&str, &str)] = &[
    (
        "tee-supplicant@teepriv0.service",
        "optee-client >= 4.4 (tee-supplicant@.service)",
    ),
    (
        "dev-tee0.device",
        "udev, TAG+=\"systemd\" in 61-hakeys-tee.rules",
    ),
    (
        "dev-teepriv0.device",
        "udev, TAG+=\"systemd\" in 61-hakeys-tee.rules",
    ),
    ("mnt-data.mount", "Home Assistant OS (data partition)"),
    ("hassos-expand.service", "Home Assistant OS (data resize)"),
    ("sysinit.target", "systemd"),
    ("local-fs.target", "systemd"),
    ("shutdown.target", "systemd"),
    ("multi-user.target", "systemd"),
    ("sockets.target", "systemd"),
];

/// Programs the units run that come from other packages.
const KNOWN_PROGRAMS: &[&str] = &["/bin/kill"];

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

fn rel(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
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

/// The package directories of the tree, by name.
fn packages() -> BTreeMap<String, PathBuf> {
    let mut out = BTreeMap::new();
    for e in fs::read_dir(tree().join("package")).expect("buildroot/package exists") {
        let p = e.expect("directory entry").path();
        if p.is_dir() {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            out.insert(name, p);
        }
    }
    assert!(!out.is_empty(), "buildroot/package has no packages");
    out
}

fn upper(pkg: &str) -> String {
    pkg.replace('-', "_").to_uppercase()
}

fn defconfig_path() -> PathBuf {
    tree().join("configs/hakeys_qemu_aarch64_defconfig")
}

/// A defconfig as symbol -> value (quotes removed; "is not set" is "n").
fn parse_defconfig(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(sym) = rest.strip_suffix(" is not set") {
                out.insert(sym.to_string(), "n".to_string());
            }
            continue;
        }
        if line.trim().is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("defconfig line without '=': {line}"));
        out.insert(k.to_string(), v.trim_matches('"').to_string());
    }
    out
}

fn defconfig() -> BTreeMap<String, String> {
    parse_defconfig(&read(&defconfig_path()))
}

/// `VAR=value` words, as a map (later words win, as in make).
fn assignments(words: &str) -> BTreeMap<String, String> {
    words
        .split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A `CFG_X=v` per line file (comments and blank lines ignored).
fn optee_fragment(name: &str) -> BTreeMap<String, String> {
    let path = tree().join("optee").join(name);
    let mut out = BTreeMap::new();
    for (i, line) in read(&path).lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (k, v) = t
            .split_once('=')
            .unwrap_or_else(|| panic!("{}:{}: not VAR=value: {line}", rel(&path), i + 1));
        assert!(
            k.starts_with("CFG_") && !v.is_empty() && !v.contains(char::is_whitespace),
            "{}:{}: not a CFG_ option: {line}",
            rel(&path),
            i + 1
        );
        assert!(
            out.insert(k.to_string(), v.to_string()).is_none(),
            "{}: {k} set twice",
            rel(&path)
        );
    }
    out
}

/// Make's logical lines: backslash continuations joined with a space.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        if let Some(head) = line.strip_suffix('\\') {
            cur.push_str(head.trim_end());
            cur.push(' ');
        } else {
            cur.push_str(line);
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The body lines of `define NAME` ... `endef` in a .mk file.
fn mk_define(text: &str, name: &str) -> Option<Vec<String>> {
    let mut body = None::<Vec<String>>;
    for line in text.lines() {
        match &mut body {
            None if line.trim() == format!("define {name}") => body = Some(Vec::new()),
            Some(b) if line.trim() == "endef" => return Some(std::mem::take(b)),
            Some(b) => b.push(line.to_string()),
            None => {}
        }
    }
    None
}

/// The value of `NAME = ...` (first assignment, continuations joined).
fn mk_var(text: &str, name: &str) -> Option<String> {
    logical_lines(text).into_iter().find_map(|l| {
        let (k, v) = l.split_once('=')?;
        let k = k.trim_end_matches(['+', ':', '?']).trim();
        (k == name).then(|| v.trim().to_string())
    })
}

/// A systemd unit file: (section, key) -> values in order.
fn parse_unit(text: &str) -> BTreeMap<(String, String), Vec<String>> {
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if t.starts_with('[') && t.ends_with(']') {
            section = t[1..t.len() - 1].to_string();
            continue;
        }
        if let Some((k, v)) = t.split_once('=') {
            out.entry((section.clone(), k.trim().to_string()))
                .or_default()
                .push(v.trim().to_string());
        }
    }
    out
}

fn unit_words(
    unit: &BTreeMap<(String, String), Vec<String>>,
    section: &str,
    key: &str,
) -> Vec<String> {
    unit.get(&(section.to_string(), key.to_string()))
        .map(|vs| {
            vs.iter()
                .flat_map(|v| v.split_whitespace().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn uuid() -> String {
    read(&repo().join("proto/uuid.txt")).trim().to_string()
}

fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

// ----------------------------------------------------- the QEMU cache --

/// The QEMU target's cache (`$HAKEYS_CACHE/qemu`, default `.cache/qemu`):
/// the Debian kernel package and the OP-TEE OS source. Fetched with the
/// project's own scripts when missing (that needs root, as in CI); the
/// tests that need it fail, never pass, without it.
fn qemu_cache() -> &'static Path {
    static CACHE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match CACHE.get_or_init(prepare_qemu_cache) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn glob_one(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut hits: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    hits.sort();
    hits.pop()
}

fn kernel_config_in(cache: &Path) -> Option<PathBuf> {
    let pkg = glob_one(&cache.join("x"), "linux-image-")?;
    glob_one(&pkg.join("boot"), "config-")
}

fn optee_src_in(cache: &Path) -> Option<PathBuf> {
    glob_one(&cache.join("src"), "optee-os-")
        .filter(|p| p.is_dir() && p.join("mk/config.mk").exists())
}

fn prepare_qemu_cache() -> Result<PathBuf, String> {
    let cache = std::env::var_os("HAKEYS_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".cache"))
        .join("qemu");
    let ready = |c: &Path| kernel_config_in(c).is_some() && optee_src_in(c).is_some();
    if ready(&cache) {
        return Ok(cache);
    }
    if !is_root() {
        return Err(format!(
            "the Debian Linux {LINUX_SERIES} configuration and the OP-TEE OS source that the \
             Buildroot options are checked against are not in {}; fetching them needs root: run \
             `sudo qemu/setup-host.sh && qemu/fetch.sh {}` (or `cargo xtask qemu-test`) once",
            cache.display(),
            cache.display()
        ));
    }
    eprintln!(
        "buildroot tests: {} lacks the kernel configuration or the OP-TEE source; \
         running qemu/setup-host.sh and qemu/fetch.sh",
        cache.display()
    );
    for (script, args) in [("setup-host.sh", vec![]), ("fetch.sh", vec![cache.clone()])] {
        let path = repo().join("qemu").join(script);
        let status = Command::new(&path)
            .args(&args)
            .status()
            .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        if !status.success() {
            return Err(format!("{} failed ({status})", path.display()));
        }
    }
    if ready(&cache) {
        Ok(cache)
    } else {
        Err(format!(
            "qemu/fetch.sh ran, but {} still lacks the kernel configuration or the OP-TEE source",
            cache.display()
        ))
    }
}

// ------------------------------------------------------ the structure --

#[test]
fn tree_has_the_br2_external_layout() {
    let desc = read(&tree().join("external.desc"));
    let name = desc
        .lines()
        .find_map(|l| l.strip_prefix("name: "))
        .expect("external.desc has `name: ...`");
    assert_eq!(name, "HAKEYS", "the tree's name (BR2_EXTERNAL_HAKEYS_PATH)");
    assert!(name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
    let d = desc
        .lines()
        .find_map(|l| l.strip_prefix("desc: "))
        .expect("external.desc has `desc: ...`");
    assert!(d.len() <= 40, "the manual asks for a short desc (40 chars)");

    let mk = read(&tree().join("external.mk"));
    assert!(
        mk.lines().any(|l| l.trim()
            == "include $(sort $(wildcard $(BR2_EXTERNAL_HAKEYS_PATH)/package/*/*.mk))"),
        "external.mk must include every package's .mk"
    );

    let top = read(&tree().join("Config.in"));
    let sourced: Vec<String> = top
        .lines()
        .filter_map(|l| l.strip_prefix("source "))
        .map(|s| s.trim_matches('"').to_string())
        .collect();
    // Sorted by package directory name ('_' before letters), as
    // check-package's CommentsMenusPackagesOrder does for Buildroot's menus.
    let dir_of = |s: &String| s.rsplit('/').nth(1).unwrap_or("").replace('_', ".");
    let mut sorted = sourced.clone();
    sorted.sort_by_key(dir_of);
    assert_eq!(sourced, sorted, "Config.in: packages in alphabetical order");
    for s in &sourced {
        let p = s
            .strip_prefix("$BR2_EXTERNAL_HAKEYS_PATH/")
            .unwrap_or_else(|| panic!("Config.in: source outside the tree: {s}"));
        assert!(tree().join(p).is_file(), "Config.in sources a missing {p}");
    }

    for (pkg, dir) in packages() {
        let config = dir.join("Config.in");
        let mkfile = dir.join(format!("{pkg}.mk"));
        assert!(config.is_file(), "package {pkg} has no Config.in");
        assert!(mkfile.is_file(), "package {pkg} has no {pkg}.mk");
        let want = format!("$BR2_EXTERNAL_HAKEYS_PATH/package/{pkg}/Config.in");
        assert_eq!(
            sourced.iter().filter(|s| **s == want).count(),
            1,
            "Config.in must source {want} exactly once"
        );
        let first = read(&config)
            .lines()
            .find(|l| l.starts_with("config ") || l.starts_with("menuconfig "))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string());
        assert_eq!(
            first.as_deref(),
            Some(format!("BR2_PACKAGE_{}", upper(&pkg)).as_str()),
            "{pkg}/Config.in must first define BR2_PACKAGE_{}",
            upper(&pkg)
        );
        let mk = read(&mkfile);
        let last = mk
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        assert!(
            ["$(eval $(generic-package))", "$(eval $(cargo-package))"].contains(&last.trim()),
            "{pkg}.mk must end with a package infrastructure: {last}"
        );
        // Every file of the package directory is used by its .mk, and every
        // $(PKG_PKGDIR)/file the .mk names exists.
        let pkgdir = format!("$({}_PKGDIR)/", upper(&pkg));
        for f in files_under(&dir) {
            let n = f.file_name().expect("name").to_string_lossy().into_owned();
            if n == "Config.in" || n == format!("{pkg}.mk") || n == format!("{pkg}.hash") {
                continue;
            }
            assert!(
                mk.contains(&format!("{pkgdir}{n}")),
                "{} is not installed by {pkg}.mk",
                rel(&f)
            );
        }
        for (i, _) in mk.match_indices(&pkgdir) {
            let name: String = mk[i + pkgdir.len()..]
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != ')')
                .collect();
            assert!(dir.join(&name).is_file(), "{pkg}.mk names a missing {name}");
        }
    }

    // Paths the defconfig names inside the tree exist.
    for (k, v) in defconfig() {
        for word in v.split_whitespace() {
            if let Some(p) = word.strip_prefix("$(BR2_EXTERNAL_HAKEYS_PATH)/") {
                assert!(tree().join(p).exists(), "{k} names a missing {p}");
            }
        }
    }
}

#[test]
fn shell_scripts_are_executable_and_parse() {
    let mut scripts = 0;
    for f in files_under(&tree()) {
        let text = read(&f);
        if !text.starts_with("#!/bin/sh") {
            continue;
        }
        scripts += 1;
        let mode = fs::metadata(&f).expect("metadata").permissions().mode();
        assert!(mode & 0o111 != 0, "{} is not executable", rel(&f));
        let out = Command::new("sh")
            .arg("-n")
            .arg(&f)
            .output()
            .expect("run sh -n");
        assert!(
            out.status.success(),
            "sh -n {}: {}",
            rel(&f),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(scripts >= 2, "expected the post-image and unlock scripts");
}

// ------------------------------------------------------ check-package --

/// Buildroot's `utils/checkpackagelib/lib.py` rules every checked file gets.
fn check_common(name: &str, text: &str, utf8: bool, out: &mut Vec<String>) {
    if !text.is_empty() && !text.ends_with('\n') {
        out.push(format!("{name}: missing newline at end of file"));
    }
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        if line.trim_end() != *line {
            out.push(format!("{name}:{n}: line contains trailing whitespace"));
        }
        if i > 0 && line.trim().is_empty() && lines[i - 1].trim().is_empty() {
            out.push(format!("{name}:{n}: consecutive empty lines"));
        }
        if utf8 && !line.is_ascii() {
            out.push(format!("{name}:{n}: line contains UTF-8 characters"));
        }
    }
    if lines.last().is_some_and(|l| l.trim().is_empty()) {
        out.push(format!("{name}:{}: empty line at end of file", lines.len()));
    }
}

/// `checkpackagelib.tool.NotExecutable`.
fn check_not_executable(path: &Path, out: &mut Vec<String>) {
    let mode = fs::metadata(path).expect("metadata").permissions().mode();
    if mode & 0o111 != 0 {
        out.push(format!(
            "{}:0: This file does not need to be executable",
            rel(path)
        ));
    }
}

const NOT_INDENTED: &[&str] = &[
    "choice",
    "comment",
    "config",
    "endchoice",
    "endif",
    "endmenu",
    "if",
    "menu",
    "menuconfig",
    "source",
];

/// `checkpackagelib/lib_config.py`: AttributesOrder, HelpText, Indent,
/// NoDefaultN, RedefinedConfig (and, stricter than upstream, sorted
/// `source` lines in the top Config.in, checked above).
fn check_config_in(name: &str, text: &str, out: &mut Vec<String>) {
    let order = |a: &str| match a {
        "bool" | "prompt" | "string" => Some(1),
        "default" => Some(2),
        "depends" => Some(3),
        "select" => Some(4),
        "help" => Some(5),
        _ => None,
    };
    let empty_or_comment = |l: &str| l.trim().is_empty() || l.trim().starts_with('#');
    let in_help_text = |l: &str| l.starts_with("\t  ");
    let mut state = 0;
    let mut help = false;
    let mut help_first = false;
    let mut backslash = false;
    let mut conditions: Vec<String> = Vec::new();
    let mut configs: BTreeSet<(String, String)> = BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let entry = line.split_whitespace().next().unwrap_or("");
        // HelpText
        if !empty_or_comment(line) {
            if NOT_INDENTED.contains(&entry) {
                help = false;
            } else if line.trim() == "help" {
                help = true;
                help_first = true;
            } else if help {
                let body = line.trim_end().strip_prefix("\t  ");
                let ok = body.is_some_and(|b| {
                    b.chars().count() <= 62 && (!help_first || !b.starts_with(char::is_whitespace))
                }) || {
                    let t = line.trim();
                    ["http://", "https://", "git://"]
                        .iter()
                        .any(|p| t.starts_with(p))
                        && !t.contains(char::is_whitespace)
                };
                help_first = false;
                if !ok {
                    out.push(format!("{name}:{n}: help text: <tab><2 spaces><62 chars>"));
                }
            }
        }
        if empty_or_comment(line) || in_help_text(line) {
            backslash = false;
            continue;
        }
        // Indent
        let continued = backslash;
        backslash = !line.starts_with('#') && line.ends_with('\\');
        if continued {
            if !line.starts_with('\t') {
                out.push(format!(
                    "{name}:{n}: continuation line should be indented using tabs"
                ));
            }
        } else if [
            "bool", "default", "depends", "help", "prompt", "select", "string",
        ]
        .contains(&entry)
        {
            if !line.starts_with(&format!("\t{entry}")) {
                out.push(format!("{name}:{n}: should be indented with one tab"));
            }
        } else if NOT_INDENTED.contains(&entry) && !line.starts_with(entry) {
            out.push(format!("{name}:{n}: should not be indented"));
        }
        // AttributesOrder
        if NOT_INDENTED.contains(&entry) {
            state = 0;
        } else if let Some(o) = order(entry) {
            if state > o {
                out.push(format!(
                    "{name}:{n}: attributes order: type, default, depends on, select, help"
                ));
            }
            state = o;
        }
        // NoDefaultN
        if line.split('#').next().unwrap_or("").trim_end() == "\tdefault n" {
            out.push(format!(
                "{name}:{n}: boolean symbols default to 'n', so 'default n' is redundant"
            ));
        }
        // RedefinedConfig
        let t = line.trim();
        if let Some(cond) = t.strip_prefix("if ") {
            conditions.push(cond.split('#').next().unwrap_or("").trim().to_string());
        } else if t == "endif" || t.starts_with("endif ") {
            conditions.pop();
        } else if let Some(sym) = t
            .strip_prefix("config ")
            .or_else(|| t.strip_prefix("menuconfig "))
        {
            let key = (sym.trim().to_string(), conditions.join(" AND "));
            if !configs.insert(key) {
                out.push(format!("{name}:{n}: config {} redeclared", sym.trim()));
            }
        }
    }
}

const MK_START_CONDITIONAL: &[&str] = &["ifdef", "ifeq", "ifndef", "ifneq"];

fn mk_conditional_word(line: &str) -> Option<&str> {
    let w = line.split_whitespace().next()?;
    let w = w.split('(').next().unwrap_or(w);
    Some(w)
}

/// `checkpackagelib/lib_mk.py`: PackageHeader (and, stricter, line 3 is
/// `# <package>`), Indent, OverriddenVariable, Ifdef, TypoInPackageVariable,
/// UselessFlag, VariableWithBraces, RemoveDefaultPackageSourceVariable,
/// SpaceBeforeBackslash, TrailingBackslash, DoNotInstallToHostdirUsr.
fn check_mk(pkg: &str, name: &str, text: &str, out: &mut Vec<String>) {
    let upkg = upper(pkg);
    let lines: Vec<&str> = text.lines().collect();
    // PackageHeader
    let hashes = "#".repeat(80);
    let title = format!("# {pkg}");
    let header = [
        hashes.as_str(),
        "#",
        title.as_str(),
        "#",
        hashes.as_str(),
        "",
    ];
    for (i, want) in header.iter().enumerate() {
        if lines.get(i).map(|l| l.trim_end()) != Some(*want) {
            out.push(format!("{name}:{}: header line should be {want:?}", i + 1));
        }
    }
    let mut define = false;
    let mut backslash = false;
    let mut target = false;
    let mut conditional = 0usize;
    let mut uncond: Vec<String> = Vec::new();
    let mut cond: Vec<String> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let trimmed = line.trim_start();
        let word = mk_conditional_word(trimmed).unwrap_or("");
        let is_comment = trimmed.starts_with('#');
        // Ifdef
        let first_two: Vec<&str> = trimmed.split_whitespace().take(2).collect();
        if matches!(first_two.first(), Some(&"ifdef") | Some(&"ifndef"))
            || (first_two.first() == Some(&"else")
                && matches!(first_two.get(1), Some(&"ifdef") | Some(&"ifndef")))
        {
            out.push(format!(
                "{name}:{n}: use ifeq ($(SYMBOL),y) instead of ifdef SYMBOL"
            ));
        }
        // SpaceBeforeBackslash, TrailingBackslash, VariableWithBraces,
        // DoNotInstallToHostdirUsr
        let r = line.trim_end();
        if r.ends_with('\\') && (r.ends_with("  \\") || r.ends_with("\t\\") || r.ends_with("\t \\"))
        {
            out.push(format!("{name}:{n}: use only one space before backslash"));
        }
        if i > 0
            && lines[i - 1].ends_with('\\')
            && !lines[i - 1].starts_with('#')
            && line.trim().is_empty()
        {
            out.push(format!("{name}:{}: remove trailing backslash", n - 1));
        }
        if !line.starts_with('#') {
            if line
                .as_bytes()
                .windows(3)
                .any(|w| w[0] != b'$' && w[1] == b'$' && w[2] == b'{')
            {
                out.push(format!(
                    "{name}:{n}: use $() to delimit variables, not ${{}}"
                ));
            }
            if line.contains("$(HOST_DIR)/usr") {
                out.push(format!(
                    "{name}:{n}: install files to $(HOST_DIR)/ instead of $(HOST_DIR)/usr/"
                ));
            }
        }
        // Indent (lib_mk.Indent)
        let start_define = trimmed.starts_with("define ");
        let end_define = trimmed.trim_end() == "endef" || trimmed.starts_with("endef ");
        if start_define {
            define = true;
        } else if end_define {
            define = false;
        } else {
            let mut expect_tabs = define || backslash || target;
            let conditional_line = ["ifdef", "ifeq", "ifndef", "ifneq", "endif", "else", "elif"]
                .iter()
                .any(|c| trimmed.starts_with(&format!("{c} ")) || trimmed == *c);
            if !backslash && conditional_line {
                expect_tabs = false;
            }
            backslash = !line.starts_with('#') && line.ends_with('\\');
            let is_target = !line.starts_with(['#', ' ', '\t'])
                && line.split_once(':').is_some_and(|(a, b)| {
                    !a.contains(char::is_whitespace)
                        && (b.is_empty() || b.starts_with(char::is_whitespace))
                });
            if is_target {
                target = true;
            } else if line.trim().is_empty() {
                target = false;
            } else if !(define && is_comment) {
                if expect_tabs && !line.starts_with('\t') {
                    out.push(format!("{name}:{n}: expected indent with tabs"));
                } else if !expect_tabs && line.starts_with('\t') {
                    out.push(format!("{name}:{n}: unexpected indent with tabs"));
                }
            }
        }
        // OverriddenVariable, UselessFlag
        if MK_START_CONDITIONAL.contains(&word) {
            conditional += 1;
            continue;
        }
        if word == "endif" {
            conditional = conditional.saturating_sub(1);
            continue;
        }
        if line.starts_with(|c: char| c.is_ascii_uppercase() || c.is_ascii_digit()) {
            let var: String = line
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let rest = line[var.len()..].trim_start();
            let op = ["+=", ":=", "?=", "="]
                .into_iter()
                .find(|o| rest.starts_with(o));
            if let Some(op) = op {
                let overriding = op == "=" || op == ":=";
                let value = rest[op.len()..].trim();
                if conditional == 0 {
                    if cond.contains(&var) {
                        uncond.push(var.clone());
                        if overriding {
                            out.push(format!(
                                "{name}:{n}: unconditional override of variable {var} previously conditionally set"
                            ));
                        }
                    } else if uncond.contains(&var) {
                        if overriding {
                            out.push(format!(
                                "{name}:{n}: unconditional override of variable {var}"
                            ));
                        }
                    } else {
                        uncond.push(var.clone());
                    }
                    for (suffix, default) in [
                        ("_INSTALL_IMAGES", "NO"),
                        ("_REDISTRIBUTE", "YES"),
                        ("_INSTALL_STAGING", "NO"),
                        ("_INSTALL_TARGET", "YES"),
                    ] {
                        if var.ends_with(suffix) && value == default {
                            out.push(format!("{name}:{n}: useless default value"));
                        }
                    }
                } else if var.ends_with("_CONF_OPTS") || var.ends_with("_DEPENDENCIES") {
                    if op == "=" {
                        out.push(format!(
                            "{name}:{n}: conditional override of variable {var}"
                        ));
                    }
                } else if !uncond.contains(&var) {
                    cond.push(var.clone());
                } else if value.starts_with(&format!("$({var})")) {
                    out.push(format!(
                        "{name}:{n}: immediate assignment to append to variable {var}"
                    ));
                } else if overriding
                    && !["_ARCH", "_CPU", "_SITE", "_SOURCE", "_VERSION"]
                        .iter()
                        .any(|s| var.ends_with(s))
                {
                    out.push(format!(
                        "{name}:{n}: conditional override of variable {var}"
                    ));
                }
                // RemoveDefaultPackageSourceVariable
                if var == format!("{upkg}_SOURCE")
                    && value.starts_with(&format!("{pkg}-$({upkg}_VERSION).tar.gz"))
                {
                    out.push(format!(
                        "{name}:{n}: remove default value of _SOURCE variable"
                    ));
                }
            }
        }
        // TypoInPackageVariable
        let defined = line.strip_prefix("define ").unwrap_or(line);
        if defined.starts_with(|c: char| c.is_ascii_uppercase() || c.is_ascii_digit()) {
            let var: String = defined
                .chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            let allowed = ["BR_NO_CHECK_HASH_FOR", "TARGET_FINALIZE_HOOKS"];
            if var.contains('_')
                && !allowed.iter().any(|a| var.starts_with(a))
                && !var
                    .strip_prefix("HOST_")
                    .unwrap_or(&var)
                    .starts_with(&format!("{upkg}_"))
            {
                out.push(format!(
                    "{name}:{n}: possible typo, variable not properly prefixed: {var} -> *{upkg}_XXXX*"
                ));
            }
        }
    }
}

/// `checkpackagelib/lib_hash.py`: HashNumberOfFields, HashType, HashSpaces.
fn check_hash(name: &str, text: &str, out: &mut Vec<String>) {
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() != 3 {
            out.push(format!("{name}:{n}: expected three fields"));
            continue;
        }
        let len = match f[0] {
            "md5" => 32,
            "sha1" => 40,
            "sha224" => 56,
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => {
                out.push(format!("{name}:{n}: unexpected type of hash"));
                continue;
            }
        };
        if f[1].len() != len || !f[1].chars().all(|c| c.is_ascii_hexdigit()) {
            out.push(format!("{name}:{n}: hash size does not match type"));
        }
        if line != format!("{}  {}  {}", f[0], f[1], f[2]) {
            out.push(format!("{name}:{n}: separation does not match expectation"));
        }
    }
}

#[test]
fn files_follow_check_package() {
    let mut out = Vec::new();
    for f in files_under(&tree()) {
        let name = rel(&f);
        let text = read(&f);
        let base = f.file_name().expect("name").to_string_lossy().into_owned();
        if base == "Config.in" {
            check_common(&name, &text, false, &mut out);
            check_not_executable(&f, &mut out);
            check_config_in(&name, &text, &mut out);
        } else if base.ends_with(".mk") && base != "external.mk" {
            let pkg = base.trim_end_matches(".mk");
            check_common(&name, &text, true, &mut out);
            check_not_executable(&f, &mut out);
            check_mk(pkg, &name, &text, &mut out);
        } else if base.ends_with(".hash") {
            check_common(&name, &text, false, &mut out);
            check_not_executable(&f, &mut out);
            check_hash(&name, &text, &mut out);
        } else if base.ends_with("_defconfig") {
            check_common(&name, &text, false, &mut out);
        } else if text.starts_with("#!/bin/sh") {
            // lib_shellscript: the common rules (shellcheck is not run here).
            check_common(&name, &text, false, &mut out);
        } else {
            // Not checked by check-package; held to the same basic rules.
            check_common(&name, &text, true, &mut out);
        }
    }
    assert!(out.is_empty(), "check-package rules:\n{}", out.join("\n"));
}

#[test]
fn packages_declare_licenses_and_hashes() {
    for (pkg, dir) in packages() {
        let mk = read(&dir.join(format!("{pkg}.mk")));
        let up = upper(&pkg);
        assert!(
            mk_var(&mk, &format!("{up}_LICENSE")).is_some_and(|v| !v.is_empty()),
            "{pkg}.mk sets no {up}_LICENSE"
        );
        // A package that can download its source (a site that is not a
        // local directory) has a hash file, with only well-formed lines.
        let sites: Vec<String> = logical_lines(&mk)
            .into_iter()
            .filter(|l| l.starts_with(&format!("{up}_SITE =")))
            .collect();
        let local_only = !sites.is_empty()
            && logical_lines(&mk)
                .iter()
                .filter(|l| l.trim_end() == format!("{up}_SITE_METHOD = local"))
                .count()
                == sites.len();
        if !sites.is_empty() && !local_only {
            assert!(
                dir.join(format!("{pkg}.hash")).is_file(),
                "{pkg} downloads its source but has no {pkg}.hash"
            );
        }
    }
    // The defconfig does not force hash checks (check-package's
    // ForceCheckHash): it builds the QEMU target's OP-TEE OS 4.10.0, a
    // custom version Buildroot has no hash for, and our hakeys packages
    // from the local checkout. Buildroot would ignore BR_NO_CHECK_HASH_FOR
    // under BR2_DOWNLOAD_FORCE_CHECK_HASHES and fail those downloads.
    let d = defconfig();
    if d.get("BR2_DOWNLOAD_FORCE_CHECK_HASHES").map(String::as_str) != Some("y") {
        assert_eq!(
            d.get("BR2_TARGET_OPTEE_OS_CUSTOM_VERSION")
                .map(String::as_str),
            Some("y"),
            "the ForceCheckHash exception holds only while OP-TEE OS is a custom version"
        );
    }
}

/// `version = "..."` of a Cargo manifest's `[package]` or
/// `[workspace.package]` table.
fn cargo_version(manifest: &Path) -> String {
    let text = read(manifest);
    let mut table = "";
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            table = t;
        } else if (table == "[package]" || table == "[workspace.package]")
            && t.starts_with("version")
            && t.contains('"')
        {
            return t.split('"').nth(1).unwrap_or("").to_string();
        }
    }
    panic!("{} has no version", rel(manifest))
}

#[test]
fn package_versions_are_the_crates_versions() {
    // The release tarball is hakeys-<version>.tar.gz for both packages.
    for (pkg, manifest) in [("hakeys", "Cargo.toml"), ("hakeys-ta", "ta/Cargo.toml")] {
        let mk = read(&tree().join(format!("package/{pkg}/{pkg}.mk")));
        assert_eq!(
            mk_var(&mk, &format!("{}_VERSION", upper(pkg))),
            Some(cargo_version(&repo().join(manifest))),
            "{pkg}.mk's version vs {manifest}"
        );
    }
}

// ------------------------------------------- options exist, by version --

/// BR2_ symbols a Config.in line refers to (outside quotes and comments).
fn br2_refs(line: &str, out: &mut BTreeSet<String>) {
    let mut unquoted = String::new();
    let mut quoted = false;
    for c in line.split('#').next().unwrap_or("").chars() {
        if c == '"' {
            quoted = !quoted;
        } else if !quoted {
            unquoted.push(c);
        }
    }
    for w in unquoted.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if w.starts_with("BR2_") {
            out.insert(w.to_string());
        }
    }
}

#[test]
fn every_buildroot_symbol_exists() {
    let mut ours = BTreeSet::new();
    let mut used = BTreeSet::new();
    for f in files_under(&tree()) {
        let text = read(&f);
        let base = f.file_name().expect("name").to_string_lossy().into_owned();
        if base == "Config.in" {
            for line in text.lines() {
                let t = line.trim();
                if line.starts_with("\t  ") || t.starts_with('#') {
                    continue; // help text, comments
                }
                if let Some(sym) = t
                    .strip_prefix("config ")
                    .or_else(|| t.strip_prefix("menuconfig "))
                {
                    ours.insert(sym.trim().to_string());
                } else if !t.starts_with("bool")
                    && !t.starts_with("string")
                    && !t.starts_with("prompt")
                {
                    br2_refs(t, &mut used);
                }
            }
        } else if base.ends_with(".mk") {
            for (i, _) in text.match_indices("$(BR2_") {
                let sym: String = text[i + 2..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                used.insert(sym);
            }
        } else if base.ends_with("_defconfig") {
            used.extend(parse_defconfig(&text).into_keys());
        }
    }
    used.remove("BR2_EXTERNAL_HAKEYS_PATH"); // from external.desc's name
    let upstream: BTreeMap<&str, &str> = UPSTREAM_BR2_SYMBOLS.iter().copied().collect();
    let unknown: Vec<&String> = used
        .iter()
        .filter(|s| !ours.contains(*s) && !upstream.contains_key(s.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "symbols neither defined by the tree nor verified in Buildroot {BUILDROOT}: {unknown:?} \
         (check them in Buildroot's sources and add them to UPSTREAM_BR2_SYMBOLS)"
    );
    let stale: Vec<&&str> = upstream.keys().filter(|s| !used.contains(**s)).collect();
    assert!(
        stale.is_empty(),
        "UPSTREAM_BR2_SYMBOLS lists unused {stale:?}"
    );
    let clash: Vec<&String> = ours
        .iter()
        .filter(|s| upstream.contains_key(s.as_str()))
        .collect();
    assert!(clash.is_empty(), "the tree redefines Buildroot's {clash:?}");
    // Every package of the tree is in the QEMU defconfig's image.
    let d = defconfig();
    for pkg in packages().keys() {
        let sym = format!("BR2_PACKAGE_{}", upper(pkg));
        assert_eq!(
            d.get(&sym).map(String::as_str),
            Some("y"),
            "the QEMU defconfig does not build {pkg}"
        );
    }
}

/// Kernel config fragment lines as symbol -> value.
fn kernel_fragment() -> BTreeMap<String, String> {
    let path = tree().join(format!("kernel/v{LINUX_SERIES}.y/hakeys.config"));
    let mut out = BTreeMap::new();
    for (i, line) in read(&path).lines().enumerate() {
        let t = line.trim();
        if let Some(sym) = t
            .strip_prefix("# ")
            .and_then(|r| r.strip_suffix(" is not set"))
        {
            out.insert(sym.to_string(), "n".to_string());
            continue;
        }
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (k, v) = t
            .split_once('=')
            .unwrap_or_else(|| panic!("{}:{}: not CONFIG_X=value: {line}", rel(&path), i + 1));
        let value_ok = ["y", "m", "n"].contains(&v)
            || v.parse::<i64>().is_ok()
            || (v.starts_with('"') && v.ends_with('"'));
        assert!(
            k.starts_with("CONFIG_") && value_ok,
            "{}:{}: not CONFIG_X=value: {line}",
            rel(&path),
            i + 1
        );
        assert!(
            out.insert(k.to_string(), v.to_string()).is_none(),
            "{k} set twice"
        );
    }
    out
}

#[test]
fn kernel_options_exist_in_linux_6_12() {
    let d = defconfig();
    let version = d
        .get("BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE")
        .expect("the defconfig pins a kernel version");
    assert!(
        version.starts_with(&format!("{LINUX_SERIES}.")),
        "kernel {version}"
    );
    assert_eq!(
        d.get(&format!(
            "BR2_PACKAGE_HOST_LINUX_HEADERS_CUSTOM_{}",
            LINUX_SERIES.replace('.', "_")
        ))
        .map(String::as_str),
        Some("y"),
        "the toolchain's kernel headers must be the kernel's series"
    );
    let frag = format!("$(BR2_EXTERNAL_HAKEYS_PATH)/kernel/v{LINUX_SERIES}.y/hakeys.config");
    assert!(
        d.get("BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES")
            .is_some_and(|v| v.split_whitespace().any(|w| w == frag)),
        "the defconfig must use {frag}"
    );

    // Debian's arm64 configuration of the same series lists every symbol
    // of that kernel, set or "is not set".
    let config = kernel_config_in(qemu_cache()).expect("kernel config");
    let cname = config
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        cname.starts_with(&format!("config-{LINUX_SERIES}.")),
        "the QEMU target's kernel configuration {cname} is not Linux {LINUX_SERIES}"
    );
    let known: BTreeSet<String> = read(&config)
        .lines()
        .filter_map(|l| {
            l.split_once('=').map(|(k, _)| k.to_string()).or_else(|| {
                l.strip_prefix("# ")
                    .and_then(|r| r.strip_suffix(" is not set"))
                    .map(str::to_string)
            })
        })
        .collect();
    let fragment = kernel_fragment();
    assert!(fragment.contains_key("CONFIG_RPMB") && fragment.contains_key("CONFIG_OPTEE"));
    let missing: Vec<&String> = fragment.keys().filter(|k| !known.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "not options of Linux {LINUX_SERIES} ({}): {missing:?}",
        rel(&config)
    );
}

/// The OP-TEE OS options defined in `src` (`CFG_X ?=`/`:=`/`=` or forced),
/// from mk/*.mk, core/arch/arm/arm.mk and every platform's conf.mk.
fn optee_defined_options(src: &Path) -> BTreeSet<String> {
    let mut files: Vec<PathBuf> = files_under(&src.join("mk"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "mk"))
        .collect();
    files.push(src.join("core/arch/arm/arm.mk"));
    for e in fs::read_dir(src.join("core/arch/arm")).expect("core/arch/arm") {
        let p = e.expect("entry").path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("plat-"))
        {
            files.push(p.join("conf.mk"));
        }
    }
    let mut out = BTreeSet::new();
    for f in files.iter().filter(|f| f.is_file()) {
        for line in read(f).lines() {
            let t = line.trim_start();
            if t.starts_with("CFG_") {
                let name: String = t
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let rest = t[name.len()..].trim_start();
                if ["?=", ":=", "=", "+="].iter().any(|o| rest.starts_with(o)) {
                    out.insert(name);
                }
            }
            for (i, _) in t.match_indices("force,CFG_") {
                let name: String = t[i + 6..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                out.insert(name);
            }
        }
    }
    out
}

fn optee_src() -> PathBuf {
    let src = optee_src_in(qemu_cache()).expect("OP-TEE source");
    let name = src
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        name,
        format!("optee-os-{OPTEE_OS}"),
        "the QEMU target's OP-TEE OS source is {name}, the tree names {OPTEE_OS}: \
         check the options against it and update the versions"
    );
    src
}

#[test]
fn optee_options_exist_in_optee_os_4_10() {
    let d = defconfig();
    assert_eq!(
        d.get("BR2_TARGET_OPTEE_OS_CUSTOM_VERSION_VALUE")
            .map(String::as_str),
        Some(OPTEE_OS)
    );
    let defined = optee_defined_options(&optee_src());
    assert!(defined.contains("CFG_RPMB_FS") && defined.len() > 200);
    let mut set: Vec<(String, String)> = Vec::new();
    for f in [
        "optee-os-rpmb.conf",
        "optee-os-board.conf",
        "optee-os-qemu.conf",
    ] {
        set.extend(optee_fragment(f).into_keys().map(|k| (k, f.to_string())));
    }
    let additional = d
        .get("BR2_TARGET_OPTEE_OS_ADDITIONAL_VARIABLES")
        .expect("the defconfig passes OP-TEE options");
    set.extend(
        assignments(additional)
            .into_keys()
            .map(|k| (k, "defconfig".into())),
    );
    let missing: Vec<&(String, String)> =
        set.iter().filter(|(k, _)| !defined.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "not options of OP-TEE OS {OPTEE_OS}: {missing:?}"
    );
    for gone in OPTEE_OPTS_GONE_IN_4_10 {
        assert!(
            !defined.contains(*gone),
            "{gone} is defined in OP-TEE OS {OPTEE_OS} after all: update OPTEE_OPTS_GONE_IN_4_10"
        );
    }
}

// --------------------------------------------- the QEMU target, again --

/// The value of `NAME="..."` in a shell script (may span lines).
fn shell_string(text: &str, name: &str) -> String {
    let start = text
        .find(&format!("{name}=\""))
        .unwrap_or_else(|| panic!("no {name}=\"...\""));
    let rest = &text[start + name.len() + 2..];
    rest[..rest.find('"').expect("closing quote")].to_string()
}

#[test]
fn qemu_defconfig_builds_the_qemu_target_stack() {
    let d = defconfig();
    let firmware = read(&repo().join("qemu/build-firmware.sh"));

    // OP-TEE OS: build-firmware.sh's options = the defconfig's, less what
    // Buildroot passes itself and what 4.10 no longer defines.
    let mut qemu = assignments(&shell_string(&firmware, "OPTEE_FLAGS"));
    assert_eq!(
        qemu.remove("PLATFORM").as_deref(),
        d.get("BR2_TARGET_OPTEE_OS_PLATFORM").map(String::as_str)
    );
    qemu.remove("CROSS_COMPILE");
    assert_eq!(qemu.remove("DEBUG").as_deref(), Some("0")); // Buildroot passes none: OP-TEE's default
    for o in OPTEE_OPTS_SET_BY_BUILDROOT {
        let (k, v) = o.split_once('=').expect("K=V");
        assert_eq!(qemu.remove(k).as_deref(), Some(v), "build-firmware.sh {k}");
    }
    for gone in OPTEE_OPTS_GONE_IN_4_10 {
        qemu.remove(*gone);
    }
    let ours = assignments(
        d.get("BR2_TARGET_OPTEE_OS_ADDITIONAL_VARIABLES")
            .expect("OP-TEE options"),
    );
    assert_eq!(
        ours, qemu,
        "the defconfig's OP-TEE options vs qemu/build-firmware.sh"
    );
    // ... and they are exactly the RPMB and QEMU fragments.
    let mut fragments = optee_fragment("optee-os-rpmb.conf");
    for (k, v) in optee_fragment("optee-os-qemu.conf") {
        assert!(
            fragments.insert(k.clone(), v).is_none(),
            "{k} in two fragments"
        );
    }
    assert_eq!(
        ours, fragments,
        "the defconfig's OP-TEE options vs optee/*.conf"
    );

    // A board never gets the QEMU target's insecure settings.
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
    for k in board.keys() {
        assert!(
            !optee_fragment("optee-os-rpmb.conf").contains_key(k),
            "{k} is in both the common and the board fragment"
        );
    }

    // TF-A.
    let mut tfa = assignments(&shell_string(&firmware, "TFA_FLAGS"));
    tfa.remove("CROSS_COMPILE");
    assert_eq!(
        tfa.remove("PLAT").as_deref(),
        d.get("BR2_TARGET_ARM_TRUSTED_FIRMWARE_PLATFORM")
            .map(String::as_str)
    );
    assert_eq!(tfa.remove("SPD").as_deref(), Some("opteed"));
    assert_eq!(
        d.get("BR2_TARGET_ARM_TRUSTED_FIRMWARE_BL32_OPTEE")
            .map(String::as_str),
        Some("y"),
        "BL32_OPTEE is what passes SPD=opteed"
    );
    assert_eq!(tfa.remove("DEBUG").as_deref(), Some("0"));
    assert!(!d.contains_key("BR2_TARGET_ARM_TRUSTED_FIRMWARE_DEBUG"));
    assert_eq!(
        assignments(
            d.get("BR2_TARGET_ARM_TRUSTED_FIRMWARE_ADDITIONAL_VARIABLES")
                .expect("TF-A options")
        ),
        tfa,
        "the defconfig's TF-A options vs qemu/build-firmware.sh"
    );
    assert_eq!(
        d.get("BR2_TARGET_ARM_TRUSTED_FIRMWARE_LATEST_LTS_2_12_VERSION")
            .map(String::as_str),
        Some("y"),
        "TF-A 2.12 LTS, as the QEMU target's Debian TF-A 2.12.1"
    );

    // The rest of the machine and the image.
    for (k, v) in [
        ("BR2_cortex_a57", "y"),
        ("BR2_TARGET_UBOOT_BOARD_DEFCONFIG", "qemu_arm64"),
        ("BR2_TARGET_UBOOT_CUSTOM_VERSION_VALUE", "2025.01"),
        ("BR2_PACKAGE_OPTEE_CLIENT_RPMB_EMU", "n"),
        ("BR2_PACKAGE_HAKEYS_SUPPLICANT", "y"),
        ("BR2_PACKAGE_HAKEYS_TA_DEV_KEY", "y"),
    ] {
        assert_eq!(d.get(k).map(String::as_str), Some(v), "defconfig {k}");
    }

    // hakeys-supplicant runs as in the QEMU image's init (less --stats).
    let init = read(&repo().join("qemu/guest/init"));
    let line = init
        .lines()
        .find(|l| l.trim_start().starts_with("hakeys-supplicant "))
        .expect("qemu/guest/init starts hakeys-supplicant");
    let mut words: Vec<&str> = line.split_whitespace().skip(1).collect();
    words.retain(|w| !w.starts_with("2>") && *w != "&");
    if let Some(i) = words.iter().position(|w| *w == "--stats") {
        words.drain(i..=i + 1);
    }
    let unit = parse_unit(&read(
        &tree().join("package/hakeys/hakeys-supplicant.service"),
    ));
    let exec = unit_words(&unit, "Service", "ExecStart");
    assert_eq!(
        exec.first().map(String::as_str),
        Some("/usr/sbin/hakeys-supplicant")
    );
    assert_eq!(
        exec[1..].to_vec(),
        words,
        "hakeys-supplicant's arguments vs qemu/guest/init"
    );
}

// ----------------------------------------------- installed files --

/// (package, source, destination) of every `$(INSTALL)` into the target,
/// plus `ln -sf` links; any other use of $(TARGET_DIR) is an error.
fn installs() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (pkg, dir) in packages() {
        let mk = read(&dir.join(format!("{pkg}.mk")));
        for line in logical_lines(&mk) {
            if !line.contains("$(TARGET_DIR)") {
                continue;
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(i) = words.iter().position(|w| *w == "$(INSTALL)") {
                let mut pos = Vec::new();
                let mut j = i + 1;
                while j < words.len() {
                    match words[j] {
                        "-D" => {}
                        "-m" => j += 1,
                        w => pos.push(w),
                    }
                    j += 1;
                }
                assert_eq!(
                    pos.len(),
                    2,
                    "{pkg}.mk: `$(INSTALL) [-D] [-m MODE] SRC DEST`: {line}"
                );
                let dest = pos[1]
                    .strip_prefix("$(TARGET_DIR)")
                    .unwrap_or_else(|| panic!("{pkg}.mk: destination outside the target: {line}"));
                out.push((pkg.clone(), pos[0].to_string(), dest.to_string()));
            } else if words.first() == Some(&"ln") && words.get(1) == Some(&"-sf") {
                let dest = words[3]
                    .strip_prefix("$(TARGET_DIR)")
                    .expect("ln into the target");
                out.push((pkg.clone(), words[2].to_string(), dest.to_string()));
            } else {
                assert!(
                    words.first() == Some(&"mkdir") && words.get(1) == Some(&"-p"),
                    "{pkg}.mk: unexpected use of $(TARGET_DIR): {line}"
                );
            }
        }
    }
    out
}

/// A target path as it resolves on the image: merged /usr (Buildroot's
/// systemd selects BR2_ROOTFS_MERGED_USR; the QEMU image links lib to
/// usr/lib), and the TA's UUID filled in.
fn resolve(path: &str) -> String {
    let p = path.replace("$$uuid", &uuid()).replace("$UUID", &uuid());
    match p.strip_prefix("/lib/") {
        Some(rest) => format!("/usr/lib/{rest}"),
        None => p,
    }
}

/// Where `qemu/make-initramfs.sh` puts our binaries and the TA: artifact
/// name -> path in the image.
fn qemu_image_layout() -> BTreeMap<String, String> {
    let script = read(&repo().join("qemu/make-initramfs.sh"));
    assert!(
        script.contains("ln -s usr/lib \"$R/lib\""),
        "make-initramfs.sh no longer links /lib to usr/lib"
    );
    let mut out = BTreeMap::new();
    for line in script.lines().map(str::trim) {
        // for b in A B; do install_bin "$O/bin/$b" "/usr/bin/$b"; done
        if let Some(rest) = line.strip_prefix("for ") {
            let Some((var, rest)) = rest.split_once(" in ") else {
                continue;
            };
            let Some((list, body)) = rest.split_once("; do ") else {
                continue;
            };
            let Some(args) = body.strip_prefix("install_bin ") else {
                continue;
            };
            let dest = args
                .split_whitespace()
                .nth(1)
                .and_then(|d| d.split(';').next())
                .expect("install_bin SRC DEST")
                .trim_matches('"');
            for b in list.split_whitespace() {
                out.insert(b.to_string(), dest.replace(&format!("${var}"), b));
            }
            continue;
        }
        // [ -e "$O/bin/teed" ] && install_bin "$O/bin/teed" /usr/bin/teed
        if let Some(i) = line.find("install_bin \"$O/bin/") {
            let args: Vec<&str> = line[i + "install_bin ".len()..]
                .split_whitespace()
                .collect();
            let src = args[0].trim_matches('"');
            let name = src.trim_start_matches("$O/bin/");
            out.insert(name.to_string(), args[1].trim_matches('"').to_string());
            continue;
        }
        // mv "$R/usr/bin/X" "$R/usr/sbin/X"
        if let Some(rest) = line.strip_prefix("mv ") {
            let args: Vec<&str> = rest
                .split_whitespace()
                .map(|a| a.trim_matches('"'))
                .collect();
            let from = args[0].trim_start_matches("$R");
            let to = args[1].trim_start_matches("$R");
            for dest in out.values_mut() {
                if dest == from {
                    *dest = to.to_string();
                }
            }
            continue;
        }
        // cp "$ROOT/systemd/teed-policy.toml" "$R/etc/hakeys/policy.toml"
        if let Some(rest) = line.strip_prefix("cp \"$ROOT/systemd/") {
            let args: Vec<&str> = rest
                .split_whitespace()
                .map(|a| a.trim_matches('"'))
                .collect();
            if let [file, dest] = args[..] {
                out.insert(
                    format!("systemd/{file}"),
                    dest.trim_start_matches("$R").to_string(),
                );
            }
            continue;
        }
        // cp "$O/ta/$UUID.ta" "$R/usr/lib/optee_armtz/"
        if let Some(rest) = line.strip_prefix("cp \"$O/ta/$UUID.ta\" ") {
            let dir = rest.trim_matches('"').trim_start_matches("$R");
            out.insert("ta".to_string(), format!("{dir}$UUID.ta"));
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
    let dest_of = |src: &str| -> Vec<String> {
        installs
            .iter()
            .filter(|(_, s, _)| s == src)
            .map(|(_, _, d)| resolve(d))
            .collect()
    };
    for (artifact, qemu_dest) in &qemu {
        let src = if artifact == "ta" {
            "$(HAKEYS_TA_OUT)/$$uuid.ta".to_string()
        } else if artifact.starts_with("systemd/") {
            format!("$(@D)/{artifact}")
        } else {
            format!("$(HAKEYS_BIN_DIR)/{artifact}")
        };
        assert_eq!(
            dest_of(&src),
            vec![qemu_dest.clone()],
            "{artifact}: Buildroot installs it elsewhere than the QEMU image"
        );
    }
    // Buildroot installs no program the QEMU image lacks, besides the boot
    // flow's script (the QEMU image runs its scenario instead).
    for (pkg, src, dest) in &installs {
        let program = ["/usr/bin/", "/usr/sbin/", "/lib/optee_armtz/"]
            .iter()
            .any(|p| dest.starts_with(p));
        if program {
            assert!(
                qemu.values().any(|q| *q == resolve(dest)),
                "{pkg} installs {dest} ({src}), which the QEMU image does not have"
            );
        }
    }
    // The cargo build names exactly the binaries installed.
    let mk = read(&tree().join("package/hakeys/hakeys.mk"));
    let mut built: BTreeSet<String> = BTreeSet::new();
    for line in logical_lines(&mk) {
        if line.starts_with("HAKEYS_CARGO_BUILD_OPTS") {
            let w: Vec<&str> = line.split_whitespace().collect();
            for (i, x) in w.iter().enumerate() {
                if *x == "--bin" {
                    built.insert(w[i + 1].to_string());
                }
            }
        }
    }
    let installed: BTreeSet<String> = installs
        .iter()
        .filter_map(|(_, s, _)| s.strip_prefix("$(HAKEYS_BIN_DIR)/").map(str::to_string))
        .collect();
    assert_eq!(built, installed, "binaries built vs installed");
    let expected: BTreeSet<String> = qemu
        .keys()
        .filter(|k| *k != "ta" && !k.starts_with("systemd/"))
        .cloned()
        .collect();
    assert_eq!(built, expected, "binaries built vs the QEMU image's");
}

/// makeusers lines: (user, group, home, shell, groups).
fn makeusers() -> Vec<[String; 5]> {
    let mk = read(&tree().join("package/hakeys/hakeys.mk"));
    mk_define(&mk, "HAKEYS_USERS")
        .expect("hakeys.mk defines HAKEYS_USERS")
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 9, "makeusers line with fewer than 9 fields: {l}");
            assert!(
                ["-1", "-2"].contains(&f[1]) && ["-1", "-2"].contains(&f[3]),
                "{l}"
            );
            [f[0], f[2], f[5], f[6], f[7]].map(str::to_string)
        })
        .collect()
}

#[test]
fn daemon_units_and_users_are_the_systemd_folder_ones() {
    let installs = installs();
    let dest_of = |src: &str| -> Option<String> {
        installs
            .iter()
            .find(|(_, s, _)| s == src)
            .map(|(_, _, d)| d.clone())
    };
    // Every file of systemd/ is installed, unchanged (from the source
    // tree), where docs/daemon.md's "Files" table says.
    let doc = read(&repo().join("docs/daemon.md"));
    let mut table: BTreeMap<String, String> = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let first = |i: usize| {
            cells
                .get(i)
                .and_then(|c| c.split('`').nth(1))
                .map(str::to_string)
        };
        if let (Some(a), Some(b)) = (first(1), first(2)) {
            if b.starts_with('/') {
                table.insert(a, b);
            }
        }
    }
    for e in fs::read_dir(repo().join("systemd")).expect("systemd/") {
        let name = e.expect("entry").file_name().to_string_lossy().into_owned();
        let key = format!("systemd/{name}");
        let want = table
            .get(&key)
            .unwrap_or_else(|| panic!("docs/daemon.md does not say where {key} goes"));
        assert_eq!(
            dest_of(&format!("$(@D)/{key}")).as_deref(),
            Some(want.as_str()),
            "{key}: installed from the source tree to {want}"
        );
    }
    assert_eq!(
        table.get("teed").map(String::as_str),
        dest_of("$(HAKEYS_BIN_DIR)/teed").as_deref()
    );

    // The users: the daemon's as systemd/hakeys.sysusers.conf declares it;
    // the groups and user optee-client's unit and our udev rule use.
    let users = makeusers();
    let user = |n: &str| users.iter().find(|u| u[0] == n);
    let groups: BTreeSet<String> = users
        .iter()
        .flat_map(|u| {
            let mut g = vec![u[1].clone()];
            g.extend(u[4].split(',').filter(|x| *x != "-").map(str::to_string));
            g
        })
        .collect();
    let sysusers = read(&repo().join("systemd/hakeys.sysusers.conf"));
    for line in sysusers
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[0] {
            "u" => {
                let u = user(f[1]).unwrap_or_else(|| panic!("HAKEYS_USERS lacks user {}", f[1]));
                assert_eq!(
                    u[1], f[1],
                    "sysusers `u {}` has a group of its own name",
                    f[1]
                );
                let shell = line.rsplit(' ').next().unwrap_or("");
                assert_eq!(u[3], shell, "{}'s shell", f[1]);
                // sysusers says /nonexistent; makeusers would create any
                // home directory it is given, so "-" (no home).
                assert_eq!(u[2], "-", "{} must get no home directory", f[1]);
            }
            "g" => assert!(groups.contains(f[1]), "HAKEYS_USERS lacks group {}", f[1]),
            "m" => assert!(
                user(f[1]).is_some_and(|u| u[4].split(',').any(|g| g == f[2])),
                "{} is not in group {}",
                f[1],
                f[2]
            ),
            other => panic!("unexpected sysusers line type {other}"),
        }
    }
    let teed = parse_unit(&read(&repo().join("systemd/teed.service")));
    for key in ["User", "Group", "SupplementaryGroups"] {
        for g in unit_words(&teed, "Service", key) {
            let known = if key == "User" {
                user(&g).is_some()
            } else {
                groups.contains(&g)
            };
            assert!(known, "teed.service {key}={g} does not exist on the image");
        }
    }
    let supplicant = user(TEE_SUPPLICANT_USER).expect("the tee-supplicant user");
    assert_eq!(supplicant[1], TEE_SUPPLICANT_USER);
    let rules = read(&tree().join("package/hakeys/61-hakeys-tee.rules"));
    for (i, _) in rules.match_indices("GROUP=\"") {
        let g: String = rules[i + 7..].chars().take_while(|c| *c != '"').collect();
        assert!(
            groups.contains(&g),
            "61-hakeys-tee.rules names a missing group {g}"
        );
        if g == "teepriv" {
            assert!(
                supplicant[4].split(',').any(|x| x == g),
                "teesuppl must open teepriv devices"
            );
        }
    }
}

#[test]
fn units_name_only_units_and_programs_the_image_has() {
    let installs = installs();
    let installed: BTreeSet<String> = installs.iter().map(|(_, _, d)| d.clone()).collect();
    let unit_files: Vec<(String, String)> = installs
        .iter()
        .filter(|(_, _, d)| d.starts_with("/usr/lib/systemd/system/"))
        .map(|(pkg, src, d)| {
            let path = if let Some(f) = src.strip_prefix("$(@D)/") {
                repo().join(f)
            } else {
                let f = src.rsplit('/').next().expect("file");
                tree().join("package").join(pkg).join(f)
            };
            (d.clone(), read(&path))
        })
        .collect();
    let unit_names: BTreeSet<String> = installed
        .iter()
        .filter_map(|d| d.strip_prefix("/usr/lib/systemd/system/"))
        .filter(|n| !n.contains('/'))
        .map(str::to_string)
        .collect();
    let known: BTreeSet<&str> = KNOWN_UNITS.iter().map(|(u, _)| *u).collect();
    let drop_in = unit_files
        .iter()
        .find(|(d, _)| d.contains("teed.service.d/"))
        .map(|(_, t)| parse_unit(t))
        .expect("the teed drop-in");
    for (dest, text) in &unit_files {
        let unit = parse_unit(text);
        for key in [
            "After",
            "Before",
            "Wants",
            "Requires",
            "Conflicts",
            "WantedBy",
        ] {
            for section in ["Unit", "Install"] {
                for u in unit_words(&unit, section, key) {
                    if unit_names.contains(&u) || known.contains(u.as_str()) {
                        continue;
                    }
                    // teed.service (systemd/, another issue's) names
                    // Debian's tee-supplicant.service; our drop-in adds
                    // the unit this image has.
                    assert!(
                        dest.ends_with("/teed.service")
                            && u == "tee-supplicant.service"
                            && unit_words(&drop_in, "Unit", "After")
                                .contains(&"tee-supplicant@teepriv0.service".to_string()),
                        "{dest}: {key}={u} is no unit of the image"
                    );
                }
            }
        }
        for key in ["ExecStart", "ExecReload", "ExecStop"] {
            for cmd in unit
                .get(&("Service".to_string(), key.to_string()))
                .into_iter()
                .flatten()
            {
                let prog = cmd
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches(['-', '@']);
                assert!(
                    installed.contains(prog) || KNOWN_PROGRAMS.contains(&prog),
                    "{dest}: {key} runs {prog}, which no package installs"
                );
            }
        }
    }
    // Presets name installed units.
    for (_, src, dest) in &installs {
        if dest.ends_with(".preset") {
            let f = src.rsplit('/').next().expect("file");
            let pkg_file = packages()
                .values()
                .map(|d| d.join(f))
                .find(|p| p.is_file())
                .expect("preset file");
            for line in read(&pkg_file)
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            {
                let u = line.split_whitespace().nth(1).expect("preset unit");
                assert!(unit_names.contains(u), "{dest}: {u} is not installed");
            }
        }
    }
}

// ------------------------------------------------------ the boot flow --

fn unlock_unit() -> BTreeMap<(String, String), Vec<String>> {
    parse_unit(&read(
        &tree().join("package/hakeys-boot/hakeys-unlock-data.service"),
    ))
}

fn unlock_script() -> PathBuf {
    tree().join("package/hakeys-boot/hakeys-unlock-data")
}

#[test]
fn unlock_unit_runs_before_the_data_mount_and_after_the_supplicant() {
    let u = unlock_unit();
    let one = |s: &str, k: &str| unit_words(&u, s, k).join(" ");
    assert_eq!(
        one("Unit", "DefaultDependencies"),
        "no",
        "it runs in early boot"
    );
    assert_eq!(one("Service", "Type"), "oneshot");
    assert_eq!(one("Service", "RemainAfterExit"), "yes");
    let before = unit_words(&u, "Unit", "Before");
    let after = unit_words(&u, "Unit", "After");
    let wants = unit_words(&u, "Unit", "Wants");
    assert!(
        before.contains(&"mnt-data.mount".to_string()),
        "before HA OS's data mount"
    );
    for s in [
        "tee-supplicant@teepriv0.service",
        "hakeys-supplicant.service",
    ] {
        assert!(after.contains(&s.to_string()), "after {s}");
    }
    assert!(wants.contains(&"tee-supplicant@teepriv0.service".to_string()));
    assert_eq!(
        one("Unit", "RequiresMountsFor"),
        "/mnt/boot",
        "the blob is on the boot partition"
    );
    assert_eq!(
        one("Service", "ExecStart"),
        "/usr/libexec/hakeys-unlock-data"
    );
    // The unit's settings are the script's defaults (one layout, stated twice).
    let script = read(&unlock_script());
    for env in unit_words(&u, "Service", "Environment") {
        let (k, v) = env.split_once('=').expect("Environment=K=V");
        assert!(
            script.contains(&format!("${{{k}:-{v}}}")),
            "the unit's {k}={v} is not the script's default"
        );
    }
    assert!(script.contains("teectl --backend tee unseal --namespace boot/luks-data"));
    assert!(script.contains("cryptsetup open --key-file -"));
    assert!(script.contains("teectl --backend tee boot-done"));
}

struct Fakes {
    dir: tempfile::TempDir,
}

impl Fakes {
    /// Stand-ins for teectl and cryptsetup that log their arguments and
    /// stdin, with exit codes from FAKE_* variables.
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
	exit "${FAKE_DONE_RC:-0}" ;;
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
        fs::write(dir.path().join("data-partition"), "").expect("device");
        fs::write(dir.path().join("data.blob"), "hakeys:v1:BLOB\n").expect("blob");
        Fakes { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn run(&self, env: &[(&str, &str)]) -> Output {
        let path = format!(
            "{}:{}",
            self.path("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut c = Command::new("sh");
        c.arg(unlock_script())
            .env("PATH", path)
            .env("FAKE_DIR", self.dir.path())
            .env("TMPDIR", self.dir.path())
            .env("HAKEYS_TEE_DEVICE", self.path("tee0"))
            .env("HAKEYS_DATA_DEVICE", self.path("data-partition"))
            .env("HAKEYS_DATA_BLOB", self.path("data.blob"))
            .env("HAKEYS_DATA_NAME", "hakeys-test-no-such-mapping")
            .env("HAKEYS_WAIT_SECONDS", "1");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run hakeys-unlock-data")
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
    let leftovers: Vec<_> = fs::read_dir(f.dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("hakeys-unlock.")
        })
        .collect();
    assert!(leftovers.is_empty(), "the status file is removed");
}

#[test]
fn unlock_script_failures_still_end_the_boot_phase() {
    // teectl refuses (each exit code has its own message); cryptsetup is
    // never told a wrong key.
    for (rc, words) in [
        ("3", "never set up"),
        ("4", "boot phase is already over"),
        ("5", "another board"),
        ("6", "secure storage"),
        ("7", "does not answer"),
    ] {
        let f = Fakes::new();
        let o = f.run(&[("FAKE_UNSEAL_RC", rc)]);
        assert_eq!(o.status.code(), Some(1), "unseal exit {rc}");
        assert!(
            stderr(&o).contains(words),
            "unseal exit {rc}: {}",
            stderr(&o)
        );
        assert_eq!(
            f.log().last().map(String::as_str),
            Some(BOOT_DONE),
            "exit {rc}"
        );
    }
    // cryptsetup fails.
    let f = Fakes::new();
    let o = f.run(&[("FAKE_CRYPT_RC", "2")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cryptsetup could not open"),
        "{}",
        stderr(&o)
    );
    assert_eq!(f.log().last().map(String::as_str), Some(BOOT_DONE));
    // The partition never appears.
    let f = Fakes::new();
    fs::remove_file(f.path("data-partition")).expect("rm");
    let o = f.run(&[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("did not appear"), "{}", stderr(&o));
    assert_eq!(f.log(), vec![BOOT_DONE.to_string()]);
    // boot-done itself fails: the unit fails.
    let f = Fakes::new();
    let o = f.run(&[("FAKE_DONE_RC", "7")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("could not end the boot phase"),
        "{}",
        stderr(&o)
    );
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
