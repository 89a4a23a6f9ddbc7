//! Replays the `plan` fuzz target's corpus (`fuzz/corpus/plan/`, see `docs/fuzz.md`) and a few
//! thousand fixed-seed random inputs through the target's body, with this profile's overflow
//! checks: every plan returns, every rejection is typed, every accepted launch is in bounds.

#[path = "../../../fuzz/body.rs"]
mod body;

use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/plan")
}

#[test]
fn the_fuzz_corpus_replays() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("fuzz/corpus/plan exists")
        .map(|e| e.expect("a corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus is empty");
    for path in &files {
        let data = std::fs::read(path).expect("a readable corpus file");
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if let Err(e) = std::panic::catch_unwind(|| body::run(&data)) {
            eprintln!("corpus input {name} failed");
            std::panic::resume_unwind(e);
        }
    }
}

#[test]
fn random_inputs_plan_or_fail_typed() {
    // xorshift64*: fixed seed, so a failure reproduces.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for case in 0..4000 {
        let len = (next() % 256) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        if std::panic::catch_unwind(|| body::run(&data)).is_err() {
            panic!("random input {case} failed: {data:02x?}");
        }
    }
}
