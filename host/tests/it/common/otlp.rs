//! A real OTLP/HTTP trace receiver on 127.0.0.1:0: it accepts
//! `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`, decodes it
//! with `opentelemetry-proto` (a body that does not decode is answered 400
//! and counted) and keeps every span with its resource's `service.name`.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;

/// One received span.
#[derive(Debug, Clone)]
pub struct Received {
    pub service: String,
    pub span: Span,
}

impl Received {
    /// The value of attribute `key`, as text.
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }

    pub fn is_server(&self) -> bool {
        self.span.kind == 2
    }

    pub fn is_client(&self) -> bool {
        self.span.kind == 3
    }

    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// Names of the span's events.
    pub fn events(&self) -> Vec<String> {
        self.span.events.iter().map(|e| e.name.clone()).collect()
    }
}

pub fn attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(show)
}

fn show(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The receiver.
pub struct Collector {
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
    /// Bodies that were not a valid protobuf export request.
    undecodable: Arc<Mutex<u64>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Collector {
    pub async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans = Arc::new(Mutex::new(Vec::new()));
        let undecodable = Arc::new(Mutex::new(0));
        let (s, u) = (spans.clone(), undecodable.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, u) = (s.clone(), u.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let (s, u) = (s.clone(), u.clone());
                        async move { Ok::<_, std::convert::Infallible>(receive(req, &s, &u).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Collector {
            addr,
            spans,
            undecodable,
            task,
        }
    }

    /// The base URL for `tracing.otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }

    pub fn undecodable(&self) -> u64 {
        *self.undecodable.lock().unwrap()
    }

    /// Waits until `done` holds for the spans received, up to `deadline`.
    pub async fn wait_for(
        &self,
        deadline: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let end = tokio::time::Instant::now() + deadline;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "the collector did not get the expected spans within {deadline:?}; got {} span(s): {:#?}",
                spans.len(),
                spans
                    .iter()
                    .map(|r| (r.span.name.clone(), r.span.kind, r.trace_id()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(
    req: Request<Incoming>,
    spans: &Mutex<Vec<Received>>,
    undecodable: &Mutex<u64>,
) -> Response<Full<Bytes>> {
    let answer = |status: StatusCode| {
        Response::builder()
            .status(status)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let protobuf = req
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/x-protobuf");
    if req.uri().path() != "/v1/traces" || req.method() != hyper::Method::POST {
        return answer(StatusCode::NOT_FOUND);
    }
    let Ok(body) = req.into_body().collect().await else {
        return answer(StatusCode::BAD_REQUEST);
    };
    let decoded = ExportTraceServiceRequest::decode(body.to_bytes());
    let Ok(export) = decoded.ok().filter(|_| protobuf).ok_or(()) else {
        *undecodable.lock().unwrap() += 1;
        return answer(StatusCode::BAD_REQUEST);
    };
    let mut out = spans.lock().unwrap();
    for rs in export.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| attr(&r.attributes, "service.name"))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                out.push(Received {
                    service: service.clone(),
                    span,
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse.
    answer(StatusCode::OK)
}

/// A collector that accepts connections and never answers: an export to it
/// hangs until the exporter's own time limit.
pub struct Stalled {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stalled {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stalled {
    pub async fn start() -> Stalled {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        Stalled { addr, task }
    }

    /// The base URL for `tracing.otlp_endpoint`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}
