//! The single-node storage: `cert_cache_dir` files exactly as before (the
//! account credentials, one file per ACME directory URL, and per domain
//! `<name>.crt` and `<name>.key`, written 0600 through a temporary file and a
//! rename so a crash never leaves half a key), or memory only without a
//! directory (every start orders anew). Locks, challenge answers and
//! renewal information live in this process: nobody else shares them.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{ChallengeKey, Health, LockToken, Op, Storage, StorageError, StoredCert, Written};

/// Files in `cert_cache_dir`, or nothing on disk.
#[derive(Debug)]
pub struct FileStorage {
    dir: Option<PathBuf>,
    health: Arc<Health>,
    local: Mutex<Local>,
}

/// What only this process needs to know.
#[derive(Debug, Default)]
struct Local {
    locks: HashMap<String, (LockToken, Instant)>,
    challenges: HashMap<ChallengeKey, String>,
    ari: HashMap<String, Vec<u8>>,
}

impl FileStorage {
    /// A store in `dir`, created (0700) if missing and checked for writing;
    /// `None` keeps nothing on disk.
    pub fn open(dir: Option<&Path>) -> Result<Self, StorageError> {
        let (kind, target) = match dir {
            Some(d) => ("file", d.display().to_string()),
            None => ("memory", String::new()),
        };
        let store = Self {
            dir: dir.map(Path::to_owned),
            health: Arc::new(Health::new(kind, target, "cert_cache_dir")),
            local: Mutex::default(),
        };
        let Some(dir) = dir else {
            return Ok(store);
        };
        let fail = |reason: String| StorageError::File {
            path: dir.to_owned(),
            reason,
        };
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create it: {e}")))?;
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        }
        // Creating a file is the only reliable writability test (root,
        // ACLs, read-only mounts).
        let probe = dir.join(".bbproxy-write-test");
        write_private(&probe, b"").map_err(|e| {
            fail(format!(
                "not writable (set cert_cache_dir to a writable directory): {e}"
            ))
        })?;
        let _ = fs::remove_file(&probe);
        Ok(store)
    }

    fn path(&self, file: &str) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(file))
    }

    fn read(&self, file: &str) -> Option<Vec<u8>> {
        fs::read(self.path(file)?).ok()
    }

    fn write(&self, file: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let Some(path) = self.path(file) else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        write_private(&tmp, bytes)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| StorageError::File {
                path: path.clone(),
                reason: format!("cannot write: {e}"),
            })
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stored(&self, name: &str) -> Option<StoredCert> {
        let chain = String::from_utf8(self.read(&format!("{name}.crt"))?).ok()?;
        let key = String::from_utf8(self.read(&format!("{name}.key"))?).ok()?;
        let not_after = not_after(&chain).unwrap_or(0);
        Some(StoredCert {
            chain,
            key,
            not_after,
        })
    }

    fn holds(&self, name: &str, lock: &LockToken) -> bool {
        self.local()
            .locks
            .get(name)
            .is_some_and(|(held, until)| held == lock && *until > Instant::now())
    }
}

/// Wraps a synchronous result as a storage operation.
fn done<'a, T: Send + 'a>(result: Result<T, StorageError>) -> Op<'a, T> {
    Box::pin(std::future::ready(result))
}

