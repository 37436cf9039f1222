//! The forwarding path: HTTP/1.1 keep-alive, h2c, streaming 10 MiB both ways
//! intact, forwarding headers.

use crate::common;

use bytes::Bytes;
use common::{Backend, DOWNLOAD_BYTES, Proxy, addrs, client, get, pattern, sha256_hex};
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, Version};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn proxy_for(b: &Backend) -> Proxy {
    Proxy::start(&format!(
        r#"{{"listen": {{"http": "127.0.0.1:0"}}, "admin": null, "domains": {{"app.test": {}}}}}"#,
        addrs(&[b])
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_keep_alive_serves_several_requests_on_one_connection() {
    let b = Backend::start("a").await;
    let proxy = proxy_for(&b).await;
    let mut conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    for i in 0..3 {
        conn.write_all(format!("GET /{i} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        // Read one response: headers, then exactly Content-Length bytes.
        let head = common::raw::read_head(&mut conn).await.unwrap();
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        conn.read_exact(&mut body).await.unwrap();
        assert_eq!(body, b"backend a");
    }
    assert_eq!(b.hits(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_served() {
    let b = Backend::start("a").await;
    let proxy = proxy_for(&b).await;
    // HTTP/2 carries the host as :authority; the request URI names app.test
    // and the connector dials the proxy.
    let h2 = common::h2c_client_to(proxy.addr);
    for _ in 0..5 {
        let req = Request::get(format!("http://app.test:{}/x", proxy.addr.port()))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = h2.request(req).await.unwrap();
        assert_eq!(resp.version(), Version::HTTP_2);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.into_body().collect().await.unwrap().to_bytes(),
            "backend a"
        );
    }
    // A second connection, one more request.
    let direct = common::h2c_client_to(proxy.addr);
    let req = Request::get(format!("http://app.test:{}/y", proxy.addr.port()))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = direct.request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(b.hits(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_mib_upload_and_download_stream_through_intact() {
    let b = Backend::start("a").await;
    let proxy = proxy_for(&b).await;
    let data = pattern(DOWNLOAD_BYTES);
    let expected = sha256_hex(&data);
    let base = format!("http://app.test:{}", proxy.addr.port());
    for http in [
        common::client_to(proxy.addr),
        common::h2c_client_to(proxy.addr),
    ] {
        let req = Request::post(format!("{base}/upload"))
            .body(Full::new(Bytes::from(data.clone())))
            .unwrap();
        let resp = http.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(String::from_utf8_lossy(&got), expected, "upload checksum");

        let req = Request::get(format!("{base}/download"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = http.request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let got = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(got.len(), DOWNLOAD_BYTES);
        assert_eq!(sha256_hex(&got), expected, "download checksum");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_set_and_hop_by_hop_removed() {
    let b = Backend::start("a").await;
    let proxy = proxy_for(&b).await;
    let req = Request::get(proxy.url("/headers"))
        .header("host", "app.test")
        .header("x-forwarded-for", "198.51.100.7")
        .header("connection", "x-private")
        .header("x-private", "secret")
        .header("x-kept", "yes")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = client().request(req).await.unwrap();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let seen = String::from_utf8_lossy(&body);
    assert!(seen.contains("host: app.test"), "{seen}");
    assert!(
        seen.contains("x-forwarded-for: 198.51.100.7, 127.0.0.1"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto: http"), "{seen}");
    assert!(seen.contains("x-forwarded-host: app.test"), "{seen}");
    assert!(seen.contains("x-kept: yes"), "{seen}");
    assert!(!seen.contains("x-private"), "{seen}");
    let _ = get(&client(), &proxy.url("/"), "app.test").await;
}
