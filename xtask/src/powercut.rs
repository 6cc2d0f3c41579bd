//! `cargo xtask qemu-powercut`: cut the power at every authenticated RPMB
//! write of every state-changing operation on the real stack, and check
//! that nothing is lost.
//!
//! The supplicant's test-only cut (`supplicant/README.md`) stops the VM at
//! the N-th write of the operation, before the device applies it or after.
//! The next boot (a new QEMU process on the same disks) checks that the
//! engine answers, that its state (epochs from `teectl status --json`,
//! device key from `teectl pubkey`) is the one before the operation or the
//! one after it, never a third and never "not initialised" once an init
//! completed, and that every blob sealed before still opens unless a
//! completed `retire` refused its epoch (or a completed new identity
//! replaced the key it was sealed with). N runs from 1 to the number of
//! writes an uncut run of the same operation makes (measured, printed).
//!
//! Operations on a board that stays initialised (`rotate`, `retire`,
//! `new-identity`) run on one board: each boot checks the previous cut and
//! arms the next. Operations that happen once in a board's life (`init`,
//! the first `rotate` after init, the first write after a format v1 state)
//! run each cut on a copy of a prepared RPMB image: a cut boot, then a
//! check boot. Guest side: `qemu/guest/powercut.sh`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

mod check;
mod record;

use check::{judge, seen, Blob, Mode, Op, Outcome, Prev, Seen};
use record::{table, write_record, CutResult, OpReport, Run};

use crate::qemu::{self, qdir, results, Board, Step};
use crate::{root, run, Result};

pub(crate) use record::record_section;

/// The previous release (state format v1, one `hakeys-state-v1` object):
/// its TA makes the board the migration is tested on.
const V1_COMMIT: &str = "1564ee744aa2051f38cadab882d859f825756af7";
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
const UUID: &str = "313c2bc6-6adc-4eb7-892e-1a75e61b45df";
/// An operation this build cannot run (not a failure).
const SKIPPED: &str = "skipped: ";

/// One boot of powercut.sh.
struct Boot {
    lines: Vec<String>,
    r: HashMap<String, Step>,
    done: bool,
}

struct Params<'a> {
    setup: Option<&'a str>,
    op: Option<Op>,
    cut: Option<(u64, Mode)>,
    finish: bool,
    tag: String,
}

fn boot(run: &mut Run, board: &Board, name: &str, blobs: &[Blob], p: &Params) -> Result<Boot> {
    let files: Vec<(String, &[u8])> = blobs
        .iter()
        .map(|b| (format!("{}.blob", b.name), b.text.as_bytes()))
        .collect();
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (n.as_str(), *b)).collect();
    board.set_blobs(&refs)?;
    let mut append = format!(
        "hakeys.mode=scenario hakeys.step=powercut hakeys.pc_tag={}",
        p.tag
    );
    if let Some(s) = p.setup {
        let _ = write!(append, " hakeys.pc_setup={s}");
    }
    if let Some(op) = p.op {
        let _ = write!(append, " hakeys.pc_op={}", op.guest());
    }
    if let Some((n, m)) = p.cut {
        let _ = write!(append, " hakeys.pc_cut={n}:{}", m.name());
    }
    if p.finish {
        append += " hakeys.pc_finish=init";
    }
    run.boots += 1;
    let (lines, done) = board.boot_to_power_off(name, &append, BOOT_TIMEOUT)?;
    let r = results(&lines);
    Ok(Boot { lines, r, done })
}

