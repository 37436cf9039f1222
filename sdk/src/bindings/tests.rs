//! The checked-in bindings were generated from the WIT as it is now.

use sha2::{Digest, Sha256};
use std::path::Path;

/// Every file `sdk/bindings.sh` writes, relative to the workspace root.
const GENERATED: [&str; 8] = [
    "sdk/src/bindings/router.rs",
    "sdk/src/bindings/balancer.rs",
    "sdk/src/bindings/breaker.rs",
    "sdk/src/bindings/filter.rs",
    "sdk/src/bindings/v2/router.rs",
    "sdk/src/bindings/v2/balancer.rs",
    "sdk/src/bindings/v2/breaker.rs",
    "sdk/src/bindings/v2/filter.rs",
];

#[test]
fn match_the_wit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let sum = |file: &str| -> String {
        let wit = std::fs::read(root.join(file)).unwrap();
        Sha256::digest(&wit)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let expected = format!(
        "// From wit/plugin.wit sha256 {} and wit/v0.2/plugin.wit sha256 {} by sdk/bindings.sh; do not edit.",
        sum("wit/plugin.wit"),
        sum("wit/v0.2/plugin.wit")
    );
    for file in GENERATED {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(
            first, expected,
            "{file} was generated from another WIT: run sdk/bindings.sh"
        );
    }
}
