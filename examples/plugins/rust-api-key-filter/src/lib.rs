//! Example filter: lets a request through only when it carries an accepted
//! API key, and takes the key off the request before it is forwarded, so
//! backends (and their logs) never see it.
//!
//! Configuration (`keys` is required; `header` shows its default):
//!
//! ```json
//! {"header": "x-api-key", "keys": ["k-4f1c9a", "k-77d0e2"]}
//! ```
//!
//! A request whose header `header` is missing gets `401` with the body
//! `missing API key`; one whose key is not in `keys` gets `401` with
//! `invalid API key`. Both carry `www-authenticate: ApiKey
//! header="<header>"`, which tells the client where the key goes. Every
//! other request is forwarded with the header removed. The response is
//! left as the backend sent it: by the time it arrives the key is gone
//! from the request, and only requests that passed ever reach a backend.

use bbproxy_sdk::serde::Deserialize;
use bbproxy_sdk::v2::Fact;
use bbproxy_sdk::{Filter, Level, Request, RequestAction, RequestEdits};

/// The plugin's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(crate = "bbproxy_sdk::serde", deny_unknown_fields)]
pub struct Config {
    /// The request header that carries the key (any case).
    #[serde(default = "default_header")]
    pub header: String,
    /// The accepted keys: at least one, none empty.
    pub keys: Vec<String>,
}

fn default_header() -> String {
    "x-api-key".to_owned()
}

impl Config {
    /// Parses the JSON configuration text and checks it: every error is an
    /// `init` error, so a bad configuration never goes live.
    pub fn parse(json: &str) -> Result<Config, String> {
        let config: Config =
            bbproxy_sdk::parse_config(json).map_err(|e| format!("invalid api-key config: {e}"))?;
        // The header is removed from every forwarded request: a name the
        // proxy would refuse in that edit would fault every request, so it
        // is refused here, once, with the reason.
        bbproxy_sdk::check_header_name(&config.header)
            .map_err(|e| format!("invalid api-key config: \"header\": {e}"))?;
        if config.keys.is_empty() {
            return Err(
                "invalid api-key config: \"keys\" is empty, so every request would be refused; \
                 list at least one key"
                    .into(),
            );
        }
        if let Some(i) = config.keys.iter().position(String::is_empty) {
            return Err(format!(
                "invalid api-key config: \"keys\"[{i}] is empty; an empty key would let a request \
                 with an empty header in"
            ));
        }
        Ok(config)
    }
}

/// Whether `given` equals one of `keys`. Every key is compared in full,
/// byte by byte, whatever matched before, so how long the check takes does
/// not tell a client how much of a key it guessed right.
pub fn accepted(given: &str, keys: &[String]) -> bool {
    keys.iter()
        .fold(false, |found, key| constant_time_eq(given, key) | found)
}

/// `a == b` in a time that depends on the lengths only.
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |diff, (x, y)| diff | (x ^ y))
            == 0
}

/// The API key filter plugin.
#[derive(Debug, Default)]
pub struct ApiKeyFilter {
    config: Option<Config>,
}

impl ApiKeyFilter {
    /// The 401 answer, saying where the key goes.
    fn refuse(header: &str, why: &str) -> RequestAction {
        RequestAction::respond(401, format!("{why}\n"))
            .with_header("www-authenticate", format!("ApiKey header=\"{header}\""))
    }
}

impl Filter for ApiKeyFilter {
    fn init(config: &str) -> Result<Self, String> {
        Ok(ApiKeyFilter {
            config: Some(Config::parse(config)?),
        })
    }

    fn on_request(&mut self, req: &Request) -> RequestAction {
        let Some(config) = &self.config else {
            // The SDK never calls a filter that failed `init`; closed
            // rather than open, should that change: this is authentication.
            bbproxy_sdk::log(Level::Error, "api-key filter: called without a config");
            return RequestAction::respond(503, "api-key filter: not configured\n");
        };
        // Declared as a fact: lent from what came with the call.
        match req.header_lent(&config.header) {
            None => Self::refuse(&config.header, "missing API key"),
            Some(key) if !accepted(&key, &config.keys) => {
                Self::refuse(&config.header, "invalid API key")
            }
            Some(_) => RequestEdits::new().remove_header(&config.header).into(),
        }
    }

    /// It checks requests only: under contract 0.2.0 the proxy then never
    /// calls it for a response.
    fn edits_responses(&self) -> bool {
        false
    }

    /// The key's header comes with every call (contract 0.2.0), so
    /// checking it calls nothing in the proxy.
    fn request_facts(&self) -> Vec<Fact> {
        self.config
            .iter()
            .map(|c| Fact::header(c.header.as_str()))
            .collect()
    }
}

bbproxy_sdk::v2::export!(ApiKeyFilter: filter);

#[cfg(test)]
mod tests {
    use super::*;
    use bbproxy_sdk::testing::{FakeRequest, FakeResponse, TestHost, check_request_action};
    use bbproxy_sdk::{Header, HeaderEdit};

    const CONFIG: &str = r#"{"keys": ["k-alpha", "k-beta"]}"#;

