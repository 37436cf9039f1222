//! One ACME order for one name: account (from the storage, registered once
//! per cluster), new order, answer the first allowed challenge per
//! authorization (published to the storage first, so any replica can
//! answer), wait for validation, finalize and download. Storing the result
//! is the caller's: it holds the lock the write is fenced by.

use std::sync::Arc;
use std::time::Duration;

use bbproxy_config::Challenge;
use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, Identifier,
    KeyAuthorization, NewAccount, NewOrder, Order, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;

use super::challenge::Published;
use super::client::AcmeHttp;
use super::{AcmeError, Ctx};
use crate::storage::{StoredCert, unix_secs};
use crate::tls::files::{self, Validity};

/// How long a published challenge answer stays in a shared storage beyond
/// the order's own timeout, should this replica die before withdrawing it.
const ANSWER_SLACK: Duration = Duration::from_secs(60);

/// Orders a certificate for `name`; `replaces` names the certificate it
/// renews when the CA offers renewal information (RFC 9773 §5).
pub(super) async fn issue(
    ctx: &Ctx,
    name: &str,
    replaces: Option<&CertificateIdentifier<'static>>,
) -> Result<(Arc<CertifiedKey>, Validity, StoredCert), AcmeError> {
    let account = account(ctx).await?;
    let identifiers = [Identifier::Dns(name.to_owned())];
    let mut new_order = NewOrder::new(&identifiers);
    if let Some(id) = replaces {
        new_order = new_order.replaces(id.clone());
    }
    let mut order = account.new_order(&new_order).await?;
    let mut published = Published::new(
        ctx.http01.clone(),
        ctx.store.clone(),
        &ctx.storage,
        ctx.tuning.order_timeout + ANSWER_SLACK,
    );
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            status => {
                return Err(AcmeError::Failed {
                    what: "authorization",
                    name: name.to_owned(),
                    status: format!("{status:?}").to_lowercase(),
                    detail: String::new(),
                });
            }
        }
        let identifier = authz.identifier().to_string();
        let offered: Vec<ChallengeType> =
            authz.challenges.iter().map(|c| c.r#type.clone()).collect();
        let (kind, allowed) = pick(&ctx.settings.challenges, &offered, name)?;
        let mut challenge =
            authz
                .challenge(kind.clone())
                .ok_or_else(|| AcmeError::NoChallenge {
                    name: name.to_owned(),
                    allowed,
                })?;
        let key_authorization = challenge.key_authorization();
        publish(
            &mut published,
            &kind,
            &challenge.token,
            &identifier,
            &key_authorization,
        )
        .await?;
        challenge.set_ready().await?;
    }
    let policy = RetryPolicy::new()
        .initial_delay(std::time::Duration::from_millis(250))
        .timeout(ctx.tuning.order_timeout);
    let status = order.poll_ready(&policy).await?;
    drop(published);
    if status != OrderStatus::Ready {
        let detail = order
            .state()
            .error
            .as_ref()
            .map(|p| format!(": {p}"))
            .unwrap_or_default();
        return Err(AcmeError::Failed {
            what: "order",
            name: name.to_owned(),
            status: format!("{status:?}").to_lowercase(),
            detail,
        });
    }
    download(&mut order, &policy, name).await
}

/// Finalizes a ready order and downloads its certificate.
async fn download(
    order: &mut Order,
    policy: &RetryPolicy,
    name: &str,
) -> Result<(Arc<CertifiedKey>, Validity, StoredCert), AcmeError> {
    let key_pem = order.finalize().await?;
    let chain = order.poll_certificate(policy).await?;
    let key = files::from_pem(name, chain.as_bytes(), key_pem.as_bytes())?;
    let validity = files::validity(&key).map_err(|reason| crate::tls::TlsError::Generated {
        name: name.to_owned(),
        reason,
    })?;
    let stored = StoredCert {
        chain,
        key: key_pem,
        not_after: unix_secs(validity.not_after),
    };
    Ok((key, validity, stored))
}

