//! TLS termination with static certificate files: SNI selects the
//! certificate, HTTPS serves the same routes as HTTP (HTTP/1.1 and h2 by
//! ALPN), legacy protocol versions are refused, unknown SNI behaves as
//! documented, and unusable files are errors that name the file.

use crate::common;

use std::sync::Arc;

use common::tls::{
    PLUGIN_SLACK, TestCa, client_config, client_config_for, connect, dns_names, get_over,
    https_get, legacy_client_hello, peer_leaf,
};
use common::{Backend, Proxy, client, wait_for};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A proxy with HTTP and HTTPS on 127.0.0.1:0, `a.test` and `b.test` with
/// their own certificate files; `extra` is spliced into the top level.
async fn start(ca: &TestCa, a: &Backend, b: &Backend, extra: &str) -> Proxy {
    start_listening(ca, a, b, extra, "").await
}

/// Like [`start`], with `listen_extra` spliced into `listen`.
async fn start_listening(
    ca: &TestCa,
    a: &Backend,
    b: &Backend,
    extra: &str,
    listen_extra: &str,
) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    ca.write_leaf(dir.path(), "a.test");
    ca.write_leaf(dir.path(), "b.test");
    Proxy::start_in(
        dir,
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0", "https": "127.0.0.1:0"{listen_extra}}}, "admin": null, {extra} {PLUGIN_SLACK},
               "domains": {{
                 "a.test": {{"backends": ["{}"], "tls": {{"cert": "a.test.pem", "key": "a.test.key"}}}},
                 "b.test": {{"backends": ["{}"], "tls": {{"cert": "b.test.pem", "key": "b.test.key"}}}}
               }}}}"#,
            a.addr, b.addr
        ),
    )
    .await
}

fn https_addr(proxy: &Proxy) -> std::net::SocketAddr {
    proxy.running.as_ref().unwrap().https.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_selects_each_domains_certificate_over_http1_and_h2() {
    let ca = TestCa::new();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = start(&ca, &a, &b, "").await;
    let addr = https_addr(&proxy);
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        let config = client_config(&[ca.der()], &[alpn]);
        for (name, backend) in [("a.test", "backend a"), ("b.test", "backend b")] {
            let stream = connect(addr, name, config.clone()).await.unwrap();
            assert_eq!(dns_names(&peer_leaf(&stream)), [name]);
            assert_eq!(stream.get_ref().1.alpn_protocol(), Some(alpn));
            let version = stream.get_ref().1.protocol_version().unwrap();
            assert!(
                matches!(
                    version,
                    rustls::ProtocolVersion::TLSv1_3 | rustls::ProtocolVersion::TLSv1_2
                ),
                "{version:?}"
            );
            assert_eq!(
                get_over(stream, name, "/").await,
                (StatusCode::OK, backend.to_owned())
            );
        }
    }
    // Plain HTTP still serves the same routes.
    let (status, body) = common::get(&client(), &proxy.url("/"), "b.test").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "backend b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls12_only_clients_are_served() {
    let ca = TestCa::new();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = start(&ca, &a, &b, "").await;
    let config = client_config_for(
        ca.der(),
        rustls::crypto::aws_lc_rs::default_provider(),
        &rustls::version::TLS12,
    );
    let stream = connect(https_addr(&proxy), "a.test", config).await.unwrap();
    assert_eq!(
        stream.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(get_over(stream, "a.test", "/").await.1, "backend a");
}

/// The server's order of cipher suites decides, AES-128-GCM first: a
/// client that lists AES-256-GCM-SHA384 first (rustls's default order, as
/// OpenSSL's) gets AES-128-GCM-SHA256 in TLS 1.3 and ECDHE-ECDSA-AES128-GCM
/// in TLS 1.2; a client that offers only ChaCha20-Poly1305 still gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_cipher_suite_order_puts_aes_128_gcm_first() {
    use rustls::CipherSuite as S;
    let ca = TestCa::new();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = start(&ca, &a, &b, "").await;
    let defaults = rustls::crypto::aws_lc_rs::default_provider();
    assert_eq!(
        defaults.cipher_suites[0].suite(),
        S::TLS13_AES_256_GCM_SHA384,
        "the client must prefer AES-256 for this test to show the server's order"
    );
    let only = |suite: S| {
        let mut provider = rustls::crypto::aws_lc_rs::default_provider();
        provider.cipher_suites.retain(|s| s.suite() == suite);
        provider
    };
    for (provider, version, expected) in [
        (
            defaults.clone(),
            &rustls::version::TLS13,
            S::TLS13_AES_128_GCM_SHA256,
        ),
        (
            defaults,
            &rustls::version::TLS12,
            S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        ),
        (
            only(S::TLS13_CHACHA20_POLY1305_SHA256),
            &rustls::version::TLS13,
            S::TLS13_CHACHA20_POLY1305_SHA256,
        ),
    ] {
        let config = client_config_for(ca.der(), provider, version);
        let stream = connect(https_addr(&proxy), "a.test", config).await.unwrap();
        let suite = stream
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .unwrap()
            .suite();
        assert_eq!(suite, expected, "{version:?}");
        assert_eq!(get_over(stream, "a.test", "/").await.1, "backend a");
    }
}

