//! Each plugin's idle instances, one pool per worker thread: a call runs on
//! its worker's newest instance in place, with the pool locked.

use super::{Fault, Instance, MAX_IDLE_INSTANCES, Plugin, World};

impl<W: World> Plugin<W> {
    /// This worker's pool of instances, locked; `None` when another thread
    /// holds it. A call runs on the pool's newest instance in place, with
    /// the pool locked: one lock and unlock per call, and the instance
    /// never moves. Only a thread that shares the worker's pool (one that
    /// is no worker) can find it locked.
    pub(super) fn pool(&self) -> Option<std::sync::MutexGuard<'_, Vec<Instance<W>>>> {
        match self.idle.get().try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// The instance a call runs on: the newest of `pool`, made first if
    /// the pool is empty, or, with the pool busy, a new one in `own`.
    pub(super) fn instance<'a>(
        &self,
        pool: Option<&'a mut Vec<Instance<W>>>,
        own: &'a mut Option<Instance<W>>,
    ) -> Result<&'a mut Instance<W>, Fault> {
        let Some(idle) = pool else {
            return Ok(own.insert(self.instantiate()?.0));
        };
        if idle.is_empty() {
            idle.push(self.instantiate()?.0);
        }
        idle.last_mut().ok_or_else(|| {
            Fault::Instantiate("the instance pool lost the instance it was given".into())
        })
    }

    /// Puts an instance made for a call while this worker's pool was busy
    /// into the pool, unless the pool is full or still busy: then it is
    /// dropped, as a thread must not wait out another's call.
    pub(super) fn release(&self, instance: Instance<W>) {
        if let Some(mut idle) = self.pool()
            && idle.len() < MAX_IDLE_INSTANCES
        {
            idle.push(instance);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Backend, BalancerWorld, Plugin, Runtime, bundle, test_plugins};

    fn balancer(runtime: &Runtime) -> Plugin<BalancerWorld> {
        // Weighted round-robin, which the balancer answers itself (plain
        // round-robin's turns the host takes without a call): the
        // instances share its counter, so each pick moves on.
        let upstreams = [("a.test", "weighted-round-robin")];
        test_plugins::load_balanced(runtime, bundle::BALANCER, "{}", &upstreams, 3)
    }

    /// Calls reuse the worker's newest instance in place; a call that finds
    /// the pool held (by a thread sharing it) runs on an instance of its
    /// own at once, and that instance is dropped rather than waited for.
    #[test]
    fn a_call_runs_in_the_pool_or_on_its_own_instance_when_the_pool_is_busy() {
        let runtime = Runtime::new().unwrap();
        let plugin = balancer(&runtime);
        let candidates = [Backend::fresh(0), Backend::fresh(1), Backend::fresh(2)];
        let pick = || plugin.pick(&mut None, 0, &candidates).unwrap();
        let first = pick();
        assert_eq!(plugin.pool().unwrap().len(), 1, "load's instance, reused");
        // Round-robin: the instances share the counter, so each pick moves on.
        assert_eq!(pick(), (first + 1) % 3);
        assert_eq!(plugin.pool().unwrap().len(), 1);
        let held = plugin.pool().unwrap();
        assert_eq!(
            pick(),
            (first + 2) % 3,
            "answered on an instance of its own"
        );
        assert_eq!(held.len(), 1, "the busy pool was left alone");
        drop(held);
        assert_eq!(pick(), first);
        assert_eq!(plugin.pool().unwrap().len(), 1);
    }
}
