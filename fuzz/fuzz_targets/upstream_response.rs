//! libFuzzer entry for `upstream_response`; the harness is `bms_console_gateway::fuzzing::upstream_response`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bms_console_gateway::fuzzing::upstream_response(data));
