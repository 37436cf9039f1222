//! `listen` and `admin`: the addresses served on, and that no two of them
//! (the admin listener included) can clash.

use std::net::SocketAddr;

use serde_json::Value;

use super::walk::{Fields, R, boolean, object, set, show};
use crate::address::parse_listen;
use crate::error::Fault;
use crate::model::*;

pub(crate) fn listen(v: Option<&Value>) -> R<Listen> {
    let Some(v) = v else {
        return Ok(Listen::default());
    };
    let map = object(v, "listen", "{\"http\": \":8080\", \"https\": \":8443\"}")?;
    let mut listen = Listen {
        http: None,
        https: None,
        redirect_http: false,
        tls_session_resumption: true,
    };
    let Listen {
        http,
        https,
        redirect_http,
        tls_session_resumption,
    } = &mut listen;
    Fields::new(map, "listen")
        .key("http", |v, p| set(http, listen_address(v, p).map(Some)))
        .key("https", |v, p| set(https, listen_address(v, p).map(Some)))
        .key("redirect_http", |v, p| set(redirect_http, boolean(v, p)))
        .key("tls_session_resumption", |v, p| {
            set(tls_session_resumption, boolean(v, p))
        })
        .read()?;
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

/// The admin listener's address and the token of its actions.
pub(crate) fn admin(v: Option<&Value>, listen: &Listen) -> R<(Option<SocketAddr>, Option<Secret>)> {
    const FORMS: &str = "\"127.0.0.1:9901\", \"off\", or {\"address\": \"...\", \"allow_non_loopback\": true, \"token\": \"...\"}";
    let mut token = None;
    let (address, allow_non_loopback) = match v {
        None => (DEFAULT_ADMIN, false),
        Some(Value::Null | Value::Bool(false)) => return Ok((None, None)),
        Some(Value::String(s)) if s == "off" => return Ok((None, None)),
        Some(v @ Value::String(_)) => (listen_address(v, "admin")?, false),
        Some(Value::Object(map)) => {
            let (mut address, mut allow) = (DEFAULT_ADMIN, false);
            Fields::new(map, "admin")
                .key("address", |v, p| set(&mut address, listen_address(v, p)))
                .key("allow_non_loopback", |v, p| set(&mut allow, boolean(v, p)))
                .key("token", |v, _| {
                    set(&mut token, super::observe::token(v).map(Some))
                })
                .read()?;
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
    Ok((Some(address), token))
}

#[cfg(test)]
mod tests;
