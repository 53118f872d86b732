//! The transport floor: an AdmissionReview server on the services' own stack (runtime's TLS +
//! HTTP/2 server, axum) that reads the review and answers a canned `allowed` response.

use std::path::Path;

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

/// The canned answer.
pub const ALLOWED: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"00000000-0000-0000-0000-000000000000","allowed":true}}"#;

async fn review(body: Bytes) -> ([(http::HeaderName, &'static str); 1], &'static str) {
    // The body is read in full (as every webhook must) and dropped.
    drop(body);
    ([(http::header::CONTENT_TYPE, "application/json")], ALLOWED)
}

/// Serves `/validate` and `/mutate` on `127.0.0.1:<port>` until killed.
pub async fn serve(port: u16, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let tls = ballast_runtime::tls::ReloadingTls::load(cert, key)?;
    let router = Router::new()
        .route("/validate", post(review))
        .route("/mutate", post(review));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    ballast_runtime::http::serve(listener, router, Some(tls), CancellationToken::new()).await?;
    Ok(())
}
