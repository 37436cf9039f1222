//! What `bbproxy check` prints after a config and its plugins loaded: one
//! line saying so, then short tables of the domains (each one a route of
//! the built-in router), their backends, and the plugins.

use bbproxy_config::{Config, TlsSource, UpstreamProtocol};

use crate::generation::{Generation, Slot, Source};
use crate::plugin::{FilterWorld, World};

/// The first line: what was loaded.
fn summary(config: &Config, g: &Generation) -> String {
    let backends: usize = g.upstreams.iter().map(|u| u.backends.len()).sum();
    let routes: usize = config.domains.iter().map(|d| d.routes.len()).sum();
    let extra = match (config.pools.len(), routes) {
        (0, 0) => String::new(),
        (pools, routes) => format!(", {pools} pool(s), {routes} route(s)"),
    };
    // Every entry of every chain: global, domains' and routes'.
    let filters = match config.filters().count() {
        0 => String::new(),
        n => format!(", {n} filter(s)"),
    };
    format!(
        "{}: OK: {} domain(s), {} backend(s){extra}{filters}; router {}, balancer {}, breaker {}\n",
        config.origin.display(),
        config.domains.len(),
        backends,
        g.router.primary.name(),
        g.balancer.primary.name(),
        g.breaker.primary.name(),
    )
}

/// The report for generation `g` built from `config`.
pub fn report(config: &Config, g: &Generation) -> String {
    let mut out = summary(config, g);
    let mut domains = vec![row([
        "DOMAIN (ROUTE)",
        "BACKENDS",
        "BALANCER",
        "PROTOCOL",
        "TLS",
    ])];
    // Pools come after the domains in `upstreams()`.
    let first_pool = config.domains.len();
    for (i, d) in config.upstreams().enumerate() {
        let name = if i >= first_pool {
            format!("{} (pool)", d.name)
        } else if config.default_domain.as_deref() == Some(d.name.as_str()) {
            format!("{} (default)", d.name)
        } else {
            d.name.clone()
        };
        let name = match d.routes.len() {
            0 => name,
            n => format!("{name} ({n} routes)"),
        };
        let list: Vec<String> = d
            .backends
            .iter()
            .map(|b| {
                let base = b.url_base();
                let shown = base.strip_prefix("http://").unwrap_or(&base).to_owned();
                if b.weight == 1 {
                    shown
                } else {
                    format!("{shown} (w{})", b.weight)
                }
            })
            .collect();
        let protocol = match d.upstream.protocol {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::H2c => "h2c",
            UpstreamProtocol::H2 => "h2",
        };
        let tls = match crate::acme::source(d, config) {
            _ if i >= first_pool => "-".to_owned(),
            TlsSource::Off => "off".to_owned(),
            TlsSource::Acme => "acme".to_owned(),
            TlsSource::Files { cert, .. } => cert.display().to_string(),
        };
        domains.push([
            name,
            list.join(", "),
            match (&d.hash_on, &d.sticky_cookie) {
                (Some(on), _) => format!("{} ({on})", d.balancer),
                (None, Some(cookie)) => format!("{} (cookie {cookie})", d.balancer),
                (None, None) => d.balancer.clone(),
            },
            protocol.to_owned(),
            tls,
        ]);
    }
    out.push('\n');
    out.push_str(&table(&domains));
    let mut plugins = vec![
        row(["PLUGIN", "SOURCE", "SHA256", "CONTRACT"]),
        plugin(&g.router),
        plugin(&g.balancer),
        plugin(&g.breaker),
    ];
    plugins.extend(g.filter_components().map(|f| {
        [
            FilterWorld::ROLE.to_owned(),
            f.name().to_owned(),
            short(f.sha256()),
            format!("bbproxy:plugin@{}", f.contract()),
        ]
    }));
    out.push('\n');
    out.push_str(&table(&plugins));
    out
}

fn row<const N: usize>(cells: [&str; N]) -> [String; N] {
    cells.map(str::to_owned)
}

fn plugin<W: World>(slot: &Slot<W>) -> [String; 4] {
    let p = &slot.primary;
    let source = match &slot.source {
        Source::Builtin => "builtin".to_owned(),
        Source::File(path) => match &slot.fallback {
            Some(_) => format!("{} (fail-open)", path.display()),
            None => path.display().to_string(),
        },
    };
    [
        W::ROLE.to_owned(),
        source,
        short(p.sha256()),
        format!("bbproxy:plugin@{}", p.contract()),
    ]
}

/// The first 12 hex digits of a digest.
fn short(sha256: &str) -> String {
    sha256.get(..12).unwrap_or(sha256).to_owned()
}

/// Rows as columns padded to their widest cell, two spaces apart.
fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
            line.push_str(cell);
            if i + 1 < N {
                line.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn tables_align_columns() {
        let rows = [super::row(["A", "BB", "C"]), super::row(["aaaa", "b", ""])];
        assert_eq!(super::table(&rows), "A     BB  C\naaaa  b\n");
    }
}
