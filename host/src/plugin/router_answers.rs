//! The `router-answers` interface of `bbproxy:plugin@0.2.0`: during `init`
//! a router says which domains always go to their own upstream, and the
//! host answers their requests' `route` without entering the plugin.

use super::bindings::v2::router_answers;
use super::state::PluginState;

impl router_answers::Host for PluginState {
    fn upstream_is_domain(&mut self, domain: u32) -> wasmtime::Result<()> {
        if !self.initializing {
            return Err(wasmtime::Error::msg(
                "router-answers.upstream-is-domain called outside of init",
            ));
        }
        let count = self.upstream_count();
        let i = domain as usize;
        if i >= count {
            return Err(wasmtime::Error::msg(format!(
                "router-answers.upstream-is-domain({domain}): not an upstream, there are {count}"
            )));
        }
        if self.upstream_is_domain.len() < count {
            self.upstream_is_domain.resize(count, false);
        }
        self.upstream_is_domain[i] = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Plugin, RouterWorld, Runtime, bundle, test_plugins};
    use super::*;

    fn router(config: &str) -> Plugin<RouterWorld> {
        let runtime = Runtime::new().unwrap();
        test_plugins::load(&runtime, bundle::ROUTER, config, &["a.test", "b.test"], 1)
    }

    /// What the built-in router declared during `init` is its init answer:
    /// both domains without routes, only the one without them otherwise.
    #[test]
    fn the_declarations_made_in_init_are_the_init_answer() {
        let plain = router("{}");
        assert!(plain.init_answer().routes_to_itself(0));
        assert!(plain.init_answer().routes_to_itself(1));
        assert!(!plain.init_answer().routes_to_itself(2), "not an upstream");
        let routed = router(r#"{"routes": {"a.test": [{"match": {"path": "/x"}}]}}"#);
        assert!(!routed.init_answer().routes_to_itself(0));
        assert!(routed.init_answer().routes_to_itself(1));
    }

    /// A declaration outside `init`, or of a number that is not an
    /// upstream's, traps with a message that says which.
    #[test]
    fn a_declaration_outside_init_or_out_of_range_traps() {
        let plugin = router("{}");
        let mut store = plugin.new_store();
        let state = store.data_mut();
        let err = router_answers::Host::upstream_is_domain(state, 0).unwrap_err();
        assert!(err.to_string().contains("outside of init"), "{err}");
        state.initializing = true;
        let err = router_answers::Host::upstream_is_domain(state, 2).unwrap_err();
        assert!(
            err.to_string()
                .contains("(2): not an upstream, there are 2"),
            "{err}"
        );
        router_answers::Host::upstream_is_domain(state, 1).unwrap();
        assert_eq!(state.upstream_is_domain, [false, true]);
    }
}