/// The operation part of a boot: the blob sealed before it and the state
/// it started from; with a cut, that the cut happened there.
fn operation(
    run: &mut Run,
    b: &Boot,
    label: &str,
    p: &Params,
    blobs: &mut Vec<Blob>,
) -> std::result::Result<Seen, String> {
    let old = seen(&b.r, "pre").map_err(|e| format!("{label}: before the operation: {e}"))?;
    if let Some(s) = b.r.get("seal-pre") {
        let text = s.out.trim();
        if s.rc != 0 || !text.starts_with("hakeys:v1:") {
            return Err(format!(
                "{label}: seal before the operation: exit {} {}",
                s.rc, s.err
            ));
        }
        if let Seen::Init { epoch, pubkey, .. } = &old {
            blobs.push(Blob {
                name: format!("b{}", run.boots),
                text: format!("{text}\n"),
                epoch: *epoch,
                pubkey: pubkey.clone(),
                plaintext: format!("pc-{}", p.tag).into_bytes(),
            });
        }
    }
    if let Some((n, m)) = p.cut {
        let fired = b
            .lines
            .iter()
            .find_map(|l| l.strip_prefix("HAKEYS-POWERCUT "));
        if b.done || b.r.contains_key("op") {
            return Err(format!(
                "{label}: the operation finished before write {n} ({} writes): no cut",
                rpmb_writes(b).map_or("?".into(), |w| w.to_string())
            ));
        }
        if let Some(f) = fired {
            if f.trim() != format!("write={n} mode={}", m.name()) {
                return Err(format!("{label}: cut at {f:?}, wanted write {n}"));
            }
        }
    }
    Ok(old)
}

fn rpmb_writes(b: &Boot) -> Option<u64> {
    let l = b.lines.iter().find(|l| l.starts_with("HAKEYS-RPMB op "))?;
    l.split_whitespace()
        .find_map(|w| w.strip_prefix("writes="))
        .and_then(|v| v.parse().ok())
}

fn setup_blobs(b: &Boot, blobs: &mut Vec<Blob>) -> std::result::Result<Seen, String> {
    for s in ["setup-init", "setup-status", "setup-rotate"] {
        if let Some(st) = b.r.get(s) {
            if st.rc != 0 {
                return Err(format!("{s}: exit {} {}", st.rc, st.err));
            }
        }
    }
    let s = seen(&b.r, "check")?;
    if let Seen::Init { pubkey, .. } = &s {
        for (name, epoch) in [("setup-a", 1), ("setup-b", 2)] {
            if let Some(st) = b.r.get(name) {
                if st.rc != 0 || !st.out.starts_with("hakeys:v1:") {
                    return Err(format!("{name}: exit {} {}", st.rc, st.err));
                }
                blobs.push(Blob {
                    name: name.replace('-', ""),
                    text: format!("{}\n", st.out.trim()),
                    epoch,
                    pubkey: pubkey.clone(),
                    plaintext: name.as_bytes().to_vec(),
                });
            }
        }
    }
    Ok(s)
}

/// The uncut run: the number of writes, and the state after.
fn measure(
    run: &mut Run,
    op: Op,
    b: &Boot,
    old: &Seen,
) -> std::result::Result<(u64, Seen), String> {
    let o = b.r.get("op").ok_or("the operation did not run")?;
    if o.rc != 0 {
        return Err(format!("the operation failed: exit {} {}", o.rc, o.err));
    }
    let new = seen(&b.r, "post")?;
    if !op.is_new(old, &new) {
        return Err(format!("after the operation: {new} (before: {old})"));
    }
    let n = rpmb_writes(b).ok_or("no RPMB write count")?;
    eprintln!(
        "qemu-powercut: {}: an uncut run makes {n} authenticated RPMB writes",
        op.name()
    );
    if n == 0 {
        run.problems
            .push(format!("{}: the operation makes no RPMB write", op.name()));
    }
    Ok((n, new))
}

fn record(run: &mut Run, op: Op, mode: Mode, n: u64, outcome: Outcome) {
    match &outcome {
        Outcome::Lost(why) => eprintln!("  LOST {} {} {n}: {why}", op.name(), mode.name()),
        o => eprintln!(
            "  ok   {} {} {n}: {}",
            op.name(),
            mode.name(),
            if *o == Outcome::Old {
                "old state"
            } else {
                "new state"
            }
        ),
    }
    run.cuts.push(CutResult {
        op,
        mode,
        n,
        outcome,
    });
}

