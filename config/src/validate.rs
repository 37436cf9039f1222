//! Walks the parsed JSON into a [`Config`]. Walking `serde_json::Value` by
//! hand, rather than deriving, lets every error carry the full key path, the
//! offending value and the accepted forms, and lets one key take the several
//! shapes the format allows (`"builtin"` or an object, a list or an object).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::address::{normalize_domain, parse_backend, parse_listen};
use crate::duration::parse_duration;
use crate::error::Fault;
use crate::forwarding;
use crate::model::*;
use crate::size::parse_size;

type R<T> = Result<T, Fault>;

const TOP_KEYS: &[&str] = &[
    "domains",
    "default_domain",
    "listen",
    "admin",
    "circuit_breaker_threshold",
    "circuit_breaker_timeout",
    "cert_cache_dir",
    "cert_cache_path",
    "plugins",
    "acme",
    "metrics",
    "access_log",
    "timeouts",
    "limits",
    "retries",
    "shutdown_grace",
];
const LISTEN_KEYS: &[&str] = &["http", "https", "redirect_http"];
const ADMIN_KEYS: &[&str] = &["address", "allow_non_loopback"];
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
];
const BACKEND_KEYS: &[&str] = &["address", "weight"];
const TLS_KEYS: &[&str] = &["cert", "key"];
const PLUGINS_KEYS: &[&str] = &["router", "balancer", "breaker"];
const PLUGIN_KEYS: &[&str] = &[
    "path",
    "config",
    "timeout",
    "memory_limit",
    "on_fault",
    "fault_backoff",
];
const FAULT_BACKOFF_KEYS: &[&str] = &["after", "initial", "max"];
const ACME_KEYS: &[&str] = &["directory", "email", "ca_root", "challenges"];
const METRICS_KEYS: &[&str] = &["log_interval"];

const MAX_WEIGHT: u64 = 1000;
/// One WebAssembly page: a plugin cannot run in less.
const MIN_PLUGIN_MEMORY: u64 = 64 << 10;
/// The most a 32-bit WebAssembly memory can address.
const MAX_PLUGIN_MEMORY: u64 = 4 << 30;

/// Turns the document into a `Config`; relative paths in it are resolved
/// against the directory of `origin`.
pub(crate) fn config(root: &Value, origin: &Path) -> R<Config> {
    let mut walker = Walker {
        dir: origin.parent().unwrap_or(Path::new("")).to_path_buf(),
        upstream: UpstreamSettings::default(),
    };
    walker.config(root, origin)
}

struct Walker {
    dir: PathBuf,
    /// The top-level forwarding settings every domain starts from.
    upstream: UpstreamSettings,
}

/// A domain with the path of its key, kept for errors found after all
/// sections are read.
struct Placed {
    path: String,
    domain: Domain,
}

