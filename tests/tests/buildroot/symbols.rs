//! Every configuration symbol the tree names exists in the version it
//! names: Buildroot symbols are the tree's own or in
//! [`UPSTREAM_BR2_SYMBOLS`] (verified in Buildroot 2026.05.1); kernel
//! options are in Debian's Linux 6.12 arm64 configuration and OP-TEE
//! options in the OP-TEE OS 4.10.0 source, both from the QEMU target's
//! cache (fetched with `qemu/fetch.sh` if missing, which needs root).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::{config_line, defconfig, files_under, logical_lines, read, repo, symbols, tree};

/// The Buildroot release the tree is written for: the first whose Rust
/// (1.96) builds our lockfile (which needs >= 1.89).
const BUILDROOT: &str = "2026.05.1";
/// The Linux series of the kernel fragment (Home Assistant OS and the QEMU
/// target both run 6.12).
const LINUX_SERIES: &str = "6.12";
/// The OP-TEE OS release of the OP-TEE options (the QEMU target's).
const OPTEE_OS: &str = "4.10.0";

/// Upstream Buildroot symbols the tree uses, each verified to be defined
/// (`config`/`menuconfig`) in Buildroot 2026.05.1: `file:` then the
/// symbols that file defines.
const UPSTREAM_BR2_SYMBOLS: &str = "
    Config.in: BR2_ENABLE_DEBUG
    arch/Config.in: BR2_aarch64 BR2_USE_MMU
    arch/Config.in.arm: BR2_cortex_a57
    system/Config.in: BR2_INIT_SYSTEMD BR2_ROOTFS_POST_IMAGE_SCRIPT
        BR2_TARGET_GENERIC_GETTY_PORT
    toolchain/Config.in: BR2_TOOLCHAIN_HAS_SYNC_4 BR2_TOOLCHAIN_HAS_THREADS
        BR2_TOOLCHAIN_HEADERS_AT_LEAST_4_3 BR2_TOOLCHAIN_USES_GLIBC
    package/linux-headers/Config.in.host: BR2_PACKAGE_HOST_LINUX_HEADERS_CUSTOM_6_12
    package/rustc/Config.in.host: BR2_PACKAGE_HOST_RUSTC
        BR2_PACKAGE_HOST_RUSTC_TARGET_ARCH_SUPPORTS
    package/cryptsetup/Config.in: BR2_PACKAGE_CRYPTSETUP
    package/optee-client/Config.in: BR2_PACKAGE_OPTEE_CLIENT
        BR2_PACKAGE_OPTEE_CLIENT_RPMB_EMU
    linux/Config.in: BR2_LINUX_KERNEL BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES
        BR2_LINUX_KERNEL_CUSTOM_VERSION BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE
        BR2_LINUX_KERNEL_NEEDS_HOST_OPENSSL BR2_LINUX_KERNEL_USE_ARCH_DEFAULT_CONFIG
    fs/ext2/Config.in: BR2_TARGET_ROOTFS_EXT2 BR2_TARGET_ROOTFS_EXT2_4
        BR2_TARGET_ROOTFS_EXT2_SIZE
    fs/tar/Config.in: BR2_TARGET_ROOTFS_TAR
    boot/arm-trusted-firmware/Config.in: BR2_TARGET_ARM_TRUSTED_FIRMWARE
        BR2_TARGET_ARM_TRUSTED_FIRMWARE_ADDITIONAL_VARIABLES
        BR2_TARGET_ARM_TRUSTED_FIRMWARE_BL32_OPTEE BR2_TARGET_ARM_TRUSTED_FIRMWARE_FIP
        BR2_TARGET_ARM_TRUSTED_FIRMWARE_LATEST_LTS_2_12_VERSION
        BR2_TARGET_ARM_TRUSTED_FIRMWARE_PLATFORM BR2_TARGET_ARM_TRUSTED_FIRMWARE_UBOOT_AS_BL33
    boot/optee-os/Config.in: BR2_TARGET_OPTEE_OS BR2_TARGET_OPTEE_OS_ADDITIONAL_VARIABLES
        BR2_TARGET_OPTEE_OS_CUSTOM_VERSION BR2_TARGET_OPTEE_OS_CUSTOM_VERSION_VALUE
        BR2_TARGET_OPTEE_OS_NEEDS_DTC BR2_TARGET_OPTEE_OS_NEEDS_PYTHON_CRYPTOGRAPHY
        BR2_TARGET_OPTEE_OS_PLATFORM BR2_TARGET_OPTEE_OS_SDK
    boot/uboot/Config.in: BR2_TARGET_UBOOT BR2_TARGET_UBOOT_BOARD_DEFCONFIG
        BR2_TARGET_UBOOT_BUILD_SYSTEM_KCONFIG BR2_TARGET_UBOOT_CUSTOM_VERSION
        BR2_TARGET_UBOOT_CUSTOM_VERSION_VALUE BR2_TARGET_UBOOT_NEEDS_GNUTLS
        BR2_TARGET_UBOOT_NEEDS_OPENSSL
";

