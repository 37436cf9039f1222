//! The answers a 0.2.0 plugin declares during `init` so that the host
//! gives them without entering it: `router-answers` (the domains that
//! always go to their own upstream) and `balancer-answers` (the upstreams
//! picked round-robin over a shared counter).

use wasmtime::component::Resource;

use super::bindings::CounterHandle;
use super::bindings::v2::{balancer_answers, router_answers};
use super::state::PluginState;

impl PluginState {
    /// Checks a declaration `call` about upstream number `upstream`: only
    /// during `init`, and of an upstream that exists. Its index, and the
    /// number of upstreams (the length of the declaration's table).
    fn declared_upstream(&self, call: &str, upstream: u32) -> wasmtime::Result<(usize, usize)> {
        if !self.initializing {
            return Err(wasmtime::Error::msg(format!(
                "{call} called outside of init"
            )));
        }
        let count = self.upstream_count();
        let i = upstream as usize;
        if i >= count {
            return Err(wasmtime::Error::msg(format!(
                "{call}({upstream}): not an upstream, there are {count}"
            )));
        }
        Ok((i, count))
    }
}

impl router_answers::Host for PluginState {
    fn upstream_is_domain(&mut self, domain: u32) -> wasmtime::Result<()> {
        let (i, count) = self.declared_upstream("router-answers.upstream-is-domain", domain)?;
        if self.upstream_is_domain.len() < count {
            self.upstream_is_domain.resize(count, false);
        }
        self.upstream_is_domain[i] = true;
        Ok(())
    }
}

impl balancer_answers::Host for PluginState {
    fn round_robin(
        &mut self,
        upstream: u32,
        turns: Resource<CounterHandle>,
    ) -> wasmtime::Result<()> {
        let (i, count) = self.declared_upstream("balancer-answers.round-robin", upstream)?;
        let turns = self.counter(&turns)?;
        if self.round_robin.len() < count {
            self.round_robin.resize(count, None);
        }
        self.round_robin[i] = Some(turns);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering;

    use super::super::bindings::host::HostCounter;
    use super::super::{
        Backend, BalancerWorld, Plugin, RouterWorld, Runtime, bundle, test_plugins,
    };
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

    /// The built-in balancer declares its round-robin upstreams, each with
    /// the shared counter its own picks advance: the host takes their
    /// turns without a call (the counter moves one per pick, and the
    /// candidates' number is the one given), and calls the balancer for
    /// the others.
    #[test]
    fn round_robin_picks_are_the_hosts_turns_of_the_balancers_counter() {
        let runtime = Runtime::new().unwrap();
        let upstreams = [
            ("a.test", "round-robin"),
            ("b.test", "weighted-round-robin"),
        ];
        let balancer: Plugin<BalancerWorld> =
            test_plugins::load_balanced(&runtime, bundle::BALANCER, "{}", &upstreams, 3);
        let answer = balancer.init_answer();
        assert!(answer.round_robin[0].is_some() && answer.round_robin[1].is_none());
        let turns = runtime.shared().counter("bbproxy.balancer.rr.a.test");
        turns.store(7, Ordering::Relaxed);
        let three = [Backend::fresh(0), Backend::fresh(1), Backend::fresh(2)];
        let picks: Vec<usize> = (0..4)
            .map(|n| {
                let candidates = if n == 2 { &three[..2] } else { &three[..] };
                balancer.pick(&mut None, 0, candidates).unwrap()
            })
            .collect();
        assert_eq!(picks, [1, 2, 1, 1], "turns 7, 8, 9 (of two), 10");
        assert_eq!(turns.load(Ordering::Relaxed), 11);
        assert_eq!(balancer.calls(), 0, "no call for a round-robin upstream");
        balancer.pick(&mut None, 1, &three).unwrap();
        assert_eq!(balancer.calls(), 1, "weighted round-robin is the plugin's");
    }

    /// `round-robin` outside `init`, or of a number that is not an
    /// upstream's, traps; during `init` it keeps the counter handed over.
    #[test]
    fn a_round_robin_declaration_outside_init_or_out_of_range_traps() {
        let runtime = Runtime::new().unwrap();
        let balancer: Plugin<BalancerWorld> =
            test_plugins::load(&runtime, bundle::BALANCER, "{}", &["a.test"], 2);
        let mut store = balancer.new_store();
        let state = store.data_mut();
        let turns = |state: &mut PluginState| HostCounter::new(state, "t".into()).unwrap();
        let handle = turns(state);
        let err = balancer_answers::Host::round_robin(state, 0, handle).unwrap_err();
        assert!(err.to_string().contains("outside of init"), "{err}");
        state.initializing = true;
        let handle = turns(state);
        let err = balancer_answers::Host::round_robin(state, 1, handle).unwrap_err();
        assert!(
            err.to_string()
                .contains("balancer-answers.round-robin(1): not an upstream, there are 1"),
            "{err}"
        );
        let handle = turns(state);
        balancer_answers::Host::round_robin(state, 0, handle).unwrap();
        let kept = state.round_robin[0].as_ref().unwrap();
        assert!(Arc::ptr_eq(kept, &runtime.shared().counter("t")));
    }
}
