//! A server in front of Pebble that adds what Debian's Pebble 2.4 lacks:
//! ACME Renewal Information (RFC 9773) and rate limiting with Retry-After.
//! It serves Pebble's directory with `renewalInfo` pointing here (and, when
//! rate limiting, `newOrder` too), the renewal window the test sets, and a
//! 429 `rateLimited` problem for every new order. Every other ACME request
//! goes from the proxy to Pebble itself.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::pebble::Pebble;

#[derive(Default)]
struct State {
    directory: String,
    /// The suggested renewal window; unset means "far in the future".
    window: Option<(SystemTime, SystemTime)>,
    /// Certificate identifiers asked for, in order.
    ari_requests: Vec<String>,
    /// When new orders arrived (rate limiting only).
    orders: Vec<Instant>,
}

pub struct AcmeFront {
    /// The directory URL to give the proxy.
    pub directory: String,
    state: Arc<Mutex<State>>,
    task: JoinHandle<()>,
}

impl AcmeFront {
    /// Starts the front on 127.0.0.1:0 with a certificate `pebble.api_ca`
    /// trusts. With `rate_limit`, every new order gets a 429 with
    /// `Retry-After: rate_limit` (whole seconds).
    pub async fn start(pebble: &Pebble, rate_limit: Option<Duration>) -> AcmeFront {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("https://{addr}");
        let mut directory = pebble.directory_json().await;
        directory["renewalInfo"] = format!("{base}/ari").into();
        if rate_limit.is_some() {
            directory["newOrder"] = format!("{base}/new-order").into();
        }
        let state = Arc::new(Mutex::new(State {
            directory: directory.to_string(),
            ..State::default()
        }));
        let (cert, key) = pebble.api_leaf();
        let tls = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let acceptor = acceptor.clone();
                let state = shared.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, req, rate_limit)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        AcmeFront {
            directory: format!("{base}/dir"),
            state,
            task,
        }
    }

    /// From now on, suggest renewing between `start` and `end`.
    pub fn set_window(&self, start: SystemTime, end: SystemTime) {
        self.state.lock().unwrap().window = Some((start, end));
    }

    /// The certificate identifiers the proxy asked about so far.
    pub fn ari_requests(&self) -> Vec<String> {
        self.state.lock().unwrap().ari_requests.clone()
    }

    /// When new orders arrived so far (with `rate_limit`).
    pub fn orders(&self) -> Vec<Instant> {
        self.state.lock().unwrap().orders.clone()
    }
}

impl Drop for AcmeFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(
    state: &Mutex<State>,
    req: Request<Incoming>,
    rate_limit: Option<Duration>,
) -> Response<Full<Bytes>> {
    let mut state = state.lock().unwrap();
    let path = req.uri().path();
    if path == "/dir" {
        return reply(StatusCode::OK, "application/json", state.directory.clone());
    }
    if let Some(id) = path.strip_prefix("/ari/") {
        state.ari_requests.push(id.to_owned());
        let (start, end) = state.window.unwrap_or_else(|| {
            let start = SystemTime::now() + Duration::from_secs(30 * 24 * 3600);
            (start, start + Duration::from_secs(24 * 3600))
        });
        let body = serde_json::json!({
            "suggestedWindow": {"start": rfc3339(start), "end": rfc3339(end)}
        });
        let mut resp = reply(StatusCode::OK, "application/json", body.to_string());
        // Look again in a second: the test changes the window.
        resp.headers_mut()
            .insert(hyper::header::RETRY_AFTER, "1".parse().unwrap());
        return resp;
    }
    if let (Some(wait), "/new-order") = (rate_limit, path) {
        state.orders.push(Instant::now());
        let problem = serde_json::json!({
            "type": "urn:ietf:params:acme:error:rateLimited",
            "detail": "too many new orders (test front)",
            "status": 429
        });
        let mut resp = reply(
            StatusCode::TOO_MANY_REQUESTS,
            "application/problem+json",
            problem.to_string(),
        );
        resp.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            wait.as_secs().to_string().parse().unwrap(),
        );
        return resp;
    }
    reply(
        StatusCode::NOT_FOUND,
        "text/plain",
        format!("no {path} here"),
    )
}

fn reply(status: StatusCode, kind: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, kind)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn rfc3339(at: SystemTime) -> String {
    time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}
