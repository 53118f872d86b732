use super::*;

#[test]
fn only_a_component_that_found_its_port_taken_is_started_again() {
    let not_ready = |tail: &str| Error::NotReady {
        component: "kube-apiserver",
        timeout: Duration::from_secs(90),
        log: PathBuf::from("kube-apiserver.log"),
        tail: tail.into(),
    };
    assert!(not_ready(
        r#"E1207 run.go:72] "command failed" err="failed to create listener: failed to listen on 127.0.0.1:37155: listen tcp 127.0.0.1:37155: bind: address already in use""#
    ).is_port_taken());
    assert!(!not_ready("etcdserver: request timed out").is_port_taken());
    use std::os::unix::process::ExitStatusExt;
    let exited = Error::Exited {
        component: "etcd",
        status: std::process::ExitStatus::from_raw(1 << 8),
        log: PathBuf::from("etcd.log"),
        tail: "listen tcp 127.0.0.1:2379: bind: address already in use".into(),
    };
    assert!(exited.is_port_taken());
    assert!(
        exited
            .to_string()
            .starts_with("etcd exited (exit status: 1) while starting"),
        "{exited}"
    );
    assert!(
        !Error::Missing {
            binary: "etcd".into(),
            dir: PathBuf::new()
        }
        .is_port_taken()
    );
}

#[test]
fn a_missing_binary_is_named_with_the_variable_that_fixes_it() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt
        .block_on(ControlPlane::start(ControlPlaneConfig::new(dir.path())))
        .err()
        .expect("no binaries, no control plane");
    let msg = err.to_string();
    assert!(msg.contains("failed to find etcd"), "{msg}");
    assert!(msg.contains(BINARIES_ENV), "{msg}");
}

#[test]
fn a_log_tail_keeps_the_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("x.log");
    std::fs::write(&log, "a\nb\nc\n").unwrap();
    assert_eq!(tail(&log, 2), "b\nc");
    assert_eq!(tail(&dir.path().join("missing"), 2), "");
}
