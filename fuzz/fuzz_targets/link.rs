//! `link`: see carve_tests::fuzz_harness.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| carve_tests::fuzz_harness::link(data));