impl Storage for FileStorage {
    fn kind(&self) -> &'static str {
        if self.dir.is_some() { "file" } else { "memory" }
    }

    fn target(&self) -> String {
        self.dir
            .as_ref()
            .map(|d| d.display().to_string())
            .unwrap_or_default()
    }

    fn shared(&self) -> bool {
        false
    }

    fn health(&self) -> &Arc<Health> {
        &self.health
    }

    fn account(&self, directory: &str) -> Op<'_, Option<Vec<u8>>> {
        done(Ok(self.read(&account_file(directory))))
    }

    fn store_account<'a>(&'a self, directory: &'a str, json: &'a [u8]) -> Op<'a, ()> {
        done(self.write(&account_file(directory), json))
    }

    fn forget_account<'a>(&'a self, directory: &'a str) -> Op<'a, ()> {
        if let Some(path) = self.path(&account_file(directory)) {
            let _ = fs::remove_file(path);
        }
        done(Ok(()))
    }

    fn certificate<'a>(&'a self, name: &'a str) -> Op<'a, Option<StoredCert>> {
        done(Ok(self.stored(name)))
    }

    fn certificate_now(&self, name: &str) -> Option<StoredCert> {
        self.stored(name)
    }

    fn store_certificate<'a>(
        &'a self,
        name: &'a str,
        cert: &'a StoredCert,
        lock: &'a LockToken,
    ) -> Op<'a, Written> {
        if !self.holds(name, lock) {
            return done(Ok(Written::LockLost));
        }
        if self
            .stored(name)
            .is_some_and(|old| old.not_after > cert.not_after)
        {
            return done(Ok(Written::Older));
        }
        // Key first: a chain on disk always has its key.
        let result = self
            .write(&format!("{name}.key"), cert.key.as_bytes())
            .and_then(|()| self.write(&format!("{name}.crt"), cert.chain.as_bytes()));
        done(result.map(|()| Written::Stored))
    }

    fn versions(&self) -> Op<'_, Vec<(String, String)>> {
        // Nobody else writes here: there is nothing to poll for.
        done(Ok(Vec::new()))
    }

    fn ari<'a>(&'a self, name: &'a str) -> Op<'a, Option<Vec<u8>>> {
        done(Ok(self.local().ari.get(name).cloned()))
    }

    fn store_ari<'a>(&'a self, name: &'a str, json: &'a [u8]) -> Op<'a, ()> {
        self.local().ari.insert(name.to_owned(), json.to_vec());
        done(Ok(()))
    }

    fn challenges(&self) -> Op<'_, HashMap<ChallengeKey, String>> {
        done(Ok(self.local().challenges.clone()))
    }

    fn publish_challenge<'a>(
        &'a self,
        key: &'a ChallengeKey,
        value: &'a str,
        _ttl: Duration,
    ) -> Op<'a, ()> {
        self.local()
            .challenges
            .insert(key.clone(), value.to_owned());
        done(Ok(()))
    }

    fn withdraw_challenge<'a>(&'a self, key: &'a ChallengeKey) -> Op<'a, ()> {
        self.local().challenges.remove(key);
        done(Ok(()))
    }

    fn try_lock<'a>(&'a self, name: &'a str, lease: Duration) -> Op<'a, Option<LockToken>> {
        let mut local = self.local();
        let now = Instant::now();
        let free = local.locks.get(name).is_none_or(|(_, until)| *until <= now);
        let token = free.then(|| {
            let token = LockToken::random();
            local
                .locks
                .insert(name.to_owned(), (token.clone(), now + lease));
            token
        });
        done(Ok(token))
    }

    fn extend_lock<'a>(
        &'a self,
        name: &'a str,
        lock: &'a LockToken,
        lease: Duration,
    ) -> Op<'a, bool> {
        let mut local = self.local();
        let now = Instant::now();
        let ours = match local.locks.get_mut(name) {
            Some((held, until)) if held == lock && *until > now => {
                *until = now + lease;
                true
            }
            _ => false,
        };
        done(Ok(ours))
    }

    fn unlock<'a>(&'a self, name: &'a str, lock: &'a LockToken) -> Op<'a, ()> {
        let mut local = self.local();
        if local.locks.get(name).is_some_and(|(held, _)| held == lock) {
            local.locks.remove(name);
        }
        done(Ok(()))
    }

    fn ping(&self) -> Op<'_, ()> {
        done(Ok(()))
    }
}

/// The leaf's notAfter in Unix seconds, if the chain parses.
pub fn not_after(chain_pem: &str) -> Option<u64> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let leaf = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()?
        .ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    u64::try_from(cert.validity().not_after.timestamp()).ok()
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` only applies on creation; an older file keeps its bits.
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Accounts are per ACME server: staging and production keys differ.
pub fn account_file(directory: &str) -> String {
    let digest = Sha256::digest(directory.as_bytes());
    let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("account-{short}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block<T>(op: Op<'_, T>) -> Result<T, StorageError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(op)
    }

    fn cert(not_after: u64) -> StoredCert {
        StoredCert {
            chain: format!("chain {not_after}"),
            key: "key".into(),
            not_after,
        }
    }

    #[test]
    fn files_are_private_and_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs/nested");
        let store = FileStorage::open(Some(&dir)).unwrap();
        let lock = block(store.try_lock("a.test", Duration::from_secs(60)))
            .unwrap()
            .unwrap();
        assert_eq!(
            block(store.store_certificate("a.test", &cert(0), &lock)).unwrap(),
            Written::Stored
        );
        let stored = block(store.certificate("a.test")).unwrap().unwrap();
        assert_eq!(
            (stored.chain.as_str(), stored.key.as_str()),
            ("chain 0", "key")
        );
        for f in ["a.test.crt", "a.test.key"] {
            let mode = fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        block(store.store_account("https://ca.test/dir", b"{}")).unwrap();
        assert_eq!(
            block(store.account("https://ca.test/dir")).unwrap(),
            Some(b"{}".to_vec())
        );
        assert_eq!(
            block(store.account("https://other.test/dir")).unwrap(),
            None
        );
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        // A path under a regular file can never be created, even as root.
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = FileStorage::open(Some(&file.join("certs")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("certs") && err.contains("cannot create"),
            "{err}"
        );
    }

    #[test]
    fn one_lock_holder_and_release_by_the_holder_only() {
        let store = FileStorage::open(None).unwrap();
        let lease = Duration::from_secs(60);
        let a = block(store.try_lock("n", lease)).unwrap().unwrap();
        assert_eq!(block(store.try_lock("n", lease)).unwrap(), None);
        block(store.unlock("n", &LockToken("not-a".into()))).unwrap();
        assert_eq!(block(store.try_lock("n", lease)).unwrap(), None);
        assert!(block(store.extend_lock("n", &a, lease)).unwrap());
        block(store.unlock("n", &a)).unwrap();
        assert!(!block(store.extend_lock("n", &a, lease)).unwrap());
        assert!(block(store.try_lock("n", lease)).unwrap().is_some());
    }
}