/// `listen.tls_session_resumption` (on by default): a returning client
/// resumes its session, with TLS 1.3 (tickets) and TLS 1.2 (tickets or the
/// session cache), instead of a full handshake; turned off, every
/// connection is a full handshake.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returning_clients_resume_their_tls_session_unless_it_is_turned_off() {
    use rustls::HandshakeKind::{Full, Resumed};
    let ca = TestCa::new();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    for (listen_extra, second) in [
        ("", Resumed),
        (r#", "tls_session_resumption": false"#, Full),
    ] {
        let proxy = start_listening(&ca, &a, &b, "", listen_extra).await;
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            // rustls's client keeps sessions in memory by default: the
            // second connect offers what the first one got.
            let provider = rustls::crypto::aws_lc_rs::default_provider();
            let config = client_config_for(ca.der(), provider, version);
            let what = format!("{:?} with listen {{{listen_extra}}}", version.version);
            for expected in [Full, second] {
                let stream = connect(https_addr(&proxy), "a.test", config.clone())
                    .await
                    .unwrap();
                assert_eq!(
                    stream.get_ref().1.handshake_kind(),
                    Some(expected),
                    "{what}"
                );
                // Reading the response also reads the TLS 1.3 tickets the
                // server sends after its handshake.
                assert_eq!(
                    get_over(stream, "a.test", "/").await.1,
                    "backend a",
                    "{what}"
                );
            }
        }
    }
}

/// The TLS records a client reads, counted by content type from the raw
/// bytes under the TLS layer (5-byte record headers, bodies skipped).
#[derive(Default)]
struct RecordCounter {
    header: Vec<u8>,
    skip: usize,
    application_data: usize,
}

impl RecordCounter {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (5 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() == 5 {
                // Content type 23 is application data (in TLS 1.3 every
                // encrypted record says 23).
                if self.header[0] == 23 {
                    self.application_data += 1;
                }
                self.skip = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
                self.header.clear();
            }
        }
    }
}

/// A TCP stream that feeds what it reads to a [`RecordCounter`].
struct Counted {
    tcp: tokio::net::TcpStream,
    records: Arc<std::sync::Mutex<RecordCounter>>,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.tcp).poll_read(cx, buf);
        if polled.is_ready() {
            self.records.lock().unwrap().feed(&buf.filled()[before..]);
        }
        polled
    }
}

