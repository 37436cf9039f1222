//! How the collector's endpoint is split into address and port.

use super::split_authority;

#[test]
fn authorities_split_into_address_and_port() {
    assert_eq!(split_authority("127.0.0.1:8080"), ("127.0.0.1", Some(8080)));
    assert_eq!(split_authority("[::1]:443"), ("::1", Some(443)));
    assert_eq!(split_authority("backend"), ("backend", None));
}
