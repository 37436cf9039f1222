//! `domains` and `default_domain`: each domain's backends, balancer and
//! certificate source, with its forwarding settings (`forwarding`) on top
//! of the top-level defaults; and what a domain's certificate needs from the
//! listeners and ACME.

use std::collections::HashMap;

use serde_json::Value;

use super::forwarding;
use super::plugins::{PLUGIN_KEYS, plugin_entry};
use super::walk::{Dir, R, check_keys, index, join, object, present, show};
use crate::address::{normalize_domain, parse_backend};
use crate::error::Fault;
use crate::model::*;

const DOMAIN_KEYS: &[&str] = &[
    "backends",
    "balancer",
    "tls",
    "timeouts",
    "limits",
    "retries",
    "health_check",
    "protocol",
    "pool",
    "backend_ca",
    "router",
    "breaker",
];
/// A domain's `"balancer"` object: a plugin entry's keys, `kind`, the
/// name the balancer sees (the string form's value), and the built-in
/// kinds' settings.
const DOMAIN_BALANCER_KEYS: &[&str] = &[
    "kind",
    "path",
    "config",
    "timeout",
    "memory_limit",
    "on_fault",
    "fault_backoff",
    "hash_on",
];
const BACKEND_KEYS: &[&str] = &["address", "weight"];
const TLS_KEYS: &[&str] = &["cert", "key"];

const MAX_WEIGHT: u64 = 1000;

/// A domain with the path of its key, kept for errors found after all
/// sections are read.
pub(crate) struct Placed {
    pub(crate) path: String,
    pub(crate) domain: Domain,
}

pub(crate) fn domains(v: Option<&Value>, dir: &Dir, defaults: &UpstreamSettings) -> R<Vec<Placed>> {
    const REQUIRED: &str = "at least one domain is required, e.g. \"domains\": {\"example.com\": [\"localhost:8080\"]}";
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Err(Fault::invalid("domains", REQUIRED));
    };
    let Value::Object(map) = v else {
        return Err(Fault::invalid(
            "domains",
            format!(
                "expected an object like {{\"example.com\": [\"localhost:8080\"]}}, got {}",
                show(v)
            ),
        ));
    };
    if map.is_empty() {
        return Err(Fault::invalid("domains", REQUIRED));
    }
    let mut placed: Vec<Placed> = Vec::with_capacity(map.len());
    let mut seen: HashMap<String, &str> = HashMap::new();
    for (key, value) in map {
        let path = join("domains", key);
        let name = normalize_domain(key)
            .map_err(|why| Fault::invalid(&path, format!("invalid domain name {key:?}: {why}")))?;
        if let Some(first) = seen.insert(name.clone(), key) {
            return Err(Fault::invalid(
                &path,
                format!("{key:?} is the same domain as {first:?}, listed earlier"),
            ));
        }
        let domain = domain(value, &path, name, dir, defaults)?;
        placed.push(Placed { path, domain });
    }
    Ok(placed)
}

