//! The certificates served, by name. Readers (every handshake) load a
//! snapshot without locking; writers (startup, reload, ACME issuance and
//! renewal) publish a new map, so a renewed certificate is used by the next
//! handshake while open connections keep the one they negotiated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

#[derive(Debug, Default, Clone)]
struct Served {
    /// Lower-case names, `*.example.com` for wildcards.
    by_name: HashMap<String, Arc<CertifiedKey>>,
    /// The name whose certificate answers unknown or missing SNI.
    default: Option<String>,
}

/// Certificates for normal handshakes and for TLS-ALPN-01 challenges.
#[derive(Debug, Default)]
pub struct CertStore {
    served: ArcSwap<Served>,
    /// Challenge certificates live only while an order is validated.
    challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl CertStore {
    /// An empty store: every handshake is refused until certificates arrive.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Serves `key` for `name` from the next handshake on.
    pub fn insert(&self, name: &str, key: Arc<CertifiedKey>) {
        let name = name.to_ascii_lowercase();
        self.served.rcu(|old| {
            let mut new = Served::clone(old);
            new.by_name.insert(name.clone(), key.clone());
            new
        });
    }

    /// Keeps only the names `keep` accepts, then adds `add`; one swap, so a
    /// handshake sees either the old or the new set, never a mix.
    pub fn replace(
        &self,
        keep: impl Fn(&str) -> bool,
        add: &[(String, Arc<CertifiedKey>)],
        default: Option<String>,
    ) {
        self.served.rcu(|old| {
            let mut new = Served::clone(old);
            new.by_name.retain(|name, _| keep(name));
            for (name, key) in add {
                new.by_name.insert(name.to_ascii_lowercase(), key.clone());
            }
            new.default = default.clone();
            new
        });
    }

    /// The certificate for `name`: an exact entry, else the closest
    /// wildcard (`*.example.com` covers every subdomain, any depth).
    pub fn lookup(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let served = self.served.load();
        find(&served.by_name, &name.to_ascii_lowercase())
    }

    /// The certificate stored under exactly `name` (no wildcard).
    pub fn exact(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.served
            .load()
            .by_name
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// The certificate a handshake with `sni` gets (see the module docs of
    /// [`crate::tls`] for unknown names).
    pub fn for_sni(&self, sni: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let served = self.served.load();
        sni.and_then(|name| find(&served.by_name, &name.to_ascii_lowercase()))
            .or_else(|| {
                let default = served.default.as_deref()?;
                find(&served.by_name, default)
            })
    }

    /// Names that have a certificate now.
    pub fn names(&self) -> Vec<String> {
        self.served.load().by_name.keys().cloned().collect()
    }

    /// Answers TLS-ALPN-01 handshakes for `name` with `key`.
    pub fn set_challenge(&self, name: &str, key: Arc<CertifiedKey>) {
        self.challenges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_ascii_lowercase(), key);
    }

    /// Stops answering TLS-ALPN-01 for `name`.
    pub fn clear_challenge(&self, name: &str) {
        self.challenges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&name.to_ascii_lowercase());
    }

    /// Whether this process answers TLS-ALPN-01 for `name` itself.
    pub fn has_challenge(&self, name: &str) -> bool {
        self.challenge(name).is_some()
    }

    fn challenge(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.challenges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&name.to_ascii_lowercase())
            .cloned()
    }
}

fn find(map: &HashMap<String, Arc<CertifiedKey>>, name: &str) -> Option<Arc<CertifiedKey>> {
    if let Some(key) = map.get(name) {
        return Some(key.clone());
    }
    // `a.b.example.com` → `*.b.example.com`, then `*.example.com`, ...
    let mut rest = name;
    while let Some((_, parent)) = rest.split_once('.') {
        if let Some(key) = map.get(&format!("*.{parent}")) {
            return Some(key.clone());
        }
        rest = parent;
    }
    None
}

/// Normal handshakes: certificates by SNI.
#[derive(Debug)]
pub(super) struct ServedResolver(pub(super) Arc<CertStore>);

impl ResolvesServerCert for ServedResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.for_sni(hello.server_name())
    }
}

/// TLS-ALPN-01 handshakes: only challenge certificates, never a real one.
#[derive(Debug)]
pub(super) struct ChallengeResolver(pub(super) Arc<CertStore>);

impl ResolvesServerCert for ChallengeResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.challenge(hello.server_name()?)
    }
}

/// One challenge certificate fetched for one handshake.
#[derive(Debug)]
pub(super) struct FixedResolver(pub(super) Arc<CertifiedKey>);

impl ResolvesServerCert for FixedResolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Arc<CertifiedKey> {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        let der = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
        Arc::new(
            CertifiedKey::from_der(
                vec![cert.cert.der().clone()],
                der,
                &super::super::provider(),
            )
            .unwrap(),
        )
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let store = CertStore::new();
        let (a, w, d) = (key("a.test"), key("*.w.test"), key("d.test"));
        store.replace(
            |_| false,
            &[
                ("a.test".into(), a.clone()),
                ("*.w.test".into(), w.clone()),
                ("d.test".into(), d.clone()),
            ],
            None,
        );
        assert!(Arc::ptr_eq(&store.for_sni(Some("A.test")).unwrap(), &a));
        assert!(Arc::ptr_eq(&store.for_sni(Some("x.y.w.test")).unwrap(), &w));
        assert!(store.for_sni(Some("w.test")).is_none());
        assert!(store.for_sni(Some("other.test")).is_none());
        assert!(store.for_sni(None).is_none());
        store.replace(|_| true, &[], Some("d.test".into()));
        assert!(Arc::ptr_eq(&store.for_sni(Some("other.test")).unwrap(), &d));
        assert!(Arc::ptr_eq(&store.for_sni(None).unwrap(), &d));
    }
}
