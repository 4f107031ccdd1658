//! libFuzzer entry for `signer_canonical`; the harness is `bms_console_gateway::fuzzing::signer_canonical`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| bms_console_gateway::fuzzing::signer_canonical(data));
