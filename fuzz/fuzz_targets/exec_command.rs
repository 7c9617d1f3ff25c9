#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| filegate::fuzz::exec_command(data));
