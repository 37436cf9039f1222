//! What a component is, as the runtime sees it: its digest, its imports and
//! exports, and which role worlds it implements (linked against the host's
//! own linker, exports type-checked against each world). `bbproxy plugin
//! check` prints this; the runtime's own loading does the same checks for
//! one role in [`super::Plugin::load`].

use wasmtime::component::Component;

use super::{BalancerWorld, BreakerWorld, FilterWorld, LoadError, RouterWorld, Runtime, World};

/// A role world, with what a component must export to implement it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleWorld {
    /// `router`, `balancer`, `breaker` or `filter`.
    pub role: &'static str,
    /// The exports the world requires, as the component names them.
    pub exports: &'static [&'static str],
}

/// The four role worlds, in the order they are reported.
pub const ROLE_WORLDS: [RoleWorld; 4] = [
    RoleWorld {
        role: RouterWorld::ROLE,
        exports: &["init", "route"],
    },
    RoleWorld {
        role: BalancerWorld::ROLE,
        exports: &["init", "pick"],
    },
    RoleWorld {
        role: BreakerWorld::ROLE,
        exports: &["init", "on-outcome"],
    },
    RoleWorld {
        role: FilterWorld::ROLE,
        exports: &["init", "on-request", "on-response"],
    },
];

/// A compiled component, described.
#[derive(Debug)]
pub struct Description {
    /// Hex SHA-256 of its bytes.
    pub sha256: String,
    /// Export names.
    pub exports: Vec<String>,
    /// Import names (WASI ones included).
    pub imports: Vec<String>,
    /// For each of [`ROLE_WORLDS`]: `Ok` with the contract version
    /// (`0.2.0`, `0.1.1`, ...) if it implements it, else why not (the
    /// missing exports, or the link or type error).
    pub worlds: Vec<(RoleWorld, Result<&'static str, String>)>,
}

impl Runtime {
    /// Compiles `bytes` (named `name` in errors) and describes it.
    pub fn describe(&self, name: &str, bytes: &[u8]) -> Result<Description, LoadError> {
        let (component, sha256) = self.compile(name, bytes)?;
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(self.engine())
            .map(|(n, _)| n.to_owned())
            .collect();
        let imports: Vec<String> = ty
            .imports(self.engine())
            .map(|(n, _)| n.to_owned())
            .collect();
        let worlds = ROLE_WORLDS
            .iter()
            .map(|w| (*w, self.world_check(&component, w, &exports)))
            .collect();
        Ok(Description {
            sha256,
            exports,
            imports,
            worlds,
        })
    }

    /// Whether `component` implements `world`, and of which contract
    /// version; if not, why, naming the missing exports when that is the
    /// reason.
    fn world_check(
        &self,
        component: &Component,
        world: &RoleWorld,
        exports: &[String],
    ) -> Result<&'static str, String> {
        let absent: Vec<&str> = world
            .exports
            .iter()
            .copied()
            .filter(|e| !exports.iter().any(|x| x == e))
            .collect();
        if !absent.is_empty() {
            return Err(format!("missing export(s) {}", absent.join(", ")));
        }
        let pre = self
            .linker()
            .instantiate_pre(component)
            .map_err(|e| format!("cannot be linked against the host: {e:#}"))?;
        let version = match world.role {
            RouterWorld::ROLE => RouterWorld::pre(pre).map(|p| RouterWorld::version(&p)),
            BalancerWorld::ROLE => BalancerWorld::pre(pre).map(|p| BalancerWorld::version(&p)),
            BreakerWorld::ROLE => BreakerWorld::pre(pre).map(|p| BreakerWorld::version(&p)),
            _ => FilterWorld::pre(pre).map(|p| FilterWorld::version(&p)),
        }
        .map_err(|e| format!("exports do not match the world: {e:#}"))?;
        Ok(version.unwrap_or_else(|| super::contract_of(self, component)))
    }
}