impl Walker {
    fn config(&mut self, root: &Value, origin: &Path) -> R<Config> {
        let Value::Object(root) = root else {
            return Err(Fault::invalid(
                "",
                format!(
                    "the top level must be a JSON object like {{\"domains\": {{...}}}}, got {}",
                    show(root)
                ),
            ));
        };
        check_keys(root, "", TOP_KEYS)?;
        let (timeouts, limits, retries) = forwarding::global(root)?;
        let shutdown_grace = forwarding::shutdown_grace(root)?;
        self.upstream = UpstreamSettings {
            timeouts: timeouts.upstream,
            limits: limits.upstream,
            retries,
            ..UpstreamSettings::default()
        };

        let placed = self.domains(root.get("domains"))?;
        let default_domain = match present(root, "default_domain") {
            Some(v) => Some(default_domain(v, &placed)?),
            None => None,
        };
        let listen = listen(present(root, "listen"))?;
        let admin = admin(root.get("admin"), &listen)?;
        let breaker = BreakerSettings {
            threshold: match present(root, "circuit_breaker_threshold") {
                Some(v) => threshold(v, "circuit_breaker_threshold")?,
                None => DEFAULT_BREAKER_THRESHOLD,
            },
            timeout: match present(root, "circuit_breaker_timeout") {
                Some(v) => positive_duration(v, "circuit_breaker_timeout")?,
                None => DEFAULT_BREAKER_TIMEOUT,
            },
        };
        let cert_cache_dir = self.cert_cache_dir(root)?;
        let plugins = match present(root, "plugins") {
            Some(v) => self.plugins(v)?,
            None => Plugins::default(),
        };
        let acme = match present(root, "acme") {
            Some(v) => self.acme(v)?,
            None => Acme::default(),
        };
        let metrics = match present(root, "metrics") {
            Some(v) => metrics(v)?,
            None => MetricsSettings::default(),
        };
        let access_log = match present(root, "access_log") {
            Some(v) => boolean(v, "access_log")?,
            None => true,
        };
        check_tls_needs(&placed, &listen, &acme)?;

        Ok(Config {
            origin: origin.to_path_buf(),
            listen,
            admin,
            domains: placed.into_iter().map(|p| p.domain).collect(),
            default_domain,
            breaker,
            cert_cache_dir,
            plugins,
            acme,
            metrics,
            access_log,
            timeouts,
            limits,
            retries,
            shutdown_grace,
        })
    }

    fn resolve(&self, relative: &str) -> PathBuf {
        // `join` keeps absolute paths as they are.
        self.dir.join(relative)
    }

    fn file_path(&self, v: &Value, path: &str) -> R<PathBuf> {
        match v {
            Value::String(s) if !s.is_empty() => Ok(self.resolve(s)),
            _ => Err(Fault::invalid(
                path,
                format!("expected a file path, got {}", show(v)),
            )),
        }
    }

