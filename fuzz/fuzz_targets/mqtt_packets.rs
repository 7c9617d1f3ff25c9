#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| filegate::fuzz::mqtt_packets(data));
