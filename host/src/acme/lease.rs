//! Work done while holding a name's lock: the lease is extended every
//! third of its length for as long as the work runs, and the work is
//! dropped (cancelled) as soon as the storage says the lock is someone
//! else's. A storage that does not answer the extension does not stop the
//! work: the write at the end is fenced by the token anyway.

use std::time::Duration;

use super::{AcmeError, Ctx};
use crate::storage::LockToken;

/// Runs `work` while keeping `lock` on `name`.
pub(super) async fn hold<T>(
    ctx: &Ctx,
    name: &str,
    lock: &LockToken,
    work: impl Future<Output = Result<T, AcmeError>>,
) -> Result<T, AcmeError> {
    let every = (ctx.lease / 3).max(Duration::from_millis(500));
    let keep = async {
        loop {
            tokio::time::sleep(every).await;
            match ctx.storage.extend_lock(name, lock, ctx.lease).await {
                Ok(true) | Err(_) => {}
                Ok(false) => return,
            }
        }
    };
    tokio::select! {
        result = work => result,
        () = keep => Err(AcmeError::LockLost { name: name.to_owned() }),
    }
}
