#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| epic_fuzz::core::resources_plan(data));
