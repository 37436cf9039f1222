//! `bbproxy plugin check`: what a component file is, which role worlds it
//! implements, whether its `init` accepts a configuration, and what it
//! answers to a few sample calls — the plugin author's first debugging step,
//! without a config.json or a running proxy.

mod probe;

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use crate::plugin::describe::Description;
use crate::plugin::{
    BalancerWorld, BreakerWorld, FilterWorld, Limits, LoadError, RouterWorld, Runtime, Upstream,
    World,
};

use probe::Probe;
#[cfg(test)]
pub(crate) use probe::apply;

/// A plugin role, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// WIT world `router`.
    Router,
    /// WIT world `balancer`.
    Balancer,
    /// WIT world `breaker`.
    Breaker,
    /// WIT world `filter`.
    Filter,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Router => RouterWorld::ROLE,
            Role::Balancer => BalancerWorld::ROLE,
            Role::Breaker => BreakerWorld::ROLE,
            Role::Filter => FilterWorld::ROLE,
        }
    }

    fn of(name: &str) -> Role {
        match name {
            RouterWorld::ROLE => Role::Router,
            BalancerWorld::ROLE => Role::Balancer,
            BreakerWorld::ROLE => Role::Breaker,
            _ => Role::Filter,
        }
    }
}

/// What to check and how.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Check this role only; by default every role the component implements.
    pub role: Option<Role>,
    /// The JSON text passed to `init`.
    pub config: String,
    /// Upstream names the plugin sees in `host.upstreams()`, 3 backends each.
    pub upstreams: Vec<String>,
    /// Calls made to measure the cost of one decision (0: none).
    pub calls: u32,
    /// Per-call bounds, as a config.json `plugins` entry would set them.
    pub limits: Limits,
    /// The request the sample decisions are made for, if the user gave one
    /// (`--host`, `--path`, `--header`).
    pub request: Option<SampleRequest>,
}

/// A request given on the command line.
#[derive(Debug, Clone, Default)]
pub struct SampleRequest {
    /// `Host`; the first upstream when not given.
    pub host: Option<String>,
    /// Path and query; `/` when not given.
    pub path: Option<String>,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
}

/// Why a check failed; each variant says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Reading, compiling or linking the component failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The component implements none of the requested worlds.
    #[error("{name}: {detail}")]
    WrongWorld {
        /// The file.
        name: String,
        /// Which exports are missing for which role, and what the component
        /// exports instead.
        detail: String,
    },
    /// The `--plugin-config` given is not JSON.
    #[error("plugin config is not valid JSON: {0}")]
    BadConfig(String),
    /// A sample call faulted.
    #[error("{name} ({role}): sample call `{call}` faulted: {reason}")]
    Call {
        /// The file.
        name: String,
        /// The role.
        role: &'static str,
        /// The call.
        call: String,
        /// The fault.
        reason: String,
    },
}

/// Checks the component in `path`; returns the report to print.
pub fn check(path: &Path, options: &CheckOptions) -> Result<String, CheckError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|error| LoadError::Io {
        name: name.clone(),
        error,
    })?;
    if let Err(e) = serde_json::from_str::<serde_json::Value>(&options.config) {
        return Err(CheckError::BadConfig(format!("{e}")));
    }
    let runtime = Runtime::new()?;
    let described = runtime.describe(&name, &bytes)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "component: {name}\n  size: {} bytes, sha256 {}",
        bytes.len(),
        described.sha256
    );
    write_imports_and_exports(&mut out, &described);
    let wanted = wanted_roles(&mut out, &name, options.role, &described)?;

    let upstreams: Arc<[Upstream]> = options
        .upstreams
        .iter()
        .map(|u| Upstream {
            name: u.clone(),
            balancer: "round-robin".to_owned(),
            backends: 3,
        })
        .collect();
    let _ = writeln!(
        out,
        "upstreams given to the plugin: {} (3 backends each)",
        options.upstreams.join(", ")
    );
    for role in wanted {
        let probe = Probe {
            runtime: &runtime,
            name: &name,
            bytes: &bytes,
            options,
            upstreams: upstreams.clone(),
        };
        match role {
            Role::Router => probe.router(&mut out)?,
            Role::Balancer => probe.balancer(&mut out)?,
            Role::Breaker => probe.breaker(&mut out)?,
            Role::Filter => probe.filter(&mut out)?,
        }
    }
    Ok(out)
}

/// The component's exports and imports, WASI imports apart: toolchains
/// import WASI whether or not the code uses it, and the host links it with
/// no capabilities.
fn write_imports_and_exports(out: &mut String, described: &Description) {
    let _ = writeln!(out, "  exports: {}", list_or_none(&described.exports));
    let (wasi, own): (Vec<&String>, Vec<&String>) = described
        .imports
        .iter()
        .partition(|i| i.starts_with("wasi:"));
    let own: Vec<String> = own.into_iter().cloned().collect();
    let _ = writeln!(out, "  imports: {}", list_or_none(&own));
    if !wasi.is_empty() {
        let wasi: Vec<&str> = wasi.into_iter().map(String::as_str).collect();
        let _ = writeln!(
            out,
            "  WASI imports ({}, linked with no capabilities): {}",
            wasi.len(),
            wasi.join(", ")
        );
    }
}

/// The worlds the component implements (linking checks every import
/// against the host and every export's type against the world), written
/// to `out`, and the roles to probe: `role` if given, else every world it
/// implements. An error when that is none, or `role` is not implemented.
fn wanted_roles(
    out: &mut String,
    name: &str,
    role: Option<Role>,
    described: &Description,
) -> Result<Vec<Role>, CheckError> {
    let mut implemented = Vec::new();
    let mut problems = Vec::new();
    for (world, result) in &described.worlds {
        match result {
            Ok(version) => implemented.push((Role::of(world.role), *version)),
            Err(why) => problems.push((Role::of(world.role), why)),
        }
    }
    let wanted: Vec<Role> = match role {
        Some(role) => vec![role],
        None => implemented.iter().map(|(r, _)| *r).collect(),
    };
    let _ = writeln!(
        out,
        "  worlds: {}",
        if implemented.is_empty() {
            "none".to_owned()
        } else {
            implemented
                .iter()
                .map(|(r, version)| format!("bbproxy:plugin/{}@{version}", r.name()))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let missing: Vec<&(Role, &String)> = problems
        .iter()
        .filter(|(role, _)| wanted.contains(role) || wanted.is_empty())
        .collect();
    if wanted.is_empty() || !missing.is_empty() {
        let mut detail = match role {
            Some(role) => format!(
                "does not implement the bbproxy:plugin/{} world",
                role.name()
            ),
            None => "implements none of the bbproxy:plugin worlds".to_owned(),
        };
        for (role, why) in missing {
            let _ = write!(detail, "\n  {}: {why}", role.name());
        }
        let _ = write!(
            detail,
            "\n  the component exports: {}",
            list_or_none(&described.exports)
        );
        return Err(CheckError::WrongWorld {
            name: name.to_owned(),
            detail,
        });
    }
    Ok(wanted)
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(", ")
    }
}
