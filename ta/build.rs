//! Generates the TA header (UUID, flags, stack and heap sizes) and the link
//! set-up from the dev kit in `TA_DEV_KIT_DIR`. The UUID is read from
//! `proto/uuid.txt`, the single source shared with the host.

use optee_utee_build::{Error, TaConfig};

/// TA_FLAG_SINGLE_INSTANCE | TA_FLAG_MULTI_SESSION | TA_FLAG_INSTANCE_KEEP_ALIVE
/// | TA_FLAG_INSTANCE_KEEP_CRASHED: one engine for every session, alive until
/// reboot so the boot-phase lock holds; and should it ever crash, it stays
/// dead until reboot instead of restarting with the lock cleared.
const TA_FLAGS: u32 = (1 << 2) | (1 << 3) | (1 << 4) | (1 << 13);
/// P-256 in software needs far more than the default 2 KiB of stack.
const STACK: u32 = 64 * 1024;
/// Heap (the engine itself allocates nothing on the request path).
const HEAP: u32 = 128 * 1024;

fn main() -> Result<(), Error> {
    println!("cargo:rerun-if-changed=../proto/uuid.txt");
    let uuid = std::fs::read_to_string("../proto/uuid.txt")?;
    let config = TaConfig::new_default_with_cargo_env(uuid.trim())?
        .ta_flags(TA_FLAGS)
        .ta_stack_size(STACK)
        .ta_data_size(HEAP);
    optee_utee_build::build(config)
}
