//! The `candidates` interface of `bbproxy:plugin@0.2.0`: a balancer reads
//! the candidates of its `pick` on demand instead of receiving them all,
//! so a policy that needs only their number (round-robin) copies nothing.

use super::bindings::types::Backend;
use super::bindings::v2::{candidates, decisions};
use super::state::PluginState;

impl decisions::Host for PluginState {}

impl candidates::Host for PluginState {
    fn get(&mut self, index: u32) -> wasmtime::Result<Backend> {
        let all = self.lent_candidates()?;
        match all.get(index as usize) {
            Some(b) => Ok(*b),
            None => Err(wasmtime::Error::msg(format!(
                "candidates.get({index}): out of range, the pick has {} candidates",
                all.len()
            ))),
        }
    }

    fn all(&mut self) -> wasmtime::Result<Vec<Backend>> {
        self.lent_candidates().map(<[Backend]>::to_vec)
    }

    fn ids(&mut self) -> wasmtime::Result<Vec<u32>> {
        self.lent_candidates()
            .map(|all| all.iter().map(|b| b.id).collect())
    }
}

impl PluginState {
    /// The candidates of the `pick` in progress; a pick always has at least
    /// one, so none means the call is not a pick.
    fn lent_candidates(&self) -> wasmtime::Result<&[Backend]> {
        if self.candidates.is_empty() {
            return Err(wasmtime::Error::msg(
                "candidates read outside of a pick call",
            ));
        }
        Ok(&self.candidates)
    }
}
