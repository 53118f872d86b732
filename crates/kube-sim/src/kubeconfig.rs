//! The kubeconfig the simulator writes for its clients (kubectl, kube-rs, the services).

use base64::Engine;

/// A kubeconfig for `server` trusting `ca_pem`, authenticating with a bearer token.
pub fn render(server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: kube-sim
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: kube-sim
  context:
    cluster: kube-sim
    user: {user}
    namespace: default
current-context: kube-sim
preferences: {{}}
"
    )
}
