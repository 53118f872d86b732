//! Errors of the plugin, printed the way kubectl prints its own.

use std::error::Error as StdError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to connect to the cluster")]
    Client(#[source] ballast_runtime::Error),
    #[error("failed to read {what}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("a resource cannot be retrieved by name across all namespaces")]
    NameAcrossNamespaces,
    /// `timing` found nothing to read: pvc-timing is not installed, or has not seen the claims.
    #[error(
        "{what} has no {readable}pvc-timing annotation: pvc-timing, the webhook that records \
         each claim's phase history, is not installed in this cluster or has not seen {them} \
         yet (install it from Ballast's kustomize/pvc-timing; `kubectl pvc inspect` works \
         without it)"
    )]
    NoTiming {
        /// `persistentvolumeclaim demo/data`, `none of the 3 claims in namespace demo`.
        what: String,
        /// `readable ` when an annotation is there but does not parse.
        readable: &'static str,
        them: &'static str,
    },
    #[error("failed to write the output as {format}")]
    Encode {
        format: &'static str,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("failed to write the output")]
    Write(#[source] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn api(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let what = what.into();
        move |source| Error::Api { what, source }
    }

    /// The line kubectl would print: `Error from server (NotFound): persistentvolumeclaims "x"
    /// not found` for answers of the API server, `error: ...` with the causes for the rest.
    pub fn kubectl_message(&self) -> String {
        if let Error::Api {
            source: kube::Error::Api(status),
            ..
        } = self
        {
            let reason = if status.reason.is_empty() {
                status.code.to_string()
            } else {
                status.reason.clone()
            };
            return format!("Error from server ({reason}): {}", status.message);
        }
        let mut text = format!("error: {self}");
        let mut cause = self.source();
        while let Some(c) = cause {
            text.push_str(": ");
            text.push_str(&c.to_string());
            cause = c.source();
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> Error {
        let status = kube::core::Status {
            code,
            reason: reason.to_owned(),
            message: message.to_owned(),
            ..kube::core::Status::failure(message, reason)
        };
        Error::api("persistentvolumeclaim x")(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn not_found_reads_like_kubectl() {
        let err = api_error(404, "NotFound", "persistentvolumeclaims \"x\" not found");
        assert_eq!(
            err.kubectl_message(),
            "Error from server (NotFound): persistentvolumeclaims \"x\" not found"
        );
    }

    #[test]
    fn other_errors_list_their_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "pipe closed");
        assert_eq!(
            Error::Write(io).kubectl_message(),
            "error: failed to write the output: pipe closed"
        );
    }
}
