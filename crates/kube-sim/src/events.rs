//! Core v1 and events.k8s.io/v1 Events share one store, as in Kubernetes; each read converts
//! the stored object to the requested version's field names (both directions are idempotent,
//! so objects written through either version read back through both).

use serde_json::{Map, Value};

/// (core v1 field, events.k8s.io/v1 field) pairs that differ only by name.
const RENAMES: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
];

/// Renames an Event's fields to the events.k8s.io/v1 names (`to_v1`) or the core ones.
pub fn convert(obj: &mut Value, to_v1: bool) {
    let Some(m) = obj.as_object_mut() else { return };
    for (core, v1) in RENAMES {
        let (from, to) = if to_v1 { (core, v1) } else { (v1, core) };
        move_field(m, from, to);
    }
}

fn move_field(m: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(v) = m.remove(from)
        && !m.contains_key(to)
    {
        m.insert(to.to_string(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_event_written_as_events_v1_reads_as_core_and_back() {
        let v1 = json!({"regarding": {"kind": "Pod", "name": "p"}, "note": "hello", "reason": "Created",
                        "reportingController": "ballast.dev/podmanager", "deprecatedCount": 2});
        let mut core = v1.clone();
        convert(&mut core, false);
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "hello");
        assert_eq!(core["count"], 2);
        assert_eq!(core["reportingComponent"], "ballast.dev/podmanager");
        assert!(core.get("regarding").is_none());
        let mut again = core.clone();
        convert(&mut again, false);
        assert_eq!(again, core, "idempotent");
        convert(&mut again, true);
        assert_eq!(again, v1);
    }
}
