//! `cargo fuzz run plan`: the pure plan functions of every call on arbitrary inputs.
#![no_main]

#[path = "../body.rs"]
mod body;

libfuzzer_sys::fuzz_target!(|data: &[u8]| body::run(data));