fn cut_points(n_max: u64, modes: &[Mode]) -> Vec<(Mode, u64)> {
    modes
        .iter()
        .flat_map(|m| (1..=n_max).map(move |n| (*m, n)))
        .collect()
}

/// `rotate`, `retire`, `new-identity`: one board, each boot checks the
/// previous cut and arms the next.
fn chained(run: &mut Run, op: Op, modes: &[Mode], image: &Path) -> Result<u64> {
    let mut board = Board::fresh(&format!("powercut-{}", op.name()))?;
    board.image = image.to_path_buf();
    let mut blobs = Vec::new();
    let p = Params {
        setup: Some(op.setup()),
        op: Some(op),
        cut: None,
        finish: false,
        tag: format!("{}-m", op.name()),
    };
    let b = boot(run, &board, "measure", &blobs, &p)?;
    if let Some(l) = b
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("HAKEYS: UNSUPPORTED "))
    {
        return Err(format!("{SKIPPED}{l}"));
    }
    setup_blobs(&b, &mut blobs).map_err(|e| format!("{}: setup: {e}", op.name()))?;
    let old = operation(run, &b, op.name(), &p, &mut blobs)?;
    let (n_max, new) = measure(run, op, &b, &old).map_err(|e| format!("{}: {e}", op.name()))?;
    let mut prev = Prev::Exact(new);
    let mut pending: Option<(Mode, u64)> = None;
    let points = cut_points(n_max, modes);
    for i in 0..=points.len() {
        let next = points.get(i).copied();
        let label = next.map_or("final".to_string(), |(m, n)| format!("{}-{n}", m.name()));
        let p = Params {
            setup: None,
            op: next.map(|_| op),
            cut: next.map(|(m, n)| (n, m)),
            finish: false,
            tag: format!("{}-{label}", op.name()),
        };
        let b = boot(run, &board, &label, &blobs, &p)?;
        let (outcome, s) = judge(&b.r, &prev, &mut blobs);
        if let Some((m, n)) = pending.take() {
            record(run, op, m, n, outcome.clone());
        } else if let Outcome::Lost(why) = &outcome {
            run.problems
                .push(format!("{}: after the uncut run: {why}", op.name()));
        }
        if let (Outcome::Lost(_), None) = (&outcome, &s) {
            return Err(format!(
                "{}: the engine stopped answering; see {}",
                op.name(),
                board.dir.display()
            ));
        }
        if let Some((m, n)) = next {
            let old = operation(run, &b, &format!("{} {label}", op.name()), &p, &mut blobs)?;
            prev = Prev::Cut { op, old };
            pending = Some((m, n));
        }
    }
    Ok(n_max)
}

