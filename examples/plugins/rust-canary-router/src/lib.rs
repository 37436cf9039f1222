//! Example router: sends a share of the traffic, and every client that opts in,
//! to a canary upstream; the rest to the primary upstream.
//!
//! Configuration (`primary` and `canary` are required; the rest shows the
//! defaults):
//!
//! ```json
//! {"primary": "app.example.com", "canary": "canary.example.com",
//!  "percent": 10, "header": "x-canary", "cookie": "canary"}
//! ```
//!
//! A request goes to `canary` when its header `header` is `1` or `true`, or
//! when its cookie `cookie` is `1`; otherwise `percent` out of every 100
//! requests (counted by a counter shared by all workers) go to `canary`, the
//! rest to `primary`. The request's host plays no part: every request is
//! routed this way.

use bbproxy_sdk::serde::Deserialize;
use bbproxy_sdk::{Counter, Request, Route, Router};

/// The plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(crate = "bbproxy_sdk::serde", deny_unknown_fields)]
pub struct Config {
    /// Upstream for regular traffic.
    pub primary: String,
    /// Upstream for canary traffic.
    pub canary: String,
    /// Share of the requests (0..=100) sent to `canary` without opting in.
    #[serde(default = "default_percent")]
    pub percent: u32,
    /// Header that opts a request in with `1` or `true`.
    #[serde(default = "default_header")]
    pub header: String,
    /// Cookie that opts a request in with `1`.
    #[serde(default = "default_cookie")]
    pub cookie: String,
}

fn default_percent() -> u32 {
    10
}

fn default_header() -> String {
    "x-canary".to_owned()
}

fn default_cookie() -> String {
    "canary".to_owned()
}

impl Config {
    /// Parses the JSON configuration text and checks it against the
    /// configured upstream names.
    pub fn parse(json: &str, upstreams: &[String]) -> Result<Config, String> {
        let config: Config =
            bbproxy_sdk::parse_config(json).map_err(|e| format!("invalid canary config: {e}"))?;
        for (key, name) in [("primary", &config.primary), ("canary", &config.canary)] {
            if !upstreams.contains(name) {
                return Err(format!(
                    "invalid canary config: \"{key}\" is {name:?}, which is not a configured upstream (configured: {})",
                    upstreams.join(", ")
                ));
            }
        }
        if config.percent > 100 {
            return Err(format!(
                "invalid canary config: \"percent\" must be 0..=100, got {}",
                config.percent
            ));
        }
        if config.header.is_empty() || config.cookie.is_empty() {
            return Err(
                "invalid canary config: \"header\" and \"cookie\" must not be empty".into(),
            );
        }
        Ok(config)
    }
}

/// Whether the client opted in: header value `1`/`true` (any case), or a
/// cookie `cookie_name=1` in the `Cookie` header.
pub fn opted_in(header: Option<&str>, cookies: Option<&str>, cookie_name: &str) -> bool {
    let by_header = header
        .map(str::trim)
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    let by_cookie = cookies.is_some_and(|cookies| {
        cookies.split(';').any(|pair| {
            pair.split_once('=')
                .is_some_and(|(name, value)| name.trim() == cookie_name && value.trim() == "1")
        })
    });
    by_header || by_cookie
}

/// Whether the `n`-th request (from a shared counter) falls in the canary
/// share: `n mod 100 < percent`.
pub fn in_canary_share(n: i64, percent: u32) -> bool {
    n.rem_euclid(100) < i64::from(percent)
}

/// The canary router plugin.
#[derive(Debug, Default)]
pub struct CanaryRouter {
    config: Option<Config>,
    counter: Option<Counter>,
}

impl Router for CanaryRouter {
    fn init(config: &str) -> Result<Self, String> {
        let upstreams: Vec<String> = bbproxy_sdk::upstreams()
            .into_iter()
            .map(|u| u.name)
            .collect();
        let config = Config::parse(config, &upstreams)?;
        let counter = Counter::new(&format!(
            "example.canary-router.{}.{}",
            config.primary, config.canary
        ));
        Ok(CanaryRouter {
            config: Some(config),
            counter: Some(counter),
        })
    }

    fn route(&mut self, req: &Request) -> Route {
        let (Some(config), Some(counter)) = (&self.config, &self.counter) else {
            return Route::respond(503, "canary router: not configured\n");
        };
        let canary = opted_in(
            req.header(&config.header).as_deref(),
            req.header("cookie").as_deref(),
            &config.cookie,
        ) || in_canary_share(counter.fetch_add(1), config.percent);
        Route::to(if canary {
            &config.canary
        } else {
            &config.primary
        })
    }
}