impl tokio::io::AsyncWrite for Counted {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

/// A small HTTP/1.1 response over TLS is one TLS record (head and body
/// together), for every request on a kept-alive connection: a record per
/// write costs 22 bytes and an encryption each, and a head flushed apart
/// from its body would be a second record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_response_is_one_tls_record() {
    let ca = TestCa::new();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    // No session tickets: they would be records of their own after the
    // handshake.
    let proxy = start_listening(&ca, &a, &b, "", r#", "tls_session_resumption": false"#).await;
    let records = Arc::new(std::sync::Mutex::new(RecordCounter::default()));
    let tcp = tokio::net::TcpStream::connect(https_addr(&proxy))
        .await
        .unwrap();
    let io = Counted {
        tcp,
        records: records.clone(),
    };
    let name = rustls::pki_types::ServerName::try_from("a.test").unwrap();
    let config = client_config(&[ca.der()], &[b"http/1.1"]);
    let mut stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, io)
        .await
        .unwrap();
    for round in 0..3 {
        let before = records.lock().unwrap().application_data;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await
            .unwrap();
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        let read_all = async {
            while !response.ends_with(b"backend a") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0, "connection closed after {response:?}");
                response.extend_from_slice(&buf[..n]);
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), read_all)
            .await
            .expect("the response within 10 s");
        let text = String::from_utf8_lossy(&response);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        let read = records.lock().unwrap().application_data - before;
        assert_eq!(
            read, 1,
            "request {round}: the response came in {read} records: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls10_and_tls11_client_hellos_are_refused_with_an_alert() {
    let ca = TestCa::new();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = start(&ca, &a, &b, "").await;
    for version in [0x0301u16, 0x0302] {
        let mut tcp = tokio::net::TcpStream::connect(https_addr(&proxy))
            .await
            .unwrap();
        tcp.write_all(&legacy_client_hello(version, "a.test"))
            .await
            .unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            tcp.read_to_end(&mut reply),
        )
        .await
        .expect("the server closes the connection")
        .unwrap();
        // One alert record (content type 21), then the connection is closed;
        // never a ServerHello (content type 22).
        assert_eq!(
            reply.first(),
            Some(&21),
            "version {version:#06x}: {reply:?}"
        );
        assert_eq!(reply[5], 2, "a fatal alert, got {reply:?}");
        assert_eq!(reply[6], 70, "protocol_version alert, got {reply:?}");
    }
    // The server is still fine afterwards.
    let config = client_config(&[ca.der()], &[]);
    assert_eq!(
        https_get(https_addr(&proxy), "a.test", config, "/").await.1,
        "backend a"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sni_is_refused_without_a_default_domain() {
    let ca = TestCa::new();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = start(&ca, &a, &b, "").await;
    let config = client_config(&[ca.der()], &[]);
    let err = connect(https_addr(&proxy), "other.test", config)
        .await
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("alert"),
        "expected a TLS alert, got {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sni_gets_the_default_domains_certificate() {
    let ca = TestCa::new();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = start(&ca, &a, &b, r#""default_domain": "b.test","#).await;
    let config = client_config(&[ca.der()], &[]);
    // The server presents b.test's certificate for other.test, which the
    // client then refuses by name; rustls's error names what it was given.
    let err = connect(https_addr(&proxy), "other.test", config.clone())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("only valid for") && err.contains("b.test"),
        "{err}"
    );
    // No SNI at all (rustls sends none when connecting to an IP): the same.
    let err = connect(https_addr(&proxy), "127.0.0.1", config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("b.test"), "{err}");
}

/// The leaf the proxy serves for `name`.
async fn peer_cert_of(
    proxy: &Proxy,
    ca: &TestCa,
    name: &str,
) -> rustls::pki_types::CertificateDer<'static> {
    let stream = connect(https_addr(proxy), name, client_config(&[ca.der()], &[]))
        .await
        .unwrap();
    peer_leaf(&stream)
}

