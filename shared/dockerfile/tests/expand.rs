//! Variable expansion as BuildKit's shell lexer does it.

use strata_dockerfile::{Error, expand, expand_words};

fn env(k: &str) -> Option<String> {
    match k {
        "HOME" => Some("/root".into()),
        "SPACE" => Some("a  b".into()),
        "EMPTY" => Some(String::new()),
        "FILE" => Some("dir/archive.tar.gz".into()),
        _ => None,
    }
}

fn x(w: &str) -> Result<String, Error> {
    expand(w, '\\', &env)
}

fn ok(w: &str) -> String {
    x(w).unwrap_or_else(|e| panic!("{w:?}: {e}"))
}

#[test]
fn plain_and_braced_variables() {
    assert_eq!(ok("$HOME/x"), "/root/x");
    assert_eq!(ok("${HOME}x"), "/rootx");
    assert_eq!(ok("$UNSET-x"), "-x");
    assert_eq!(ok("a$"), "a$");
    assert_eq!(ok("$.x"), "$.x");
    assert_eq!(ok("he$1x"), "hex");
}

#[test]
fn quotes() {
    assert_eq!(ok("'$HOME'"), "$HOME");
    assert_eq!(ok("\"$HOME\""), "/root");
    assert_eq!(ok("he'll'o"), "hello");
    assert_eq!(ok("\"hel'lo\""), "hel'lo");
    assert_eq!(ok("'a\\tb'"), "a\\tb");
    assert_eq!(ok("\"a\\tb\""), "a\\tb");
    assert_eq!(ok("\"a\\\"b\""), "a\"b");
    assert!(x("he'llo").is_err());
    assert!(x("\"hello").is_err());
}

#[test]
fn escapes() {
    assert_eq!(ok("\\$HOME"), "$HOME");
    assert_eq!(ok("\\\\$HOME"), "\\/root");
    assert_eq!(ok("a\\tb"), "atb");
    assert_eq!(ok("hello\\"), "hello");
    assert_eq!(ok("\"\\$HOME\""), "$HOME");
}

#[test]
fn backtick_escape() {
    let bt = |w: &str| expand(w, '`', &env);
    assert_eq!(bt("`$HOME").ok().as_deref(), Some("$HOME"));
    assert_eq!(bt("C:\\dir\\$HOME").ok().as_deref(), Some("C:\\dir\\/root"));
    assert_eq!(bt("\"a`\"b\"").ok().as_deref(), Some("a\"b"));
}

#[test]
fn defaults_and_alternatives() {
    assert_eq!(ok("${UNSET:-dflt}"), "dflt");
    assert_eq!(ok("${EMPTY:-dflt}"), "dflt");
    assert_eq!(ok("${EMPTY-dflt}"), "");
    assert_eq!(ok("${UNSET-dflt}"), "dflt");
    assert_eq!(ok("${HOME:-dflt}"), "/root");
    assert_eq!(ok("${HOME:+alt}"), "alt");
    assert_eq!(ok("${EMPTY:+alt}"), "");
    assert_eq!(ok("${EMPTY+alt}"), "alt");
    assert_eq!(ok("${UNSET+alt}"), "");
    assert_eq!(ok("${UNSET:-$HOME/x}"), "/root/x");
    assert_eq!(ok("${UNSET:-'q w'}"), "q w");
}

#[test]
fn required_variables() {
    assert_eq!(ok("${HOME:?}"), "/root");
    let e = x("${UNSET:?must be set}")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("UNSET: must be set"), "{e}");
    assert!(x("${EMPTY:?}").is_err());
    assert_eq!(ok("${EMPTY?}"), "");
    assert!(x("${UNSET?}").is_err());
}

#[test]
fn patterns() {
    assert_eq!(ok("${FILE#*/}"), "archive.tar.gz");
    assert_eq!(ok("${FILE##*.}"), "gz");
    assert_eq!(ok("${FILE%.*}"), "dir/archive.tar");
    assert_eq!(ok("${FILE%%.*}"), "dir/archive");
    assert_eq!(ok("${FILE/a/X}"), "dir/Xrchive.tar.gz");
    assert_eq!(ok("${FILE//a/X}"), "dir/Xrchive.tXr.gz");
}

#[test]
fn bad_substitutions() {
    for w in ["${}", "${:x}", "${HOME", "${HOME:=x}", "${HOME x}"] {
        assert!(x(w).is_err(), "{w:?} accepted");
    }
}

#[test]
fn words() {
    let w = |t: &str| expand_words(t, '\\', &env).unwrap_or_else(|e| panic!("{t:?}: {e}"));
    assert_eq!(w("a b  c"), vec!["a", "b", "c"]);
    assert_eq!(w("\"a b\" c"), vec!["a b", "c"]);
    assert_eq!(w("a\\ b"), vec!["a b"]);
    assert_eq!(w("x$SPACE"), vec!["xa", "b"]);
    assert_eq!(w("\"x$SPACE\""), vec!["xa  b"]);
    assert_eq!(w("80/tcp ${UNSET:-443}"), vec!["80/tcp", "443"]);
    assert!(w("").is_empty());
}