    fn domains(&self, v: Option<&Value>) -> R<Vec<Placed>> {
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
            let name = normalize_domain(key).map_err(|why| {
                Fault::invalid(&path, format!("invalid domain name {key:?}: {why}"))
            })?;
            if let Some(first) = seen.insert(name.clone(), key) {
                return Err(Fault::invalid(
                    &path,
                    format!("{key:?} is the same domain as {first:?}, listed earlier"),
                ));
            }
            let domain = self.domain(value, &path, name)?;
            placed.push(Placed { path, domain });
        }
        Ok(placed)
    }

    fn domain(&self, v: &Value, path: &str, name: String) -> R<Domain> {
        match v {
            Value::Array(_) => Ok(Domain {
                name,
                backends: backends(v, path)?,
                balancer: DEFAULT_BALANCER.to_owned(),
                tls: None,
                upstream: self.upstream.clone(),
                backend_ca: None,
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
                let balancer = match present(map, "balancer") {
                    Some(v) => balancer(v, &join(path, "balancer"))?,
                    None => DEFAULT_BALANCER.to_owned(),
                };
                let tls = match present(map, "tls") {
                    Some(v) => Some(self.tls(v, &join(path, "tls"), &name)?),
                    None => None,
                };
                let upstream = forwarding::domain(map, path, &self.upstream)?;
                forwarding::check_protocol(upstream.protocol, &backends, path)?;
                let backend_ca = match present(map, "backend_ca") {
                    Some(v) => Some(self.file_path(v, &join(path, "backend_ca"))?),
                    None => None,
                };
                Ok(Domain {
                    name,
                    backends,
                    balancer,
                    tls,
                    upstream,
                    backend_ca,
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

    fn tls(&self, v: &Value, path: &str, domain: &str) -> R<TlsSource> {
        let source = match v {
            Value::String(s) if s == "acme" => TlsSource::Acme,
            Value::String(s) if s == "off" => TlsSource::Off,
            Value::Object(map) => {
                check_keys(map, path, TLS_KEYS)?;
                let file = |key: &str| {
                    let key_path = join(path, key);
                    match present(map, key) {
                        Some(v) => self.file_path(v, &key_path),
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

    fn cert_cache_dir(&self, root: &Map<String, Value>) -> R<Option<PathBuf>> {
        let (key, v) = match (root.get("cert_cache_dir"), root.get("cert_cache_path")) {
            (Some(_), Some(_)) => {
                return Err(Fault::invalid(
                    "cert_cache_path",
                    "is an alias of cert_cache_dir; give only one of them",
                ));
            }
            (Some(v), None) => ("cert_cache_dir", v),
            (None, Some(v)) => ("cert_cache_path", v),
            (None, None) => return Ok(None),
        };
        match v {
            Value::Null => Ok(None),
            // Go's zero value: the original treated "" as "not set".
            Value::String(s) if s.is_empty() => Ok(None),
            Value::String(s) => Ok(Some(self.resolve(s))),
            _ => Err(Fault::invalid(
                key,
                format!("expected a directory path, got {}", show(v)),
            )),
        }
    }

    fn plugins(&self, v: &Value) -> R<Plugins> {
        let map = object(v, "plugins", "{\"router\": \"builtin\"}")?;
        // Named on its own rather than as an unknown key: it was accepted
        // once, and silently ignoring it would let requests skip a filter
        // the operator believes runs.
        if map.contains_key("filters") {
            return Err(Fault::invalid(
                "plugins.filters",
                "not supported yet; there is no filter plugin world (plugins are a router, a \
                 balancer and a breaker), so remove the key",
            ));
        }
        check_keys(map, "plugins", PLUGINS_KEYS)?;
        let slot = |key: &str| match present(map, key) {
            Some(v) => self.plugin(v, &join("plugins", key)),
            None => Ok(PluginSpec::builtin()),
        };
        Ok(Plugins {
            router: slot("router")?,
            balancer: slot("balancer")?,
            breaker: slot("breaker")?,
        })
    }

    fn plugin(&self, v: &Value, path: &str) -> R<PluginSpec> {
        let map = match v {
            Value::String(s) if s == "builtin" => return Ok(PluginSpec::builtin()),
            Value::Object(map) => map,
            _ => {
                return Err(Fault::invalid(
                    path,
                    format!(
                        "expected \"builtin\" or an object like {{\"path\": \"plugin.wasm\", \"config\": {{}}}}, got {}",
                        show(v)
                    ),
                ));
            }
        };
        check_keys(map, path, PLUGIN_KEYS)?;
        let source = match present(map, "path") {
            Some(v) => PluginSource::Path(self.file_path(v, &join(path, "path"))?),
            None => PluginSource::Builtin,
        };
        let config = match present(map, "config") {
            Some(v) => v.clone(),
            None => Value::Object(Map::new()),
        };
        let timeout = match present(map, "timeout") {
            Some(v) => positive_duration(v, &join(path, "timeout"))?,
            None => DEFAULT_PLUGIN_TIMEOUT,
        };
        let memory_limit = match present(map, "memory_limit") {
            Some(v) => memory_limit(v, &join(path, "memory_limit"))?,
            None => DEFAULT_PLUGIN_MEMORY,
        };
        let on_fault = match present(map, "on_fault") {
            Some(v) => on_fault(v, &join(path, "on_fault"))?,
            // A custom plugin that breaks should be noticed; the builtin
            // ones only fault if something is badly wrong, and then serving
            // with default decisions beats refusing every request.
            None => match source {
                PluginSource::Builtin => OnFault::FailOpen,
                PluginSource::Path(_) => OnFault::FailClosed,
            },
        };
        let fault_backoff = match present(map, "fault_backoff") {
            Some(v) => fault_backoff(v, &join(path, "fault_backoff"))?,
            None => FaultBackoff::default(),
        };
        Ok(PluginSpec {
            source,
            config,
            timeout,
            memory_limit,
            on_fault,
            fault_backoff,
        })
    }

    fn acme(&self, v: &Value) -> R<Acme> {
        let map = object(v, "acme", "{\"email\": \"ops@example.com\"}")?;
        check_keys(map, "acme", ACME_KEYS)?;
        let defaults = Acme::default();
        Ok(Acme {
            directory: match present(map, "directory") {
                Some(v) => acme_directory(v)?,
                None => defaults.directory,
            },
            email: match present(map, "email") {
                Some(v) => email(v)?,
                None => None,
            },
            ca_root: match present(map, "ca_root") {
                Some(v) => Some(self.file_path(v, "acme.ca_root")?),
                None => None,
            },
            challenges: match present(map, "challenges") {
                Some(v) => challenges(v)?,
                None => defaults.challenges,
            },
        })
    }
}

fn default_domain(v: &Value, placed: &[Placed]) -> R<String> {
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
                "expected a balancer name: \"round-robin\", \"weighted-round-robin\", \"least-request\" or a custom balancer's name, got {}",
                show(v)
            ),
        )),
    }
}

fn listen(v: Option<&Value>) -> R<Listen> {
    let Some(v) = v else {
        return Ok(Listen::default());
    };
    let map = object(v, "listen", "{\"http\": \":8080\", \"https\": \":8443\"}")?;
    check_keys(map, "listen", LISTEN_KEYS)?;
    let address = |key: &str| match present(map, key) {
        Some(v) => listen_address(v, &join("listen", key)).map(Some),
        None => Ok(None),
    };
    let listen = Listen {
        http: address("http")?,
        https: address("https")?,
        redirect_http: match present(map, "redirect_http") {
            Some(v) => boolean(v, "listen.redirect_http")?,
            None => false,
        },
    };
    match (listen.http, listen.https) {
        (None, None) => {
            return Err(Fault::invalid(
                "listen",
                "no listener left: set listen.http and/or listen.https (or drop \"listen\" to use :80 and :443)",
            ));
        }
        (Some(http), Some(https)) if clash(http, https) => {
            return Err(Fault::invalid(
                "listen.https",
                format!("{https} clashes with listen.http {http}"),
            ));
        }
        _ => {}
    }
    if listen.redirect_http {
        let missing = match (listen.http, listen.https) {
            (None, _) => Some("listen.http to redirect from"),
            (_, None) => Some("listen.https to redirect to"),
            _ => None,
        };
        if let Some(missing) = missing {
            return Err(Fault::invalid(
                "listen.redirect_http",
                format!("true needs {missing}"),
            ));
        }
    }
    Ok(listen)
}

fn listen_address(v: &Value, path: &str) -> R<SocketAddr> {
    match v {
        Value::String(s) => parse_listen(s)
            .map_err(|why| Fault::invalid(path, format!("invalid address {}: {why}", show(v)))),
        _ => Err(Fault::invalid(
            path,
            format!(
                "expected an address like \"127.0.0.1:8080\" or \":8080\", got {}",
                show(v)
            ),
        )),
    }
}

/// Two listeners that cannot both bind: same port (not 0, which the OS
/// picks) on the same address, or on a wildcard address of the same family.
fn clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip()
            || (a.is_ipv4() == b.is_ipv4() && (a.ip().is_unspecified() || b.ip().is_unspecified())))
}

fn admin(v: Option<&Value>, listen: &Listen) -> R<Option<SocketAddr>> {
    const FORMS: &str =
        "\"127.0.0.1:9901\", \"off\", or {\"address\": \"...\", \"allow_non_loopback\": true}";
    let (address, allow_non_loopback) = match v {
        None => (DEFAULT_ADMIN, false),
        Some(Value::Null | Value::Bool(false)) => return Ok(None),
        Some(Value::String(s)) if s == "off" => return Ok(None),
        Some(v @ Value::String(_)) => (listen_address(v, "admin")?, false),
        Some(Value::Object(map)) => {
            check_keys(map, "admin", ADMIN_KEYS)?;
            let address = match present(map, "address") {
                Some(v) => listen_address(v, "admin.address")?,
                None => DEFAULT_ADMIN,
            };
            let allow = match present(map, "allow_non_loopback") {
                Some(v) => boolean(v, "admin.allow_non_loopback")?,
                None => false,
            };
            (address, allow)
        }
        Some(other) => {
            return Err(Fault::invalid(
                "admin",
                format!("expected {FORMS}, got {}", show(other)),
            ));
        }
    };
    if !address.ip().is_loopback() && !allow_non_loopback {
        return Err(Fault::invalid(
            "admin",
            format!(
                "{address} is not a loopback address, and the admin endpoints (/metrics, /status, /healthz) have no authentication; to expose them anyway write \"admin\": {{\"address\": \"{address}\", \"allow_non_loopback\": true}}"
            ),
        ));
    }
    for (name, other) in [("listen.http", listen.http), ("listen.https", listen.https)] {
        if let Some(other) = other.filter(|o| clash(address, *o)) {
            return Err(Fault::invalid(
                "admin",
                format!("{address} clashes with {name} {other}"),
            ));
        }
    }
    Ok(Some(address))
}

fn threshold(v: &Value, path: &str) -> R<u32> {
    v.as_u64()
        .filter(|t| *t >= 1)
        .and_then(|t| u32::try_from(t).ok())
        .ok_or_else(|| {
            Fault::invalid(
                path,
                format!(
                    "expected a whole number of failures, at least 1, got {}",
                    show(v)
                ),
            )
        })
}

pub(crate) fn duration(v: &Value, path: &str) -> R<Duration> {
    match v {
        Value::String(s) => parse_duration(s)
            .map_err(|why| Fault::invalid(path, format!("invalid duration {}: {why}", show(v)))),
        _ => Err(Fault::invalid(
            path,
            format!(
                "expected a duration like \"30s\", \"500ms\" or \"1m\", got {}",
                show(v)
            ),
        )),
    }
}

pub(crate) fn positive_duration(v: &Value, path: &str) -> R<Duration> {
    let d = duration(v, path)?;
    if d.is_zero() {
        return Err(Fault::invalid(
            path,
            format!("must be greater than zero, got {}", show(v)),
        ));
    }
    Ok(d)
}

fn memory_limit(v: &Value, path: &str) -> R<u64> {
    let bytes = match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| {
            Fault::invalid(
                path,
                format!(
                    "expected a whole number of bytes or a size like \"16MiB\", got {}",
                    show(v)
                ),
            )
        })?,
        Value::String(s) => parse_size(s)
            .map_err(|why| Fault::invalid(path, format!("invalid size {}: {why}", show(v))))?,
        _ => {
            return Err(Fault::invalid(
                path,
                format!(
                    "expected a size like \"16MiB\" or a number of bytes, got {}",
                    show(v)
                ),
            ));
        }
    };
    if !(MIN_PLUGIN_MEMORY..=MAX_PLUGIN_MEMORY).contains(&bytes) {
        return Err(Fault::invalid(
            path,
            format!(
                "{} is out of range: a plugin needs at least 64KiB (one WebAssembly page) and can address at most 4GiB",
                show(v)
            ),
        ));
    }
    Ok(bytes)
}

fn on_fault(v: &Value, path: &str) -> R<OnFault> {
    match v.as_str() {
        Some("fail-open") => Ok(OnFault::FailOpen),
        Some("fail-closed") => Ok(OnFault::FailClosed),
        _ => Err(Fault::invalid(
            path,
            format!("expected \"fail-open\" or \"fail-closed\", got {}", show(v)),
        )),
    }
}

/// `{"after": 5, "initial": "1s", "max": "60s"}`; missing keys keep their
/// defaults.
fn fault_backoff(v: &Value, path: &str) -> R<FaultBackoff> {
    let map = object(
        v,
        path,
        "{\"after\": 5, \"initial\": \"1s\", \"max\": \"60s\"}",
    )?;
    check_keys(map, path, FAULT_BACKOFF_KEYS)?;
    let mut b = FaultBackoff::default();
    if let Some(v) = present(map, "after") {
        b.after = v
            .as_u64()
            .filter(|n| *n >= 1)
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                Fault::invalid(
                    join(path, "after"),
                    format!(
                        "expected a whole number of consecutive faults, at least 1, got {}",
                        show(v)
                    ),
                )
            })?;
    }
    let initial = present(map, "initial");
    if let Some(v) = initial {
        b.initial = positive_duration(v, &join(path, "initial"))?;
    }
    let max = present(map, "max");
    if let Some(v) = max {
        b.max = positive_duration(v, &join(path, "max"))?;
    }
    if b.initial > b.max {
        let shown = |v: Option<&Value>, d: Duration| match v {
            Some(v) => show(v),
            None => format!("{d:?} (the default)"),
        };
        return Err(Fault::invalid(
            path,
            format!(
                "initial {} is longer than max {}; the suspension starts at initial and doubles up to max",
                shown(initial, b.initial),
                shown(max, b.max)
            ),
        ));
    }
    Ok(b)
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
    let Value::Array(items) = v else {
        return Err(Fault::invalid(
            "acme.challenges",
            format!(
                "expected a list like [\"http-01\", \"tls-alpn-01\"], got {}",
                show(v)
            ),
        ));
    };
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

fn metrics(v: &Value) -> R<MetricsSettings> {
    let map = object(v, "metrics", "{\"log_interval\": \"60s\"}")?;
    check_keys(map, "metrics", METRICS_KEYS)?;
    Ok(MetricsSettings {
        log_interval: match present(map, "log_interval") {
            Some(v) => positive_duration(v, "metrics.log_interval")?,
            None => DEFAULT_METRICS_INTERVAL,
        },
    })
}

/// Certificates are only useful with an HTTPS listener, and ACME can only
/// validate through a listener that one of its challenges uses.
fn check_tls_needs(placed: &[Placed], listen: &Listen, acme: &Acme) -> R<()> {
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

fn boolean(v: &Value, path: &str) -> R<bool> {
    v.as_bool()
        .ok_or_else(|| Fault::invalid(path, format!("expected true or false, got {}", show(v))))
}

pub(crate) fn object<'a>(v: &'a Value, path: &str, example: &str) -> R<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| {
        Fault::invalid(
            path,
            format!("expected an object like {example}, got {}", show(v)),
        )
    })
}

