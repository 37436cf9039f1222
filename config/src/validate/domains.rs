//! `domains` and `default_domain`: each domain's backends, balancer and
//! certificate source, with its forwarding settings (`forwarding`) on top
//! of the top-level defaults; and what a domain's certificate needs from the
//! listeners and ACME.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::entry::Entry;
use super::walk::{Dir, Fields, Kept, R, array, index, join, keep, object, set, show};
use super::{filters, forwarding, routes};
use crate::address::{normalize_domain, parse_backend};
use crate::error::Fault;
use crate::model::*;
use bbproxy_plugin_contract::balancers::is_cookie_name;

const MAX_WEIGHT: u64 = 1000;

/// A domain (or a pool) with the path of its key, kept for errors found
/// after all sections are read, and its `routes` as read, resolved once
/// every upstream is known.
pub(crate) struct Placed<'a> {
    pub(crate) path: String,
    pub(crate) domain: Domain,
    pub(crate) routes: Vec<routes::Pending<'a>>,
}

/// What a forwarding object configures: a domain (a host, its certificate
/// and router, its routes) or a pool of `upstreams` (backends only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Domain,
    Pool,
}

pub(crate) fn domains<'a>(
    v: Option<&'a Value>,
    dir: &Dir,
    defaults: &UpstreamSettings,
) -> R<Vec<Placed<'a>>> {
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
        placed.push(domain(value, path, name, dir, defaults, Kind::Domain)?);
    }
    Ok(placed)
}

/// A domain's (or a pool's) value: the original list of backends, or an
/// object.
pub(crate) fn domain<'a>(
    v: &'a Value,
    path: String,
    name: String,
    dir: &Dir,
    defaults: &UpstreamSettings,
    kind: Kind,
) -> R<Placed<'a>> {
    match v {
        Value::Array(_) => Ok(Placed {
            domain: Domain {
                name,
                backends: backends(v, &path)?,
                balancer: DEFAULT_BALANCER.to_owned(),
                hash_on: None,
                sticky_cookie: None,
                tls: None,
                upstream: defaults.clone(),
                backend_ca: None,
                plugins: DomainPlugins::default(),
                routes: Vec::new(),
                filters: Vec::new(),
            },
            path,
            routes: Vec::new(),
        }),
        Value::Object(map) => object_domain(map, path, name, dir, defaults, kind),
        _ => Err(Fault::invalid(
            path,
            format!(
                "expected a list of backends like [\"localhost:8080\"] or an object like {{\"backends\": [...]}}, got {}",
                show(v)
            ),
        )),
    }
}

/// A domain's (or a pool's) object. A pool takes the forwarding keys; the
/// keys about a host (`tls`, `router`, `routes`) are named as domain-only.
fn object_domain<'a>(
    map: &'a Map<String, Value>,
    path: String,
    name: String,
    dir: &Dir,
    defaults: &UpstreamSettings,
    kind: Kind,
) -> R<Placed<'a>> {
    let (mut backends_given, mut routes_given): (Kept, Kept) = (None, None);
    let (mut balancing, mut plugins) = (None::<Balancing>, DomainPlugins::default());
    let (mut tls_given, mut backend_ca, mut chain) = (None, None, Vec::new());
    let mut upstream = defaults.clone();
    let host_only = |p: &str| match kind {
        Kind::Domain => Ok(()),
        Kind::Pool => Err(Fault::invalid(
            p,
            "a pool of \"upstreams\" has no host: tls, router, routes and filters are keys of a domain",
        )),
    };
    let fields = Fields::new(map, &path)
        .key("backends", keep(&mut backends_given))
        .key("balancer", |v, p| {
            let mut read = domain_balancer(v, p, dir)?;
            plugins.balancer = read.plugin.take();
            balancing = Some(read);
            Ok(())
        })
        .key("tls", |v, p| {
            host_only(p)?;
            set(&mut tls_given, tls(v, p, &name, dir).map(Some))
        });
    forwarding::domain_keys(fields, &mut upstream)
        .key("backend_ca", |v, p| {
            set(&mut backend_ca, dir.file_path(v, p).map(Some))
        })
        .key("router", |v, p| {
            host_only(p)?;
            set(&mut plugins.router, domain_plugin(v, p, "router", dir))
        })
        .key("breaker", |v, p| {
            set(&mut plugins.breaker, domain_plugin(v, p, "breaker", dir))
        })
        .key("routes", |v, p| {
            host_only(p)?;
            set(&mut routes_given, Ok(Some((v, p.to_owned()))))
        })
        .key("filters", |v, p| {
            host_only(p)?;
            set(&mut chain, filters::filters(v, p, dir))
        })
        .read()?;
    let (routes, backends) = routes_and_backends(routes_given, backends_given, &path, dir)?;
    forwarding::check_protocol(upstream.protocol, &backends, &path)?;
    let (balancer, hash_on, sticky_cookie) = match balancing {
        Some(b) => (b.name, b.hash_on, b.sticky_cookie),
        None => (DEFAULT_BALANCER.to_owned(), None, None),
    };
    Ok(Placed {
        domain: Domain {
            name,
            backends,
            balancer,
            hash_on,
            sticky_cookie,
            tls: tls_given,
            upstream,
            backend_ca,
            plugins,
            routes: Vec::new(),
            filters: chain,
        },
        path,
        routes,
    })
}

