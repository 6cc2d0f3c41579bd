//! `cargo xtask qemu-data [--record]`: the data partition's life on LUKS
//! (issue 15) on the QEMU target, with the board's own scripts from
//! `buildroot/package/hakeys-boot/` (`qemu/guest/data.sh` runs them).
//!
//! - **Conversion** (board `data-a`): a GPT disk whose partition
//!   `hassos-data` holds ext4 with a few hundred MiB of random files, and a
//!   vfat boot disk; `hakeys-encrypt-data` converts it to LUKS2 in place;
//!   the next boot opens it with `hakeys-unlock-data` (the sealed key) and
//!   every file's SHA-256 matches the host's manifest.
//! - **Boot cost**: the same board, the figures of
//!   `docs/BENCHMARKS-qemu.md` ("Data partition").
//! - **Growing**: the host makes the disk image larger; `hakeys-grow-data`
//!   grows the partition, the LUKS2 mapping and the file system, which then
//!   fills the partition; the files still match.
//! - **Power cuts** (board `data-cut`): the conversion is started again and
//!   again, and QEMU killed each time at another point (in the key sealing,
//!   the file system shrink, the LUKS2 header write, then at random points
//!   spread over the re-encryption to its end); every next boot resumes;
//!   at the end the partition opens with the sealed key and every file
//!   matches. At least [`MIN_CUTS`] cuts must land inside the conversion.
//! - **A cut at the very end** (board `data-end`): after cryptsetup's last
//!   block and before its finished header (the window is widened with
//!   dm-delay on the partition's last 16 MiB); the next boot finishes the
//!   header (`teectl luks-finish`), and every file matches.
//!
//! `--boards a,cut,end` runs some of them (all by default; `--record` runs
//! all).

use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::qemu::{bench_value, build, results, Board, Step};
use crate::{root, run, Result};

/// The boards, in the order they run (`--boards` picks some).
const BOARDS: [&str; 3] = ["a", "cut", "end"];
/// Board `data-end`: the cut, after cryptsetup's last progress line (its
/// wipe of the moved segment then takes some 4 s, its writes delayed).
const END_CUT: Duration = Duration::from_millis(1000);
/// Cuts that must land while the conversion runs.
pub const MIN_CUTS: usize = 10;
/// Test files: this many, of [`FILE_MIB`] MiB each (plus small ones).
const FILES: usize = 50;
const FILE_MIB: usize = 4;
/// The data disk before and after it "grows".
const DISK_MIB: u64 = 320;
const GROWN_MIB: u64 = 384;
/// The section of docs/BENCHMARKS-qemu.md this command writes.
pub(crate) const SECTION: &str = "## Data partition: in-place encryption, power cuts, boot cost";

const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// Files with random contents under `dir`, and their manifest in
/// `sha256sum -c` form (paths relative to the file system's root).
fn make_files(dir: &Path) -> Result<String> {
    let _ = fs::remove_dir_all(dir);
    let mut manifest = String::new();
    let mut rng = fs::File::open("/dev/urandom").map_err(|e| e.to_string())?;
    let mut add = |rel: String, len: usize| -> Result {
        let path = dir.join(&rel);
        if let Some(p) = path.parent() {
            fs::create_dir_all(p).map_err(|e| e.to_string())?;
        }
        let mut buf = vec![0u8; len];
        rng.read_exact(&mut buf).map_err(|e| e.to_string())?;
        fs::write(&path, &buf).map_err(|e| format!("{}: {e}", path.display()))?;
        manifest += &format!("{}  ./{rel}\n", crate::qemu::sha256_hex(&buf));
        Ok(())
    };
    for i in 0..FILES {
        add(format!("share/d{}/big-{i}.bin", i % 7), FILE_MIB << 20)?;
    }
    for i in 0..200 {
        add(format!("homeassistant/.storage/small-{i}"), 1 + i * 37)?;
    }
    Ok(manifest)
}

