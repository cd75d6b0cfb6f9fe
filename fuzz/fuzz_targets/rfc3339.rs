#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ccedge_fuzz::text::check_rfc3339(data));
