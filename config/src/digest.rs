//! The config's digest, which `/status` and a metric show so operators can
//! tell which replicas run the same policy. It is public, so it must not
//! let anyone test guesses of a secret offline: it is taken over the parsed
//! document with the secrets blanked (the password of `storage.redis.url`,
//! `admin.token`), not over the file's text. Replicas whose files differ
//! only in those secrets, or in layout, show the same digest.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::storage::redact;

/// What a blanked secret becomes.
const BLANK: &str = "***";

/// SHA-256 of `root` in compact JSON (keys in file order), secrets blanked.
pub(crate) fn of(root: &Value) -> [u8; 32] {
    let mut doc = root.clone();
    if let Some(url) = doc.pointer_mut("/storage/redis/url")
        && let Some(text) = url.as_str()
    {
        *url = Value::String(redact(text));
    }
    if let Some(token) = doc.pointer_mut("/admin/token") {
        *token = Value::String(BLANK.to_owned());
    }
    // Serialising a Value cannot fail (its keys are strings).
    let bytes = serde_json::to_vec(&doc).unwrap_or_default();
    Sha256::digest(&bytes).into()
}
