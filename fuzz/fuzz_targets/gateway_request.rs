#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chainctl_fuzz::gateway_request(data));
