//! `acme` and `cert_cache_dir`: the ACME server, contact and challenges,
//! and where certificates are kept.

use std::path::PathBuf;

use serde_json::Value;

use super::walk::{Dir, Fields, Kept, R, array, index, object, set, show};
use crate::error::Fault;
use crate::model::*;

pub(crate) fn acme(v: &Value, dir: &Dir) -> R<Acme> {
    let map = object(v, "acme", "{\"email\": \"ops@example.com\"}")?;
    let mut acme = Acme::default();
    let Acme {
        directory,
        email: contact,
        ca_root,
        challenges: wanted,
    } = &mut acme;
    Fields::new(map, "acme")
        .key("directory", |v, _| set(directory, acme_directory(v)))
        .key("email", |v, _| set(contact, email(v)))
        .key("ca_root", |v, p| {
            set(ca_root, dir.file_path(v, p).map(Some))
        })
        .key("challenges", |v, _| set(wanted, challenges(v)))
        .read()?;
    Ok(acme)
}

/// `cert_cache_dir` or its alias `cert_cache_path` (the top level's kept
/// values).
pub(crate) fn cert_cache_dir(dir_key: Kept, path_key: Kept, dir: &Dir) -> R<Option<PathBuf>> {
    let (v, key) = match (dir_key, path_key) {
        (Some(_), Some((_, alias))) => {
            return Err(Fault::invalid(
                alias,
                "is an alias of cert_cache_dir; give only one of them",
            ));
        }
        (Some(given), None) | (None, Some(given)) => given,
        (None, None) => return Ok(None),
    };
    match v {
        // Go's zero value: the original treated "" as "not set".
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => Ok(Some(dir.resolve(s))),
        _ => Err(Fault::invalid(
            key,
            format!("expected a directory path, got {}", show(v)),
        )),
    }
}

fn acme_directory(v: &Value) -> R<String> {
    let ok = v.as_str().filter(|s| {
        let lower = s.to_ascii_lowercase();
        let rest = lower
            .strip_prefix("https://")
            .or_else(|| lower.strip_prefix("http://"));
        rest.is_some_and(|r| {
            !r.starts_with(['/', ':', '?', '#'])
                && !r.is_empty()
                && !r.contains(char::is_whitespace)
        })
    });
    match ok {
        Some(s) => Ok(s.to_owned()),
        None => Err(Fault::invalid(
            "acme.directory",
            format!(
                "expected an http(s) URL like \"{LETS_ENCRYPT_PRODUCTION}\", got {}",
                show(v)
            ),
        )),
    }
}

fn email(v: &Value) -> R<Option<String>> {
    let bad = || {
        Fault::invalid(
            "acme.email",
            format!(
                "expected an email address like \"ops@example.com\", got {}",
                show(v)
            ),
        )
    };
    let Value::String(s) = v else {
        return Err(bad());
    };
    let address = s.strip_prefix("mailto:").unwrap_or(s);
    if address.is_empty() {
        return Ok(None);
    }
    match address.split_once('@') {
        Some((user, domain))
            if !user.is_empty()
                && !domain.is_empty()
                && !domain.contains('@')
                && !address.contains(|c: char| c.is_whitespace() || c == ',') =>
        {
            Ok(Some(address.to_owned()))
        }
        _ => Err(bad()),
    }
}

fn challenges(v: &Value) -> R<Vec<Challenge>> {
    let items = array(
        v,
        "acme.challenges",
        "a list like [\"http-01\", \"tls-alpn-01\"]",
    )?;
    if items.is_empty() {
        return Err(Fault::invalid(
            "acme.challenges",
            "empty; list at least one of \"http-01\" and \"tls-alpn-01\"",
        ));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = index("acme.challenges", i);
        let challenge = match item.as_str() {
            Some("http-01") => Challenge::Http01,
            Some("tls-alpn-01") => Challenge::TlsAlpn01,
            _ => {
                return Err(Fault::invalid(
                    path,
                    format!(
                        "expected \"http-01\" or \"tls-alpn-01\" (dns-01 is not supported), got {}",
                        show(item)
                    ),
                ));
            }
        };
        if out.contains(&challenge) {
            return Err(Fault::invalid(
                path,
                format!("{} is listed twice", show(item)),
            ));
        }
        out.push(challenge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
