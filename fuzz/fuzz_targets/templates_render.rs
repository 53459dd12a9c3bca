#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| epic_fuzz::templates::templates_render(data));
