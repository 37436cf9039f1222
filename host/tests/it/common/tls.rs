//! TLS test helpers: a test CA and leaf certificates minted at run time
//! (never committed), a rustls client that trusts given roots, and HTTPS
//! requests over it.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Config keys that give the builtin plugins 1 s instead of 10 ms: on a
/// loaded machine (CI with parallel builds) a plugin's first call, its
/// `init`, can miss a 10 ms deadline, which has nothing to do with TLS.
pub const PLUGIN_SLACK: &str = r#""plugins": {"router": {"timeout": "1s"}, "balancer": {"timeout": "1s"}, "breaker": {"timeout": "1s"}}"#;

/// A CA that signs leaf certificates for tests.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "bbproxy test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A leaf for `names`: (certificate PEM, key PEM).
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        self.sign(CertificateParams::new(names).unwrap())
    }

    /// A leaf for `names` that expires at `not_after` (Unix seconds).
    pub fn leaf_until(&self, names: &[&str], not_after: i64) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).unwrap();
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A leaf for `names` valid from a day ago until `validity` from now;
    /// its certificate PEM and notAfter (`YYYY-MM-DD`), and its key PEM.
    pub fn leaf_valid_for(&self, names: &[&str], validity: std::time::Duration) -> (Leaf, String) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - std::time::Duration::from_secs(86_400);
        params.not_after = now + validity;
        let d = params.not_after;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let leaf = Leaf {
            pem: cert.pem(),
            not_after: format!("{}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day()),
        };
        (leaf, key.serialize_pem())
    }

    /// Writes a leaf for `name` to `<dir>/<name>.pem` and `<dir>/<name>.key`.
    pub fn write_leaf(&self, dir: &Path, name: &str) {
        let (cert, key) = self.leaf(&[name]);
        std::fs::write(dir.join(format!("{name}.pem")), cert).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key).unwrap();
    }
}

/// A certificate minted by [`TestCa::leaf_valid_for`].
pub struct Leaf {
    pub pem: String,
    /// `YYYY-MM-DD`.
    pub not_after: String,
}

/// A client config trusting only `roots`, offering `alpn`.
pub fn client_config(
    roots: &[CertificateDer<'static>],
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(store)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client config trusting only `root`, speaking only TLS `version` with
/// `provider`'s cipher suites (in its order), no ALPN.
pub fn client_config_for(
    root: CertificateDer<'static>,
    provider: rustls::crypto::CryptoProvider,
    version: &'static rustls::SupportedProtocolVersion,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS connection to `addr` with SNI `name`.
pub async fn connect(
    addr: SocketAddr,
    name: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    TlsConnector::from(config).connect(name, tcp).await
}

/// The leaf certificate the server presented.
pub fn peer_leaf(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// The DNS names of a certificate.
pub fn dns_names(der: &CertificateDer<'_>) -> Vec<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    cert.subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// One GET over an established TLS connection, HTTP/2 if ALPN chose it.
pub async fn get_over(
    stream: TlsStream<TcpStream>,
    host: &str,
    path: &str,
) -> (StatusCode, String) {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let uri = format!("https://{host}{path}");
    let req = Request::get(&uri)
        .header(hyper::header::HOST, host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = if h2 {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        send.send_request(req).await.unwrap()
    };
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Connects with SNI `host` and GETs `path`.
pub async fn https_get(
    addr: SocketAddr,
    host: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> (StatusCode, String) {
    let stream = connect(addr, host, config).await.unwrap();
    get_over(stream, host, path).await
}

/// A ClientHello that offers only `version` (0x0301 TLS 1.0, 0x0302 TLS
/// 1.1): no supported_versions extension, legacy cipher suites.
pub fn legacy_client_hello(version: u16, sni: &str) -> Vec<u8> {
    let [vh, vl] = version.to_be_bytes();
    let mut sni_ext = Vec::new();
    let name = sni.as_bytes();
    let list_len = (name.len() + 3) as u16;
    sni_ext.extend_from_slice(&[0x00, 0x00]); // server_name
    sni_ext.extend_from_slice(&(list_len + 2).to_be_bytes());
    sni_ext.extend_from_slice(&list_len.to_be_bytes());
    sni_ext.push(0); // host_name
    sni_ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni_ext.extend_from_slice(name);

    let mut body = vec![vh, vl];
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    // Suites rustls would accept over TLS 1.2, so only the version is wrong.
    let suites: [u16; 6] = [0xc02b, 0xc02f, 0xc013, 0xc014, 0x002f, 0x0035];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    // Everything else a TLS 1.2 server needs (signature algorithms, groups,
    // point formats), so the offered version is the only thing wrong.
    let mut exts = sni_ext;
    exts.extend_from_slice(&[
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01,
    ]);
    exts.extend_from_slice(&[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17]);
    exts.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);

    let mut handshake = vec![1]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, vh, vl];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// A rustls server config with a leaf from `ca` for 127.0.0.1, offering
/// `alpn` (empty: no ALPN at all).
pub fn backend_server_config(ca: &TestCa, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let (cert, key) = ca.leaf(&["127.0.0.1"]);
    let chain = CertificateDer::pem_slice_iter(cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A TLS backend on 127.0.0.1:0 with `config`; each accepted TCP
/// connection is counted in `accepted`, then handed to `serve` once the
/// handshake is done.
pub async fn tls_listener<F, Fut>(
    config: Arc<rustls::ServerConfig>,
    accepted: Arc<std::sync::atomic::AtomicU64>,
    serve: F,
) -> (SocketAddr, tokio::task::JoinHandle<()>)
where
    F: Fn(tokio_rustls::server::TlsStream<TcpStream>) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = Arc::new(serve);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (acceptor, serve) = (acceptor.clone(), serve.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    serve(tls).await;
                }
            });
        }
    });
    (addr, task)
}
