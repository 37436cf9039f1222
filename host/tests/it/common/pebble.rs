//! A real ACME server for the tests: Pebble plus pebble-challtestsrv (as its
//! DNS, resolving every name to 127.0.0.1), both on 127.0.0.1 with free
//! ports, started as child processes and killed (by their own PID) on drop.
//! Pebble validates HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`:
//! the proxy under test listens there.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::ReservedPort;
use super::tls::{TestCa, client_config};

/// Knobs of one Pebble run.
#[derive(Clone, Debug, Default)]
pub struct PebbleOptions {
    /// `certificateValidityPeriod` in seconds (Pebble's default: 5 years).
    pub validity_secs: Option<u64>,
    /// `PEBBLE_WFE_NONCEREJECT`: percentage of nonces refused.
    pub nonce_reject: u8,
}

pub struct Pebble {
    pub dir: tempfile::TempDir,
    /// The ACME directory URL.
    pub directory: String,
    /// PEM file of the CA that signed Pebble's API certificate (for
    /// `acme.ca_root`).
    pub api_ca: PathBuf,
    /// Where Pebble validates HTTP-01.
    pub http_port: u16,
    /// Where Pebble validates TLS-ALPN-01.
    pub tls_port: u16,
    /// Signed Pebble's API certificate; `api_ca` is its certificate.
    ca: TestCa,
    api: SocketAddr,
    management: SocketAddr,
    dns: SocketAddr,
    /// pebble-challtestsrv's management API (where names point).
    dns_management: SocketAddr,
    options: PebbleOptions,
    pebble: Option<Child>,
    dns_server: Option<Child>,
    /// The ports above, kept from other tests' servers.
    _reserved: Vec<ReservedPort>,
}