/// Config.in keywords whose lines refer to other symbols.
const KCONFIG_REFERENCES: &[&str] = &[
    "depends", "select", "imply", "default", "if", "visible", "range",
];

#[test]
fn every_buildroot_symbol_exists() {
    let mut ours = BTreeSet::new();
    let mut used = BTreeSet::new();
    for f in files_under(&tree()) {
        let text = read(&f);
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        if name == "Config.in" {
            for line in logical_lines(&text) {
                let line = line.split('#').next().unwrap_or("");
                let words: Vec<&str> = line.split_whitespace().collect();
                if line.starts_with("\t  ") || words.is_empty() {
                    continue; // help text, blank lines
                }
                if let ["config" | "menuconfig", sym] = words[..] {
                    ours.insert(sym.to_string());
                } else if KCONFIG_REFERENCES.contains(&words[0]) {
                    used.extend(symbols(line, "BR2_").map(str::to_string));
                }
            }
        } else if name.ends_with(".mk") {
            // $(BR2_...) only: comments name symbols in passing.
            for s in text.split("$(").skip(1) {
                let sym = symbols(s, "BR2_").next().filter(|n| s.starts_with(n));
                used.extend(sym.map(str::to_string));
            }
        } else if name.ends_with("_defconfig") {
            let set = text.lines().filter_map(config_line);
            used.extend(set.map(|(k, _)| k.to_string()));
        }
    }
    used.remove("BR2_EXTERNAL_HAKEYS_PATH"); // from external.desc's name
    let mut upstream = BTreeSet::new();
    for w in UPSTREAM_BR2_SYMBOLS.split_whitespace() {
        if !w.ends_with(':') {
            assert!(upstream.insert(w), "UPSTREAM_BR2_SYMBOLS lists {w} twice");
        }
    }
    let unknown: Vec<&String> = used
        .iter()
        .filter(|s| !ours.contains(*s) && !upstream.contains(s.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "symbols neither defined by the tree nor verified in Buildroot {BUILDROOT}: {unknown:?} \
         (check them in Buildroot's sources and add them to UPSTREAM_BR2_SYMBOLS)"
    );
    let stale: Vec<&&str> = upstream.iter().filter(|s| !used.contains(**s)).collect();
    assert!(
        stale.is_empty(),
        "UPSTREAM_BR2_SYMBOLS lists unused {stale:?}"
    );
    let clash: Vec<&String> = ours
        .iter()
        .filter(|s| upstream.contains(s.as_str()))
        .collect();
    assert!(clash.is_empty(), "the tree redefines Buildroot's {clash:?}");
}

#[test]
fn kernel_options_exist_in_linux_6_12() {
    let d = defconfig();
    let version = &d["BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE"];
    assert!(
        version.starts_with(&format!("{LINUX_SERIES}.")),
        "the defconfig's kernel {version}"
    );
    let series = LINUX_SERIES.replace('.', "_");
    let headers = format!("BR2_PACKAGE_HOST_LINUX_HEADERS_CUSTOM_{series}");
    let headers = d.get(&headers).map(String::as_str);
    assert_eq!(headers, Some("y"), "kernel headers of the kernel's series");
    let fragment = format!("kernel/v{LINUX_SERIES}.y/hakeys.config");
    assert!(
        d["BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES"]
            .split_whitespace()
            .any(|w| w == format!("$(BR2_EXTERNAL_HAKEYS_PATH)/{fragment}")),
        "the defconfig must use {fragment}"
    );
    let text = read(&tree().join(&fragment));
    let ours: Vec<&str> = text
        .lines()
        .filter_map(config_line)
        .map(|(k, _)| k)
        .collect();
    assert!(ours.contains(&"CONFIG_OPTEE") && ours.contains(&"CONFIG_RPMB"));

    // Debian's arm64 configuration of the same series lists every symbol
    // of that kernel, set or "is not set".
    let config = kernel_config_in(qemu_cache()).expect("kernel config");
    let name = file_name(&config);
    assert!(
        name.starts_with(&format!("config-{LINUX_SERIES}.")),
        "the QEMU target's kernel configuration {name} is not Linux {LINUX_SERIES}"
    );
    let text = read(&config);
    let known: BTreeSet<&str> = text
        .lines()
        .filter_map(config_line)
        .map(|(k, _)| k)
        .collect();
    let missing: Vec<&&str> = ours.iter().filter(|k| !known.contains(**k)).collect();
    assert!(
        missing.is_empty(),
        "not options of Linux {LINUX_SERIES} ({name}): {missing:?}"
    );
}

/// The OP-TEE OS options defined in `src` (`CFG_X ?=`/`:=`/`=`/`+=` or
/// `force,CFG_X`), from mk/*.mk, core/arch/arm/arm.mk and every platform's
/// conf.mk.
fn optee_defined_options(src: &Path) -> BTreeSet<String> {
    let arm = src.join("core/arch/arm");
    let mut files: Vec<PathBuf> = files_under(&src.join("mk"));
    files.push(arm.join("arm.mk"));
    for e in fs::read_dir(&arm).expect("core/arch/arm") {
        let p = e.expect("entry").path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("plat-"))
        {
            files.push(p.join("conf.mk"));
        }
    }
    let mut out = BTreeSet::new();
    for f in files
        .iter()
        .filter(|f| f.is_file() && f.extension().is_some_and(|e| e == "mk"))
    {
        for line in read(f).lines().map(str::trim_start) {
            if let Some(name) = symbols(line, "CFG_").next().filter(|n| line.starts_with(n)) {
                let op = line[name.len()..].trim_start();
                if ["?=", ":=", "=", "+="].iter().any(|o| op.starts_with(o)) {
                    out.insert(name.to_string());
                }
            }
            for forced in line.split("force,").skip(1) {
                let name = symbols(forced, "CFG_")
                    .next()
                    .filter(|n| forced.starts_with(n));
                out.extend(name.map(str::to_string));
            }
        }
    }
    out
}

