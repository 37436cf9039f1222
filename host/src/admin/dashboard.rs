//! The dashboard at `/`: one HTML page with its CSS and JavaScript embedded
//! (no CDN, no build step). The server renders the first view from the
//! `/status` document, so it is useful without JavaScript; the script then
//! refreshes it from `/status` every 2 s, writing only what changed.

use std::fmt::Write;

use http::{Response, StatusCode, header};
use serde_json::Value;

use super::status::status;
use crate::proxy::ProxyBody;
use crate::state::Shared;

const STYLE: &str = include_str!("dashboard/style.css");
const SCRIPT: &str = include_str!("dashboard/app.js");

/// The page, rendered from the current `/status`.
pub(super) fn page(shared: &Shared) -> Response<ProxyBody> {
    let html = render(&status(shared));
    let mut resp = Response::new(ProxyBody::text(html));
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Everything the page needs is in it: nothing may be loaded from
    // elsewhere, and it may not be framed.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        http::HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

/// The whole page for status document `doc`.
pub(super) fn render(doc: &Value) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let now = num(&doc["now"]);
    let _ = write!(
        out,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>BBProxy</title>
<style>{STYLE}</style></head>
<body>
<header>
<h1>BBProxy <span id="version" class="fact">{version}</span></h1>
<span class="fact">generation <b id="generation">{generation}</b> loaded <b id="loaded-at">{loaded}</b></span>
<span class="fact">breakers not closed: <b id="not-closed">{not_closed}</b></span>
<span id="updated">rendered {rendered}<span class="nojs-only"> · without JavaScript this page does not refresh</span></span>
</header>
<main>
"#,
        version = esc(doc["version"].as_str().unwrap_or_default()),
        generation = doc["generation"],
        loaded = time(num(&doc["loaded_at"])),
        not_closed = doc["breakers_not_closed"],
        rendered = time(now),
    );
    let reload_error = doc["last_reload_error"]
        .as_object()
        .map(|e| {
            format!(
                "last reload failed at {}: {}",
                time(num(&e["at"])),
                e["error"].as_str().unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        r#"<p id="reload-error"{}>{}</p>"#,
        hidden(reload_error.is_empty()),
        esc(&reload_error)
    );
    backends(&mut out, doc);
    plugins(&mut out, doc);
    certificates(&mut out, doc, now);
    out.push_str(r#"<div class="grid2">"#);
    reloads(&mut out, doc);
    drained(&mut out, doc);
    tracing(&mut out, doc);
    let _ = write!(
        out,
        "</div>\n</main>\n<script>{SCRIPT}</script>\n</body></html>\n"
    );
    out
}

fn backends(out: &mut String, doc: &Value) {
    let actions = doc["admin_actions"].as_bool().unwrap_or(false);
    let _ = write!(
        out,
        r#"<section><h2>Backends <span class="toolbar"><input id="search" type="search" placeholder="search backends" aria-label="search backends">
<span id="token-box"{}><input id="token" type="password" placeholder="admin token" aria-label="admin token" autocomplete="off"></span>
<span id="action-note"></span></span></h2>
<table id="domains"><thead><tr><th>backend</th><th>state</th><th class="num">in flight</th><th class="num">req/s</th><th class="num">errors</th><th class="num">p50</th><th class="num">p99</th><th>last 3 min</th><th></th></tr></thead>
"#,
        hidden(!actions)
    );
    for d in array(&doc["domains"]) {
        let name = d["name"].as_str().unwrap_or_default();
        let list = array(&d["backends"]);
        let rps: f64 = list.iter().map(|b| num(&b["rps"])).sum();
        let open = list.iter().filter(|b| b["breaker"] != "closed").count();
        let drained = list.iter().filter(|b| b["drained"] == true).count();
        let mut summary = format!(
            "{name} — {} backend{}, {} req/s",
            list.len(),
            if list.len() == 1 { "" } else { "s" },
            rate(rps)
        );
        if open > 0 {
            let _ = write!(summary, ", {open} not closed");
        }
        if drained > 0 {
            let _ = write!(summary, ", {drained} drained");
        }
        if d["health_check"] != true {
            summary.push_str(", no health check");
        }
        let _ = write!(
            out,
            r#"<tbody data-domain="{}"><tr class="domain"><th colspan="9">{}</th></tr>"#,
            esc(name),
            esc(&summary)
        );
        for b in list {
            backend_row(out, name, b, actions);
        }
        out.push_str("</tbody>\n");
    }
    out.push_str("</table></section>\n");
}

fn backend_row(out: &mut String, domain: &str, b: &Value, actions: bool) {
    let address = b["address"].as_str().unwrap_or_default();
    let breaker = b["breaker"].as_str().unwrap_or_default();
    let drained = b["drained"] == true;
    let health = b["health"].as_str().unwrap_or_default();
    let mut classes = Vec::new();
    if breaker == "open" {
        classes.push("is-open");
    }
    if drained {
        classes.push("is-drained");
    }
    let _ = write!(
        out,
        r#"<tr data-key="{key}" data-domain="{domain}" data-backend="{address}" data-breaker="{breaker}" data-drained="{drained}" class="{classes}"><td class="name"><span class="addr">{address}</span>"#,
        key = esc(&format!("{domain} {address}")),
        domain = esc(domain),
        address = esc(address),
        breaker = esc(breaker),
        classes = classes.join(" "),
    );
    if b["weight"] != 1 {
        let _ = write!(
            out,
            r#"<span class="weight" title="weight">×{}</span>"#,
            b["weight"]
        );
    }
    let _ = write!(
        out,
        r#"</td><td class="state" data-f="state"><span class="pill breaker-{breaker}">{label}</span>"#,
        breaker = esc(breaker),
        label = breaker_label(breaker),
    );
    if drained {
        out.push_str(r#"<span class="pill drained">drained</span>"#);
    }
    if health != "unchecked" {
        let _ = write!(
            out,
            r#"<span class="pill health-{h}">{h}</span>"#,
            h = esc(health)
        );
    }
    let mut sub = Vec::new();
    if let Some(since) = b["breaker_since"].as_f64() {
        sub.push(format!("{} since {}", breaker_label(breaker), time(since)));
    }
    if let Some(f) = b["last_failure"].as_object() {
        sub.push(format!(
            "last failure {} at {}",
            f["reason"].as_str().unwrap_or_default(),
            time(num(&f["at"]))
        ));
    }
    if !sub.is_empty() {
        let _ = write!(out, r#"<div class="sub">{}</div>"#, esc(&sub.join(" · ")));
    }
    let error_rate = num(&b["error_rate"]);
    let _ = write!(
        out,
        r#"</td><td class="num" data-f="in_flight">{}</td><td class="num" data-f="rps">{}</td><td class="num{}" data-f="err">{}</td><td class="num" data-f="p50">{}</td><td class="num" data-f="p99">{}</td><td class="spark-cell" data-f="spark">{}</td><td class="act" data-f="act"><button type="button" data-action="{}"{}>{}</button></td></tr>"#,
        b["in_flight"],
        rate(num(&b["rps"])),
        if error_rate >= 0.05 { " bad" } else { "" },
        pct(error_rate),
        ms(b["p50_ms"].as_f64()),
        ms(b["p99_ms"].as_f64()),
        spark(&b["spark_requests"], &b["spark_errors"]),
        if drained { "undrain" } else { "drain" },
        hidden(!actions),
        if drained { "Undrain" } else { "Drain" },
    );
}

fn plugins(out: &mut String, doc: &Value) {
    out.push_str(
        r#"<section><h2>Plugins</h2><table id="plugins"><thead><tr><th>role</th><th>source</th><th>sha256</th><th>contract</th><th class="num">calls</th><th class="num">faults</th><th>suspended</th></tr></thead><tbody>"#,
    );
    for p in array(&doc["plugins"]) {
        let sha = p["sha256"].as_str().unwrap_or_default();
        let faults = p["faults"].as_u64().unwrap_or(0);
        let kinds: Vec<String> = p["faults_by_kind"]
            .as_object()
            .map(|m| m.iter().map(|(k, n)| format!("{k} {n}")).collect())
            .unwrap_or_default();
        let faults_text = if kinds.is_empty() {
            faults.to_string()
        } else {
            format!("{faults} ({})", kinds.join(", "))
        };
        let suspended: Vec<String> = array(&p["suspended"])
            .iter()
            .map(|t| {
                format!(
                    "{} until {}",
                    t["tenant"].as_str().unwrap_or_default(),
                    time(num(&t["until"]))
                )
            })
            .collect();
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td class="mono">{}</td><td class="mono" title="{}">{}</td><td class="mono">{}</td><td class="num">{}</td><td class="num{}">{}</td><td{}>{}</td></tr>"#,
            esc(p["role"].as_str().unwrap_or_default()),
            esc(p["source"].as_str().unwrap_or_default()),
            esc(sha),
            esc(sha.get(..12).unwrap_or(sha)),
            esc(p["contract"].as_str().unwrap_or_default()),
            p["calls"],
            if faults > 0 { " bad" } else { "" },
            esc(&faults_text),
            if suspended.is_empty() {
                ""
            } else {
                r#" class="bad""#
            },
            if suspended.is_empty() {
                "no".to_owned()
            } else {
                esc(&suspended.join("; "))
            },
        );
    }
    out.push_str("</tbody></table></section>\n");
}

fn certificates(out: &mut String, doc: &Value, now: f64) {
    let list = array(&doc["certificates"]);
    let _ = write!(
        out,
        r#"<section><h2>Certificates</h2><table id="certificates"{}><thead><tr><th>name</th><th>source</th><th>issuer</th><th>expires</th><th>next renewal</th><th>last ACME error</th></tr></thead><tbody>"#,
        empty(list.is_empty())
    );
    for c in list {
        let expiry = c["not_after"].as_f64();
        let left = expiry.map(|t| ((t - now) / 86400.0).floor() as i64);
        let error = c["last_error"].as_object();
        let _ = write!(
            out,
            r#"<tr><td class="mono">{}</td><td>{}</td><td>{}</td><td{}>{}</td><td>{}</td><td{}>{}</td></tr>"#,
            esc(c["name"].as_str().unwrap_or_default()),
            esc(c["source"].as_str().unwrap_or_default()),
            esc(c["issuer"].as_str().unwrap_or("(none yet)")),
            if left.is_some_and(|d| d < 14) {
                r#" class="bad""#
            } else {
                ""
            },
            match (expiry, left) {
                (Some(t), Some(d)) => format!("{} ({d} d)", date(t)),
                _ => "–".to_owned(),
            },
            c["renewal_at"]
                .as_f64()
                .map_or_else(|| "–".to_owned(), date),
            if error.is_some() {
                r#" class="bad""#
            } else {
                ""
            },
            esc(&error.map_or_else(
                || "none".to_owned(),
                |e| format!(
                    "{}: {}",
                    time(num(&e["at"])),
                    e["error"].as_str().unwrap_or_default()
                )
            )),
        );
    }
    out.push_str("</tbody></table></section>\n");
}

fn reloads(out: &mut String, doc: &Value) {
    let list = array(&doc["reloads"]);
    let _ = write!(
        out,
        r#"<section><h2>Reloads</h2><table id="reloads"{}><thead><tr><th>at</th><th>result</th><th class="num">generation</th><th>error</th></tr></thead><tbody>"#,
        empty(list.is_empty())
    );
    for r in list {
        let ok = r["result"] == "ok";
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td><span class="pill {}">{}</span></td><td class="num">{}</td><td class="mono">{}</td></tr>"#,
            time(num(&r["at"])),
            if ok { "breaker-closed" } else { "breaker-open" },
            if ok { "ok" } else { "error" },
            r["generation"]
                .as_u64()
                .map_or_else(|| "–".to_owned(), |g| g.to_string()),
            esc(r["error"].as_str().unwrap_or_default()),
        );
    }
    out.push_str("</tbody></table></section>\n");
}

fn drained(out: &mut String, doc: &Value) {
    let list: Vec<(&str, &Value)> = array(&doc["domains"])
        .iter()
        .flat_map(|d| {
            let name = d["name"].as_str().unwrap_or_default();
            array(&d["backends"])
                .iter()
                .filter(|b| b["drained"] == true)
                .map(move |b| (name, b))
        })
        .collect();
    let _ = write!(
        out,
        r#"<section><h2>Drained backends</h2><table id="drained"{}><thead><tr><th>domain</th><th>backend</th><th class="num">in flight</th></tr></thead><tbody>"#,
        empty(list.is_empty())
    );
    for (domain, b) in list {
        let _ = write!(
            out,
            r#"<tr><td class="mono">{}</td><td class="mono">{}</td><td class="num">{}</td></tr>"#,
            esc(domain),
            esc(b["address"].as_str().unwrap_or_default()),
            b["in_flight"],
        );
    }
    out.push_str("</tbody></table></section>\n");
}

/// The OpenTelemetry exporter: off, or where spans go and how many went.
/// Every cell is always there (`data-f`), so the script only sets text.
fn tracing(out: &mut String, doc: &Value) {
    let t = &doc["tracing"];
    let on = t.is_object();
    let count = |key: &str| {
        if on {
            t[key].as_u64().unwrap_or(0).to_string()
        } else {
            "–".to_owned()
        }
    };
    let dropped = t["spans_dropped"].as_u64().unwrap_or(0);
    let failed = t["failed_exports"].as_u64().unwrap_or(0);
    let _ = write!(
        out,
        r#"<section><h2>Tracing</h2><table id="tracing" data-enabled="{on}"><tbody>
<tr><th>state</th><td data-f="state"><span class="pill {state_class}">{state}</span></td></tr>
<tr><th>OTLP endpoint</th><td class="mono" data-f="endpoint">{endpoint}</td></tr>
<tr><th>sample ratio</th><td class="num" data-f="sample_ratio">{ratio}</td></tr>
<tr><th>spans exported</th><td class="num" data-f="exported">{exported}</td></tr>
<tr><th>spans failed (batches)</th><td class="num{failed_class}" data-f="failed">{failed_text}</td></tr>
<tr><th>spans dropped (queue full)</th><td class="num{dropped_class}" data-f="dropped">{dropped_text}</td></tr>
</tbody></table></section>
"#,
        state_class = if on { "breaker-closed" } else { "drained" },
        state = if on { "on" } else { "off" },
        endpoint = esc(t["otlp_traces_url"].as_str().unwrap_or("–")),
        ratio = t["sample_ratio"]
            .as_f64()
            .map_or_else(|| "–".to_owned(), |r| r.to_string()),
        exported = count("spans_exported"),
        failed_class = if failed > 0 { " bad" } else { "" },
        failed_text = if on {
            format!("{} ({failed})", count("spans_failed"))
        } else {
            "–".to_owned()
        },
        dropped_class = if dropped > 0 { " bad" } else { "" },
        dropped_text = count("spans_dropped"),
    );
}

/// The sparkline as inline SVG, drawn as the script draws it.
fn spark(requests: &Value, errors: &Value) -> String {
    let (w, h) = (120.0, 26.0);
    let requests: Vec<f64> = array(requests).iter().map(num).collect();
    let errors: Vec<f64> = array(errors).iter().map(num).collect();
    let n = requests.len().max(1) as f64;
    let max = requests.iter().copied().fold(1.0, f64::max);
    let x = |i: usize| (i as f64 + 0.5) * w / n;
    let y = |v: f64| h - 1.0 - v / max * (h - 3.0);
    let mut svg = format!(r#"<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" class="spark">"#);
    for (i, e) in errors.iter().enumerate().filter(|(_, e)| **e > 0.0) {
        let _ = write!(
            svg,
            r#"<rect x="{:.1}" width="{:.1}" y="{:.1}" height="{:.1}" class="err"/>"#,
            x(i) - w / n / 2.0,
            w / n,
            y(*e),
            h - 1.0 - y(*e)
        );
    }
    let points: Vec<String> = requests
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
        .collect();
    let _ = write!(
        svg,
        r#"<polyline points="{}" class="req"/></svg>"#,
        points.join(" ")
    );
    svg
}

fn array(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

fn hidden(hide: bool) -> &'static str {
    if hide { " hidden" } else { "" }
}

fn empty(is_empty: bool) -> &'static str {
    if is_empty { r#" class="empty""# } else { "" }
}

fn breaker_label(state: &str) -> &'static str {
    match state {
        "open" => "open",
        "half_open" => "half-open",
        _ => "closed",
    }
}

fn rate(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn pct(x: f64) -> String {
    if x > 0.0 && x < 0.01 {
        format!("{:.2}%", x * 100.0)
    } else {
        format!("{:.1}%", x * 100.0)
    }
}

fn ms(x: Option<f64>) -> String {
    match x {
        None => "–".to_owned(),
        Some(x) if x < 10.0 => format!("{x:.2} ms"),
        Some(x) if x < 1000.0 => format!("{x:.0} ms"),
        Some(x) => format!("{:.2} s", x / 1000.0),
    }
}

/// `HH:MM:SS UTC` of Unix time `t`.
fn time(t: f64) -> String {
    let secs = t.max(0.0) as u64;
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        day / 3600,
        day % 3600 / 60,
        day % 60
    )
}

/// `YYYY-MM-DD HH:MM UTC` of Unix time `t`.
fn date(t: f64) -> String {
    let secs = t.max(0.0) as u64;
    let (y, m, d) = civil(secs / 86_400);
    let day = secs % 86_400;
    format!(
        "{y}-{m:02}-{d:02} {:02}:{:02} UTC",
        day / 3600,
        day % 3600 / 60
    )
}

/// Year, month, day of day `days` since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Text and attribute values with `& < > " '` escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_and_times_are_utc() {
        assert_eq!(date(0.0), "1970-01-01 00:00 UTC");
        assert_eq!(date(951_782_400.0), "2000-02-29 00:00 UTC");
        assert_eq!(date(1_798_761_599.0), "2026-12-31 23:59 UTC");
        assert_eq!(time(1_798_761_599.0), "23:59:59 UTC");
    }

    #[test]
    fn names_are_escaped_everywhere() {
        let doc = json!({
            "version": "0.1.0", "generation": 1, "loaded_at": 0.0, "now": 0.0,
            "breakers_not_closed": 0, "admin_actions": false,
            "domains": [{"name": "<d>", "health_check": false, "backends": [{
                "address": "a\"b:1", "weight": 1, "breaker": "closed", "drained": false,
                "health": "unchecked", "in_flight": 0, "rps": 0.0, "error_rate": 0.0,
                "p50_ms": null, "p99_ms": null, "spark_requests": [0, 1], "spark_errors": [0, 0]
            }]}],
            "plugins": [], "certificates": [], "reloads": [],
            "last_reload_error": {"at": 0.0, "error": "<script>"}
        });
        let html = render(&doc);
        assert!(html.contains("&lt;d&gt;"), "{html}");
        assert!(html.contains("a&quot;b:1"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(!html.contains("<d>"));
        // Exactly one script element: the embedded one.
        assert_eq!(html.matches("<script>").count(), 1);
    }
}
