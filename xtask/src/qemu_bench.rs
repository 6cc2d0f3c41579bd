//! `cargo xtask qemu-bench`: benchmarks on the QEMU target in one boot,
//! written to docs/BENCHMARKS-qemu.md (keeping the power-cut record that
//! `cargo xtask qemu-powercut --record` writes there).

use std::collections::HashMap;
use std::fs;
use std::time::Duration;

use crate::qemu::{bench_value, build, qdir, results, Board, Step};
use crate::{root, Result};

/// Benchmarks in one QEMU boot, written to docs/BENCHMARKS-qemu.md.
pub fn bench() -> Result {
    build()?;
    let board = Board::fresh("bench")?;
    let lines = board.boot(
        "bench",
        "hakeys.mode=scenario hakeys.step=bench hakeys.bench_n=30",
        Duration::from_secs(1200),
    )?;
    let r = results(&lines);
    let mut md = String::from(
        "# Benchmarks on the QEMU target\n\nWritten by `cargo xtask qemu-bench`: one boot of the QEMU target \
         (qemu-system-aarch64 TCG, cortex-a57, 2 vCPUs, on the machine below), so absolute figures are those \
         of an emulated CPU; compare the rows with each other, not with a board. TCG on a shared 2-core host is noisy: \
         the same row has varied by a factor of 2 to 3 between runs, so compare rows of one run.\n\n",
    );
    md += &format!("- host: {}\n\n", crate::machine_line());
    md += "## Latency (new process per run, 1 KiB secret)\n\n| operation | runs | mean ms |\n|---|---|---|\n";
    // The guest's timing loops print one line per failed run: a figure of
    // failing runs is no figure.
    for (label, key, failure) in [
        ("`teectl unseal` end to end (process start, libteec session, TA, RPMB read)", "teectl-unseal-1k", "HAKEYS: unseal failed"),
        ("`pkcs11-tool --decrypt` AES-GCM through OP-TEE's PKCS#11 TA (process start, login, decrypt)", "pkcs11-decrypt-1k", "HAKEYS: p11 decrypt failed"),
        ("`teectl unseal` as uid 8123 through `teed` (process start, socket, policy, the daemon's open TEE session)", "daemon-unseal-1k", "HAKEYS: daemon unseal failed"),
    ] {
        let failed = lines.iter().filter(|l| l.starts_with(failure)).count();
        match bench_value(&lines, key) {
            Some((n, _)) if failed > 0 => md += &format!("| {label} | – | not measured: {failed} of {n} runs failed |\n"),
            Some((n, ms)) => md += &format!("| {label} | {n} | {:.1} |\n", ms as f64 / n as f64),
            None => md += &format!("| {label} | – | not measured: {} |\n", missing_reason(&r, key)),
        }
    }
    if let Some(p) = r.get("ping") {
        md += &format!(
            "\nBare round trip to the TA (`teectl ping --count 200`, one session): {}\n",
            p.out.trim()
        );
    }
    md += "\n## RPMB traffic per operation (counted by the supplicant at the rpmb-sim device)\n\n\
           Each `teectl` command in a fresh process. The TA keeps its state cached between \
           sessions, so once a boot has read it, seal and unseal cost no RPMB traffic. `init` is the \
           first command on a blank RPMB image, so its count includes OP-TEE's own writes when the \
           TA is first loaded (formatting the RPMB file system, the TA version database); `rotate` \
           is the first after `init`, which creates the second state slot (later ones write one \
           block: see the power-cut record below).\n\n\
           | operation | authenticated write requests | frames to the device | frames from the device |\n\
           |---|---|---|---|\n";
    for l in lines.iter().filter(|l| l.starts_with("HAKEYS-RPMB ")) {
        let w: Vec<&str> = l.split_whitespace().collect();
        let get = |k: &str| w.iter().find_map(|x| x.strip_prefix(k)).unwrap_or("?");
        if let Some(op) = w.get(1) {
            md += &format!(
                "| {op} | {} | {} | {} |\n",
                get("writes="),
                get("frames_in="),
                get("frames_out=")
            );
        }
    }
    let ta = fs::metadata(qdir().join("out/ta").join(format!(
            "{}.ta",
            fs::read_to_string(root().join("proto/uuid.txt"))
                .unwrap_or_default()
                .trim()
        )))
    .map(|m| m.len())
    .unwrap_or(0);
    md += &format!(
        "\n## The TA\n\n- signed TA size: {ta} bytes\n- stack 64 KiB, heap 128 KiB (ta/build.rs)\n"
    );
    let path = root().join("docs/BENCHMARKS-qemu.md");
    // Keep the power-cut record (its own command writes it).
    if let Some(pc) = fs::read_to_string(&path)
        .ok()
        .and_then(|old| crate::powercut::record_section(&old))
    {
        md += "\n";
        md += &pc;
    }
    fs::write(&path, md).map_err(|e| e.to_string())?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn missing_reason(r: &HashMap<String, Step>, key: &str) -> String {
    if key.starts_with("pkcs11") {
        for s in [
            "p11-init-token",
            "p11-init-pin",
            "p11-keygen",
            "p11-encrypt",
            "p11-decrypt",
        ] {
            if let Some(st) = r.get(s) {
                if st.rc != 0 {
                    return format!("{s} failed: {}", st.err.replace('|', "/"));
                }
            }
        }
    }
    "no figure reported".into()
}
