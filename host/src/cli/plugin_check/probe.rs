//! The sample calls of `bbproxy plugin check`: the component loaded as
//! one role, called with sample requests, backends and outcomes, and what
//! it answered, how long it took and what it cost.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{CheckError, CheckOptions};
use crate::plugin::{
    Backend, BalancerWorld, BreakerState, BreakerWorld, Fault, FilterAction, FilterWorld,
    HeaderEdit, Outcome, OutcomeKind, Plugin, RequestView, ResponseView, Route, RouterWorld,
    Runtime, Tenant, Upstream, Verdict, World,
};
use bbproxy_plugin_contract::hosts::HostMatcher;

/// Loads the component as one role and makes sample calls.
pub(super) struct Probe<'a> {
    pub(super) runtime: &'a Runtime,
    pub(super) name: &'a str,
    pub(super) bytes: &'a [u8],
    pub(super) options: &'a CheckOptions,
    pub(super) upstreams: Arc<[Upstream]>,
}

impl Probe<'_> {
    fn load<W: World>(&self, out: &mut String) -> Result<Plugin<W>, CheckError> {
        let start = Instant::now();
        let plugin = Plugin::<W>::load(
            self.runtime,
            self.name,
            self.bytes,
            self.options.config.clone(),
            self.options.limits,
            self.upstreams.clone(),
        )?;
        let _ = writeln!(
            out,
            "{}:\n  init({}): ok (instantiate and init took {})",
            W::ROLE,
            self.options.config,
            micros(start.elapsed())
        );
        let facts = &plugin.init_answer().facts;
        if !facts.is_empty() {
            let _ = writeln!(out, "  request facts sent with each call: {facts}");
        }
        let answer = plugin.init_answer();
        self.list_declared(out, "routed to their own upstream without a call", |i| {
            answer.routes_to_itself(i)
        });
        self.list_declared(out, "picked round-robin by the proxy without a call", |i| {
            answer.picks_round_robin(i)
        });
        Ok(plugin)
    }

    /// Lists, after `what`, the upstreams the plugin `declared` at init
    /// (answers the proxy gives without a call); nothing when none.
    fn list_declared(&self, out: &mut String, what: &str, declared: impl Fn(u32) -> bool) {
        let names: Vec<&str> = (self.upstreams.iter().enumerate())
            .filter(|&(i, _)| u32::try_from(i).is_ok_and(&declared))
            .map(|(_, u)| u.name.as_str())
            .collect();
        if !names.is_empty() {
            let _ = writeln!(out, "  {what}: {}", names.join(", "));
        }
    }

    /// How often the calls so far read the request back through the
    /// proxy: each read a call into the host, which a 0.2.0 plugin saves
    /// by declaring what it reads on every call as a fact.
    fn report_reads<W: World>(&self, out: &mut String, plugin: &Plugin<W>) {
        let reads = plugin.request_reads();
        if reads > 0 {
            let _ = writeln!(
                out,
                "  request reads through the proxy: {reads} in {} calls ({})",
                plugin.calls(),
                if plugin.contract() == "0.2.0" {
                    "what is read on every call is cheaper declared as a fact at init"
                } else {
                    "contract 0.2.0 sends declared facts with each call instead"
                }
            );
        }
    }

    /// The first upstream's name, the host of sample requests.
    fn first_upstream(&self) -> String {
        self.options
            .upstreams
            .first()
            .cloned()
            .unwrap_or_else(|| "example.com".to_owned())
    }

    /// The request given on the command line (host, path, headers), its
    /// parts left out defaulting to the first upstream, `/` and none.
    fn given_request(&self) -> (String, String, Vec<(String, String)>) {
        let given = self.options.request.clone().unwrap_or_default();
        (
            given.host.unwrap_or_else(|| self.first_upstream()),
            given.path.unwrap_or_else(|| "/".to_owned()),
            given.headers,
        )
    }

    /// The domain `host` matches among the sample upstreams, as the proxy
    /// finds it (a 0.2.0 router is told it).
    fn tenant_of(&self, host: &str) -> Tenant {
        let matcher = HostMatcher::new(self.upstreams.iter().map(|u| u.name.as_str()), None);
        match matcher.lookup(host) {
            Some(i) => Tenant::Upstream(u32::try_from(i).unwrap_or(u32::MAX)),
            None => Tenant::Unmatched,
        }
    }

    fn fault(&self, role: &'static str, call: String, fault: Fault) -> CheckError {
        CheckError::Call {
            name: self.name.to_owned(),
            role,
            call,
            reason: fault.to_string(),
        }
    }

    pub(super) fn router(&self, out: &mut String) -> Result<(), CheckError> {
        let plugin = self.load::<RouterWorld>(out)?;
        let first = self.first_upstream();
        let given = self.options.request.is_some().then(|| {
            let (host, path, headers) = self.given_request();
            ("GET".to_owned(), host, path, headers)
        });
        let header = |k: &str, v: &str| vec![(k.to_owned(), v.to_owned())];
        let samples = match given {
            // The request asked for, alone.
            Some(g) => vec![g],
            None => vec![
                ("GET".to_owned(), first.clone(), "/".to_owned(), vec![]),
                (
                    "GET".to_owned(),
                    first.clone(),
                    "/api/items?page=2".to_owned(),
                    header("x-canary", "1"),
                ),
                (
                    "GET".to_owned(),
                    first.clone(),
                    "/".to_owned(),
                    header("cookie", "canary=1"),
                ),
                (
                    "POST".to_owned(),
                    "unknown.example".to_owned(),
                    "/upload".to_owned(),
                    vec![],
                ),
            ],
        };
        // A domain the router declared self-routed is the proxy's answer.
        let own = |tenant| matches!(tenant, Tenant::Upstream(i) if plugin.init_answer().routes_to_itself(i));
        for (method, host, target, headers) in &samples {
            let call = describe_request(method, host, target, headers);
            let mut request = Some(sample_request(method, host, target, headers));
            let tenant = self.tenant_of(host);
            let route = plugin
                .route(tenant, &mut request)
                .map_err(|f| self.fault(RouterWorld::ROLE, call.clone(), f))?;
            let name = |i: u32| {
                self.upstreams
                    .get(i as usize)
                    .map_or("?", |u| u.name.as_str())
            };
            let answer = match route {
                Route::Upstream(u) => format!("upstream {:?}", name(u)),
                Route::DomainRoute { domain, index } => {
                    format!("route {index} of {:?}", name(domain))
                }
                Route::Respond { status, body } => format!("respond {status} {body:?}"),
            };
            let no_call = if own(tenant) {
                " (the proxy's answer, no call)"
            } else {
                ""
            };
            let _ = writeln!(out, "  route {call:<48} -> {answer}{no_call}");
        }
        let (method, host, target, headers) = &samples[0];
        let tenant = self.tenant_of(host);
        self.report_reads(out, &plugin);
        if own(tenant) {
            let _ = writeln!(out, "  cost: not measured, {host}'s requests make no call");
            return Ok(());
        }
        let cost = self.measure(|| {
            let mut request = Some(sample_request(method, host, target, headers));
            plugin.route(tenant, &mut request).map(drop)
        });
        self.report_cost(out, "route", cost);
        Ok(())
    }

    pub(super) fn balancer(&self, out: &mut String) -> Result<(), CheckError> {
        let plugin = self.load::<BalancerWorld>(out)?;
        let candidates = sample_backends();
        let _ = writeln!(out, "  candidates of upstream 0:");
        for b in &candidates {
            let _ = writeln!(
                out,
                "    #{} weight {} in-flight {} latency-ewma {} µs requests {}",
                b.id, b.weight, b.in_flight, b.latency_ewma_us, b.requests
            );
        }
        let (host, path, headers) = self.given_request();
        let req = || Some(sample_request("GET", &host, &path, &headers));
        let _ = writeln!(
            out,
            "  request: {}",
            describe_request("GET", &host, &path, &headers)
        );
        let mut picks = Vec::new();
        for _ in 0..8 {
            let mut request = req();
            let i = plugin
                .pick(&mut request, 0, &candidates)
                .map_err(|f| self.fault(BalancerWorld::ROLE, "pick".into(), f))?;
            picks.push(format!("#{}", candidates[i].id));
        }
        // Upstream 0's picks may be the proxy's turns (balancer-answers).
        let no_call = plugin.init_answer().picks_round_robin(0);
        let by = if no_call {
            " (the proxy's round-robin turns, no call)"
        } else {
            ""
        };
        let _ = writeln!(out, "  8 picks: {}{by}", picks.join(" "));
        let mut request = req();
        let only = plugin
            .pick(&mut request, 0, &candidates[1..2])
            .map_err(|f| self.fault(BalancerWorld::ROLE, "pick of one".into(), f))?;
        let _ = writeln!(out, "  pick among #1 only: index {only}");
        self.report_reads(out, &plugin);
        if no_call {
            let _ = writeln!(out, "  cost: not measured, upstream 0's picks make no call");
            return Ok(());
        }
        let cost = self.measure(|| {
            let mut request = req();
            plugin.pick(&mut request, 0, &candidates).map(drop)
        });
        self.report_cost(out, "pick (3 candidates)", cost);
        Ok(())
    }

    pub(super) fn breaker(&self, out: &mut String) -> Result<(), CheckError> {
        let plugin = self.load::<BreakerWorld>(out)?;
        let mut backend = sample_backends()[1];
        let mut outcomes = vec![
            response(200, 1_000),
            response(200, 1_500),
            response(503, 900),
        ];
        outcomes.extend((0..6).map(|_| Outcome {
            kind: OutcomeKind::ConnectError,
            status: 0,
            latency_us: 300,
        }));
        match plugin.init_answer().skip_closed_responses_below {
            0 => {}
            below => {
                let _ = writeln!(
                    out,
                    "  left to the proxy: responses below {below} of a closed backend (counted as successes, no call)"
                );
            }
        }
        let _ = writeln!(
            out,
            "  outcomes of one backend, stats updated after each as the proxy does:"
        );
        for outcome in outcomes {
            let label = match outcome.kind {
                OutcomeKind::Response => format!("response {}", outcome.status),
                OutcomeKind::ConnectError => "connect-error".to_owned(),
                OutcomeKind::Timeout => "timeout".to_owned(),
                OutcomeKind::Reset => "reset".to_owned(),
            };
            let calls = plugin.calls();
            let verdict = plugin
                .on_outcome(0, backend, outcome)
                .map_err(|f| self.fault(BreakerWorld::ROLE, label.clone(), f))?;
            let by = if plugin.calls() == calls {
                " (the proxy's count, no call)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "    {label:<14} -> failure {:<5} state {}{}{by}",
                verdict.failure,
                state_name(verdict.state),
                match verdict.state {
                    BreakerState::Open => format!(
                        " for {} ms, then {} probe(s)",
                        verdict.open_for_ms, verdict.probes
                    ),
                    BreakerState::HalfOpen => format!(", {} probe(s)", verdict.probes),
                    BreakerState::Closed => String::new(),
                }
            );
            apply(&mut backend, &outcome, &verdict);
        }
        // A connect error of a healthy backend: an outcome every breaker is
        // called for (a 0.2.0 breaker may leave a 200 to the proxy, and
        // measuring that would time the proxy, not the plugin).
        let healthy = sample_backends()[1];
        let error = Outcome {
            kind: OutcomeKind::ConnectError,
            status: 0,
            latency_us: 300,
        };
        let cost = self.measure(|| plugin.on_outcome(0, healthy, error).map(drop));
        self.report_cost(out, "on-outcome", cost);
        Ok(())
    }

    pub(super) fn filter(&self, out: &mut String) -> Result<(), CheckError> {
        let plugin = self.load::<FilterWorld>(out)?;
        let (host, path, headers) = self.given_request();
        let req = || Some(sample_request("GET", &host, &path, &headers));
        let call = describe_request("GET", &host, &path, &headers);
        let mut request = req();
        let action = plugin
            .on_request(Tenant::Upstream(0), &mut request)
            .map_err(|f| self.fault(FilterWorld::ROLE, format!("on-request {call}"), f))?;
        let _ = writeln!(
            out,
            "  on-request {call:<40} -> {}",
            describe_action(&action)
        );
        if !plugin.init_answer().on_response {
            let _ = writeln!(
                out,
                "  on-response: not called (the filter said at init it edits no response)"
            );
            return self.filter_cost(out, &plugin, &req);
        }
        let mut request = req();
        let edits = plugin
            .on_response(Tenant::Upstream(0), &mut request, &mut sample_response())
            .map_err(|f| self.fault(FilterWorld::ROLE, "on-response 200".into(), f))?;
        let edits: Vec<String> = edits.iter().map(describe_edit).collect();
        let _ = writeln!(
            out,
            "  on-response 200 from 127.0.0.1:9001 (server, content-type) -> {}",
            match edits.is_empty() {
                true => "no change".to_owned(),
                false => edits.join(", "),
            }
        );
        self.filter_cost(out, &plugin, &req)
    }

    /// The cost of the filter's `on-request` on the sample request `req()`.
    fn filter_cost(
        &self,
        out: &mut String,
        plugin: &Plugin<FilterWorld>,
        req: &dyn Fn() -> Option<Box<RequestView>>,
    ) -> Result<(), CheckError> {
        let cost = self.measure(|| {
            let mut request = req();
            plugin
                .on_request(Tenant::Upstream(0), &mut request)
                .map(drop)
        });
        self.report_reads(out, plugin);
        self.report_cost(out, "on-request", cost);
        Ok(())
    }

    /// Mean wall time of one call over `calls` calls, after one warm-up.
    fn measure(
        &self,
        mut call: impl FnMut() -> Result<(), Fault>,
    ) -> Option<Result<Duration, Fault>> {
        let calls = self.options.calls;
        if calls == 0 {
            return None;
        }
        if let Err(f) = call() {
            return Some(Err(f));
        }
        let start = Instant::now();
        for _ in 0..calls {
            if let Err(f) = call() {
                return Some(Err(f));
            }
        }
        Some(Ok(start.elapsed() / calls))
    }

    fn report_cost(&self, out: &mut String, what: &str, cost: Option<Result<Duration, Fault>>) {
        match cost {
            None => {}
            Some(Ok(per_call)) => {
                let _ = writeln!(
                    out,
                    "  cost: {} per {what} call, mean of {} calls{}",
                    micros(per_call),
                    self.options.calls,
                    if cfg!(debug_assertions) {
                        " (debug build of bbproxy: a release build is faster)"
                    } else {
                        ""
                    }
                );
            }
            Some(Err(fault)) => {
                let _ = writeln!(out, "  cost: not measured, a call faulted: {fault}");
            }
        }
    }
}