/// `init`, the first rotate, the first write after v1: a prepared RPMB
/// image, copied for each cut; a cut boot, then a check boot.
fn once(run: &mut Run, op: Op, modes: &[Mode], image: &Path) -> Result<u64> {
    let mut base = Board::fresh(&format!("powercut-{}-base", op.name()))?;
    base.image = image.to_path_buf();
    let mut blobs = Vec::new();
    let p = Params {
        setup: Some(op.setup()),
        op: None,
        cut: None,
        finish: false,
        tag: "setup".into(),
    };
    let b = boot(run, &base, "setup", &blobs, &p)?;
    if !b.done {
        return Err(format!(
            "{}: the setup boot did not finish; see {}",
            op.name(),
            base.dir.display()
        ));
    }
    let base_state =
        setup_blobs(&b, &mut blobs).map_err(|e| format!("{}: setup: {e}", op.name()))?;
    let base_rpmb = base.dir.join("rpmb.img");
    let mut points: Vec<Option<(Mode, u64)>> = vec![None];
    let mut n_max = 0;
    let mut i = 0;
    while let Some(point) = points.get(i).copied() {
        i += 1;
        let label = point.map_or("measure".to_string(), |(m, n)| format!("{}-{n}", m.name()));
        let mut board =
            Board::with_rpmb(&format!("powercut-{}-{label}", op.name()), Some(&base_rpmb))?;
        board.image = image.to_path_buf();
        let mut blobs = blobs.clone();
        let p = Params {
            setup: None,
            op: Some(op),
            cut: point.map(|(m, n)| (n, m)),
            finish: false,
            tag: format!("{}-{label}", op.name()),
        };
        let b = boot(run, &board, "cut", &blobs, &p)?;
        if let (Outcome::Lost(why), _) = judge(&b.r, &Prev::Exact(base_state.clone()), &mut blobs) {
            return Err(format!(
                "{}: the prepared board does not check out: {why}",
                op.name()
            ));
        }
        let old = operation(run, &b, &format!("{} {label}", op.name()), &p, &mut blobs)?;
        let Some((m, n)) = point else {
            let (n, _) = measure(run, op, &b, &old).map_err(|e| format!("{}: {e}", op.name()))?;
            n_max = n;
            points.extend(cut_points(n, modes).into_iter().map(Some));
            continue;
        };
        let p = Params {
            setup: None,
            op: None,
            cut: None,
            finish: op == Op::Init,
            tag: "check".into(),
        };
        let c = boot(run, &board, "check", &blobs, &p)?;
        let (outcome, _) = judge(&c.r, &Prev::Cut { op, old }, &mut blobs);
        if !c.done && !matches!(outcome, Outcome::Lost(_)) {
            run.problems.push(format!(
                "{} {label}: the check boot did not finish",
                op.name()
            ));
        }
        let keep = matches!(outcome, Outcome::Lost(_));
        record(run, op, m, n, outcome);
        if !keep {
            for f in ["rpmb.img", "luks.img", "blobs.tar"] {
                let _ = fs::remove_file(board.dir.join(f));
            }
        }
    }
    Ok(n_max)
}

/// The previous release's TA, built once from git history into the cache.
fn build_v1_ta() -> Result<PathBuf> {
    let dir = qdir().join("v1-ta").join(V1_COMMIT);
    let ta = dir.join(format!("{UUID}.ta"));
    if !ta.exists() {
        let src = qdir().join("v1-src");
        let _ = fs::remove_dir_all(&src);
        fs::create_dir_all(&src).map_err(|e| e.to_string())?;
        run(Command::new("sh").arg("-c").arg(format!(
            "git -C '{}' archive {V1_COMMIT} | tar -x -C '{}'",
            root().display(),
            src.display()
        )))
        .map_err(|e| format!("cannot take the previous release ({V1_COMMIT}) from git history (a shallow clone?): {e}"))?;
        let out = qdir().join("out");
        run(Command::new(src.join("qemu/build-ta.sh"))
            .arg(out.join("optee/export-ta_arm64"))
            .arg(out.join("ta-sign-key.pem"))
            .arg(&dir))?;
        let _ = fs::remove_dir_all(&src);
    }
    Ok(ta)
}