/// Publishes the answer to one challenge, where the CA will look for it.
async fn publish(
    published: &mut Published,
    kind: &ChallengeType,
    token: &str,
    identifier: &str,
    key_authorization: &KeyAuthorization,
) -> Result<(), AcmeError> {
    if *kind == ChallengeType::Http01 {
        published.http01(token, key_authorization.as_str()).await?;
        return Ok(());
    }
    published
        .tls_alpn01(identifier, key_authorization.digest().as_ref())
        .await
        .map_err(|e| match e {
            super::challenge::PublishError::Tls(e) => AcmeError::Tls(e),
            super::challenge::PublishError::Storage(e) => AcmeError::Storage(e),
        })
}

/// The first challenge in the operator's order that the server offers.
fn pick(
    allowed: &[Challenge],
    offered: &[ChallengeType],
    name: &str,
) -> Result<(ChallengeType, String), AcmeError> {
    let names: Vec<&str> = allowed.iter().map(|c| c.as_str()).collect();
    allowed
        .iter()
        .map(|c| match c {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        })
        .find(|t| offered.contains(t))
        .map(|t| (t, names.join(", ")))
        .ok_or_else(|| AcmeError::NoChallenge {
            name: name.to_owned(),
            allowed: names.join(", "),
        })
}

/// The account, from memory, else the storage, else newly registered (and
/// then stored). Serialised in this process; across replicas the
/// registration is done under the account's lock, after which the others
/// find it in the storage: one account per cluster.
pub(super) async fn account(ctx: &Ctx) -> Result<Account, AcmeError> {
    let mut slot = ctx.account.lock().await;
    if let Some(account) = slot.as_ref() {
        return Ok(account.clone());
    }
    let settings = &ctx.settings;
    let http = || AcmeHttp::new(settings.ca_root.as_deref(), ctx.retry_after.clone());
    let lock_name = format!("account:{}", settings.directory);
    let deadline = tokio::time::Instant::now() + ctx.lease;
    let account = loop {
        if let Some(account) = stored_account(ctx, &http).await? {
            break account;
        }
        let Some(lock) = ctx.storage.try_lock(&lock_name, ctx.lease).await? else {
            // Another replica is registering: its account will be stored.
            if tokio::time::Instant::now() >= deadline {
                return Err(AcmeError::LockLost { name: lock_name });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        };
        let registered = async {
            // It may have been stored between the read and the lock.
            if let Some(account) = stored_account(ctx, &http).await? {
                return Ok(account);
            }
            let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
            let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
            let (account, credentials) = Account::builder_with_http(Box::new(http()?))
                .create(
                    &NewAccount {
                        contact: &contacts,
                        terms_of_service_agreed: true,
                        only_return_existing: false,
                    },
                    settings.directory.clone(),
                    None,
                )
                .await?;
            let json =
                serde_json::to_vec(&credentials).map_err(|e| AcmeError::Client(e.to_string()))?;
            ctx.storage
                .store_account(&settings.directory, &json)
                .await?;
            tracing::info!(directory = %settings.directory, "ACME account registered");
            Ok::<_, AcmeError>(account)
        }
        .await;
        let _ = ctx.storage.unlock(&lock_name, &lock).await;
        break registered?;
    };
    *slot = Some(account.clone());
    Ok(account)
}

/// The stored account, if there is one the CA accepts the credentials of.
async fn stored_account(
    ctx: &Ctx,
    http: &impl Fn() -> Result<AcmeHttp, AcmeError>,
) -> Result<Option<Account>, AcmeError> {
    let credentials = ctx
        .storage
        .account(&ctx.settings.directory)
        .await?
        .and_then(|json| serde_json::from_slice(&json).ok());
    let Some(credentials) = credentials else {
        return Ok(None);
    };
    let account = Account::builder_with_http(Box::new(http()?))
        .from_credentials(credentials)
        .await?;
    Ok(Some(account))
}
