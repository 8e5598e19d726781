#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kinesis_streaming::fuzzing::get_records_answer(data));
