use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::*;

fn client_trusting(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .use_rustls_tls()
        .build()
        .unwrap()
}

#[test]
fn explicit_files_win_over_the_directory() {
    let dir = Path::new("/certs");
    assert_eq!(
        cert_paths(dir, None, None),
        (dir.join("tls.crt"), dir.join("tls.key"))
    );
    assert_eq!(
        cert_paths(dir, Some(Path::new("/a.crt")), None),
        (PathBuf::from("/a.crt"), dir.join("tls.key"))
    );
}

#[test]
fn load_names_the_file_that_is_missing_or_broken() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = cert_paths(dir.path(), None, None);
    let err = ReloadingTls::load(&cert, &key).unwrap_err();
    assert!(err.to_string().contains("tls.crt"), "{err}");

    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let err = ReloadingTls::load(&cert, &key).unwrap_err();
    assert!(matches!(err, Error::TlsMaterial { .. }), "{err}");
}

#[test]
fn refuses_a_key_that_does_not_match_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let one = generate(&["localhost"]).unwrap();
    let other = generate(&["localhost"]).unwrap();
    let (cert, key) = one.write_to(dir.path()).unwrap();
    std::fs::write(&key, &other.key_pem).unwrap();
    let err = ReloadingTls::load(&cert, &key).unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}

#[tokio::test]
async fn serves_https_and_picks_up_a_rotated_certificate_without_dropping_the_listener() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let first = generate(&["127.0.0.1", "localhost"]).unwrap();
    let (cert, key) = first.write_to(dir.path()).unwrap();
    let tls = ReloadingTls::load(&cert, &key).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let router = Router::new().route("/", get(|| async { "hello" }));
    let server = tokio::spawn(crate::http::serve(
        listener,
        router,
        Some(tls.clone()),
        shutdown.clone(),
    ));
    let reloader = tls.spawn_reloader(Duration::from_millis(50), shutdown.clone());

    let url = format!("https://{addr}/");
    let body = client_trusting(&first.ca_pem)
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "hello");

    // Rotate: a new CA and certificate, written in place.
    let second = generate(&["127.0.0.1", "localhost"]).unwrap();
    let leaf_before = tls.current_leaf();
    second.write_to(dir.path()).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tls.current_leaf() == leaf_before {
        assert!(
            std::time::Instant::now() < deadline,
            "certificate never reloaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A fresh client that trusts only the new CA now succeeds on the same listener...
    let body = client_trusting(&second.ca_pem)
        .get(&url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, "hello");
    // ...and one that trusts only the old CA fails the handshake.
    assert!(
        client_trusting(&first.ca_pem)
            .get(&url)
            .send()
            .await
            .is_err()
    );

    // A half-written rotation keeps the current certificate.
    std::fs::write(&cert, "garbage").unwrap();
    assert!(tls.reload().is_err());
    assert!(
        client_trusting(&second.ca_pem)
            .get(&url)
            .send()
            .await
            .is_ok()
    );

    shutdown.cancel();
    server.await.unwrap().unwrap();
    reloader.await.unwrap();
}

#[tokio::test]
async fn negotiates_http2_by_alpn() {
    install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let generated = generate(&["127.0.0.1"]).unwrap();
    let (cert, key) = generated.write_to(dir.path()).unwrap();
    let tls = ReloadingTls::load(&cert, &key).unwrap();
    let config: Arc<rustls::ServerConfig> = tls.server_config();
    assert_eq!(
        config.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let router = Router::new().route("/", get(|| async { "hi" }));
    tokio::spawn(crate::http::serve(
        listener,
        router,
        Some(tls),
        shutdown.clone(),
    ));
    let response = client_trusting(&generated.ca_pem)
        .get(format!("https://{addr}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    shutdown.cancel();
}
