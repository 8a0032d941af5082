//! .dockerignore matching with Docker's rules.

use strata_dockerfile::Ignore;

#[test]
fn wildcards_and_exceptions() {
    let ig = Ignore::parse("# docs\n*.md\n!README.md\n\n");
    assert!(ig.excluded("CHANGES.md"));
    assert!(!ig.excluded("README.md"));
    assert!(!ig.excluded("docs/guide.md"), "* does not cross /");
    assert!(!ig.excluded("main.go"));
}

#[test]
fn double_star() {
    let ig = Ignore::parse("**/*.go\n");
    assert!(ig.excluded("main.go"));
    assert!(ig.excluded("a/b/c.go"));
    assert!(!ig.excluded("a/b/c.rs"));
    let ig = Ignore::parse("dir/**\n");
    assert!(ig.excluded("dir/x/y"));
    assert!(!ig.excluded("dir"));
}

#[test]
fn directories_and_absolute_patterns() {
    let ig = Ignore::parse("dir/\n/abs\n./rel/../other\n");
    assert!(ig.excluded("dir"));
    assert!(ig.excluded("dir/deep/file"));
    assert!(ig.excluded("abs"));
    assert!(ig.excluded("abs/x"));
    assert!(ig.excluded("other/x"));
    assert!(!ig.excluded("sub/abs"));
    assert!(!ig.excluded("directory"));
}

#[test]
fn exceptions_under_excluded_directories() {
    let ig = Ignore::parse("node_modules\n!node_modules/keep\n");
    assert!(ig.excluded("node_modules"));
    assert!(ig.excluded("node_modules/lib/x.js"));
    assert!(!ig.excluded("node_modules/keep"));
    assert!(!ig.excluded("node_modules/keep/file"));
    assert!(ig.may_include_below("node_modules"));
    assert!(!ig.may_include_below("other"));

    // The last matching pattern wins.
    let ig = Ignore::parse("**\n!src\nsrc/gen\n");
    assert!(ig.excluded("Makefile"));
    assert!(!ig.excluded("src/main.rs"));
    assert!(ig.excluded("src/gen/x.rs"));

    // Wildcard exceptions keep every directory they could reach walkable.
    let ig = Ignore::parse("vendor\n!vendor/**/*.go\n");
    assert!(ig.may_include_below("vendor"));
    assert!(ig.may_include_below("vendor/a/b"));
    assert!(!ig.excluded("vendor/a/b.go"));
    assert!(ig.excluded("vendor/a/b.c"));

    let ig = Ignore::parse("build\n");
    assert!(!ig.may_include_below("build"));
}

#[test]
fn escapes_classes_and_question_marks() {
    let ig = Ignore::parse("a\\*b\nfile?.txt\nx[0-9]\n");
    assert!(ig.excluded("a*b"));
    assert!(!ig.excluded("aXb"));
    assert!(ig.excluded("file1.txt"));
    assert!(!ig.excluded("file12.txt"));
    assert!(ig.excluded("x7"));
    assert!(!ig.excluded("xa"));
}