bbproxy_sdk::export!(CanaryRouter: router);

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        vec!["app.test".to_owned(), "canary.test".to_owned()]
    }

    #[test]
    fn config_defaults() {
        let c = Config::parse(
            r#"{"primary": "app.test", "canary": "canary.test"}"#,
            &names(),
        )
        .unwrap();
        assert_eq!(c.percent, 10);
        assert_eq!(c.header, "x-canary");
        assert_eq!(c.cookie, "canary");
    }

    #[test]
    fn config_full() {
        let c = Config::parse(
            r#"{"primary": "app.test", "canary": "canary.test", "percent": 25,
                "header": "x-beta", "cookie": "beta"}"#,
            &names(),
        )
        .unwrap();
        assert_eq!(
            (c.percent, c.header.as_str(), c.cookie.as_str()),
            (25, "x-beta", "beta")
        );
    }

    #[test]
    fn config_errors() {
        let parse = |json: &str| Config::parse(json, &names()).unwrap_err();
        assert!(parse(r#"["app.test", "canary.test"]"#).contains("expected a JSON object"));
        assert!(parse(r#"{"canary": "canary.test"}"#).contains("missing field `primary`"));
        assert!(
            parse(r#"{"primary": "nope", "canary": "canary.test"}"#)
                .contains("\"primary\" is \"nope\"")
        );
        assert!(
            parse(r#"{"primary": "app.test", "canary": "nope"}"#)
                .contains("\"canary\" is \"nope\"")
        );
        assert!(
            parse(r#"{"primary": "app.test", "canary": "canary.test", "percent": 101}"#)
                .contains("0..=100")
        );
        assert!(
            parse(r#"{"primary": "app.test", "canary": "canary.test", "extra": 1}"#)
                .contains("unknown field `extra`")
        );
        assert!(
            parse(r#"{"primary": "app.test", "canary": "canary.test", "header": ""}"#)
                .contains("must not be empty")
        );
    }

    #[test]
    fn header_opt_in() {
        assert!(opted_in(Some("1"), None, "canary"));
        assert!(opted_in(Some("true"), None, "canary"));
        assert!(opted_in(Some(" TRUE "), None, "canary"));
        assert!(!opted_in(Some("0"), None, "canary"));
        assert!(!opted_in(Some("yes"), None, "canary"));
        assert!(!opted_in(None, None, "canary"));
    }

    #[test]
    fn cookie_opt_in() {
        assert!(opted_in(None, Some("canary=1"), "canary"));
        assert!(opted_in(None, Some("a=b; canary=1; c=d"), "canary"));
        assert!(!opted_in(None, Some("canary=0"), "canary"));
        assert!(!opted_in(None, Some("notcanary=1"), "canary"));
        assert!(!opted_in(None, Some("canary"), "canary"));
        assert!(opted_in(None, Some("beta=1"), "beta"));
    }

    // The plugin itself, through the SDK's in-process host: the real `init`
    // and `route`, a shared counter, fake requests.
    use bbproxy_sdk::testing::{FakeRequest, TestHost};

    const CONFIG: &str = r#"{"primary": "app.test", "canary": "canary.test", "percent": 10}"#;

    fn host() -> TestHost {
        TestHost::new()
            .upstream("app.test", 2)
            .upstream("canary.test", 1)
    }

    #[test]
    fn opted_in_requests_go_to_the_canary() {
        let host = host();
        let mut router: CanaryRouter = host.router(CONFIG).unwrap();
        let by_header = FakeRequest::get("app.test", "/").header("X-Canary", "true");
        let by_cookie = FakeRequest::get("app.test", "/").header("Cookie", "theme=dark; canary=1");
        for req in [by_header, by_cookie] {
            assert_eq!(host.route(&mut router, &req), Ok(Route::to("canary.test")));
        }
        // Opted-in requests do not use up the percentage share.
        assert_eq!(
            host.counter("example.canary-router.app.test.canary.test"),
            0
        );
    }

    #[test]
    fn ten_percent_across_instances_is_exact() {
        let host = host();
        // Two instances, as two proxy workers would have: the split is exact
        // because they share the host counter.
        let mut a: CanaryRouter = host.router(CONFIG).unwrap();
        let mut b: CanaryRouter = host.router(CONFIG).unwrap();
        let req = FakeRequest::get("app.test", "/");
        let mut canary = 0;
        for i in 0..200 {
            let router = if i % 2 == 0 { &mut a } else { &mut b };
            match host.route(router, &req).unwrap().upstream() {
                Some("canary.test") => canary += 1,
                Some("app.test") => {}
                other => panic!("unexpected route {other:?}"),
            }
        }
        assert_eq!(canary, 20);
    }

    #[test]
    fn config_naming_an_unknown_upstream_fails_init() {
        let host = TestHost::new().upstream("app.test", 1);
        let err = host.router::<CanaryRouter>(CONFIG).unwrap_err();
        assert!(err.contains("\"canary\" is \"canary.test\", which is not a configured upstream (configured: app.test)"), "{err}");
    }

    #[test]
    fn percentage_split_is_exact() {
        let canary = (0..1000).filter(|&n| in_canary_share(n, 10)).count();
        assert_eq!(canary, 100);
        assert_eq!((0..100).filter(|&n| in_canary_share(n, 0)).count(), 0);
        assert_eq!((0..100).filter(|&n| in_canary_share(n, 100)).count(), 100);
        assert!(in_canary_share(-100, 1));
    }
}