/// The board's disks: `data.img` (GPT, partition 1 `hassos-data` with
/// ext4 holding the files, 4 KiB blocks as HA OS has them), `boot.img`
/// (vfat), and the manifest on the blobs disk.
fn make_disks(board: &Board) -> Result<usize> {
    let src = board.dir.join("files");
    let manifest = make_files(&src)?;
    fs::write(board.dir.join("manifest"), &manifest).map_err(|e| e.to_string())?;
    let img = board.dir.join("data.img");
    let parts = partition(
        &img,
        DISK_MIB,
        "start=2048, name=hassos-data, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
    )?;
    let (start, sectors) = parts.first().copied().ok_or("no partition")?;
    run(Command::new("mkfs.ext4")
        .args(["-F", "-q", "-b", "4096", "-L", "hassos-data", "-E"])
        .arg(format!("offset={}", start * 512))
        .arg("-d")
        .arg(&src)
        .arg(&img)
        .arg(format!("{}k", sectors / 2)))?;
    let _ = fs::remove_dir_all(&src);
    let boot = board.dir.join("boot.img");
    let _ = fs::remove_file(&boot);
    run(Command::new("mkfs.vfat")
        .args(["-n", "hassos-boot", "-C"])
        .arg(&boot)
        .arg("16384"))?;
    Ok(manifest.lines().count())
}

/// A new disk image `img` of `mib` MiB with a GPT made by sfdisk from
/// `script` (its partition lines); the (start, size) in sectors of each
/// partition.
fn partition(img: &Path, mib: u64, script: &str) -> Result<Vec<(u64, u64)>> {
    let _ = fs::remove_file(img);
    let f = fs::File::create(img).map_err(|e| e.to_string())?;
    f.set_len(mib << 20).map_err(|e| e.to_string())?;
    drop(f);
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(img)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run sfdisk: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        use std::io::Write;
        stdin
            .write_all(format!("label: gpt\n{script}").as_bytes())
            .map_err(|e| e.to_string())?;
    }
    if !child.wait().map_err(|e| e.to_string())?.success() {
        return Err(format!("sfdisk could not partition {}", img.display()));
    }
    let dump = Command::new("sfdisk")
        .arg("--dump")
        .arg(img)
        .output()
        .map_err(|e| e.to_string())?;
    let dump = String::from_utf8_lossy(&dump.stdout);
    let num = |l: &str, key: &str| -> Option<u64> {
        l.split(&format!("{key}="))
            .nth(1)?
            .split(',')
            .next()?
            .trim()
            .parse()
            .ok()
    };
    let parts: Vec<(u64, u64)> = dump
        .lines()
        .filter_map(|l| Some((num(l, "start")?, num(l, "size")?)))
        .collect();
    if parts.is_empty() {
        return Err(format!(
            "no partitions in sfdisk's dump of {}: {dump}",
            img.display()
        ));
    }
    Ok(parts)
}

/// An "external" disk with two partitions named hassos-data, the first
/// with an ext4 labelled hassos-data (the guest makes the second LUKS2).
fn make_external_disk(board: &Board) -> Result {
    let img = board.dir.join("ext.img");
    let t = "type=0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    let parts = partition(
        &img,
        64,
        &format!("start=2048, size=40960, name=hassos-data, {t}\nname=hassos-data, {t}\n"),
    )?;
    let (start, sectors) = parts[0];
    run(Command::new("mkfs.ext4")
        .args(["-F", "-q", "-L", "hassos-data", "-E"])
        .arg(format!("offset={}", start * 512))
        .arg(&img)
        .arg(format!("{}k", sectors / 2)))
}

/// Checks of one test run, printed as they go.
#[derive(Default)]
struct Checks {
    passed: usize,
    failures: Vec<String>,
}

impl Checks {
    fn check(&mut self, name: &str, ok: bool, detail: impl std::fmt::Display) {
        if ok {
            self.passed += 1;
            eprintln!("  ok   {name}: {detail}");
        } else {
            eprintln!("  FAIL {name}: {detail}");
            self.failures.push(format!("{name}: {detail}"));
        }
    }

    fn step(&mut self, r: &std::collections::HashMap<String, Step>, name: &str, rc: i32) -> Step {
        let s = r.get(name).cloned().unwrap_or_default();
        let found = r.contains_key(name);
        self.check(
            name,
            found && s.rc == rc,
            format!(
                "{} (want exit {rc}) {} {}",
                if found {
                    format!("exit {}", s.rc)
                } else {
                    "not run".into()
                },
                s.out.trim(),
                s.err.trim()
            ),
        );
        s
    }
}