    fn filter(host: &TestHost) -> ApiKeyFilter {
        host.filter(CONFIG).unwrap()
    }

    #[test]
    fn an_accepted_key_is_forwarded_without_the_key_header() {
        let host = TestHost::new();
        let mut filter = filter(&host);
        for key in ["k-alpha", "k-beta"] {
            let mut req = FakeRequest::get("api.test", "/v1/items")
                .header("X-Api-Key", key)
                .header("accept", "application/json");
            let action = host.on_request(&mut filter, &req).unwrap();
            assert_eq!(
                action,
                RequestAction::Forward(RequestEdits::new().remove_header("x-api-key"))
            );
            req.apply(action.edits().unwrap()).unwrap();
            // What the backend gets: no key, the rest untouched.
            assert_eq!(
                req.headers(),
                [("accept".to_owned(), "application/json".to_owned())]
            );
        }
        // The response passes as the backend sent it.
        let req = FakeRequest::get("api.test", "/v1/items");
        let resp = FakeResponse::new(200).header("server", "app");
        assert_eq!(host.on_response(&mut filter, &req, &resp), Ok(vec![]));
    }

    #[test]
    fn a_wrong_key_gets_401_with_a_challenge() {
        let host = TestHost::new();
        let mut filter = filter(&host);
        for wrong in ["k-alph", "k-alphaa", "K-ALPHA", "", "k-alpha "] {
            let req = FakeRequest::get("api.test", "/").header("x-api-key", wrong);
            let action = host.on_request(&mut filter, &req).unwrap();
            let answer = action.answer().unwrap();
            assert_eq!(
                (answer.status, answer.body.as_str()),
                (401, "invalid API key\n"),
                "{wrong:?}"
            );
            assert_eq!(
                answer.headers,
                [Header::new(
                    "www-authenticate",
                    "ApiKey header=\"x-api-key\""
                )]
            );
        }
    }

    #[test]
    fn a_missing_key_gets_401_naming_the_configured_header() {
        let host = TestHost::new();
        let mut filter: ApiKeyFilter = host
            .filter(r#"{"header": "Authorization-Key", "keys": ["k1"]}"#)
            .unwrap();
        // The default header is not the configured one.
        let req = FakeRequest::get("api.test", "/").header("x-api-key", "k1");
        let action = host.on_request(&mut filter, &req).unwrap();
        let answer = action.answer().unwrap();
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (401, "missing API key\n")
        );
        assert_eq!(
            answer.headers,
            [Header::new(
                "www-authenticate",
                "ApiKey header=\"Authorization-Key\""
            )]
        );
        // Header names are case-insensitive.
        let ok = FakeRequest::get("api.test", "/").header("authorization-key", "k1");
        let action = host.on_request(&mut filter, &ok).unwrap();
        assert_eq!(
            action.edits().map(|e| e.headers.clone()),
            Some(vec![HeaderEdit::remove("Authorization-Key")])
        );
    }

    #[test]
    fn bad_configs_fail_init_with_the_reason() {
        let host = TestHost::new();
        let err = |config: &str| host.filter::<ApiKeyFilter>(config).unwrap_err();
        assert_eq!(
            err("{}"),
            "invalid api-key config: missing field `keys` at line 1 column 2"
        );
        assert!(err(r#"{"keys": []}"#).contains("\"keys\" is empty"));
        assert!(err(r#"{"keys": ["a", ""]}"#).contains("\"keys\"[1] is empty"));
        assert!(err(r#"{"keys": "a"}"#).starts_with("invalid api-key config: invalid type"));
        assert!(err(r#"{"keys": ["a"], "headr": "x"}"#).contains("unknown field `headr`"));
        assert!(err(r#"["a"]"#).contains("expected a JSON object"));
        assert_eq!(
            err(r#"{"keys": ["a"], "header": "x key"}"#),
            "invalid api-key config: \"header\": invalid header name \"x key\""
        );
        assert!(
            err(r#"{"keys": ["a"], "header": "Host"}"#)
                .starts_with("invalid api-key config: \"header\": a filter cannot change host (")
        );
        assert_eq!(
            host.filter::<ApiKeyFilter>(r#"{"keys": ["a"]}"#)
                .unwrap()
                .config
                .map(|c| c.header),
            Some("x-api-key".to_owned())
        );
    }

    #[test]
    fn every_answer_is_within_the_contract() {
        let host = TestHost::new();
        let mut filter = filter(&host);
        for key in [None, Some("k-beta"), Some("nope")] {
            let mut req = FakeRequest::get("api.test", "/");
            if let Some(key) = key {
                req = req.header("x-api-key", key);
            }
            let action = filter.on_request(&req.as_request());
            assert_eq!(check_request_action(&action), Ok(()), "{key:?}");
        }
    }

    #[test]
    fn keys_match_whole_and_exact() {
        let keys = ["abc".to_owned(), "de".to_owned()];
        assert!(accepted("abc", &keys));
        assert!(accepted("de", &keys));
        for wrong in ["", "ab", "abcd", "ABC", "d", "dee", "abcde"] {
            assert!(!accepted(wrong, &keys), "{wrong}");
        }
        assert!(!accepted("abc", &[]));
    }
}
