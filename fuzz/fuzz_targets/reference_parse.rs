//! Image references: parsing never panics, and what it accepts is normalized: printing and
//! parsing again gives the same reference.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_registry::Reference;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(r) = Reference::parse(input) else {
        return;
    };
    let text = r.to_string();
    let again = Reference::parse(&text)
        .unwrap_or_else(|e| panic!("{input:?} parsed, but its form {text:?} does not: {e}"));
    assert_eq!(again, r, "{input:?} → {text:?}");
    let _ = (
        r.registry(),
        r.api_host(),
        r.repository(),
        r.tag(),
        r.digest(),
        r.name(),
        r.manifest_reference(),
        r.pull_scope(),
        r.is_loopback(),
    );
    if let Ok(tagged) = r.with_tag("v1.2") {
        assert_eq!(Reference::parse(&tagged.to_string()).ok(), Some(tagged));
    }
});
