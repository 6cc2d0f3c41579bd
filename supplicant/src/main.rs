//! `hakeys-supplicant --rpmb DEVICE [--ta-dir DIR]... [--tee /dev/teepriv0]`
//!
//! Serves OP-TEE's supplicant requests until killed. `--rpmb` names the
//! rpmb-sim image (a file, or a block device holding one); `--rpmb-serial
//! NAME` finds the virtio disk with that serial instead.
//!
//! Test only: `--cut-at-write N --cut-mode before|after` simulates a power
//! cut at the N-th authenticated RPMB write and powers the machine off
//! (`hakeys_supplicant::powercut`).

use std::path::PathBuf;
use std::process::ExitCode;

use hakeys_supplicant::tee_dev::{OsSharedMemory, TeeDevice, IMPL_ID_OPTEE, MAX_PARAMS};
use hakeys_supplicant::{CutMode, Halt, Param, PowerCut, Supplicant};

const USAGE: &str = "usage: hakeys-supplicant (--rpmb IMAGE | --rpmb-serial NAME) [--ta-dir DIR]... [--tee DEV] [--stats FILE]
  test only: [--cut-at-write N --cut-mode before|after]  power off at the N-th authenticated RPMB write";

/// The power cut on the machine: say so on the console, then power off at
/// once. Nothing is synced for a cut before the write (the device never saw
/// it); for a cut after it, rpmb-sim has already synced its commit, and a
/// `sync` makes sure it left the guest.
struct PowerOff;

impl Halt for PowerOff {
    fn halt(&mut self, write: u64, mode: CutMode) {
        if mode == CutMode::After {
            rustix::fs::sync();
        }
        let line = format!("HAKEYS-POWERCUT write={write} mode={mode}\n");
        if let Ok(mut console) = std::fs::OpenOptions::new().write(true).open("/dev/console") {
            use std::io::Write;
            let _ = console.write_all(line.as_bytes());
            // Let the line reach the serial port before the machine stops;
            // OP-TEE waits for this request meanwhile, so nothing runs on.
            let _ = rustix::termios::tcdrain(&console);
        }
        eprint!("hakeys-supplicant: {line}");
        let _ = rustix::system::reboot(rustix::system::RebootCommand::PowerOff);
        // Not allowed to reboot (no CAP_SYS_BOOT)? The magic SysRq key.
        let _ = std::fs::write("/proc/sysrq-trigger", "o");
        // Never answer: the power is off (or going), so wait for the end.
        loop {
            std::thread::park();
        }
    }
}

fn find_by_serial(serial: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir("/sys/block").ok()?;
    entries.flatten().find_map(|e| {
        let s = std::fs::read_to_string(e.path().join("serial")).ok()?;
        (s.trim() == serial).then(|| PathBuf::from("/dev").join(e.file_name()))
    })
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut ta_dirs = Vec::new();
    let mut rpmb = None;
    let mut tee = PathBuf::from("/dev/teepriv0");
    let mut stats_file: Option<PathBuf> = None;
    let (mut cut_at, mut cut_mode) = (None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--ta-dir" => ta_dirs.push(PathBuf::from(val()?)),
            "--rpmb" => rpmb = Some(PathBuf::from(val()?)),
            "--rpmb-serial" => {
                let s = val()?;
                rpmb = Some(
                    find_by_serial(&s).ok_or(format!("no disk with serial {s:?} in /sys/block"))?,
                );
            }
            "--tee" => tee = PathBuf::from(val()?),
            "--stats" => stats_file = Some(PathBuf::from(val()?)),
            "--cut-at-write" => cut_at = Some(val()?),
            "--cut-mode" => cut_mode = Some(val()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
    let cut = PowerCut::from_args(cut_at.as_deref(), cut_mode.as_deref(), Box::new(PowerOff))?;
    if ta_dirs.is_empty() {
        ta_dirs.push(PathBuf::from("/lib/optee_armtz"));
    }
    let rpmb_path = rpmb.ok_or("--rpmb or --rpmb-serial is required")?;
    let device = rpmb_sim::RpmbDevice::open(&rpmb_path)
        .map_err(|e| format!("cannot open the RPMB image {}: {e}", rpmb_path.display()))?;
    let dev = TeeDevice::open(&tee).map_err(|e| format!("cannot open {}: {e}", tee.display()))?;
    match dev.impl_id() {
        Ok(IMPL_ID_OPTEE) => {}
        Ok(other) => return Err(format!("{} is not OP-TEE (impl id {other})", tee.display())),
        Err(e) => return Err(format!("TEE_IOC_VERSION on {}: {e}", tee.display())),
    }
    let info = device.info();
    eprintln!(
        "hakeys-supplicant: serving {} with RPMB {} ({} x 128 KiB, key {}programmed, counter {})",
        tee.display(),
        rpmb_path.display(),
        info.size_mult,
        if info.key_programmed { "" } else { "not " },
        info.write_counter
    );
    if let Some(c) = &cut {
        eprintln!(
            "hakeys-supplicant: TEST MODE: power cut armed at authenticated RPMB write {} ({} the device applies it)",
            c.at_write, c.mode
        );
    }
    let mut s = Supplicant::new(OsSharedMemory::new(&dev), ta_dirs, Some(device));
    s.cut = cut;
    let mut params = [Param::default(); MAX_PARAMS];
    loop {
        let (func, n) = dev
            .recv(&mut params)
            .map_err(|e| format!("TEE_IOC_SUPPL_RECV: {e}"))?;
        let ret = s.handle(func, &mut params[..n]);
        if s.halted {
            // The power cut: the request is never answered.
            loop {
                std::thread::park();
            }
        }
        dev.send(ret, &params[..n])
            .map_err(|e| format!("TEE_IOC_SUPPL_SEND: {e}"))?;
        if let (Some(path), hakeys_supplicant::func::RPMB) = (&stats_file, func) {
            // Counters for the benchmark record; written after the reply.
            let st = s.stats;
            let text = format!(
                "rpmb_transactions {}\nrpmb_frames_in {}\nrpmb_frames_out {}\nrpmb_write_requests {}\n",
                st.rpmb_transactions, st.rpmb_frames_in, st.rpmb_frames_out, st.rpmb_write_requests
            );
            let _ = std::fs::write(path, text);
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hakeys-supplicant: {e}");
            ExitCode::FAILURE
        }
    }
}
