#![no_main]

libfuzzer_sys::fuzz_target!(|script: ccedge_fuzz::call::Script| ccedge_fuzz::call::check(&script));
