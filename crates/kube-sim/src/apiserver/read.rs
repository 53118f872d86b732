//! Reads: get, list (with selectors and paging) and watch.

use super::helpers::*;
use super::*;

impl Sim {
    pub(super) async fn get(&self, rt: &ResourceType, req: &ApiRequest) -> Result<Value, ApiError> {
        let name = req.name.as_deref().unwrap_or_default();
        let obj = self.current(rt, &self.namespace_of(rt, req), name)?;
        let obj = self.served(rt, obj).await?;
        if req.subresource.as_deref() == Some("scale") {
            return Ok(to_scale(rt, &obj));
        }
        Ok(obj)
    }

    pub(super) fn selected(
        &self,
        rt: &ResourceType,
        req: &ApiRequest,
    ) -> Result<(Vec<Value>, u64), ApiError> {
        let labels = LabelSelector::parse(req.query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(req.query.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let ns = req.namespace.as_deref().filter(|_| rt.namespaced);
        let (items, rv) = self.store.list(&rt.storage_key(), ns);
        Ok((
            items
                .into_iter()
                .filter(|o| {
                    let o = present(rt, o.clone());
                    labels.matches(&o) && fields.matches(&o)
                })
                .collect(),
            rv,
        ))
    }

    pub(super) async fn list(
        &self,
        rt: &ResourceType,
        req: &ApiRequest,
    ) -> Result<Value, ApiError> {
        let (mut items, rv) = self.selected(rt, req)?;
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if let Some(token) = req.query.get("continue") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(token)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
            let (ns, name) = decoded.split_once('/').unwrap_or(("", &decoded));
            let after = (ns.to_string(), name.to_string());
            items.retain(|o| {
                let key = (
                    meta_str(o, "namespace").unwrap_or_default().to_string(),
                    meta_str(o, "name").unwrap_or_default().to_string(),
                );
                key > after
            });
        }
        if let Some(limit) = req.query.get("limit").and_then(|l| l.parse::<usize>().ok())
            && limit > 0
            && items.len() > limit
        {
            let remaining = items.len() - limit;
            items.truncate(limit);
            if let Some(last) = items.last() {
                let key = format!(
                    "{}/{}",
                    meta_str(last, "namespace").unwrap_or_default(),
                    meta_str(last, "name").unwrap_or_default()
                );
                meta["continue"] = json!(base64::engine::general_purpose::STANDARD.encode(key));
                meta["remainingItemCount"] = json!(remaining);
            }
        }
        let items = self.served_from_cache(rt, items).await?;
        Ok(json!({
            "apiVersion": rt.api_version(),
            "kind": format!("{}List", rt.kind),
            "metadata": meta,
            "items": items,
        }))
    }

    pub(super) fn watch(&self, rt: ResourceType, req: &ApiRequest) -> Result<WatchPlan, ApiError> {
        let labels = LabelSelector::parse(req.query.get("labelSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(req.query.get("fieldSelector").unwrap_or_default())
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        let namespace = req.namespace.clone().filter(|_| rt.namespaced);
        let rv = req.query.get("resourceVersion");
        let send_initial = req.query.flag("sendInitialEvents");
        let from = match rv {
            None | Some("0") => None,
            Some(s) => Some(
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
            ),
        };
        let mut gone_error = None;
        let (initial, start, from_rv) = if from.is_none() || send_initial {
            let (items, start) = self
                .store
                .snapshot_and_watch(&rt.storage_key(), namespace.as_deref());
            // Kept as stored: the stream converts them to the requested version.
            let items = items
                .into_iter()
                .filter(|o| {
                    let p = present(&rt, o.clone());
                    labels.matches(&p) && fields.matches(&p)
                })
                .collect();
            let rv = start.rv;
            (items, start, rv)
        } else {
            // Like the API server, a watch from a compacted version starts (200) and its first
            // event is an ERROR with 410 Expired.
            let key = rt.storage_key();
            let start = match self.store.watch(&key, from) {
                Ok(start) => start,
                Err(e) => {
                    gone_error = Some(store_err(e, &rt, ""));
                    self.store
                        .watch(&key, None)
                        .map_err(|e| store_err(e, &rt, ""))?
                }
            };
            (Vec::new(), start, from.unwrap_or_default())
        };
        let timeout = req
            .query
            .get("timeoutSeconds")
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(1800));
        Ok(WatchPlan {
            rt,
            namespace,
            labels,
            fields,
            initial,
            start,
            bookmarks: req.query.flag("allowWatchBookmarks"),
            initial_events_end: send_initial,
            timeout,
            from_rv,
            gone: gone_error,
        })
    }
}