/// `key=N` in a result's output.
fn field(out: &str, key: &str) -> Option<u64> {
    out.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn boot(board: &Board, name: &str, step: &str) -> Result<Vec<String>> {
    board.boot(
        name,
        &format!("hakeys.mode=scenario hakeys.step={step}"),
        BOOT_TIMEOUT,
    )
}

/// The checks of a boot that opens the converted partition and reads every
/// file (`data-verify`); returns the file system's size in KiB.
fn verify(checks: &mut Checks, lines: &[String], files: usize, prefix: &str) -> u64 {
    let r = results(lines);
    checks.step(&r, "data-unlock", 0);
    checks.step(&r, &format!("{prefix}-mount"), 0);
    let f = checks.step(&r, &format!("{prefix}-files"), 0);
    checks.check(
        &format!("{prefix}-every-file"),
        field(&f.out, "ok") == Some(files as u64) && field(&f.out, "failed") == Some(0),
        format!("{} (want ok={files} failed=0)", f.out.trim()),
    );
    let t = checks.step(&r, "data-type-after", 0);
    checks.check("data-is-luks", t.out.trim() == "crypto_LUKS", t.out.trim());
    let k = checks.step(&r, "data-kdf", 0);
    checks.check(
        "data-key-slot-cheap-kdf",
        k.out.contains("pbkdf2") && k.out.contains("1000") && !k.out.contains("online-reencrypt"),
        k.out.trim(),
    );
    let again = checks.step(&r, "data-encrypt-again", 0);
    checks.check(
        "data-encrypt-again-changes-nothing",
        again.err.contains("already LUKS2"),
        again.err.trim(),
    );
    let unit = checks.step(&r, "data-encrypt-unit-again", 0);
    checks.check(
        "data-encrypt-unit-silent-after",
        unit.err.trim().is_empty(),
        format!("stderr {:?}", unit.err.trim()),
    );
    let size = r
        .get(&format!("{prefix}-size"))
        .and_then(|s| field(&s.out, "fs_kib"))
        .unwrap_or(0);
    size
}

/// A script line as the record shows it: cryptsetup's JSON progress as
/// "N % re-encrypted", anything else as it is (shortened).
fn progress_text(line: &str) -> String {
    let num = |key: &str| -> Option<f64> {
        line.split(&format!("\"{key}\":"))
            .nth(1)?
            .trim_start_matches([' ', '"'])
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    match (num("device_bytes"), num("device_size")) {
        (Some(done), Some(size)) if line.starts_with('{') && size > 0.0 => {
            format!("cryptsetup progress {:.0} %", 100.0 * done / size)
        }
        _ => line.chars().take(110).collect(),
    }
}

/// A pseudo-random multiplier in [0.6, 1.4) (xorshift; the seed is printed).
fn jitter(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    0.6 + (*state % 800) as f64 / 1000.0
}

pub fn main(args: &[String]) -> Result {
    let mut record = false;
    let mut boards: Vec<String> = BOARDS.iter().map(|b| b.to_string()).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--record" => record = true,
            "--boards" => {
                let list = it
                    .next()
                    .ok_or("qemu-data: --boards needs a list (a,cut,end)")?;
                boards = list.split(',').map(str::to_string).collect();
                if let Some(bad) = boards.iter().find(|b| !BOARDS.contains(&b.as_str())) {
                    return Err(format!("qemu-data: no board {bad} (a, cut, end)"));
                }
            }
            bad => {
                return Err(format!(
                    "qemu-data: unknown argument {bad} (--record, --boards a,cut,end)"
                ))
            }
        }
    }
    if record && boards.len() != BOARDS.len() {
        return Err("qemu-data: --record runs every board".into());
    }
    let want = |b: &str| boards.iter().any(|x| x == b);
    let started = Instant::now();
    build()?;
    let mut checks = Checks::default();
    let mut md = format!(
        "{SECTION}\n\nWritten by `cargo xtask qemu-data --record`; the same checks run in `cargo xtask test`. \
         The data disk: GPT, partition `hassos-data` of {} MiB holding ext4 (4 KiB blocks) with {FILES} files of \
         {FILE_MIB} MiB and 200 small ones, random contents, checksummed on the host; a vfat boot disk holds \
         the sealed key (`/mnt/boot/hakeys/data.blob`). Scripts: `buildroot/package/hakeys-boot/`, unchanged.\n\n",
        DISK_MIB - 2
    );

    // --- Board A: one uninterrupted conversion, its boots, growing.
    if want("a") {
        let a = Board::fresh("data-a")?;
        let files = make_disks(&a)?;
        let manifest = fs::read(a.dir.join("manifest")).map_err(|e| e.to_string())?;
        a.set_blobs(&[
            ("manifest", &manifest),
            (
                "recovery-passphrase",
                b"correct horse battery staple, test only",
            ),
        ])?;
        let r = results(&boot(&a, "data-a-init", "data-init")?);
        checks.step(&r, "data-init", 0);
        let t = checks.step(&r, "data-type-before", 0);
        checks.check("data-is-ext4-before", t.out.trim() == "ext4", t.out.trim());
        if !checks.failures.is_empty() {
            return Err(format!(
                "qemu-data: the board is not ready:\n  {}",
                checks.failures.join("\n  ")
            ));
        }
        let r = results(&boot(&a, "data-a-encrypt", "data-encrypt")?);
        let e = checks.step(&r, "data-encrypt", 0);
        let t_ref = field(&e.out, "ms").unwrap_or(0);
        if e.rc != 0 {
            return Err(format!(
                "qemu-data: the conversion failed; see {}",
                a.dir.join("data-a-encrypt.console.log").display()
            ));
        }
        let lines = boot(&a, "data-a-verify", "data-verify")?;
        let unlock_cold = results(&lines)
            .get("data-unlock")
            .and_then(|s| field(&s.out, "ms"));
        let fs_before = verify(&mut checks, &lines, files, "data-verify");
        let r = results(&lines);
        checks.step(&r, "data-recovery-passphrase", 0);
        checks.step(&r, "data-recovery-file-removed", 0);
        let bench = boot(&a, "data-a-bench", "data-bench")?;
        let mean = |key: &str| bench_value(&bench, key).map(|(n, ms)| ms as f64 / n.max(1) as f64);
        md += &format!(
        "Conversion, uninterrupted: {:.1} s (`hakeys-encrypt-data`: seal a new key, e2fsck, shrink by 32 MiB, \
         `cryptsetup reencrypt --encrypt`).\n\n\
         ### Boot cost\n\n| what | runs | mean ms |\n|---|---|---|\n",
        t_ref as f64 / 1000.0
    );
        for (label, value) in [
        (
            "`hakeys-unlock-data` at boot (cold: loads the TA; unseal, `cryptsetup open`, `boot-done`)",
            unlock_cold.map(|v| (1, v as f64)),
        ),
        (
            "`hakeys-unlock-data`, warm (TA loaded)",
            bench_value(&bench, "unlock-script-warm").map(|(n, ms)| (n, ms as f64 / n.max(1) as f64)),
        ),
        (
            "`cryptsetup open --key-file` alone, same key and slot",
            bench_value(&bench, "cryptsetup-open").map(|(n, _)| (n, mean("cryptsetup-open").unwrap_or(0.0))),
        ),
        (
            "first `teectl unseal` after boot (cold: loads the TA)",
            bench_value(&bench, "cold-unseal").map(|(n, _)| (n, mean("cold-unseal").unwrap_or(0.0))),
        ),
        (
            "`teectl unseal`, warm, new process",
            bench_value(&bench, "warm-unseal").map(|(n, _)| (n, mean("warm-unseal").unwrap_or(0.0))),
        ),
        (
            "`teectl ping`, new process (the least a TA call from a fresh process costs)",
            bench_value(&bench, "ping-process").map(|(n, _)| (n, mean("ping-process").unwrap_or(0.0))),
        ),
    ] {
        match value {
            Some((n, ms)) => {
                eprintln!("  info {label}: {n} runs, mean {ms:.1} ms");
                md += &format!("| {label} | {n} | {ms:.1} |\n");
            }
            None => checks.check(label, false, "no figure from the guest"),
        }
    }

        // Grow: the disk image gets larger, as when HA OS is moved to a larger
        // medium or its image is flashed to a larger card.
        let img = a.dir.join("data.img");
        fs::OpenOptions::new()
            .write(true)
            .open(&img)
            .and_then(|f| f.set_len(GROWN_MIB << 20))
            .map_err(|e| format!("cannot grow {}: {e}", img.display()))?;
        let r = results(&boot(&a, "data-a-grow", "data-grow")?);
        let p = checks.step(&r, "data-grow-partition", 0);
        checks.check(
            "data-grow-partition-grew",
            p.err.contains("growing partition 1"),
            p.err.trim(),
        );
        checks.step(&r, "data-grow-unlock", 0);
        let g = checks.step(&r, "data-grow", 0);
        checks.check(
            "data-grow-filesystem-grew",
            g.err.contains("grew the file system"),
            g.err.trim(),
        );
        checks.step(&r, "data-grow-mount", 0);
        let f = checks.step(&r, "data-grow-files", 0);
        checks.check(
            "data-grow-every-file",
            field(&f.out, "ok") == Some(files as u64) && field(&f.out, "failed") == Some(0),
            f.out.trim(),
        );
        let size = r.get("data-grow-size").cloned().unwrap_or_default();
        let (fs_kib, part_kib) = (
            field(&size.out, "fs_kib").unwrap_or(0),
            field(&size.out, "part_kib").unwrap_or(0),
        );
        // The partition reaches the disk's new end (less GPT's backup header),
        // and the file system fills it but for the 16 MiB LUKS2 header (to
        // within one 4 KiB block).
        checks.check(
            "data-grow-fills-the-disk",
            fs_kib > fs_before
                && part_kib + 2048 >= (GROWN_MIB - 1) * 1024
                && fs_kib + 16 * 1024 + 4 >= part_kib
                && fs_kib + 16 * 1024 <= part_kib,
            format!("fs {fs_kib} KiB (was {fs_before}), partition {part_kib} KiB"),
        );
        let again = checks.step(&r, "data-grow-again-partition", 0);
        checks.check(
            "data-grow-again-partition-changes-nothing",
            again.err.contains("fills its disk"),
            again.err.trim(),
        );
        let again = checks.step(&r, "data-grow-again", 0);
        checks.check(
            "data-grow-again-changes-nothing",
            again.err.contains("fills it"),
            again.err.trim(),
        );
        md += &format!(
        "\nGrowing (disk image {DISK_MIB} -> {GROWN_MIB} MiB; `hakeys-grow-data partition` before the unlock, \
         `hakeys-grow-data filesystem` after it): file system {fs_before} KiB -> {fs_kib} KiB in a {part_kib} KiB partition; every file matched.\n"
    );

        // Detach: data partitions on another disk are renamed, LUKS2 or not.
        make_external_disk(&a)?;
        let r = results(&boot(&a, "data-a-detach", "data-detach")?);
        checks.step(&r, "data-detach-prep", 0);
        let data_disk = |s: &Step| {
            s.out
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let before = checks.step(&r, "data-detach-before", 0);
        checks.check(
            "data-detach-three-claimants",
            data_disk(&before).len() == 3,
            before.out.trim(),
        );
        checks.step(&r, "data-detach", 0);
        let after = checks.step(&r, "data-detach-after", 0);
        let renamed = checks.step(&r, "data-detach-renamed", 0);
        checks.check(
            "data-detach-only-the-boards-own-is-left",
            data_disk(&after).len() == 1
                && data_disk(&renamed).len() == 2
                && !data_disk(&renamed).contains(&data_disk(&after)[0]),
            format!(
                "hassos-data: {}; hassos-data-dis: {}",
                after.out.trim(),
                renamed.out.trim()
            ),
        );
        let label = checks.step(&r, "data-detach-ext4-label", 0);
        checks.check(
            "data-detach-ext4-relabelled",
            label.out.trim() == "hassos-data-dis",
            label.out.trim(),
        );
        let again = checks.step(&r, "data-detach-again", 0);
        checks.check(
            "data-detach-again-changes-nothing",
            !again.err.contains("renaming"),
            again.err.trim(),
        );
        let _ = fs::remove_file(a.dir.join("ext.img"));

        // Wipe: crypto-erase and a new empty file system.
        let r = results(&boot(&a, "data-a-wipe", "data-wipe")?);
        checks.step(&r, "data-wipe", 0);
        let old = r.get("data-wipe-old-key").cloned().unwrap_or_default();
        checks.check(
            "data-wipe-old-key-opens-nothing",
            r.contains_key("data-wipe-old-key") && old.rc != 0,
            format!("exit {} {}", old.rc, old.err.trim()),
        );
        checks.step(&r, "data-wipe-unlock", 0);
        let empty = checks.step(&r, "data-wipe-empty", 0);
        checks.check(
            "data-wipe-empty-file-system",
            empty.out.trim() == "lost+found",
            empty.out.trim(),
        );
        md += "\nDetaching (`hakeys-detach-data`: an external disk with a plain and a LUKS2 partition named `hassos-data`: \
           both renamed `hassos-data-dis`, the board's own kept) and wiping (`hakeys-wipe-data`: new key and \
           header, the old key opens nothing, an empty file system) passed on the same board.\n";
    }

    // --- Board B: the conversion, cut again and again.
    if want("cut") {
        let b = Board::fresh("data-cut")?;
        let files_b = make_disks(&b)?;
        let manifest = fs::read(b.dir.join("manifest")).map_err(|e| e.to_string())?;
        b.set_blobs(&[("manifest", &manifest)])?;
        let r = results(&boot(&b, "data-cut-init", "data-init")?);
        checks.step(&r, "data-init", 0);
        let mut seed = (std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64))
            | 1;
        eprintln!("  info power-cut schedule seed {seed}");
        // In the re-encryption, cryptsetup reports its progress every second
        // (HAKEYS_PROGRESS_SECONDS=1 in data.sh); a cut 0.3 to 0.7 s after the
        // first report of a boot moves the conversion forward by some 5-10 %
        // per boot, so the cuts are spread over it up to its end.
        let step = Duration::from_millis(500);
        let enc = "HAKEYS: enc | hakeys-encrypt-data: ";
        let mut table =
            String::from("| boot | cut | last step the guest reported |\n|---|---|---|\n");
        let (mut cuts, mut finished) = (0usize, false);
        for i in 1..=40 {
            let (marker, delay) = match i {
                // Sealing the key, the shrink, then cryptsetup's start (the
                // data shift and the LUKS2 header write).
                1 => ("HAKEYS-ENC start".to_string(), Duration::from_millis(300)),
                2 => (format!("{enc}shrinking"), Duration::from_millis(50)),
                3 => (format!("{enc}encrypting"), Duration::from_millis(40)),
                4 => (format!("{enc}encrypting"), Duration::from_millis(600)),
                5 => (format!("{enc}encrypting"), Duration::from_millis(1300)),
                // cryptsetup's set-up takes about 4 s here (the data shift of
                // the first 32 MiB, then the LUKS2 header): late in it.
                6 => (format!("{enc}encrypting"), Duration::from_millis(2600)),
                7 => (format!("{enc}encrypting"), Duration::from_millis(3600)),
                // A resumed run's own start (its repair of the interrupted
                // block); "encrypting" also begins its resume message.
                8 => (format!("{enc}encrypting"), Duration::from_millis(300)),
                9 => (format!("{enc}encrypting"), Duration::from_millis(1000)),
                // Then inside the re-encryption: from cryptsetup's first
                // progress line (a second into it), at random.
                _ => (
                    "HAKEYS: enc | {".to_string(),
                    step.mul_f64(jitter(&mut seed)),
                ),
            };
            let marker = marker.as_str();
            let name = format!("data-cut-{i:02}");
            let (lines, _, was_cut) = b.boot_and_cut(
                &name,
                "hakeys.mode=scenario hakeys.step=data-encrypt",
                BOOT_TIMEOUT,
                Some((marker, delay)),
            )?;
            let last = lines
                .iter()
                .rev()
                .filter_map(|l| l.strip_prefix("HAKEYS: enc | "))
                .find(|l| !l.trim().is_empty())
                .map(progress_text)
                .unwrap_or_else(|| "(nothing yet)".into());
            let r = results(&lines);
            match r.get("data-encrypt") {
                Some(s) if !was_cut || s.rc == 0 => {
                    checks.check(
                        &format!("{name}-finished"),
                        s.rc == 0,
                        format!("exit {} after {} cuts", s.rc, cuts),
                    );
                    table += &format!("| {i} | none: the conversion finished | {last} |\n");
                    finished = s.rc == 0;
                    break;
                }
                _ if was_cut => {
                    // A cut before the script ran (marker never seen) does not
                    // count: the schedule waits for the marker.
                    cuts += 1;
                    eprintln!(
                        "  info cut {cuts}: boot {i}, {marker:?} + {:.2} s; last: {last}",
                        delay.as_secs_f64()
                    );
                    let at = match marker.trim_start_matches("HAKEYS: enc | ") {
                        "{" => "cryptsetup's first progress line".to_string(),
                        m => format!("`{m}`"),
                    };
                    table += &format!("| {i} | {at} + {:.2} s | {last} |\n", delay.as_secs_f64());
                }
                _ => {
                    checks.check(
                        &name,
                        false,
                        "the boot ended without a result and without a cut",
                    );
                    break;
                }
            }
        }
        checks.check(
            "data-cut-conversion-finished",
            finished,
            format!("{cuts} cuts during the conversion"),
        );
        checks.check(
            "data-cut-enough-cuts",
            cuts >= MIN_CUTS,
            format!("{cuts} cuts landed inside the conversion (want at least {MIN_CUTS})"),
        );
        if finished {
            let lines = boot(&b, "data-cut-verify", "data-verify")?;
            verify(&mut checks, &lines, files_b, "data-verify");
        }
        md += &format!(
        "\n### Power cuts during the conversion\n\nBoard `data-cut`: the conversion started at every boot and QEMU \
         killed (SIGKILL: what the guest had not written to its disks is lost) at the point in the table; the \
         next boot resumed. {cuts} cuts, then a boot that finished; then `hakeys-unlock-data` opened the \
         partition with the sealed key and all {files_b} files matched their checksums.\n\n{table}"
    );
    }

    // --- Board C: a cut at the very end of the conversion, aimed.
    if want("end") {
        let c = Board::fresh("data-end")?;
        let files_c = make_disks(&c)?;
        let manifest = fs::read(c.dir.join("manifest")).map_err(|e| e.to_string())?;
        c.set_blobs(&[("manifest", &manifest)])?;
        let r = results(&boot(&c, "data-end-init", "data-init")?);
        checks.step(&r, "data-init", 0);
        let (lines, _, was_cut) = c.boot_and_cut(
            "data-end-cut",
            "hakeys.mode=scenario hakeys.step=data-encrypt-slow-end",
            BOOT_TIMEOUT,
            Some(("HAKEYS-ENC last-block-done", END_CUT)),
        )?;
        let last_block = lines
            .iter()
            .any(|l| l.contains("HAKEYS-ENC last-block-done"));
        checks.check(
        "data-end-cut-after-last-block",
        was_cut && last_block && !results(&lines).contains_key("data-encrypt"),
        format!(
            "cut {:.1} s after cryptsetup reported its last block (reported: {last_block}, cut: {was_cut})",
            END_CUT.as_secs_f64()
        ),
    );
        let lines = boot(&c, "data-end-resume", "data-encrypt")?;
        let r = results(&lines);
        checks.step(&r, "data-encrypt", 0);
        let finishing = lines.iter().any(|l| {
            l.contains("enc | hakeys-encrypt-data: every block")
                && l.contains("finishing the header")
        });
        let resumed = lines
            .iter()
            .any(|l| l.contains("cryptsetup could not resume"));
        checks.check(
        "data-end-header-finished",
        finishing && !resumed,
        "the next boot found every block encrypted and finished the header (teectl luks-finish), no cryptsetup resume",
    );
        let lines = boot(&c, "data-end-verify", "data-verify")?;
        verify(&mut checks, &lines, files_c, "data-verify");
        md += &format!(
        "\n### A cut at the very end\n\nBoard `data-end`: writes to the partition's last 16 MiB delayed (dm-delay) \
         so that cryptsetup's wipe of its moved segment takes seconds; QEMU killed {:.1} s after cryptsetup's \
         last progress line (every block encrypted, header not finished: a state `cryptsetup reencrypt \
         --resume-only` 2.7 cannot resume). The next boot finished the header with `teectl luks-finish`, and \
         all {files_c} files matched.\n",
        END_CUT.as_secs_f64()
    );
    }

    eprintln!(
        "qemu-data: {} passed, {} failed, {:.0} s",
        checks.passed,
        checks.failures.len(),
        started.elapsed().as_secs_f64()
    );
    if !checks.failures.is_empty() {
        return Err(format!(
            "qemu-data failures:\n  {}",
            checks.failures.join("\n  ")
        ));
    }
    if record {
        write_section(&md)?;
    }
    Ok(())
}

/// Replace (or append) this command's section of docs/BENCHMARKS-qemu.md.
fn write_section(md: &str) -> Result {
    let path = root().join("docs/BENCHMARKS-qemu.md");
    let doc = fs::read_to_string(&path).unwrap_or_default();
    let kept = match section(&doc) {
        Some(old) => doc.replacen(&old, "", 1),
        None => doc,
    };
    let out = kept.trim_end().to_string() + "\n\n" + md.trim_end() + "\n";
    fs::write(&path, out).map_err(|e| e.to_string())?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

/// This command's section of `doc`, up to the next `## ` heading.
pub(crate) fn section(doc: &str) -> Option<String> {
    crate::doc_section(doc, SECTION)
}
