//! One request's state while it moves through the phases: what the client
//! asked, where it was routed, which backends it tried, and what the last
//! attempt left behind. Each phase reads and fills in what it needs; no
//! phase takes the request apart into loose arguments.

use std::net::SocketAddr;

use tokio::time::Instant;

use super::Scheme;
use super::error::ProxyError;
use super::observe;
use super::upgrade;
use bbproxy_config::UpstreamSettings;

use crate::filter::Chain;
use crate::generation::{Generation, RouteTarget, UpstreamSlot};
use crate::plugin::{RequestView, Tenant};
use crate::splice::SpliceTarget;
use crate::upstream::RetryBudget;
use crate::upstream::exchange::Head;

/// The state of one request.
#[derive(Debug)]
pub(super) struct RequestCtx<'g, 'r> {
    /// Pinned for the whole request, even if a reload swaps it meanwhile.
    pub generation: &'g Generation,
    /// The host asked for, normalised (see `headers::request_host`); empty
    /// while `view` holds it (from the head's checks until the upstream
    /// head is built), so it is never copied.
    pub host: String,
    /// The client's address.
    pub client: SocketAddr,
    /// Its text for `X-Forwarded-For` (see `super::Client`).
    pub forwarded_for: Option<http::HeaderValue>,
    /// How the client reached the proxy.
    pub scheme: Scheme,
    /// When the request started (the reading its duration counts from):
    /// the first pick judges the breakers at it rather than reading the
    /// clock again a microsecond later.
    pub start: Instant,
    /// The protocol switch the client asked for, if any.
    pub upgrade: Option<upgrade::Requested>,
    /// The request as plugins see it, lent to each call; taken when the
    /// upstream head is built from it, and rebuilt from that head for a
    /// retry's `pick`.
    pub view: Option<Box<RequestView>>,
    /// The upstream head, built once before the first attempt.
    pub head: Option<Head>,
    /// Where the router sent it.
    pub routed: Option<Routed<'g>>,
    /// Backends tried so far, in order.
    pub tried: Tried,
    /// The failure of the last attempt, the answer if no other succeeds.
    pub last_error: Option<ProxyError>,
    /// The backend (by index) the request's sticky cookie names, if its
    /// upstream balances with `sticky-cookie` (see `sticky`).
    pub sticky: Option<usize>,
    /// What the request's metrics and access log line will say; filled in
    /// as the phases learn it, read even if the request is cancelled.
    pub record: &'r mut observe::Route<'g>,
    /// Where the response body may be spliced to (a plain HTTP/1 client).
    pub splice: Option<SpliceTarget>,
}

/// The upstream a request was routed to, and what it is forwarded with:
/// the upstream's own settings, or a route's.
#[derive(Debug, Clone, Copy)]
pub(super) struct Routed<'g> {
    /// Its number (the WIT upstream index).
    pub index: u32,
    /// Its slot in the generation.
    pub slot: &'g UpstreamSlot,
    /// Timeouts, limits, retries and protocol of this request.
    pub settings: &'g UpstreamSettings,
    /// The retry budget its retries draw on.
    pub retry_budget: &'g RetryBudget,
    /// Removed from the path sent to the backend (a route's).
    pub strip_prefix: Option<&'g str>,
    /// The filters its request and response go through.
    pub filters: &'g Chain,
    /// The domain the request's host matched, whose tenant the filters'
    /// faults count for.
    pub tenant: Tenant,
}

impl<'g> Routed<'g> {
    /// Routed to upstream `index` (`slot`) by its name: its own settings,
    /// and the filters of the domain the request's host matched.
    pub fn upstream(
        index: u32,
        slot: &'g UpstreamSlot,
        filters: &'g Chain,
        tenant: Tenant,
    ) -> Self {
        Self {
            index,
            slot,
            settings: &slot.settings,
            retry_budget: &slot.retry_budget,
            strip_prefix: None,
            filters,
            tenant,
        }
    }

    /// Routed by a domain's route to its target (`slot`).
    pub fn route(target: &'g RouteTarget, slot: &'g UpstreamSlot, tenant: Tenant) -> Self {
        Self {
            index: target.upstream,
            slot,
            settings: &target.settings,
            retry_budget: &target.retry_budget,
            strip_prefix: target.strip_prefix.as_deref(),
            filters: &target.filters,
            tenant,
        }
    }
}

impl<'g, 'r> RequestCtx<'g, 'r> {
    /// A request that has not been looked at yet.
    pub fn new(
        generation: &'g Generation,
        host: String,
        client: super::Client,
        scheme: Scheme,
        start: Instant,
        record: &'r mut observe::Route<'g>,
    ) -> Self {
        Self {
            generation,
            host,
            client: client.addr,
            forwarded_for: client.forwarded_for,
            scheme,
            start,
            upgrade: None,
            view: None,
            head: None,
            routed: None,
            tried: Tried::default(),
            last_error: None,
            sticky: None,
            record,
            splice: None,
        }
    }

    /// The routed upstream's name, for logs.
    pub fn upstream_name(&self) -> Option<&'g str> {
        self.routed.map(|r| r.slot.name.as_str())
    }
}

/// Backend indexes tried by one request. Requests rarely try more than two
/// backends; the first few are kept inline so the common request allocates
/// nothing for this.
#[derive(Debug, Default)]
pub(super) struct Tried {
    inline: [usize; 4],
    len: usize,
    more: Vec<usize>,
}

impl Tried {
    /// Whether backend `i` was tried.
    pub fn contains(&self, i: usize) -> bool {
        self.inline[..self.len.min(self.inline.len())].contains(&i) || self.more.contains(&i)
    }

    /// Records backend `i` as tried.
    pub fn push(&mut self, i: usize) {
        if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = i;
        } else {
            self.more.push(i);
        }
        self.len += 1;
    }

    /// How many attempts were made.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The backend tried last: the one that answered, once a response is in.
    pub fn last(&self) -> Option<usize> {
        let i = self.len.checked_sub(1)?;
        match self.inline.get(i) {
            Some(&b) => Some(b),
            None => self.more.last().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tried;

    #[test]
    fn tried_spills_past_the_inline_slots() {
        let mut t = Tried::default();
        assert_eq!(t.last(), None);
        for i in [7, 3, 9, 1, 4, 8] {
            assert!(!t.contains(i));
            t.push(i);
            assert!(t.contains(i));
        }
        assert_eq!(t.len(), 6);
        assert_eq!(t.last(), Some(8));
        assert!(!t.contains(0) && !t.contains(2));
    }
}
