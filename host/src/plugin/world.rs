//! The four plugin roles behind one trait, so loading, pooling and fault
//! handling are written once.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::bindings::{balancer, breaker, filter, router};
use super::state::PluginState;

/// A plugin role: its WIT world, pre-instantiation and `init` export.
pub trait World: Send + Sync + 'static {
    /// `router`, `balancer`, `breaker` or `filter`.
    const ROLE: &'static str;
    /// The world's typed pre-instance.
    type Pre: Send + Sync;
    /// The world's typed exports of one instance.
    type Exports: Send;

    /// Checks the component's exports against the world.
    fn pre(pre: InstancePre<PluginState>) -> wasmtime::Result<Self::Pre>;
    /// Instantiates into `store`.
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<PluginState>,
    ) -> wasmtime::Result<Self::Exports>;
    /// Calls the world's `init` export.
    fn init(
        exports: &Self::Exports,
        store: &mut Store<PluginState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>>;
}

/// The `router` world.
#[derive(Debug)]
pub enum RouterWorld {}
/// The `balancer` world.
#[derive(Debug)]
pub enum BalancerWorld {}
/// The `breaker` world.
#[derive(Debug)]
pub enum BreakerWorld {}
/// The `filter` world.
#[derive(Debug)]
pub enum FilterWorld {}

macro_rules! world {
    ($ty:ty, $role:literal, $module:ident, $pre:ident, $exports:ident) => {
        impl World for $ty {
            const ROLE: &'static str = $role;
            type Pre = $module::$pre<PluginState>;
            type Exports = $module::$exports;

            fn pre(pre: InstancePre<PluginState>) -> wasmtime::Result<Self::Pre> {
                $module::$pre::new(pre)
            }

            fn instantiate(
                pre: &Self::Pre,
                store: &mut Store<PluginState>,
            ) -> wasmtime::Result<Self::Exports> {
                pre.instantiate(store)
            }

            fn init(
                exports: &Self::Exports,
                store: &mut Store<PluginState>,
                config: &str,
            ) -> wasmtime::Result<Result<(), String>> {
                exports.call_init(store, config)
            }
        }
    };
}

world!(RouterWorld, "router", router, RouterPre, Router);
world!(BalancerWorld, "balancer", balancer, BalancerPre, Balancer);
world!(BreakerWorld, "breaker", breaker, BreakerPre, Breaker);
world!(FilterWorld, "filter", filter, FilterPre, Filter);
