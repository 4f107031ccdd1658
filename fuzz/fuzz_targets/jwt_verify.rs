//! libFuzzer entry for `jwt_verify`; the harness is `bms_console_gateway::fuzzing::jwt_verify`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bms_console_gateway::fuzzing::jwt_verify(data));
