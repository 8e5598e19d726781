#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kinesis_streaming::fuzzing::kpl_record(data));
