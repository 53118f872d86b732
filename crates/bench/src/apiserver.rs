//! What the API server served during a run, from its own `/metrics`: requests and their summed
//! handling time by verb and resource (`apiserver_request_duration_seconds`). Watches are left
//! out: their "duration" is how long they stayed open.

use std::collections::BTreeMap;

use kube::Client;

/// `(verb, resource[/subresource])` → (requests, seconds summed).
pub type Requests = BTreeMap<(String, String), (f64, f64)>;

const DURATION: &str = "apiserver_request_duration_seconds";

/// Reads the API server's request figures now (needs a client allowed `GET /metrics`).
pub async fn read(client: &Client) -> anyhow::Result<Requests> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(req).await?;
    Ok(parse(&text))
}

/// The request counts and summed seconds in Prometheus text, summed over every other label.
pub fn parse(text: &str) -> Requests {
    let (count, sum) = (format!("{DURATION}_count{{"), format!("{DURATION}_sum{{"));
    let mut out = Requests::new();
    for line in text.lines() {
        let (is_count, rest) = if let Some(r) = line.strip_prefix(&count) {
            (true, r)
        } else if let Some(r) = line.strip_prefix(&sum) {
            (false, r)
        } else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        let label = |k: &str| {
            labels
                .split(',')
                .find_map(|p| p.strip_prefix(k)?.strip_prefix("=\"")?.strip_suffix('"'))
                .unwrap_or_default()
        };
        if label("verb") == "WATCH" {
            continue;
        }
        let resource = match label("subresource") {
            "" => label("resource").to_owned(),
            sub => format!("{}/{sub}", label("resource")),
        };
        let entry = out.entry((label("verb").to_owned(), resource)).or_default();
        if is_count {
            entry.0 += value;
        } else {
            entry.1 += value;
        }
    }
    out
}

/// What was served between two readings, largest summed time first.
pub fn served(before: &Requests, after: &Requests) -> Vec<((String, String), (f64, f64))> {
    let mut out: Vec<_> = after
        .iter()
        .map(|(k, (n, s))| {
            let (n0, s0) = before.get(k).copied().unwrap_or_default();
            (k.clone(), (n - n0, s - s0))
        })
        .filter(|(_, (n, _))| *n >= 1.0)
        .collect();
    out.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP apiserver_request_duration_seconds [STABLE] Response latency
# TYPE apiserver_request_duration_seconds histogram
apiserver_request_duration_seconds_bucket{component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1",le="0.005"} 3
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 1.5
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="LIST",version="v1"} 10
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1"} 0.5
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="",resource="pods",scope="cluster",subresource="",verb="LIST",version="v1"} 2
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="apps.mycompany.com",resource="podmanagers",scope="resource",subresource="status",verb="PATCH",version="v1"} 4
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="apps.mycompany.com",resource="podmanagers",scope="resource",subresource="status",verb="PATCH",version="v1"} 8
apiserver_request_duration_seconds_sum{component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="WATCH",version="v1"} 300
apiserver_request_duration_seconds_count{component="apiserver",dry_run="",group="",resource="pods",scope="namespace",subresource="",verb="WATCH",version="v1"} 1
apiserver_request_total{code="200",component="apiserver",resource="pods",verb="LIST"} 12
"#;

    fn key(verb: &str, resource: &str) -> (String, String) {
        (verb.to_owned(), resource.to_owned())
    }

    #[test]
    fn sums_over_other_labels_by_verb_and_resource_without_watches() {
        let r = parse(TEXT);
        assert_eq!(r.len(), 2, "{r:?}");
        assert_eq!(r[&key("LIST", "pods")], (12.0, 2.0));
        assert_eq!(r[&key("PATCH", "podmanagers/status")], (8.0, 4.0));
    }

    #[test]
    fn served_is_the_difference_largest_time_first_without_idle_rows() {
        let mut before = parse(TEXT);
        before.insert(key("GET", "nodes"), (5.0, 1.0));
        let mut after = parse(TEXT);
        after.insert(key("GET", "nodes"), (5.0, 1.0));
        after.insert(key("LIST", "pods"), (20.0, 3.0));
        after.insert(key("PATCH", "podmanagers/status"), (18.0, 9.0));
        let got = served(&before, &after);
        assert_eq!(
            got,
            vec![
                (key("PATCH", "podmanagers/status"), (10.0, 5.0)),
                (key("LIST", "pods"), (8.0, 1.0)),
            ]
        );
    }
}
