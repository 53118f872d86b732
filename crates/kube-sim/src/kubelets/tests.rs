use super::spec::zone_letter;
use super::*;

#[test]
fn workers_take_zones_in_turn() {
    let nodes = workers("n-", 4, "z-", 3);
    let zones: Vec<&str> = nodes
        .iter()
        .map(|n| n.labels["topology.kubernetes.io/zone"].as_str())
        .collect();
    assert_eq!(zones, ["z-a", "z-b", "z-c", "z-a"]);
    assert_eq!(nodes[3].name, "n-4");
}

#[test]
fn zone_letters_go_on_past_z() {
    assert_eq!(zone_letter(0), "a");
    assert_eq!(zone_letter(25), "z");
    assert_eq!(zone_letter(26), "aa");
    assert_eq!(zone_letter(27), "ab");
}

#[test]
fn status_sync_keeps_the_transition_time_of_an_unchanged_condition() {
    let mut node = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z",
         "lastHeartbeatTime": "2026-01-01T00:00:00Z"}]}});
    set_node_conditions(&mut node, "2026-02-02T00:00:00Z");
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["lastTransitionTime"], "2026-01-01T00:00:00Z");
    assert_eq!(ready["lastHeartbeatTime"], "2026-02-02T00:00:00Z");
}

#[test]
fn a_node_coming_back_from_unknown_gets_a_new_transition_time() {
    let mut node = json!({"status": {"conditions": [
        {"type": "Ready", "status": "Unknown", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}});
    set_node_conditions(&mut node, "2026-02-02T00:00:00Z");
    let conds = node["status"]["conditions"].as_array().unwrap();
    assert_eq!(conds.len(), 4);
    let ready = conds.iter().find(|c| c["type"] == "Ready").unwrap();
    assert_eq!(ready["status"], "True");
    assert_eq!(ready["lastTransitionTime"], "2026-02-02T00:00:00Z");
}
