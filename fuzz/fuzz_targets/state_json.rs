//! `state_json`: see carve_tests::fuzz_harness.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carve_tests::fuzz_harness::state_json(data));
