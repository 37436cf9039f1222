//! 64-bit FNV-1a, the one non-cryptographic hash of the built-in plugins:
//! stable across builds and platforms (the balancer's consistent-hash keys
//! of a generation must land where they did in the last one), and cheap
//! on the few bytes of a key or a path segment.

/// FNV-1a's starting state.
pub const FNV1A_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// FNV-1a's state `h` after also hashing `bytes` (for [`std::hash::Hasher`]
/// implementations that receive a key in pieces).
pub fn fnv1a_extend(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// FNV-1a of `bytes`.
///
/// ```
/// use bbproxy_plugin_contract::hash::fnv1a;
/// assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
/// assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
/// ```
pub fn fnv1a(bytes: &[u8]) -> u64 {
    fnv1a_extend(FNV1A_OFFSET, bytes)
}