fn domain(
    v: &Value,
    path: &str,
    name: String,
    dir: &Dir,
    defaults: &UpstreamSettings,
) -> R<Domain> {
    match v {
        Value::Array(_) => Ok(Domain {
            name,
            backends: backends(v, path)?,
            balancer: DEFAULT_BALANCER.to_owned(),
            hash_on: None,
            tls: None,
            upstream: defaults.clone(),
            backend_ca: None,
            plugins: DomainPlugins::default(),
        }),
        Value::Object(map) => {
            check_keys(map, path, DOMAIN_KEYS)?;
            let backends_path = join(path, "backends");
            let backends = match present(map, "backends") {
                Some(v) => backends(v, &backends_path)?,
                None => {
                    return Err(Fault::invalid(
                        backends_path,
                        "required: a list of backend addresses like [\"localhost:8080\"]",
                    ));
                }
            };
            let (balancer, hash_on, balancer_plugin) = match present(map, "balancer") {
                Some(v) => domain_balancer(v, &join(path, "balancer"), dir)?,
                None => (DEFAULT_BALANCER.to_owned(), None, None),
            };
            let plugins = DomainPlugins {
                router: domain_plugin(map, path, "router", dir)?,
                balancer: balancer_plugin,
                breaker: domain_plugin(map, path, "breaker", dir)?,
            };
            let tls = match present(map, "tls") {
                Some(v) => Some(tls(v, &join(path, "tls"), &name, dir)?),
                None => None,
            };
            let upstream = forwarding::domain(map, path, defaults)?;
            forwarding::check_protocol(upstream.protocol, &backends, path)?;
            let backend_ca = match present(map, "backend_ca") {
                Some(v) => Some(dir.file_path(v, &join(path, "backend_ca"))?),
                None => None,
            };
            Ok(Domain {
                name,
                backends,
                balancer,
                hash_on,
                tls,
                upstream,
                backend_ca,
                plugins,
            })
        }
        _ => Err(Fault::invalid(
            path,
            format!(
                "expected a list of backends like [\"localhost:8080\"] or an object like {{\"backends\": [...]}}, got {}",
                show(v)
            ),
        )),
    }
}

/// A domain's `"balancer"`: a name (`"least-request"`, or a custom
/// balancer's), `{"kind": name}` with the built-in kind's settings
/// (`hash_on`), or the domain's own plugin `{"path": "x.wasm", ...}`, which
/// sees `kind` (default round-robin) as the domain's balancer name, as does
/// its fail-open fallback (the built-in balancer, which also uses `hash_on`).
/// The name, what consistent-hash hashes, and the plugin, if any.
fn domain_balancer(
    v: &Value,
    path: &str,
    dir: &Dir,
) -> R<(String, Option<HashOn>, Option<PluginSpec>)> {
    let Value::Object(map) = v else {
        let name = balancer(v, path)?;
        let hash_on = (name == CONSISTENT_HASH).then_some(HashOn::ClientIp);
        return Ok((name, hash_on, None));
    };
    check_keys(map, path, DOMAIN_BALANCER_KEYS)?;
    let name = match present(map, "kind") {
        Some(v) => balancer(v, &join(path, "kind"))?,
        None => DEFAULT_BALANCER.to_owned(),
    };
    let hash_on = match (present(map, "hash_on"), name == CONSISTENT_HASH) {
        (Some(v), true) => Some(hash_on(v, &join(path, "hash_on"))?),
        (None, true) => Some(HashOn::ClientIp),
        (Some(_), false) => {
            return Err(Fault::invalid(
                join(path, "hash_on"),
                format!(
                    "applies to \"kind\": \"{CONSISTENT_HASH}\" only (this balancer is {name:?})"
                ),
            ));
        }
        (None, false) => None,
    };
    if present(map, "path").is_none() {
        if let Some(key) = map.keys().find(|k| *k != "kind" && *k != "hash_on") {
            return Err(Fault::invalid(
                join(path, key),
                "applies to the domain's own balancer plugin: add \"path\": \"balancer.wasm\", or remove it (without \"path\" the domain uses plugins.balancer)",
            ));
        }
        return Ok((name, hash_on, None));
    }
    Ok((name, hash_on, Some(plugin_entry(map, path, dir)?)))
}

/// `"hash_on"`: `client_ip`, `path`, `header:<name>`, `cookie:<name>` or
/// `query:<key>`.
fn hash_on(v: &Value, path: &str) -> R<HashOn> {
    use bbproxy_plugin_contract::balancers::{HASH_ON_FORMS, HashOnError};
    let unknown = || Fault::invalid(path, format!("expected {HASH_ON_FORMS}, got {}", show(v)));
    let Value::String(s) = v else {
        return Err(unknown());
    };
    HashOn::parse(s).map_err(|e| match e {
        HashOnError::Unknown => unknown(),
        named => Fault::invalid(path, named.to_string()),
    })
}

