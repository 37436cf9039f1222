//! Example balancer: always picks the candidate with the highest `id`, i.e. the
//! last configured backend whose breaker still admits traffic.
//!
//! Its decisions are easy to tell apart from any built-in balancer, which
//! makes it a proof that the proxy's choice came from this component.

use bbproxy_sdk::{Backend, Balancer, Request};

/// The balancer; it keeps no state.
#[derive(Debug, Default)]
pub struct LastBackend;

/// Index (into `candidates`) of the candidate with the highest backend id.
pub fn last_backend(candidates: &[Backend]) -> Option<u32> {
    let (index, _) = candidates.iter().enumerate().max_by_key(|(_, b)| b.id)?;
    u32::try_from(index).ok()
}

impl Balancer for LastBackend {
    fn pick(&mut self, _req: &Request, _upstream: u32, candidates: &[Backend]) -> Option<u32> {
        last_backend(candidates)
    }
}

bbproxy_sdk::export!(LastBackend: balancer);

#[cfg(test)]
mod tests {
    use super::*;
    use bbproxy_sdk::testing::{FakeRequest, TestHost, backend, backends};

    #[test]
    fn picks_highest_id() {
        assert_eq!(last_backend(&[backend(0), backend(1), backend(2)]), Some(2));
        // Candidates need not be in id order (or contiguous).
        assert_eq!(last_backend(&[backend(3), backend(7), backend(1)]), Some(1));
        assert_eq!(last_backend(&[backend(4)]), Some(0));
    }

    #[test]
    fn empty_candidates_is_none() {
        assert_eq!(last_backend(&[]), None);
    }

    #[test]
    fn takes_no_config() {
        let host = TestHost::new();
        assert!(host.balancer::<LastBackend>("{}").is_ok());
        let err = host.balancer::<LastBackend>(r#"{"x":1}"#).unwrap_err();
        assert_eq!(err, r#"this plugin takes no configuration, got {"x":1}"#);
    }

    #[test]
    fn the_plugin_picks_the_last_admitted_backend() {
        let host = TestHost::new().upstream("app.test", 3);
        let mut lb: LastBackend = host.balancer("{}").unwrap();
        let req = FakeRequest::get("app.test", "/");
        assert_eq!(host.pick(&mut lb, &req, 0, &backends(3)), Ok(2));
        // Backend 2's breaker is open: the proxy passes only 0 and 1.
        assert_eq!(host.pick(&mut lb, &req, 0, &backends(2)), Ok(1));
    }
}
