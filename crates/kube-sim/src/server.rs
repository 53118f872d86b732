//! HTTP face of the simulator: authentication, URL → [`ApiRequest`], discovery, watch streams
//! and server-side Table printing for kubectl.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, Method, StatusCode, Uri, header};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::apiserver::{ApiRequest, ApiResponse, Query, Sim, Verb, WatchPlan, present};
use crate::errors::ApiError;
use crate::patch::PatchType;
use crate::store::{EventType, WatchStart};
use crate::{discovery, table};

/// Buffered watch events per client before the writer waits for it.
const WATCH_BUFFER: usize = 256;

pub fn router(sim: Arc<Sim>) -> Router {
    Router::new().fallback(handle).with_state(sim)
}

fn json_response(code: u16, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(bytes))
        .unwrap_or_default()
}

/// The error as the API server writes it: the Status body, and a `Retry-After` header when the
/// Status carries `details.retryAfterSeconds` (apiserver's `responsewriters.ErrorNegotiated`).
fn error_response(e: &ApiError) -> Response {
    let mut resp = json_response(e.code, &e.to_status());
    if let Some(secs) = e.retry_after_seconds() {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, http::HeaderValue::from(secs));
    }
    resp
}

/// What kubectl asked the server to print (`Accept: application/json;as=Table;...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Table { include_object: bool },
}

fn format_of(headers: &HeaderMap, query: &Query) -> Format {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if accept.contains("as=Table") {
        Format::Table {
            include_object: query.get("includeObject") == Some("Object"),
        }
    } else {
        Format::Json
    }
}

/// A parsed resource URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePath {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    pub legacy_watch: bool,
}

/// Splits `/api/v1/...` and `/apis/g/v/...` paths; `namespaced` says whether a plural is a
/// namespaced resource of that group/version (to tell `namespaces/x/pods` from
/// `namespaces/x/status`).
pub fn parse_path(
    path: &str,
    namespaced: impl Fn(&str, &str, &str) -> bool,
) -> Option<ResourcePath> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return None,
    };
    let mut legacy_watch = false;
    if rest.first() == Some(&"watch") {
        legacy_watch = true;
        rest = &rest[1..];
    }
    let own = |s: Option<&&str>| s.map(|x| x.to_string()).filter(|x| !x.is_empty());
    let (namespace, resource, name, sub) =
        if rest.len() >= 3 && rest[0] == "namespaces" && namespaced(group, version, rest[2]) {
            (
                own(rest.get(1)),
                rest[2],
                own(rest.get(3)),
                own(rest.get(4)),
            )
        } else {
            (None, *rest.first()?, own(rest.get(1)), own(rest.get(2)))
        };
    Some(ResourcePath {
        group: group.into(),
        version: version.into(),
        resource: resource.into(),
        namespace,
        name,
        subresource: sub,
        legacy_watch,
    })
}

