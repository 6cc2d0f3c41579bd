//! The fuzzing record in docs/BENCHMARKS.md: `cargo xtask fuzz --runs N
//! --record` replaces the rows of the targets it ran (the others stay, with
//! their own date; the text after the table stays as it is), and `cargo
//! xtask bench` keeps the section.

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
    let text = merge(old.as_deref(), rows, date.trim(), &crate::machine_line());
    let out = match old {
        Some(old) => doc.replacen(&old, &text, 1),
        None => doc.trim_end().to_string() + "\n\n" + &text,
    };
    fs::write(&path, out).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// The section with `rows` merged into the old one's table.
fn merge(old: Option<&str>, rows: &[Row], date: &str, machine: &str) -> String {
    let show = |v: Option<u64>| v.map_or("?".into(), |v| v.to_string());
    // The record table's rows (right after its header) and whatever
    // follows the table (notes, other tables), kept as it is.
    let old_text = old.unwrap_or_default();
    let (old_rows, tail) = match old_text.find(HEADER) {
        Some(at) => {
            let after = &old_text[at + HEADER.len()..];
            let end = after
                .lines()
                .take_while(|l| l.starts_with("| `"))
                .map(|l| l.len() + 1)
                .sum::<usize>()
                .min(after.len());
            (&after[..end], &after[end..])
        }
        None => ("", ""),
    };
    // Kept rows: those of targets not run now.
    let mut lines: Vec<String> = old_rows
        .lines()
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
            date
        ));
    }
    lines.sort();
    let mut text = format!(
        "{SECTION}\n\nWritten by `cargo xtask fuzz --runs N --record` (cargo-fuzz, libFuzzer, no sanitizer), one \
         target after the other, each seeded from `fuzz/seeds/<target>/` and the corpus cached from earlier runs. \
         Edges: libFuzzer's `cov:` once the corpus is loaded and at the end. A finding stops the run with the input \
         in `fuzz/artifacts/`; a target whose row is here ran to the end without one. Machine: {machine}.\n\n{HEADER}"
    );
    for l in lines {
        text += &l;
        text += "\n";
    }
    text += tail;
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(target: &str, n: u64) -> Row {
        Row {
            target: target.into(),
            executions: Some(n),
            edges_start: Some(1),
            edges_end: Some(2),
            new_units: Some(3),
            seconds: 4,
        }
    }

    #[test]
    fn rows_are_replaced_and_the_text_after_the_table_is_kept() {
        let old = format!(
            "{SECTION}\n\nintro\n\n{HEADER}| `a` | 1 | 1 | 1 | 1 | 1 | none | 2026-01-01 |\n\
             | `b` | 1 | 1 | 1 | 1 | 1 | none | 2026-01-01 |\n\nA note.\n\n| target | stopped |\n|---|---|\n| `c` | 5 |\n"
        );
        let text = merge(Some(&old), &[row("b", 10), row("c", 20)], "2026-11-29", "M");
        assert!(text.contains("| `a` | 1 | 1 | 1 | 1 | 1 | none | 2026-01-01 |\n| `b` | 10 |"));
        assert!(text.contains("| `c` | 20 | 1 | 2 | 3 | 4 | none | 2026-11-29 |\n\nA note."));
        // The other table's row stays where it was, untouched.
        assert!(text.ends_with("A note.\n\n| target | stopped |\n|---|---|\n| `c` | 5 |\n"));
        assert!(text.contains("Machine: M."));
        // No old section: the table alone.
        let fresh = merge(None, &[row("a", 1)], "d", "M");
        assert!(fresh.ends_with(&format!("{HEADER}| `a` | 1 | 1 | 2 | 3 | 4 | none | d |\n")));
    }
}