impl Pebble {
    pub async fn start(options: PebbleOptions) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new();
        let (cert, key) = ca.leaf(&["localhost", "127.0.0.1"]);
        std::fs::write(dir.path().join("api.pem"), cert).unwrap();
        std::fs::write(dir.path().join("api.key"), key).unwrap();
        let api_ca = dir.path().join("api-ca.pem");
        std::fs::write(&api_ca, ca.pem()).unwrap();
        // Every port stays reserved while this Pebble lives: the proxy
        // under test binds http_port and tls_port only seconds later.
        let mut reserved = Vec::new();
        let mut port = |udp_too: bool| {
            let r = ReservedPort::new(udp_too);
            let port = r.port;
            reserved.push(r);
            port
        };
        let at = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut pebble = Pebble {
            api: at(port(false)),
            management: at(port(false)),
            dns: at(port(true)),
            dns_management: at(port(false)),
            http_port: port(false),
            tls_port: port(false),
            directory: String::new(),
            api_ca,
            ca,
            dir,
            options,
            pebble: None,
            dns_server: None,
            _reserved: reserved,
        };
        pebble.directory = format!("https://{}/dir", pebble.api);
        pebble.start_dns();
        pebble.start_pebble().await;
        pebble
    }

    fn start_dns(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("challtestsrv.log")).unwrap();
        let child = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &self.dns.to_string()])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &self.dns_management.to_string()])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect(
                "pebble-challtestsrv is installed (Debian package pebble; .ci/run installs it)",
            );
        self.dns_server = Some(child);
    }

    async fn start_pebble(&mut self) {
        let mut config = serde_json::json!({
            "pebble": {
                "listenAddress": self.api.to_string(),
                "managementListenAddress": self.management.to_string(),
                "certificate": "api.pem",
                "privateKey": "api.key",
                "httpPort": self.http_port,
                "tlsPort": self.tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        if let Some(secs) = self.options.validity_secs {
            config["pebble"]["certificateValidityPeriod"] = secs.into();
        }
        std::fs::write(
            self.dir.path().join("pebble-config.json"),
            config.to_string(),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("pebble.log"))
            .unwrap();
        let child = Command::new("pebble")
            .current_dir(self.dir.path())
            .args(["-config", "pebble-config.json"])
            .args(["-dnsserver", &self.dns.to_string()])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_AUTHZREUSE", "0")
            .env(
                "PEBBLE_WFE_NONCEREJECT",
                self.options.nonce_reject.to_string(),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("pebble is installed (Debian package pebble; .ci/run installs it)");
        self.pebble = Some(child);
        let url = self.directory.clone();
        super::wait_for(Duration::from_secs(30), "Pebble's directory", || {
            let url = url.clone();
            let client = self.client();
            async move { get(&client, &url).await.is_some() }
        })
        .await;
    }

    /// A certificate and key for 127.0.0.1 that clients trusting
    /// `api_ca` accept (for a server that stands in front of Pebble).
    pub fn api_leaf(&self) -> (String, String) {
        self.ca.leaf(&["localhost", "127.0.0.1"])
    }

    /// Pebble's directory object.
    pub async fn directory_json(&self) -> serde_json::Value {
        let body = get(&self.client(), &self.directory)
            .await
            .expect("Pebble's directory");
        serde_json::from_slice(&body).unwrap()
    }

    fn client(
        &self,
    ) -> Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Empty<Bytes>,
    > {
        let ca = std::fs::read(&self.api_ca).unwrap();
        let ca = CertificateDer::from_pem_slice(&ca).unwrap();
        let tls = Arc::unwrap_or_clone(client_config(&[ca], &[]));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Client::builder(TokioExecutor::new()).build(connector)
    }

    /// This run's root CA (Pebble makes a new one at every start).
    pub async fn root(&self) -> CertificateDer<'static> {
        let url = format!("https://{}/roots/0", self.management);
        let pem = get(&self.client(), &url).await.expect("Pebble's /roots/0");
        CertificateDer::from_pem_slice(&pem).unwrap()
    }

    /// Stops Pebble (the DNS stays up).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.pebble.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Pebble again with `options` (same ports, new roots).
    pub async fn restart(&mut self, options: PebbleOptions) {
        self.stop();
        self.options = options;
        self.start_pebble().await;
    }

    /// Makes Pebble's DNS resolve `name` to `ip` (instead of 127.0.0.1),
    /// so its validations of `name` go there.
    pub async fn point(&self, name: &str, ip: &str) {
        let client =
            Client::builder(TokioExecutor::new()).build_http::<http_body_util::Full<Bytes>>();
        // /add-a adds to what the name had; clear it first.
        for (path, body) in [
            ("clear-a", serde_json::json!({"host": name})),
            (
                "add-a",
                serde_json::json!({"host": name, "addresses": [ip]}),
            ),
        ] {
            let url = format!("http://{}/{path}", self.dns_management);
            let req = hyper::Request::post(url)
                .body(http_body_util::Full::new(Bytes::from(body.to_string())))
                .unwrap();
            let resp = client.request(req).await.expect("pebble-challtestsrv");
            assert!(resp.status().is_success(), "/{path}: {}", resp.status());
        }
    }

    /// Certificates Pebble has issued.
    pub fn issued(&self) -> usize {
        self.log().matches("Issued certificate serial").count()
    }

    /// Accounts Pebble knows (its last count).
    pub fn accounts(&self) -> usize {
        self.log()
            .rsplit("There are now ")
            .map(|rest| rest.split(' ').collect::<Vec<_>>())
            .find(|words| words.get(1) == Some(&"accounts"))
            .and_then(|words| words[0].parse().ok())
            .unwrap_or(0)
    }

    /// Pebble's output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    /// Orders Pebble has created.
    pub fn orders(&self) -> usize {
        self.log().matches("Added order").count()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- Pebble's log ---\n{}--- end of Pebble's log ---",
                self.log()
            );
        }
        self.stop();
        if let Some(mut child) = self.dns_server.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn get(
    client: &Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Empty<Bytes>,
    >,
    url: &str,
) -> Option<Vec<u8>> {
    let resp = client.get(url.parse().ok()?).await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    Some(resp.into_body().collect().await.ok()?.to_bytes().to_vec())
}