/// A domain balanced by plugins.balancer's built-in plugin must name a
/// built-in kind: any other name is a custom plugin's, which it would
/// refuse to load with (without the key path this error gives).
pub(crate) fn check_balancer_kinds(placed: &[Placed], plugins: &Plugins) -> R<()> {
    if plugins.balancer.source != PluginSource::Builtin {
        return Ok(());
    }
    for p in placed {
        let d = &p.domain;
        if d.plugins.balancer.is_some() || BUILTIN_BALANCERS.contains(&d.balancer.as_str()) {
            continue;
        }
        return Err(Fault::invalid(
            join(&p.path, "balancer"),
            format!(
                "unknown balancer {:?} (built-in: {}); a custom balancer's name needs a balancer plugin: plugins.balancer or {{\"path\": \"balancer.wasm\", \"kind\": ...}}",
                d.balancer,
                BUILTIN_BALANCERS.join(", ")
            ),
        ));
    }
    Ok(())
}

/// A domain's own `role` plugin: `{"path": "x.wasm", ...}` with the keys of
/// a `plugins.<role>` entry; absent, the domain uses `plugins.<role>`.
fn domain_plugin(
    domain: &serde_json::Map<String, Value>,
    domain_path: &str,
    role: &str,
    dir: &Dir,
) -> R<Option<PluginSpec>> {
    let Some(v) = present(domain, role) else {
        return Ok(None);
    };
    let path = join(domain_path, role);
    let map = object(v, &path, "{\"path\": \"plugin.wasm\", \"config\": {}}")?;
    check_keys(map, &path, PLUGIN_KEYS)?;
    if present(map, "path").is_none() {
        return Err(Fault::invalid(
            join(&path, "path"),
            format!(
                "required: the domain's own {role} plugin (.wasm); without \"{role}\" the domain uses plugins.{role}"
            ),
        ));
    }
    Ok(Some(plugin_entry(map, &path, dir)?))
}

fn tls(v: &Value, path: &str, domain: &str, dir: &Dir) -> R<TlsSource> {
    let source = match v {
        Value::String(s) if s == "acme" => TlsSource::Acme,
        Value::String(s) if s == "off" => TlsSource::Off,
        Value::Object(map) => {
            check_keys(map, path, TLS_KEYS)?;
            let file = |key: &str| {
                let key_path = join(path, key);
                match present(map, key) {
                    Some(v) => dir.file_path(v, &key_path),
                    None => Err(Fault::invalid(key_path, "required: the path of a PEM file")),
                }
            };
            TlsSource::Files {
                cert: file("cert")?,
                key: file("key")?,
            }
        }
        _ => {
            return Err(Fault::invalid(
                path,
                format!(
                    "expected \"acme\", \"off\" or {{\"cert\": \"cert.pem\", \"key\": \"key.pem\"}}, got {}",
                    show(v)
                ),
            ));
        }
    };
    if source == TlsSource::Acme && domain.starts_with("*.") {
        return Err(Fault::invalid(
            path,
            "ACME cannot issue a wildcard certificate here (that needs the DNS-01 challenge, which is not supported); use {\"cert\": ..., \"key\": ...} or \"off\"",
        ));
    }
    Ok(source)
}

pub(crate) fn default_domain(v: &Value, placed: &[Placed]) -> R<String> {
    let Value::String(raw) = v else {
        return Err(Fault::invalid(
            "default_domain",
            format!("expected one of the keys of domains, got {}", show(v)),
        ));
    };
    let name = normalize_domain(raw).map_err(|why| {
        Fault::invalid(
            "default_domain",
            format!("invalid domain name {raw:?}: {why}"),
        )
    })?;
    if placed.iter().any(|p| p.domain.name == name) {
        return Ok(name);
    }
    let known: Vec<&str> = placed.iter().map(|p| p.domain.name.as_str()).collect();
    Err(Fault::invalid(
        "default_domain",
        format!(
            "{raw:?} is not a key of domains (they are: {})",
            known.join(", ")
        ),
    ))
}

