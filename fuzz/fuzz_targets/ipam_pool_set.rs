#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| epic_fuzz::ipam::ipam_pool_set(data));
