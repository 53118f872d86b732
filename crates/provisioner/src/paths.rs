//! Directory names for volumes, and the checks that keep them inside the base path.
//!
//! A volume directory is named `<pv>_<namespace>_<claim>`. Kubernetes names never contain `_`,
//! so the name splits back into its three parts unambiguously; that is what lets the orphan scan
//! tell our directories from anything else an operator keeps under the base path.

use std::path::{Component, Path, PathBuf};

/// Longest directory name we create: the usual `NAME_MAX` of Linux filesystems.
const MAX_DIR_NAME: usize = 255;

/// Prefix of directories kept instead of deleted when an NFS class archives on delete.
pub const ARCHIVE_PREFIX: &str = "archived-";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("refusing {what} {value:?}: only lowercase letters, digits, '-' and '.' are allowed")]
    BadCharacters { what: &'static str, value: String },
    #[error("refusing {what} {value:?}: it would leave the base directory")]
    Traversal { what: &'static str, value: String },
    #[error("refusing {what} {value:?}: empty or longer than {MAX_DIR_NAME} characters")]
    BadLength { what: &'static str, value: String },
}

/// Checks one Kubernetes name (namespace, claim or PV name) before it becomes part of a path.
pub fn check_name(what: &'static str, value: &str) -> Result<(), PathError> {
    if value.is_empty() || value.len() > MAX_DIR_NAME {
        return Err(PathError::BadLength {
            what,
            value: value.to_owned(),
        });
    }
    if value == "." || value == ".." || value.contains('/') || value.contains('\\') {
        return Err(PathError::Traversal {
            what,
            value: value.to_owned(),
        });
    }
    let ok = value
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !ok {
        return Err(PathError::BadCharacters {
            what,
            value: value.to_owned(),
        });
    }
    Ok(())
}

/// The directory name for a volume, after checking each part.
pub fn dir_name(pv: &str, namespace: &str, claim: &str) -> Result<String, PathError> {
    check_name("volume name", pv)?;
    check_name("namespace", namespace)?;
    check_name("claim name", claim)?;
    let name = format!("{pv}_{namespace}_{claim}");
    if name.len() > MAX_DIR_NAME {
        return Err(PathError::BadLength {
            what: "directory name",
            value: name,
        });
    }
    Ok(name)
}

/// The parts of a directory name we created, or `None` for anything else.
pub fn parse_dir_name(name: &str) -> Option<(&str, &str, &str)> {
    let mut parts = name.split('_');
    let (pv, ns, claim) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || dir_name(pv, ns, claim).is_err() {
        return None;
    }
    Some((pv, ns, claim))
}

/// `base/name`, refusing a name that is not a single normal path component.
pub fn join_checked(base: &Path, name: &str) -> Result<PathBuf, PathError> {
    let mut components = Path::new(name).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(_)), None) if !name.contains('/') => Ok(base.join(name)),
        _ => Err(PathError::Traversal {
            what: "directory name",
            value: name.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_directory_name_from_volume_namespace_and_claim() {
        assert_eq!(
            dir_name("pvc-1", "team-a", "data").unwrap(),
            "pvc-1_team-a_data"
        );
    }

    #[test]
    fn refuses_names_that_would_escape_the_base_path() {
        for bad in ["..", ".", "a/b", "../etc", "a\\b"] {
            assert!(
                matches!(dir_name(bad, "ns", "c"), Err(PathError::Traversal { .. })),
                "{bad} accepted"
            );
        }
        assert!(join_checked(Path::new("/base"), "../x").is_err());
        assert!(join_checked(Path::new("/base"), "/abs").is_err());
        assert_eq!(
            join_checked(Path::new("/base"), "ok").unwrap(),
            Path::new("/base/ok")
        );
    }

    #[test]
    fn refuses_uppercase_underscores_and_empty_names() {
        assert!(matches!(
            dir_name("PV", "ns", "c"),
            Err(PathError::BadCharacters { .. })
        ));
        assert!(matches!(
            dir_name("a_b", "ns", "c"),
            Err(PathError::BadCharacters { .. })
        ));
        assert!(matches!(
            dir_name("", "ns", "c"),
            Err(PathError::BadLength { .. })
        ));
        let msg = dir_name("..", "ns", "c").unwrap_err().to_string();
        assert_eq!(
            msg,
            "refusing volume name \"..\": it would leave the base directory"
        );
    }

    #[test]
    fn parses_back_only_directory_names_we_create() {
        assert_eq!(
            parse_dir_name("pvc-1_ns_data"),
            Some(("pvc-1", "ns", "data"))
        );
        assert_eq!(parse_dir_name("archived-pvc-1_ns_data_x"), None);
        assert_eq!(parse_dir_name("lost+found"), None);
        assert_eq!(parse_dir_name("a_b"), None);
    }
}
