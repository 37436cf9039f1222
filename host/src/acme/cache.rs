//! The on-disk cache of ACME state in `cert_cache_dir`: the account
//! credentials (one file per ACME directory URL) and, per domain, the
//! certificate chain and its key. Files are written 0600 via a temporary
//! file and a rename, so a crash never leaves half a key behind.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::AcmeError;

/// Where ACME state is kept; `None` keeps it in memory only (every start
/// orders new certificates).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    dir: Option<PathBuf>,
}

impl Cache {
    /// A cache in `dir`, created (0700) if missing and checked for writing.
    pub fn open(dir: Option<&Path>) -> Result<Self, AcmeError> {
        let Some(dir) = dir else {
            return Ok(Self { dir: None });
        };
        let fail = |reason: String| AcmeError::Cache {
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
        Ok(Self {
            dir: Some(dir.to_owned()),
        })
    }

    /// The directory, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The stored account credentials (JSON) for `directory`.
    pub fn account(&self, directory: &str) -> Option<Vec<u8>> {
        fs::read(self.path(&account_file(directory))?).ok()
    }

    /// Stores the account credentials for `directory`.
    pub fn store_account(&self, directory: &str, json: &[u8]) -> Result<(), AcmeError> {
        self.write(&account_file(directory), json)
    }

    /// Drops the stored account for `directory`.
    pub fn forget_account(&self, directory: &str) {
        if let Some(path) = self.path(&account_file(directory)) {
            let _ = fs::remove_file(path);
        }
    }

    /// The stored chain and key of `domain`, if both are there.
    pub fn certificate(&self, domain: &str) -> Option<(Vec<u8>, Vec<u8>)> {
        let chain = fs::read(self.path(&format!("{domain}.crt"))?).ok()?;
        let key = fs::read(self.path(&format!("{domain}.key"))?).ok()?;
        Some((chain, key))
    }

    /// Stores the chain and key of `domain` (key first: a chain on disk
    /// always has its key).
    pub fn store_certificate(
        &self,
        domain: &str,
        chain: &[u8],
        key: &[u8],
    ) -> Result<(), AcmeError> {
        self.write(&format!("{domain}.key"), key)?;
        self.write(&format!("{domain}.crt"), chain)
    }

    fn path(&self, file: &str) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(file))
    }

    fn write(&self, file: &str, bytes: &[u8]) -> Result<(), AcmeError> {
        let Some(path) = self.path(file) else {
            return Ok(());
        };
        let tmp = path.with_extension("tmp");
        write_private(&tmp, bytes)
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(|e| AcmeError::Cache {
                path: path.clone(),
                reason: format!("cannot write: {e}"),
            })
    }
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
fn account_file(directory: &str) -> String {
    let digest = Sha256::digest(directory.as_bytes());
    let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("account-{short}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_private_and_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs/nested");
        let cache = Cache::open(Some(&dir)).unwrap();
        cache.store_certificate("a.test", b"chain", b"key").unwrap();
        assert_eq!(
            cache.certificate("a.test"),
            Some((b"chain".to_vec(), b"key".to_vec()))
        );
        for f in ["a.test.crt", "a.test.key"] {
            let mode = fs::metadata(dir.join(f)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        cache.store_account("https://ca.test/dir", b"{}").unwrap();
        assert_eq!(cache.account("https://ca.test/dir"), Some(b"{}".to_vec()));
        assert_eq!(cache.account("https://other.test/dir"), None);
    }

    #[test]
    fn an_unwritable_directory_is_a_clear_error() {
        // A path under a regular file can never be created, even as root.
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = Cache::open(Some(&file.join("certs")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("certs") && err.contains("cannot create"),
            "{err}"
        );
    }
}
