//! libFuzzer entry for `config_parse`; the harness is `bms_console_gateway::fuzzing::config_parse`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bms_console_gateway::fuzzing::config_parse(data));
