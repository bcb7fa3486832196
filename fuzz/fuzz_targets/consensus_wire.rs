#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| chainctl_fuzz::consensus_wire(data));
