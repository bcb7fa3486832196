#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chainctl_fuzz::engine_rpc(data));
