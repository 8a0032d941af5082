//! BuildKit's own parser cases: every positive Dockerfile must dump exactly as its `result`,
//! every negative one must be refused. The cases are read from the shared referee directory
//! at test time (never copied here); the test fails if they are missing.

use std::fs;
use std::path::{Path, PathBuf};

use strata_dockerfile::parse_ast;

fn referee_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/referees/buildkit-dockerfile-parser")
}

fn cases(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("referee cases missing at {}: {e}", dir.display()));
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("read_dir entry").path())
        .filter(|p| p.join("Dockerfile").is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn positive_cases_dump_like_buildkit() {
    let dirs = cases(&referee_dir().join("testfiles"));
    assert!(
        dirs.len() >= 30,
        "expected BuildKit's ~33 positive cases, found {}",
        dirs.len()
    );
    let mut failures = Vec::new();
    for dir in &dirs {
        let text = fs::read_to_string(dir.join("Dockerfile")).expect("read Dockerfile");
        let expected = fs::read_to_string(dir.join("result")).expect("read result");
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match parse_ast(&text) {
            Err(e) => failures.push(format!("{name}: refused: {e}")),
            Ok(ast) => {
                let got = ast.dump();
                let got: Vec<&str> = got.lines().map(str::trim_end).collect();
                let want: Vec<&str> = expected.lines().map(str::trim_end).collect();
                if got != want {
                    failures.push(format!(
                        "{name}:\n--- want\n{}\n--- got\n{}",
                        want.join("\n"),
                        got.join("\n")
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}

#[test]
fn negative_cases_are_refused() {
    let dirs = cases(&referee_dir().join("testfiles-negative"));
    assert!(!dirs.is_empty(), "no negative cases found");
    for dir in &dirs {
        let text = fs::read_to_string(dir.join("Dockerfile")).expect("read Dockerfile");
        let r = parse_ast(&text);
        assert!(r.is_err(), "{} was accepted: {:?}", dir.display(), r);
    }
}
