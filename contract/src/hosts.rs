//! How a request's host matches a domain key of config.json. The default
//! router routes by it, and the proxy uses the very same rule to find the
//! domain whose own router (if any) decides, and whose fault streak a
//! router's fault belongs to; one rule, so the two can never disagree.
//!
//! For a host (lower case, no port, a trailing dot ignored):
//! 1. the domain named exactly like the host (`example.com`, `127.0.0.1`,
//!    `localhost`);
//! 2. the longest matching wildcard: `*.example.com` matches `a.example.com`
//!    and `a.b.example.com`, not `example.com`;
//! 3. the default domain, if there is one.

use std::collections::BTreeMap;

/// Host → domain number lookup over a list of domain names.
#[derive(Debug, Default, Clone)]
pub struct HostMatcher {
    // A BTreeMap, not a HashMap: RandomState would need WASI randomness in
    // a plugin.
    exact: BTreeMap<String, usize>,
    /// `(suffix, domain)` for each `*.suffix` name, the suffix kept with its
    /// leading dot; longest suffix first.
    wildcards: Vec<(String, usize)>,
    default: Option<usize>,
}

impl HostMatcher {
    /// A matcher over `names` (numbered in order); `default` is the number
    /// of the domain for hosts that match no name.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>, default: Option<usize>) -> Self {
        let mut exact = BTreeMap::new();
        let mut wildcards = Vec::new();
        for (i, name) in names.into_iter().enumerate() {
            match name.strip_prefix('*') {
                Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => {
                    wildcards.push((suffix.to_owned(), i));
                }
                _ => {
                    // The first of two equal names wins, as config order says.
                    exact.entry(name.to_owned()).or_insert(i);
                }
            }
        }
        wildcards.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        HostMatcher {
            exact,
            wildcards,
            default,
        }
    }

    /// The number of the domain `host` matches (exact name, then longest
    /// wildcard, then the default), if any.
    ///
    /// ```
    /// use bbproxy_plugin_contract::hosts::HostMatcher;
    /// let m = HostMatcher::new(["a.test", "*.a.test"], None);
    /// assert_eq!(m.lookup("a.test"), Some(0));
    /// assert_eq!(m.lookup("x.a.test."), Some(1));
    /// assert_eq!(m.lookup("b.test"), None);
    /// ```
    pub fn lookup(&self, host: &str) -> Option<usize> {
        let host = host.strip_suffix('.').unwrap_or(host);
        if let Some(&i) = self.exact.get(host) {
            return Some(i);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|&(_, i)| i)
            .or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(names: &[&str], default: Option<usize>) -> HostMatcher {
        HostMatcher::new(names.iter().copied(), default)
    }

    #[test]
    fn exact_match() {
        let m = matcher(&["example.com", "127.0.0.1", "localhost"], None);
        assert_eq!(m.lookup("example.com"), Some(0));
        assert_eq!(m.lookup("127.0.0.1"), Some(1));
        assert_eq!(m.lookup("localhost"), Some(2));
        assert_eq!(m.lookup("www.example.com"), None);
    }

    #[test]
    fn exact_beats_wildcard() {
        let m = matcher(&["*.example.com", "a.example.com"], None);
        assert_eq!(m.lookup("a.example.com"), Some(1));
        assert_eq!(m.lookup("b.example.com"), Some(0));
    }

    #[test]
    fn wildcard_matches_any_depth_but_not_apex() {
        let m = matcher(&["*.example.com"], None);
        assert_eq!(m.lookup("a.example.com"), Some(0));
        assert_eq!(m.lookup("a.b.example.com"), Some(0));
        assert_eq!(m.lookup("example.com"), None);
        assert_eq!(m.lookup(".example.com"), None);
        assert_eq!(m.lookup("badexample.com"), None);
    }

    #[test]
    fn longest_wildcard_wins() {
        let m = matcher(&["*.example.com", "*.b.example.com", "*.com"], None);
        assert_eq!(m.lookup("a.b.example.com"), Some(1));
        assert_eq!(m.lookup("a.c.example.com"), Some(0));
        assert_eq!(m.lookup("other.com"), Some(2));
        assert_eq!(m.lookup("b.example.com"), Some(0));
    }

    #[test]
    fn trailing_dot_is_ignored() {
        let m = matcher(&["example.com", "*.example.org"], None);
        assert_eq!(m.lookup("example.com."), Some(0));
        assert_eq!(m.lookup("a.example.org."), Some(1));
    }

    #[test]
    fn default_applies_when_nothing_matches() {
        let m = matcher(&["example.com", "*.example.org", "fallback"], Some(2));
        assert_eq!(m.lookup("unknown.net"), Some(2));
        assert_eq!(m.lookup("example.com"), Some(0));
        assert_eq!(m.lookup("a.example.org"), Some(1));
    }
}
