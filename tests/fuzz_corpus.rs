//! The fuzz targets on stable: every harness in `bms_console_gateway::fuzzing` runs over every
//! committed seed (`fuzz/corpus/<target>/`) and every input a fuzzing run once crashed on
//! (`fuzz/regressions/<target>/`), so CI keeps what fuzzing found fixed without nightly or
//! libFuzzer. A failure names the file; `./scripts/fuzz` runs the real fuzzer.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use bms_console_gateway::error::AuthFailure;
use bms_console_gateway::fuzzing::{self, Harness, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The input files under `dir` (none when it does not exist), dotfiles such as `.gitkeep`
/// left out.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    files.sort();
    files
}

fn harness(target: &str) -> Harness {
    TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|(_, run)| *run)
        .unwrap_or_else(|| panic!("no harness named {target}"))
}

/// Runs `target`'s harness on each of its seeds and regressions; returns how many ran.
fn replay(target: &str) -> usize {
    let run = harness(target);
    let seeds = inputs(&fuzz_dir().join("corpus").join(target));
    assert!(
        seeds.len() >= 5,
        "fuzz/corpus/{target} holds {} seeds",
        seeds.len()
    );
    let regressions = inputs(&fuzz_dir().join("regressions").join(target));
    let mut failed = Vec::new();
    for file in seeds.iter().chain(&regressions) {
        let data = std::fs::read(file).expect("readable input");
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(failed.is_empty(), "{target} panicked on: {failed:?}");
    seeds.len() + regressions.len()
}

#[test]
fn every_target_has_a_libfuzzer_entry_and_a_corpus() {
    for (target, _) in TARGETS {
        let entry = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        let text = std::fs::read_to_string(&entry).expect("fuzz target file");
        assert!(
            text.contains(&format!("fuzzing::{target}(data)")),
            "{} calls the shared harness",
            entry.display()
        );
        assert!(fuzz_dir().join("corpus").join(target).is_dir());
    }
    let entries = inputs(&fuzz_dir().join("fuzz_targets"));
    assert_eq!(entries.len(), TARGETS.len(), "a target without a harness");
}

#[test]
fn request_parse_corpus_and_regressions() {
    replay("request_parse");
}

#[test]
fn jwt_verify_corpus_and_regressions() {
    replay("jwt_verify");
}

#[test]
fn upstream_response_corpus_and_regressions() {
    replay("upstream_response");
}

#[test]
fn config_parse_corpus_and_regressions() {
    replay("config_parse");
}

#[test]
fn signer_canonical_corpus_and_regressions() {
    replay("signer_canonical");
}

/// The JWT harness reaches acceptance, not only refusal: a token it signs for the dev issuer
/// verifies on its fixed clock, and the same token with one signature character changed does
/// not. Catches a harness whose keys, issuer or clock drifted so that every input is refused
/// before claim validation.
#[test]
fn the_jwt_harness_accepts_a_token_it_signed_and_refuses_a_tampered_one() {
    let header = br#"{"alg":"ES256","kid":"bmsgw-dev-only-es256","typ":"JWT"}"#;
    let claims = format!(
        r#"{{"iss":"https://idp.dev.bms-console-gateway.invalid","aud":"bms-console-gateway","sub":"alice","iat":{},"exp":{}}}"#,
        fuzzing::FUZZ_NOW - 60,
        fuzzing::FUZZ_NOW + 600
    );
    let token = fuzzing::signed_token(header, claims.as_bytes());
    assert_eq!(fuzzing::jwt_subject(&token), Ok("alice".to_string()));
    let signature_start = token.rfind('.').unwrap() + 1;
    let mut tampered = token.clone().into_bytes();
    tampered[signature_start] = if tampered[signature_start] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_eq!(
        fuzzing::jwt_subject(&tampered),
        Err(AuthFailure::BadSignature)
    );
}
