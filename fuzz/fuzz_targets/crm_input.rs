#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ccedge_fuzz::edge::check_crm_input(data));