async fn handle(
    State(sim): State<Arc<Sim>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let query = Query::parse(uri.query());
    match path.trim_end_matches('/') {
        "/healthz" | "/livez" | "/readyz" => {
            return Response::builder()
                .status(200)
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from("ok"))
                .unwrap_or_default();
        }
        "/version" => return json_response(200, &discovery::version()),
        _ => {}
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(user) = token.and_then(|t| sim.auth.authenticate(t)) else {
        return error_response(&ApiError::unauthorized());
    };
    let registry = sim.registry();
    if let Some(body) = discovery::serve(&registry, path) {
        return json_response(200, &body);
    }
    let parsed = parse_path(path, |g, v, r| {
        registry.find(g, v, r).is_some_and(|t| t.namespaced)
    });
    let Some(rp) = parsed else {
        return error_response(&ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        ));
    };
    let verb = match (&method, rp.name.is_some()) {
        (&Method::GET, _) if rp.legacy_watch || query.flag("watch") => Verb::Watch,
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, _) => Verb::Create,
        (&Method::PUT, _) => Verb::Update,
        (&Method::PATCH, _) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            match PatchType::from_content_type(ct) {
                Some(p) => Verb::Patch(p),
                None => {
                    return error_response(&ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!(
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
                        ),
                    ));
                }
            }
        }
        (&Method::DELETE, true) => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        _ => {
            return error_response(&ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            )));
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut body = body.to_vec();
    if content_type.contains("protobuf") && !body.is_empty() {
        match crate::protobuf::decode(&body) {
            Ok(v) => body = serde_json::to_vec(&v).unwrap_or_default(),
            Err(e) => {
                return error_response(&ApiError::new(415, "UnsupportedMediaType", e));
            }
        }
    } else if content_type.contains("cbor") {
        return error_response(&ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml (got {content_type:?})"
            ),
        ));
    }
    let format = format_of(&headers, &query);
    let req = ApiRequest {
        verb,
        group: rp.group,
        version: rp.version,
        resource: rp.resource,
        subresource: rp.subresource,
        namespace: rp.namespace,
        name: rp.name,
        query,
        body,
        user,
    };
    let (verb, ns, name, resource) = (
        req.verb,
        req.namespace.clone().unwrap_or_default(),
        req.name.clone().unwrap_or_default(),
        req.resource.clone(),
    );
    match sim.execute(req).await {
        Ok(ApiResponse::Object(code, v)) => {
            let v = match (format, verb) {
                (Format::Table { include_object }, Verb::Get | Verb::List) => {
                    // The columns of the version served (custom resources differ per version).
                    let registry = sim.registry();
                    let (group, version) = v_group_version(&v);
                    let rt = registry
                        .find(&group, &version, &resource)
                        .or_else(|| registry.find_any_version(&group, &resource))
                        .cloned();
                    match rt {
                        Some(rt) => {
                            let items = if verb == Verb::List {
                                v.get("items")
                                    .and_then(Value::as_array)
                                    .cloned()
                                    .unwrap_or_default()
                            } else {
                                vec![v.clone()]
                            };
                            let rv = v.pointer("/metadata/resourceVersion").cloned();
                            let mut t = table::table(&sim, &rt, &items, include_object, true);
                            if let Some(rv) = rv {
                                t["metadata"]["resourceVersion"] = rv;
                            }
                            if let Some(c) = v.pointer("/metadata/continue") {
                                t["metadata"]["continue"] = c.clone();
                            }
                            t
                        }
                        None => v,
                    }
                }
                _ => v,
            };
            json_response(code, &v)
        }
        Ok(ApiResponse::Warned(code, v, warnings)) => {
            let mut resp = json_response(code, &v);
            for w in warnings {
                if let Ok(h) = http::HeaderValue::from_str(&warning_header(&w)) {
                    resp.headers_mut().append(header::WARNING, h);
                }
            }
            resp
        }
        Ok(ApiResponse::Watch(plan)) => watch_response(sim, *plan, format),
        Err(e) => {
            if e.code >= 500 || e.code == 403 {
                tracing::info!(resource = %resource, namespace = %ns, name = %name, code = e.code, error = %e.message, "request failed");
            }
            error_response(&e)
        }
    }
}

/// A `Warning` header value as the API server writes it: `299 - "<text>"`.
fn warning_header(text: &str) -> String {
    format!("299 - {}", Value::String(text.to_string()))
}

fn v_group_version(v: &Value) -> (String, String) {
    let api_version = v
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (g, ver) = crate::resources::split_api_version(api_version);
    (g.to_string(), ver.to_string())
}