/// A domain's routes and backends, read once its other keys are: a domain
/// with routes may leave `backends` out, one without must give them.
fn routes_and_backends<'a>(
    routes_given: Kept<'a>,
    backends_given: Kept<'_>,
    path: &str,
    dir: &Dir,
) -> R<(Vec<routes::Pending<'a>>, Vec<Backend>)> {
    let routes = match &routes_given {
        Some((v, p)) => routes::routes(v, p, dir)?,
        None => Vec::new(),
    };
    let backends = match backends_given {
        Some((v, backends_path)) => backends(v, &backends_path)?,
        // Every request then goes through a route (or gets 404).
        None if !routes.is_empty() => Vec::new(),
        None => {
            return Err(Fault::invalid(
                join(path, "backends"),
                "required: a list of backend addresses like [\"localhost:8080\"]",
            ));
        }
    };
    Ok((routes, backends))
}

/// A domain's `"balancer"`, as read: its name, the built-in kind's settings
/// and the domain's own plugin, if any.
struct Balancing {
    name: String,
    hash_on: Option<HashOn>,
    sticky_cookie: Option<String>,
    plugin: Option<PluginSpec>,
}

/// A domain's `"balancer"`: a name (`"least-request"`, or a custom
/// balancer's), `{"kind": name}` with the built-in kind's settings
/// (`hash_on`, `cookie`), or the domain's own plugin `{"path": "x.wasm",
/// ...}`, which sees `kind` (default round-robin) as the domain's balancer
/// name, as does its fail-open fallback (the built-in balancer, which also
/// uses `hash_on` and `cookie`).
fn domain_balancer(v: &Value, path: &str, dir: &Dir) -> R<Balancing> {
    let Value::Object(map) = v else {
        let name = balancer(v, path)?;
        if name == STICKY_COOKIE {
            return Err(Fault::invalid(
                path,
                format!(
                    "{STICKY_COOKIE:?} needs the name of its cookie: {{\"kind\": \"{STICKY_COOKIE}\", \"cookie\": \"bb_srv\"}}"
                ),
            ));
        }
        let hash_on = (name == CONSISTENT_HASH).then_some(HashOn::ClientIp);
        return Ok(Balancing {
            name,
            hash_on,
            sticky_cookie: None,
            plugin: None,
        });
    };
    let mut name = DEFAULT_BALANCER.to_owned();
    let (mut entry, mut hash_given, mut cookie_given): (Entry, Kept, Kept) =
        (Entry::default(), None, None);
    let fields = Fields::new(map, path).key("kind", |v, p| set(&mut name, balancer(v, p)));
    entry
        .keys(fields, dir)
        .key("hash_on", keep(&mut hash_given))
        .key("cookie", keep(&mut cookie_given))
        .read()?;
    let only_for = |kind: &str, p: &str| {
        Fault::invalid(
            p,
            format!("applies to \"kind\": \"{kind}\" only (this balancer is {name:?})"),
        )
    };
    let hash_on = match (hash_given, name == CONSISTENT_HASH) {
        (Some((v, p)), true) => Some(hash_on(v, &p)?),
        (None, true) => Some(HashOn::ClientIp),
        (Some((_, p)), false) => return Err(only_for(CONSISTENT_HASH, &p)),
        (None, false) => None,
    };
    let sticky_cookie = match (cookie_given, name == STICKY_COOKIE) {
        (Some((v, p)), true) => Some(cookie_name(v, &p)?),
        (None, true) => {
            return Err(Fault::invalid(
                join(path, "cookie"),
                format!(
                    "required with \"kind\": \"{STICKY_COOKIE}\": the name of the cookie that keeps a client on its backend, like \"bb_srv\""
                ),
            ));
        }
        (Some((_, p)), false) => return Err(only_for(STICKY_COOKIE, &p)),
        (None, false) => None,
    };
    let plugin = if entry.has_path() {
        Some(entry.spec())
    } else {
        if let Some(setting) = entry.first_setting() {
            return Err(Fault::invalid(
                setting,
                "applies to the domain's own balancer plugin: add \"path\": \"balancer.wasm\", or remove it (without \"path\" the domain uses plugins.balancer)",
            ));
        }
        None
    };
    Ok(Balancing {
        name,
        hash_on,
        sticky_cookie,
        plugin,
    })
}