/// A filter's `on-request` answer, as the report shows it.
fn describe_action(action: &FilterAction) -> String {
    match action {
        FilterAction::Forward { headers, target } => {
            let mut parts: Vec<String> = headers.iter().map(describe_edit).collect();
            if let Some(t) = target {
                if let Some(p) = &t.path {
                    parts.push(format!("path {p:?}"));
                }
                if let Some(q) = &t.query {
                    parts.push(format!("query {q:?}"));
                }
            }
            match parts.is_empty() {
                true => "forward, unchanged".to_owned(),
                false => format!("forward with {}", parts.join(", ")),
            }
        }
        FilterAction::Respond(a) => {
            let headers: Vec<String> = a
                .headers
                .iter()
                .map(|(n, v)| format!("{n}: {v:?}"))
                .collect();
            format!(
                "respond {} {:?}{}",
                a.status.as_u16(),
                a.body,
                match headers.is_empty() {
                    true => String::new(),
                    false => format!(" ({})", headers.join(", ")),
                }
            )
        }
    }
}

/// The backend response a filter's sample `on-response` gets.
fn sample_response() -> Option<ResponseView> {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::SERVER,
        http::HeaderValue::from_static("backend"),
    );
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/html"),
    );
    Some(ResponseView {
        status: http::StatusCode::OK,
        headers,
        backend: "127.0.0.1:9001".to_owned(),
        upstream: 0,
    })
}