pub(crate) fn check_keys(
    map: &Map<String, Value>,
    path: &str,
    expected: &'static [&'static str],
) -> R<()> {
    match map.keys().find(|k| !expected.contains(&k.as_str())) {
        Some(name) => Err(Fault::UnknownKey {
            key: join(path, name),
            name: name.clone(),
            expected,
        }),
        None => Ok(()),
    }
}

/// A key's value, treating `null` like absence so that `"key": null` means
/// "use the default" everywhere it is not given another meaning.
pub(crate) fn present<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

/// The value as compact JSON, shortened so one error stays one line.
pub(crate) fn show(v: &Value) -> String {
    const MAX: usize = 60;
    let text = v.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A byte count: a whole number or a string like `"16MiB"`.
pub(crate) fn size(v: &Value, path: &str) -> R<u64> {
    match v {
        Value::Number(n) => n.as_u64().ok_or_else(|| {
            Fault::invalid(
                path,
                format!(
                    "expected a whole number of bytes or a size like \"16MiB\", got {}",
                    show(v)
                ),
            )
        }),
        Value::String(s) => parse_size(s)
            .map_err(|why| Fault::invalid(path, format!("invalid size {}: {why}", show(v)))),
        _ => Err(Fault::invalid(
            path,
            format!(
                "expected a size like \"16MiB\" or a number of bytes, got {}",
                show(v)
            ),
        )),
    }
}
