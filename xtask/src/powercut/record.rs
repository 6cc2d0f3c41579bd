//! The figures of a run: the table printed at the end and the section of
//! docs/BENCHMARKS-qemu.md that `--record` writes.

use std::fmt::Write as _;
use std::fs;

use super::check::{Mode, Op, Outcome};
use crate::{root, Result};

/// One judged cut.
pub(crate) struct CutResult {
    pub(crate) op: Op,
    pub(crate) mode: Mode,
    pub(crate) n: u64,
    pub(crate) outcome: Outcome,
}

/// The figures of one operation.
pub(crate) struct OpReport {
    pub(crate) op: Op,
    pub(crate) n_max: u64,
    pub(crate) boots: usize,
    pub(crate) secs: f64,
    pub(crate) note: Option<String>,
}

#[derive(Default)]
pub(crate) struct Run {
    pub(crate) cuts: Vec<CutResult>,
    pub(crate) reports: Vec<OpReport>,
    /// Failures that are not a judged cut (a cut not reached, a setup that
    /// failed): they fail the run too.
    pub(crate) problems: Vec<String>,
    pub(crate) boots: usize,
}

pub(crate) fn table(run: &Run, build_secs: f64, total: f64) -> String {
    let mut t = String::from(
        "\n| operation | writes (uncut) | mode | cuts | old state | new state | lost | boots | seconds |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &run.reports {
        let mut first = true;
        for m in [Mode::Before, Mode::After] {
            let c: Vec<&CutResult> = run
                .cuts
                .iter()
                .filter(|c| c.op == r.op && c.mode == m)
                .collect();
            if c.is_empty() {
                continue;
            }
            let count = |o: &dyn Fn(&Outcome) -> bool| c.iter().filter(|c| o(&c.outcome)).count();
            let (boots, secs) = if first {
                (r.boots.to_string(), format!("{:.0}", r.secs))
            } else {
                (String::new(), String::new())
            };
            first = false;
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {boots} | {secs} |",
                r.op.name(),
                r.n_max,
                m.name(),
                c.len(),
                count(&|o| *o == Outcome::Old),
                count(&|o| *o == Outcome::New),
                count(&|o| matches!(o, Outcome::Lost(_))),
            );
        }
        if let Some(n) = r.note.as_ref().filter(|_| first) {
            let _ = writeln!(
                t,
                "| {} | – | {} | – | – | – | – | {} | {:.0} |",
                r.op.name(),
                n.replace('|', "/"),
                r.boots,
                r.secs
            );
        }
    }
    for c in &run.cuts {
        if let Outcome::Lost(why) = &c.outcome {
            let _ = writeln!(
                t,
                "\n- lost: {} {} at write {}: {why}",
                c.op.name(),
                c.mode.name(),
                c.n
            );
        }
    }
    let _ = writeln!(
        t,
        "\nimage build {build_secs:.0} s, total {total:.0} s, {} boots",
        run.boots
    );
    t
}

pub(crate) const SECTION: &str = "## Power cuts at every RPMB write";

/// The power-cut section of a BENCHMARKS-qemu.md, if it has one (to its
/// end or the next `## ` heading).
pub(crate) fn record_section(doc: &str) -> Option<String> {
    crate::doc_section(doc, SECTION)
}

pub(crate) fn write_record(run: &Run, modes: &[Mode], build_secs: f64, total: f64) -> Result {
    let path = root().join("docs/BENCHMARKS-qemu.md");
    let doc = fs::read_to_string(&path).unwrap_or_default();
    let kept = match record_section(&doc) {
        Some(old) => doc.replacen(&old, "", 1),
        None => doc,
    };
    let mut s = format!(
        "{SECTION}\n\nWritten by `cargo xtask qemu-powercut --record` (modes: {}). The supplicant cut the power \
         at the N-th authenticated RPMB write of the operation (`before`: the device never applied it; `after`: \
         it did, and OP-TEE never saw the answer), for every N from 1 to the count an uncut run of the same \
         operation made; the next boot checked that the engine answered, that the state was the old or the new \
         one, and that every blob sealed before still opened (or was refused only by a completed retire or new \
         identity). N counts the writes of the `teectl` command itself: the guest restarts the supplicant \
         with the cut armed right before it, after the TA is loaded (OP-TEE's own write at TA load is not \
         counted). Boots and seconds cover both modes of an operation; `cargo xtask test` runs rotate, retire \
         and new-identity. Each boot is a new QEMU process (TCG) on the machine below.\n\n- host: {}\n\n| operation | what |\n|---|---|\n",
        modes.iter().map(|m| m.name()).collect::<Vec<_>>().join(", "),
        crate::machine_line()
    );
    for r in &run.reports {
        let _ = writeln!(s, "| {} | {} |", r.op.name(), r.op.describe());
    }
    s += &table(run, build_secs, total);
    let lost = run
        .cuts
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Lost(_)))
        .count();
    let _ = writeln!(s, "\nResult: {} cuts, {lost} lost.", run.cuts.len());
    let doc = kept.trim_end().to_string() + "\n\n" + &s;
    fs::write(&path, doc).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