fn encode(kind: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn watch_response(sim: Arc<Sim>, plan: WatchPlan, format: Format) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(WATCH_BUFFER);
    let interval = sim.settings.bookmark_interval;
    tokio::spawn(run_watch(sim, plan, format, tx, interval));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Response::builder()
        .status(200)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

async fn run_watch(
    sim: Arc<Sim>,
    plan: WatchPlan,
    format: Format,
    tx: mpsc::Sender<Bytes>,
    bookmark_every: Duration,
) {
    let WatchPlan {
        rt,
        namespace,
        labels,
        fields,
        initial,
        start,
        bookmarks,
        initial_events_end,
        timeout,
        from_rv,
        gone,
    } = plan;
    if let Some(e) = gone {
        let _ = tx.send(encode("ERROR", &e.to_status())).await;
        return;
    }
    let mut first = true;
    let mut render = |kind: &str, obj: Value| -> Bytes {
        let obj = present(&rt, obj);
        match format {
            Format::Json => encode(kind, &obj),
            Format::Table { include_object } => {
                let t = table::table(&sim, &rt, &[obj], include_object, first);
                first = false;
                encode(kind, &t)
            }
        }
    };
    let bookmark = |rv: u64, end: bool| {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        encode(
            "BOOKMARK",
            &json!({"apiVersion": rt.api_version(), "kind": rt.kind, "metadata": meta}),
        )
    };
    let mut last_rv = from_rv;
    for obj in initial {
        // Custom resources are converted to the watched version (or served as the version's
        // watch cache holds them); a failed conversion ends the stream with the error, as the API
        // server's watch does.
        let obj = match sim.watched(&rt, obj).await {
            Ok(o) => o,
            Err(e) => {
                let _ = tx.send(encode("ERROR", &e.to_status())).await;
                return;
            }
        };
        if tx.send(render("ADDED", obj)).await.is_err() {
            return;
        }
    }
    if initial_events_end && tx.send(bookmark(last_rv, true)).await.is_err() {
        return;
    }
    let key = rt.storage_key();
    let WatchStart {
        replay, mut live, ..
    } = start;
    let mut pending = replay.into_iter();
    let deadline = tokio::time::Instant::now() + timeout;
    let mut ticker = tokio::time::interval(bookmark_every);
    ticker.tick().await;
    loop {
        let event = if let Some(e) = pending.next() {
            e
        } else {
            tokio::select! {
                _ = sim.shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
                _ = ticker.tick() => {
                    if bookmarks && tx.send(bookmark(last_rv, false)).await.is_err() {
                        return;
                    }
                    continue;
                }
                got = live.recv() => match got {
                    Ok(e) => e,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // As the API server does with an unresponsive watcher: the stream ends
                        // without an error and the client watches again from the last version
                        // it saw (410 only if the history no longer holds it).
                        tracing::info!(resource = %rt.resource, namespace = namespace.as_deref().unwrap_or(""), missed, last_rv, "watch closed: watcher fell behind");
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        };
        // Replay and live feed never overlap, but never send an event twice regardless.
        if event.rv <= last_rv {
            continue;
        }
        last_rv = event.rv;
        if event.key != key
            || namespace
                .as_deref()
                .is_some_and(|want| want != event.namespace)
        {
            continue;
        }
        let object = present(&rt, event.object.clone());
        let now_match = labels.matches(&object) && fields.matches(&object);
        let was_match = event.old.as_ref().is_some_and(|o| {
            let o = present(&rt, o.clone());
            labels.matches(&o) && fields.matches(&o)
        });
        let kind = match event.kind {
            EventType::Added if now_match => Some("ADDED"),
            EventType::Modified if now_match && was_match => Some("MODIFIED"),
            EventType::Modified if now_match => Some("ADDED"),
            EventType::Modified if was_match => Some("DELETED"),
            EventType::Deleted if was_match => Some("DELETED"),
            _ => None,
        };
        let Some(kind) = kind else { continue };
        let object = match sim.watched(&rt, event.object.clone()).await {
            Ok(o) => o,
            Err(e) => {
                let _ = tx.send(encode("ERROR", &e.to_status())).await;
                return;
            }
        };
        if tx.send(render(kind, object)).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(_: &str, _: &str, r: &str) -> bool {
        matches!(r, "pods" | "leases" | "podmanagers")
    }

    #[test]
    fn parses_core_and_group_paths_with_namespaces_and_subresources() {
        let p = parse_path("/api/v1/namespaces/a/pods/web/status", ns).unwrap();
        assert_eq!(
            (p.group.as_str(), p.version.as_str(), p.resource.as_str()),
            ("", "v1", "pods")
        );
        assert_eq!(p.namespace.as_deref(), Some("a"));
        assert_eq!(p.name.as_deref(), Some("web"));
        assert_eq!(p.subresource.as_deref(), Some("status"));

        let p = parse_path("/apis/coordination.k8s.io/v1/namespaces/a/leases", ns).unwrap();
        assert_eq!(p.group, "coordination.k8s.io");
        assert_eq!(p.name, None);

        let p = parse_path("/api/v1/namespaces/a/status", ns).unwrap();
        assert_eq!(p.resource, "namespaces");
        assert_eq!(p.name.as_deref(), Some("a"));
        assert_eq!(p.subresource.as_deref(), Some("status"));

        let p = parse_path("/api/v1/pods", ns).unwrap();
        assert_eq!((p.resource.as_str(), p.namespace.clone()), ("pods", None));

        let p = parse_path("/api/v1/watch/namespaces/a/pods", ns).unwrap();
        assert!(p.legacy_watch);
        assert_eq!(p.namespace.as_deref(), Some("a"));

        assert_eq!(parse_path("/api/v1", ns), None);
        assert_eq!(parse_path("/metrics", ns), None);
    }
}