/// `set name: "value"`, `add ...`, `remove name`.
fn describe_edit(edit: &HeaderEdit) -> String {
    match edit {
        HeaderEdit::Set(n, v) => format!("set {n}: {v:?}"),
        HeaderEdit::Add(n, v) => format!("add {n}: {v:?}"),
        HeaderEdit::Remove(n) => format!("remove {n}"),
    }
}

fn state_name(state: BreakerState) -> &'static str {
    match state {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half-open",
    }
}

fn micros(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 1000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

fn response(status: u16, latency_us: u64) -> Outcome {
    Outcome {
        kind: OutcomeKind::Response,
        status,
        latency_us,
    }
}

/// Three backends that any sensible policy tells apart: a heavy, loaded and
/// slow one; an idle fast one; an unmeasured one.
fn sample_backends() -> [Backend; 3] {
    let backend = |id, weight, in_flight, latency_ewma_us, requests| Backend {
        weight,
        in_flight,
        latency_ewma_us,
        requests,
        ..Backend::fresh(id)
    };
    [
        backend(0, 3, 4, 20_000, 100),
        backend(1, 1, 0, 2_000, 100),
        backend(2, 1, 1, 0, 0),
    ]
}

/// The stats update the proxy makes after a verdict (the shared rule of
/// `bbproxy-plugin-contract`).
pub(crate) fn apply(backend: &mut Backend, outcome: &Outcome, verdict: &Verdict) {
    let mut stats = bbproxy_plugin_contract::Stats {
        requests: backend.requests,
        consecutive_failures: backend.consecutive_failures,
        consecutive_successes: backend.consecutive_successes,
        latency_ewma_us: backend.latency_ewma_us,
        breaker: backend.breaker.into(),
    };
    let latency = (outcome.kind == OutcomeKind::Response).then_some(outcome.latency_us);
    bbproxy_plugin_contract::record(&mut stats, latency, verdict.failure, verdict.state.into());
    backend.requests = stats.requests;
    backend.consecutive_failures = stats.consecutive_failures;
    backend.consecutive_successes = stats.consecutive_successes;
    backend.latency_ewma_us = stats.latency_ewma_us;
    backend.breaker = verdict.state;
}

/// `GET host/path (name: value, ...)`, as the report names a request.
fn describe_request(
    method: &str,
    host: &str,
    target: &str,
    headers: &[(String, String)],
) -> String {
    let mut call = format!("{method} {host}{target}");
    if !headers.is_empty() {
        let list: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = write!(call, " ({})", list.join(", "));
    }
    call
}

fn sample_request(
    method: &str,
    host: &str,
    target: &str,
    headers: &[(String, String)],
) -> Box<RequestView> {
    let mut builder = http::Request::builder()
        .method(method)
        .uri(target)
        .header(http::header::HOST, host);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    // The samples are constants, and given headers and paths were checked
    // when the command line was parsed; an empty request is a harmless
    // stand-in should one ever not build.
    let parts = builder
        .body(())
        .map(|r| r.into_parts().0)
        .unwrap_or_else(|_| http::Request::new(()).into_parts().0);
    Box::new(RequestView {
        parts,
        host: host.to_owned(),
        client: SocketAddr::from((Ipv4Addr::new(192, 0, 2, 1), 40_000)),
    })
}