async fn start_error(dir: &tempfile::TempDir, tls: &str) -> String {
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"listen": {{"https": "127.0.0.1:0"}}, "admin": null, {PLUGIN_SLACK},
               "domains": {{"a.test": {{"backends": ["127.0.0.1:9"], "tls": {tls}}}}}}}"#
        ),
    )
    .unwrap();
    let config = bbproxy_config::load(&path).unwrap();
    bbproxy::app::start(config, bbproxy::app::Options::default())
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_certificate_files_fail_the_start_naming_the_file() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    ca.write_leaf(dir.path(), "a.test");
    ca.write_leaf(dir.path(), "b.test");

    let err = start_error(&dir, r#"{"cert": "a.test.pem", "key": "b.test.key"}"#).await;
    assert!(
        err.contains("b.test.key") && err.contains("a.test.pem") && err.contains("does not fit"),
        "{err}"
    );

    let err = start_error(&dir, r#"{"cert": "missing.pem", "key": "a.test.key"}"#).await;
    assert!(
        err.contains("missing.pem") && err.contains("cannot read"),
        "{err}"
    );

    std::fs::write(dir.path().join("garbage.pem"), "not a certificate").unwrap();
    let err = start_error(&dir, r#"{"cert": "garbage.pem", "key": "a.test.key"}"#).await;
    assert!(
        err.contains("garbage.pem") && err.contains("BEGIN CERTIFICATE"),
        "{err}"
    );

    let err = start_error(&dir, r#"{"cert": "a.test.pem", "key": "a.test.pem"}"#).await;
    assert!(
        err.contains("a.test.pem") && err.contains("private key"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_certificate_update_keeps_serving_the_old_certificates() {
    let ca = TestCa::new();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = start(&ca, &a, &b, "").await;
    let running = proxy.running.as_ref().unwrap();
    let before = peer_cert_of(&proxy, &ca, "a.test").await;

    // A reload whose a.test key is b.test's: an error naming the files, and
    // the certificates in service do not change.
    let bad = proxy.dir.path().join("bad.json");
    std::fs::write(
        &bad,
        format!(
            r#"{{"listen": {{"https": "127.0.0.1:0"}}, "admin": null,
               "domains": {{"a.test": {{"backends": ["{}"], "tls": {{"cert": "a.test.pem", "key": "b.test.key"}}}}}}}}"#,
            a.addr
        ),
    )
    .unwrap();
    let err = running
        .certs
        .update_domains(&bbproxy_config::load(&bad).unwrap())
        .unwrap_err()
        .to_string();
    assert!(err.contains("b.test.key"), "{err}");
    assert_eq!(peer_cert_of(&proxy, &ca, "a.test").await, before);
    assert_eq!(
        https_get(
            https_addr(&proxy),
            "b.test",
            client_config(&[ca.der()], &[]),
            "/"
        )
        .await
        .1,
        "backend b"
    );

    // A good update with a new a.test certificate is served from the next
    // handshake on; b.test, no longer configured, is refused.
    ca.write_leaf(proxy.dir.path(), "a.test");
    let good = proxy.dir.path().join("good.json");
    std::fs::write(
        &good,
        format!(
            r#"{{"listen": {{"https": "127.0.0.1:0"}}, "admin": null,
               "domains": {{"a.test": {{"backends": ["{}"], "tls": {{"cert": "a.test.pem", "key": "a.test.key"}}}}}}}}"#,
            a.addr
        ),
    )
    .unwrap();
    running
        .certs
        .update_domains(&bbproxy_config::load(&good).unwrap())
        .unwrap();
    wait_for(
        std::time::Duration::from_secs(5),
        "the new certificate",
        || async { peer_cert_of(&proxy, &ca, "a.test").await != before },
    )
    .await;
    assert!(
        connect(
            https_addr(&proxy),
            "b.test",
            client_config(&[ca.der()], &[])
        )
        .await
        .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_http_answers_308_to_https() {
    let ca = TestCa::new();
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let proxy = start_listening(&ca, &a, &b, "", r#", "redirect_http": true"#).await;
    let port = https_addr(&proxy).port();
    for method in ["GET", "POST"] {
        let req = hyper::Request::builder()
            .method(method)
            .uri(proxy.url("/path?q=1"))
            .header(hyper::header::HOST, "a.test")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        let resp = client().request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT, "{method}");
        assert_eq!(
            resp.headers()[hyper::header::LOCATION],
            format!("https://a.test:{port}/path?q=1").as_str()
        );
    }
    assert_eq!(a.hits(), 0, "redirected requests never reach a backend");
    // HTTPS itself is served.
    let config = client_config(&[ca.der()], &[]);
    assert_eq!(
        https_get(https_addr(&proxy), "a.test", config, "/").await.1,
        "backend a"
    );
}

/// A backend behind TLS with a certificate from `ca` for 127.0.0.1,
/// answering `tls backend` to every request.
async fn tls_backend(ca: &TestCa) -> std::net::SocketAddr {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let (cert, key) = ca.leaf(&["127.0.0.1"]);
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(
                        http_body_util::Full::new(bytes::Bytes::from("tls backend")),
                    ))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backends_are_verified_with_the_domains_backend_ca() {
    let ca = TestCa::new();
    let backend = tls_backend(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("backend-ca.pem"), ca.pem()).unwrap();
    let proxy = Proxy::start_in(
        dir,
        &format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGIN_SLACK},
               "domains": {{
                 "trusted.test": {{"backends": ["https://{backend}"], "backend_ca": "backend-ca.pem"}},
                 "untrusted.test": ["https://{backend}"]
               }}}}"#
        ),
    )
    .await;
    let (status, body) = common::get(&client(), &proxy.url("/"), "trusted.test").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "tls backend"));
    // Without the CA, only the webpki roots count: the backend's
    // certificate is refused and the client gets a 502.
    let (status, _) = common::get(&client(), &proxy.url("/"), "untrusted.test").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_backend_ca_fails_the_start_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), "not a certificate").unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, {PLUGIN_SLACK},
               "domains": {{"a.test": {{"backends": ["https://127.0.0.1:9"], "backend_ca": "ca.pem"}}}}}}"#
        ),
    )
    .unwrap();
    let config = bbproxy_config::load(&path).unwrap();
    let err = bbproxy::app::start(config, bbproxy::app::Options::default())
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ca.pem") && err.contains("backend CA"),
        "{err}"
    );
}
