//! The fuzzing record in docs/BENCHMARKS.md: `cargo xtask fuzz --runs N
//! --record` replaces the rows of the targets it ran (the others stay, with
//! their own date), and `cargo xtask bench` keeps the section.

use std::fs;

use crate::{root, Result};

const SECTION: &str = "## Fuzzing";
const HEADER: &str = "| target | executions | edges at start | edges at end | new corpus units | seconds | findings | date |\n|---|---:|---:|---:|---:|---:|---|---|\n";

/// One target's run.
pub(crate) struct Row {
    pub(crate) target: String,
    pub(crate) executions: Option<u64>,
    /// libFuzzer's `cov:` once the corpus (committed seeds and the cached
    /// corpus) is loaded, and at the end.
    pub(crate) edges_start: Option<u64>,
    pub(crate) edges_end: Option<u64>,
    pub(crate) new_units: Option<u64>,
    pub(crate) seconds: u64,
}

/// The section, up to the next `## ` heading.
pub(crate) fn section(doc: &str) -> Option<String> {
    // The heading line exactly (not a longer heading that starts alike).
    crate::doc_section(doc, &format!("{SECTION}\n"))
}

/// Write `rows` into the section (a run ends at its first failing target,
/// so every row written is a run without findings).
pub(crate) fn write(rows: &[Row]) -> Result {
    let path = root().join("docs/BENCHMARKS.md");
    let doc = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let old = section(&doc);
    let date = crate::capture(std::process::Command::new("date").args(["-u", "+%Y-%m-%d"]))
        .unwrap_or_default();
    let show = |v: Option<u64>| v.map_or("?".into(), |v| v.to_string());
    // Kept rows: those of targets not run now.
    let mut lines: Vec<String> = old
        .as_deref()
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter(|l| {
            !rows
                .iter()
                .any(|r| l.starts_with(&format!("| `{}` ", r.target)))
        })
        .map(str::to_string)
        .collect();
    for r in rows {
        lines.push(format!(
            "| `{}` | {} | {} | {} | {} | {} | none | {} |",
            r.target,
            show(r.executions),
            show(r.edges_start),
            show(r.edges_end),
            show(r.new_units),
            r.seconds,
            date.trim()
        ));
    }
    lines.sort();
    let mut text = format!(
        "{SECTION}\n\nWritten by `cargo xtask fuzz --runs N --record` (cargo-fuzz, libFuzzer, no sanitizer), one \
         target after the other, each seeded from `fuzz/seeds/<target>/` and the corpus cached from earlier runs. \
         Edges: libFuzzer's `cov:` once the corpus is loaded and at the end. A finding stops the run with the input \
         in `fuzz/artifacts/`; a target whose row is here ran to the end without one. Machine: {}.\n\n{HEADER}",
        crate::machine_line()
    );
    for l in lines {
        text += &l;
        text += "\n";
    }
    let out = match old {
        Some(old) => doc.replacen(&old, &text, 1),
        None => doc.trim_end().to_string() + "\n\n" + &text,
    };
    fs::write(&path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
