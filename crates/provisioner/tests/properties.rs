//! Properties of the provisioner's inputs from the API: volume directory names never leave the
//! base directory whatever the namespace, claim and volume names, and storage quantities parse
//! to the right number of bytes or are refused, never a panic.
//!
//! `PROPTEST_CASES` raises the budget (`scripts/fuzz` runs 10^6 per target); without it each
//! target runs a small one so the normal test run stays fast.

use std::path::{Component, Path};

use proptest::prelude::*;
use provisioner::paths::{dir_name, join_checked, parse_dir_name};
use provisioner::quantity::{human, to_bytes};

/// Cases per target when `PROPTEST_CASES` is not set.
const DEFAULT_CASES: u32 = 256;

fn config() -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = DEFAULT_CASES;
    }
    // A failing case is saved beside this file and tried first on every later run.
    config.failure_persistence = Some(Box::new(
        proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
    ));
    config
}

/// Names as hostile as a client can make them: traversal pieces, separators, dots, unicode,
/// NUL, and valid DNS labels.
fn name() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("/".to_owned()),
        Just("\\".to_owned()),
        Just("_".to_owned()),
        Just("\0".to_owned()),
        Just("%2e%2e".to_owned()),
        Just("\u{2215}".to_owned()),
        "[a-z0-9][a-z0-9.-]{0,20}",
        any::<String>(),
    ];
    prop_oneof![
        3 => prop::collection::vec(piece, 1..5).prop_map(|p| p.concat()),
        2 => "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?",
        1 => "[a-z0-9.-]{200,260}",
    ]
}

fn base() -> &'static Path {
    Path::new("/var/lib/ballast/volumes")
}

/// `path` is a direct child of `base`, named by one normal component.
fn is_direct_child(path: &Path) -> bool {
    let Ok(rest) = path.strip_prefix(base()) else {
        return false;
    };
    let mut components = rest.components();
    matches!(
        (components.next(), components.next()),
        (Some(Component::Normal(_)), None)
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn volume_directories_never_leave_the_base_directory(
        pv in name(),
        namespace in name(),
        claim in name(),
    ) {
        let Ok(dir) = dir_name(&pv, &namespace, &claim) else {
            return Ok(());
        };
        prop_assert!(dir.len() <= 255, "{dir:?} is longer than NAME_MAX");
        prop_assert!(
            dir.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b)),
            "{dir:?} has characters outside a DNS name"
        );
        let path = join_checked(base(), &dir)
            .map_err(|e| TestCaseError::fail(format!("a built name was refused: {e}")))?;
        prop_assert!(is_direct_child(&path), "{path:?} escapes {:?}", base());
        // Our own directories parse back into the names they were made from.
        prop_assert_eq!(
            parse_dir_name(&dir),
            Some((pv.as_str(), namespace.as_str(), claim.as_str()))
        );
    }

    #[test]
    fn joined_paths_are_direct_children_of_the_base_or_refused(name in name()) {
        if let Ok(path) = join_checked(base(), &name) {
            prop_assert!(is_direct_child(&path), "{name:?} joined to {path:?}");
            prop_assert_ne!(name.as_str(), "..");
            prop_assert_ne!(name.as_str(), ".");
        }
    }

    #[test]
    fn any_directory_name_read_back_is_ours_or_ignored(name in name()) {
        if let Some((pv, ns, claim)) = parse_dir_name(&name) {
            prop_assert_eq!(dir_name(pv, ns, claim).ok(), Some(name.clone()));
        }
    }

    #[test]
    fn any_quantity_text_parses_or_is_refused_never_a_panic(
        text in prop_oneof![
            any::<String>(),
            "[-+ ]?[0-9.eE+-]{0,24}(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|e[0-9+-]{0,5}|[a-zA-Z]{0,3})?",
        ],
    ) {
        let _ = to_bytes(&text);
    }

    #[test]
    fn binary_quantities_are_exact_or_refused_when_too_large(
        n in 0u64..(1 << 53),
        unit in 0u32..7,
    ) {
        let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][unit as usize];
        let exact = u128::from(n) << (10 * unit);
        let parsed = to_bytes(&format!("{n}{suffix}"));
        if exact <= u128::from(u64::MAX) / 2 {
            prop_assert_eq!(parsed.map(u128::from), Some(exact));
        } else if exact > u128::from(u64::MAX) {
            prop_assert_eq!(parsed, None);
        }
        // What users are told reads back as about the same size.
        if let Some(bytes) = parsed {
            let told = to_bytes(&human(bytes)).expect("human() output is a quantity");
            let err = (told as f64 - bytes as f64).abs();
            prop_assert!(err <= bytes as f64 * 0.05 + 1.0, "{bytes} shown as {}", human(bytes));
        }
    }

    #[test]
    fn decimal_quantities_round_up_to_whole_bytes(
        n in 0u64..1_000_000_000,
        unit in 0u32..5,
    ) {
        let suffix = ["m", "", "k", "M", "G"][unit as usize];
        let parsed = to_bytes(&format!("{n}{suffix}")).expect("a quantity");
        let exact = match unit {
            0 => n.div_ceil(1000),
            u => n * 1000u64.pow(u - 1),
        };
        prop_assert_eq!(parsed, exact);
    }
}