/// `"cookie"`: a cookie name (an RFC 6265 `cookie-name`: a token, so no
/// `=`, `;`, spaces or quotes, which would break the `Set-Cookie` header).
fn cookie_name(v: &Value, path: &str) -> R<String> {
    match v {
        Value::String(s) if is_cookie_name(s) => Ok(s.clone()),
        Value::String(s) => Err(Fault::invalid(
            path,
            format!(
                "{s:?} is not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~ only, like \"bb_srv\")"
            ),
        )),
        _ => Err(Fault::invalid(
            path,
            format!("expected a cookie name like \"bb_srv\", got {}", show(v)),
        )),
    }
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
pub(crate) fn check_balancer_kinds(placed: &[Placed<'_>], plugins: &Plugins) -> R<()> {
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
fn domain_plugin(v: &Value, path: &str, role: &str, dir: &Dir) -> R<Option<PluginSpec>> {
    let map = object(v, path, "{\"path\": \"plugin.wasm\", \"config\": {}}")?;
    let mut entry = Entry::default();
    entry.keys(Fields::new(map, path), dir).read()?;
    if !entry.has_path() {
        return Err(Fault::invalid(
            join(path, "path"),
            format!(
                "required: the domain's own {role} plugin (.wasm); without \"{role}\" the domain uses plugins.{role}"
            ),
        ));
    }
    Ok(Some(entry.spec()))
}

fn tls(v: &Value, path: &str, domain: &str, dir: &Dir) -> R<TlsSource> {
    let source = match v {
        Value::String(s) if s == "acme" => TlsSource::Acme,
        Value::String(s) if s == "off" => TlsSource::Off,
        Value::Object(map) => {
            let (mut cert, mut key) = (None, None);
            Fields::new(map, path)
                .key("cert", |v, p| set(&mut cert, dir.file_path(v, p).map(Some)))
                .key("key", |v, p| set(&mut key, dir.file_path(v, p).map(Some)))
                .read()?;
            let required =
                |key: &str| Fault::invalid(join(path, key), "required: the path of a PEM file");
            TlsSource::Files {
                cert: cert.ok_or_else(|| required("cert"))?,
                key: key.ok_or_else(|| required("key"))?,
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

pub(crate) fn default_domain(v: &Value, placed: &[Placed<'_>]) -> R<String> {
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
    let items = array(
        v,
        path,
        "a list of backend addresses like [\"localhost:8080\"]",
    )?;
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
            let (mut address, mut given_weight) = (None, 1);
            Fields::new(map, path)
                .key("address", |v, p| match v {
                    Value::String(s) => set(&mut address, Ok(Some((s.as_str(), p.to_owned())))),
                    other => Err(Fault::invalid(
                        p,
                        format!(
                            "expected an address like \"localhost:8080\", got {}",
                            show(other)
                        ),
                    )),
                })
                .key("weight", |v, p| set(&mut given_weight, weight(v, p)))
                .read()?;
            let Some((address, address_path)) = address else {
                return Err(Fault::invalid(
                    join(path, "address"),
                    "required: an address like \"localhost:8080\"",
                ));
            };
            (address, address_path, given_weight)
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
pub(crate) fn check_tls_needs(placed: &[Placed<'_>], listen: &Listen, acme: &Acme) -> R<()> {
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
