#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| kinesis_streaming::fuzzing::writer_lines(data));
