//! `hakeys-supplicant --rpmb DEVICE [--ta-dir DIR]... [--tee /dev/teepriv0]`
//!
//! Serves OP-TEE's supplicant requests until killed. `--rpmb` names the
//! rpmb-sim image (a file, or a block device holding one); `--rpmb-serial
//! NAME` finds the virtio disk with that serial instead.

use std::path::PathBuf;
use std::process::ExitCode;

use hakeys_supplicant::tee_dev::{OsSharedMemory, TeeDevice, IMPL_ID_OPTEE, MAX_PARAMS};
use hakeys_supplicant::{Param, Supplicant};

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
            "-h" | "--help" => {
                println!("usage: hakeys-supplicant (--rpmb IMAGE | --rpmb-serial NAME) [--ta-dir DIR]... [--tee DEV] [--stats FILE]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other:?} (see --help)")),
        }
    }
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
    let mut s = Supplicant {
        shm: OsSharedMemory::new(&dev),
        ta_dirs,
        rpmb: Some(device),
        stats: Default::default(),
    };
    let mut params = [Param::default(); MAX_PARAMS];
    loop {
        let (func, n) = dev
            .recv(&mut params)
            .map_err(|e| format!("TEE_IOC_SUPPL_RECV: {e}"))?;
        let ret = s.handle(func, &mut params[..n]);
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
