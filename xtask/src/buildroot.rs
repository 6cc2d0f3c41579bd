//! `cargo xtask check-buildroot --buildroot DIR`: Buildroot's own
//! `utils/check-package` over our BR2_EXTERNAL tree.
//!
//! Runs `DIR/utils/check-package -b` on every file under `buildroot/`, from
//! the project root so that the paths are relative as check-package
//! expects (`utils/check-package -b $(find buildroot -type f)`; `-b` is its
//! br2-external mode: no in-tree path filters), prints its output, and fails
//! on any warning. The coding style of the tree (whitespace, indentation,
//! variable order, help text, hash files ...) is checked here, by upstream's
//! tool, not by `tests/tests/buildroot.rs`.
//!
//! Needs a Buildroot checkout and check-package's own requirements: python3
//! with the `magic` (python-magic) and `flake8` modules, and shellcheck.
//! Not part of `cargo xtask test`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{root, Result};

/// What check-package needs besides a checkout (Buildroot's manual,
/// "How to check the coding style"), for the error message.
const REQUIREMENTS: &str = "check-package needs python3 with the python-magic and flake8 \
     modules and shellcheck (Debian: `apt-get install python3-magic flake8 shellcheck`)";

/// Every file under `dir`, as paths relative to `base`.
fn files(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> Result {
    let entries = std::fs::read_dir(base.join(dir))
        .map_err(|e| format!("cannot list {}: {e}", base.join(dir).display()))?;
    for e in entries {
        let e = e.map_err(|e| e.to_string())?;
        let rel = dir.join(e.file_name());
        if e.file_type().map_err(|e| e.to_string())?.is_dir() {
            files(base, &rel, out)?;
        } else {
            out.push(rel);
        }
    }
    Ok(())
}

pub fn check(buildroot: Option<String>) -> Result {
    let dir = buildroot
        .ok_or("usage: cargo xtask check-buildroot --buildroot DIR (a Buildroot checkout)")?;
    let dir = Path::new(&dir);
    let tool = dir.join("utils/check-package");
    if !tool.is_file() {
        return Err(format!(
            "{} is not a Buildroot checkout: it has no utils/check-package",
            dir.display()
        ));
    }
    // Absolute: check-package runs from the project root, not from here.
    let tool = tool
        .canonicalize()
        .map_err(|e| format!("{}: {e}", tool.display()))?;
    let version = std::fs::read_to_string(dir.join("Makefile"))
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("export BR2_VERSION := "))
                .map(|v| format!("Buildroot {v}"))
        })
        .unwrap_or_else(|| "Buildroot, version unknown".into());

    let root = root();
    let mut tree = Vec::new();
    files(&root, Path::new("buildroot"), &mut tree)?;
    tree.sort();
    let mut cmd = Command::new(&tool);
    cmd.current_dir(&root).arg("-b").args(&tree);
    eprintln!(
        "+ (cd {} && {} -b <{} files under buildroot/>)",
        root.display(),
        tool.display(),
        tree.len()
    );
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    eprint!("{stderr}");

    if stderr.contains("ModuleNotFoundError") || stdout.contains("failed to call 'shellcheck'") {
        return Err(format!(
            "check-package ({version}) could not run: {REQUIREMENTS}"
        ));
    }
    let warnings = stderr
        .lines()
        .find_map(|l| l.strip_suffix(" warnings generated"))
        .and_then(|n| n.trim().parse::<u32>().ok());
    if let Some(n) = warnings.filter(|n| *n > 0) {
        Err(format!(
            "check-package ({version}): {n} warning(s) on buildroot/"
        ))
    } else if out.status.success() {
        eprintln!("check-package ({version}): no warnings on buildroot/");
        Ok(())
    } else {
        Err(format!(
            "check-package ({version}) failed ({}); {REQUIREMENTS}",
            out.status
        ))
    }
}
