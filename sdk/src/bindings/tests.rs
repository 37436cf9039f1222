//! The checked-in bindings were generated from the WIT as it is now.

use sha2::{Digest, Sha256};
use std::path::Path;

/// Every file `sdk/bindings.sh` writes, relative to the workspace root.
const GENERATED: [&str; 4] = [
    "sdk/src/bindings/router.rs",
    "sdk/src/bindings/balancer.rs",
    "sdk/src/bindings/breaker.rs",
    "sdk/src/bindings/filter.rs",
];

#[test]
fn match_the_wit() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wit = std::fs::read(root.join("wit/plugin.wit")).unwrap();
    let sum: String = Sha256::digest(&wit)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let expected = format!("// From wit/plugin.wit sha256 {sum} by sdk/bindings.sh; do not edit.");
    for file in GENERATED {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(
            first, expected,
            "{file} was generated from another wit/plugin.wit: run sdk/bindings.sh"
        );
    }
}
