//! Reading a Prometheus scrape in tests: series keyed `name{sorted labels}`.

use std::collections::BTreeMap;

use super::{Proxy, client, get};
use hyper::StatusCode;

/// Parses Prometheus text into `name{sorted labels}` → value.
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap();
        let key = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.trim_end_matches('}');
                let mut pairs: Vec<&str> = split_labels(labels);
                pairs.sort();
                format!("{name}{{{}}}", pairs.join(","))
            }
            None => series.to_owned(),
        };
        out.insert(key, value);
    }
    out
}

/// Splits `a="x",b="y,z"` at commas outside quotes.
fn split_labels(s: &str) -> Vec<&str> {
    let (mut parts, mut start, mut quoted) = (Vec::new(), 0, false);
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if start < s.len() {
        parts.push(&s[start..]);
    }
    parts
}

/// The key of series `name` with `labels` (any order).
pub fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    pairs.sort();
    format!("{name}{{{}}}", pairs.join(","))
}

/// GET `path` on the proxy's admin listener.
pub async fn admin_get(proxy: &Proxy, path: &str) -> (StatusCode, String) {
    let admin = proxy.running.as_ref().unwrap().admin.unwrap();
    get(&client(), &format!("http://{admin}{path}"), "admin").await
}

/// One scrape of `/metrics`, parsed.
pub async fn scrape(proxy: &Proxy) -> (BTreeMap<String, f64>, String) {
    let (status, text) = admin_get(proxy, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    (parse_metrics(&text), text)
}