fn backends(v: &Value, path: &str) -> R<Vec<Backend>> {
    let Value::Array(items) = v else {
        return Err(Fault::invalid(
            path,
            format!(
                "expected a list of backend addresses like [\"localhost:8080\"], got {}",
                show(v)
            ),
        ));
    };
    if items.is_empty() {
        return Err(Fault::invalid(
            path,
            "empty backend list; list at least one backend, like [\"localhost:8080\"]",
        ));
    }
    let mut out: Vec<Backend> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let item_path = index(path, i);
        let backend = backend(item, &item_path)?;
        if let Some(j) = out.iter().position(|b| {
            b.scheme == backend.scheme && b.host == backend.host && b.port == backend.port
        }) {
            return Err(Fault::invalid(
                item_path,
                format!(
                    "duplicate backend {} (already listed as {}); to send it more traffic, give it a weight",
                    backend.url_base(),
                    index(path, j)
                ),
            ));
        }
        out.push(backend);
    }
    Ok(out)
}

fn backend(v: &Value, path: &str) -> R<Backend> {
    let (address, address_path, weight) = match v {
        Value::String(s) => (s.as_str(), path.to_owned(), 1),
        Value::Object(map) => {
            check_keys(map, path, BACKEND_KEYS)?;
            let address_path = join(path, "address");
            let address = match present(map, "address") {
                Some(Value::String(s)) => s.as_str(),
                Some(other) => {
                    return Err(Fault::invalid(
                        address_path,
                        format!(
                            "expected an address like \"localhost:8080\", got {}",
                            show(other)
                        ),
                    ));
                }
                None => {
                    return Err(Fault::invalid(
                        address_path,
                        "required: an address like \"localhost:8080\"",
                    ));
                }
            };
            let weight = match present(map, "weight") {
                Some(w) => weight(w, &join(path, "weight"))?,
                None => 1,
            };
            (address, address_path, weight)
        }
        _ => {
            return Err(Fault::invalid(
                path,
                format!(
                    "expected an address like \"localhost:8080\" or {{\"address\": \"localhost:8080\", \"weight\": 2}}, got {}",
                    show(v)
                ),
            ));
        }
    };
    let parsed = parse_backend(address).map_err(|why| {
        Fault::invalid(address_path, format!("invalid address {address:?}: {why}"))
    })?;
    Ok(Backend {
        scheme: parsed.scheme,
        host: parsed.host,
        port: parsed.port,
        weight,
    })
}

fn weight(v: &Value, path: &str) -> R<u32> {
    v.as_u64()
        .filter(|w| (1..=MAX_WEIGHT).contains(w))
        .and_then(|w| u32::try_from(w).ok())
        .ok_or_else(|| {
            Fault::invalid(
                path,
                format!(
                    "weight must be a whole number from 1 to {MAX_WEIGHT}, got {}",
                    show(v)
                ),
            )
        })
}

fn balancer(v: &Value, path: &str) -> R<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
        _ => Err(Fault::invalid(
            path,
            format!(
                "expected a balancer name: {} or a custom balancer's name, got {}",
                BUILTIN_BALANCERS.map(|b| format!("\"{b}\"")).join(", "),
                show(v)
            ),
        )),
    }
}

/// Certificates are only useful with an HTTPS listener, and ACME can only
/// validate through a listener that one of its challenges uses.
pub(crate) fn check_tls_needs(placed: &[Placed], listen: &Listen, acme: &Acme) -> R<()> {
    for p in placed {
        let Some(tls) = &p.domain.tls else { continue };
        if *tls == TlsSource::Off {
            continue;
        }
        let path = join(&p.path, "tls");
        if listen.https.is_none() {
            return Err(Fault::invalid(
                path,
                "a certificate needs an HTTPS listener; set listen.https or use \"off\"",
            ));
        }
        let http01 = acme.challenges.contains(&Challenge::Http01) && listen.http.is_some();
        let alpn = acme.challenges.contains(&Challenge::TlsAlpn01);
        if *tls == TlsSource::Acme && !http01 && !alpn {
            return Err(Fault::invalid(
                path,
                "ACME has no usable challenge: http-01 needs listen.http; add it or allow \"tls-alpn-01\" in acme.challenges",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
