//! libFuzzer entry for `request_parse`; the harness is `bms_console_gateway::fuzzing::request_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bms_console_gateway::fuzzing::request_parse(data));