/// The image these boots use: the QEMU target's, plus (for the migration
/// series only, which needs the git history) the previous release's TA, in
/// a private copy (another run's build cannot change it under a running
/// series).
fn image(with_v1: bool) -> Result<PathBuf> {
    qemu::build()?;
    let out = qdir().join("out");
    if with_v1 {
        let v1 = build_v1_ta()?;
        fs::create_dir_all(out.join("ta-v1")).map_err(|e| e.to_string())?;
        fs::copy(&v1, out.join("ta-v1").join(format!("{UUID}.ta"))).map_err(|e| e.to_string())?;
    }
    let img = qdir().join("powercut-image");
    fs::create_dir_all(&img).map_err(|e| e.to_string())?;
    run(Command::new(qemu::script("make-initramfs.sh"))
        .arg(qdir())
        .arg(img.join("initramfs.cpio.gz")))?;
    fs::copy(out.join("Image"), img.join("Image"))
        .map_err(|e| format!("cannot copy Image: {e}"))?;
    // U-Boot (BL33, stored as is in the FIP: no image hashes without
    // trusted boot) waits 2 s for a key before booting; these boots are
    // many and nobody presses a key: its default environment says 0.
    let mut flash =
        fs::read(out.join("flash.bin")).map_err(|e| format!("cannot read flash.bin: {e}"))?;
    let (from, to) = (b"\0bootdelay=2\0", b"\0bootdelay=0\0");
    match flash.windows(from.len()).position(|w| w == from) {
        Some(at) => flash
            .splice(at..at + to.len(), to.iter().copied())
            .for_each(drop),
        None => {
            eprintln!("qemu-powercut: U-Boot's bootdelay=2 not found in flash.bin; booting as is")
        }
    }
    fs::write(img.join("flash.bin"), flash).map_err(|e| format!("cannot write flash.bin: {e}"))?;
    Ok(img)
}

/// `cargo xtask qemu-powercut [--ops a,b,...] [--modes before,after] [--record]`
pub fn main(args: &[String]) -> Result {
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let ops: Vec<Op> = match opt("--ops") {
        None => Op::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|n| {
                Op::ALL.into_iter().find(|o| o.name() == n).ok_or(format!(
                    "unknown operation {n:?}; known: {}",
                    Op::ALL.map(Op::name).join(",")
                ))
            })
            .collect::<Result<_>>()?,
    };
    let modes: Vec<Mode> = match opt("--modes").map(String::as_str) {
        None => vec![Mode::Before, Mode::After],
        Some(list) => list
            .split(',')
            .map(|m| {
                [Mode::Before, Mode::After]
                    .into_iter()
                    .find(|x| x.name() == m)
                    .ok_or(format!("unknown mode {m:?}"))
            })
            .collect::<Result<_>>()?,
    };
    let started = Instant::now();
    let image = image(ops.contains(&Op::Migrate))?;
    let build_secs = started.elapsed().as_secs_f64();
    let mut run = Run::default();
    let mut failed = None;
    for op in ops {
        let t = Instant::now();
        let boots = run.boots;
        let cuts = run.cuts.len();
        let r = if op.once_per_board() {
            once(&mut run, op, &modes, &image)
        } else {
            chained(&mut run, op, &modes, &image)
        };
        let secs = t.elapsed().as_secs_f64();
        let (n_max, note) = match r {
            Ok(n) => (n, None),
            Err(e) => {
                eprintln!("qemu-powercut: {}: {e}", op.name());
                if !e.starts_with(SKIPPED) {
                    failed = Some(e.clone());
                }
                (0, Some(e))
            }
        };
        eprintln!(
            "qemu-powercut: {}: {} cuts in {} boots, {secs:.0} s",
            op.name(),
            run.cuts.len() - cuts,
            run.boots - boots
        );
        run.reports.push(OpReport {
            op,
            n_max,
            boots: run.boots - boots,
            secs,
            note,
        });
    }
    let lost = run
        .cuts
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Lost(_)))
        .count();
    let total = started.elapsed().as_secs_f64();
    for p in &run.problems {
        eprintln!("qemu-powercut: problem: {p}");
    }
    eprint!("{}", table(&run, build_secs, total));
    if args.iter().any(|a| a == "--record") && failed.is_none() {
        write_record(&run, &modes, build_secs, total)?;
    }
    println!("{} cuts, {lost} lost", run.cuts.len());
    match failed {
        Some(e) => Err(e),
        None if lost > 0 => Err(format!("{lost} cuts lost state")),
        None if !run.problems.is_empty() => Err(format!("{} problems", run.problems.len())),
        None => Ok(()),
    }
}
