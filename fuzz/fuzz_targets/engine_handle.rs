//! The engine's dispatcher, as the TA's entry point sees it: any bytes in,
//! always a well-formed response out, never a panic. The input is a
//! sequence of requests, each a u16 LE length and its bytes, sent to a copy
//! of one initialised engine (`hakeys_engine::fuzzing::engine_handle_on`);
//! the seeds (`fuzz/seeds/engine_handle/`) reach every operation with real
//! blobs.
#![no_main]

use std::sync::OnceLock;

use hakeys_engine::fuzzing::{engine_handle_on, initialised_engine, CounterEntropy};
use hakeys_engine::{Engine, MemoryStorage};
use libfuzzer_sys::fuzz_target;

static ENGINE: OnceLock<Engine<MemoryStorage, CounterEntropy>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    engine_handle_on(ENGINE.get_or_init(initialised_engine), data);
});