#[test]
fn optee_options_exist_in_optee_os_4_10() {
    let d = defconfig();
    assert_eq!(d["BR2_TARGET_OPTEE_OS_CUSTOM_VERSION_VALUE"], OPTEE_OS);
    // (option, where it is set): the defconfig's and the fragments'.
    let mut set: Vec<(String, String)> = d["BR2_TARGET_OPTEE_OS_ADDITIONAL_VARIABLES"]
        .split_whitespace()
        .map(|w| {
            (
                w.split('=').next().unwrap_or(w).to_string(),
                "defconfig".into(),
            )
        })
        .collect();
    for f in files_under(&tree().join("optee")) {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        for line in read(&f).lines().map(str::trim) {
            if !line.is_empty() && !line.starts_with('#') {
                let k = line.split_once('=').map(|(k, _)| k).unwrap_or_default();
                assert!(k.starts_with("CFG_"), "{name}: not CFG_X=value: {line}");
                set.push((k.to_string(), name.clone()));
            }
        }
    }
    assert!(
        set.len() > 10,
        "the OP-TEE options of the tree were not found"
    );

    let src = optee_src_in(qemu_cache()).expect("OP-TEE source");
    let name = file_name(&src);
    assert_eq!(
        name,
        format!("optee-os-{OPTEE_OS}"),
        "the QEMU target's OP-TEE OS source is {name}, the tree names {OPTEE_OS}: \
         check the options against it and update the versions"
    );
    let defined = optee_defined_options(&src);
    assert!(
        defined.contains("CFG_RPMB_FS") && defined.len() > 200,
        "OP-TEE options not found in {name}"
    );
    let missing: Vec<&(String, String)> =
        set.iter().filter(|(k, _)| !defined.contains(k)).collect();
    assert!(
        missing.is_empty(),
        "not options of OP-TEE OS {OPTEE_OS}: {missing:?}"
    );
}

// ----------------------------------------------------- the QEMU cache --

/// The QEMU target's cache, where `cargo xtask qemu-test` keeps it
/// (`$HAKEYS_CACHE/qemu`, default `$XDG_CACHE_HOME/hakeys/qemu` or
/// `~/.cache/hakeys/qemu`): the Debian kernel package and the OP-TEE OS
/// source. Fetched with the project's own scripts when missing (that needs
/// root, as in CI); the tests that need it fail, never pass, without it.
fn qemu_cache() -> &'static Path {
    static CACHE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match CACHE.get_or_init(prepare_qemu_cache) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// The last (by name) entry of `dir` whose name starts with `prefix`.
fn glob_one(dir: &Path, prefix: &str) -> Option<PathBuf> {
    let mut hits: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    hits.sort();
    hits.pop()
}

fn file_name(p: &Path) -> String {
    p.file_name().expect("name").to_string_lossy().into_owned()
}

fn kernel_config_in(cache: &Path) -> Option<PathBuf> {
    let pkg = glob_one(&cache.join("x"), "linux-image-")?;
    glob_one(&pkg.join("boot"), "config-")
}

fn optee_src_in(cache: &Path) -> Option<PathBuf> {
    glob_one(&cache.join("src"), "optee-os-").filter(|p| p.join("mk/config.mk").exists())
}

fn prepare_qemu_cache() -> Result<PathBuf, String> {
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let cache = env("HAKEYS_CACHE")
        .or_else(|| env("XDG_CACHE_HOME").map(|c| c.join("hakeys")))
        .or_else(|| env("HOME").map(|h| h.join(".cache/hakeys")))
        .unwrap_or_else(|| repo().join(".cache"))
        .join("qemu");
    let ready = |c: &Path| kernel_config_in(c).is_some() && optee_src_in(c).is_some();
    if ready(&cache) {
        return Ok(cache);
    }
    let root = fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
    });
    if !root {
        return Err(format!(
            "the Debian Linux {LINUX_SERIES} configuration and the OP-TEE OS source that the \
             Buildroot options are checked against are not in {0}; fetching them needs root: \
             run `sudo qemu/setup-host.sh && qemu/fetch.sh {0}` (or `cargo xtask qemu-test`) once",
            cache.display()
        ));
    }
    eprintln!(
        "buildroot tests: fetching into {} (qemu/setup-host.sh, qemu/fetch.sh)",
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
