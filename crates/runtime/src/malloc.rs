//! glibc malloc settings of the services that allocate with it (eviction-guard, the provisioner,
//! podmanager; pvc-timing allocates with jemalloc).
//!
//! glibc serves a block of at least its mmap threshold (128 KiB) with a mapping of its own, given
//! back to the system when freed, but it raises that threshold to the size of every such block
//! freed (up to 32 MiB). A list page of Nodes or claims is megabytes of JSON: once the first one
//! is freed, every later page is carved from the heap, and the small objects kept from it pin
//! those heap pages for good. Fixing the threshold keeps big, short-lived buffers out of the heap
//! (BENCHMARKS.md, "Memory diet": the guard with 5,000 Nodes held 20 MB of anonymous memory
//! before, 7 MB after).

// mallopt and mallinfo2 are C functions: the only unsafe code of the workspace.
#![allow(unsafe_code)]

/// The fixed mmap threshold: glibc's own starting value.
pub const MMAP_THRESHOLD: usize = 128 * 1024;

/// The environment variable through which glibc takes its malloc tunables.
pub const TUNABLES_ENV: &str = "GLIBC_TUNABLES";

/// What [`tune`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tuned {
    /// The mmap threshold is fixed at [`MMAP_THRESHOLD`].
    Fixed,
    /// The operator set `glibc.malloc.mmap_threshold` in [`TUNABLES_ENV`]; left as set.
    OperatorSet,
    /// Not a glibc build (musl, or another allocator's platform): nothing to do.
    NotGlibc,
    /// glibc refused the setting.
    Refused,
}

/// Whether the operator chose an mmap threshold of their own through `GLIBC_TUNABLES`.
pub fn operator_set(tunables: Option<&str>) -> bool {
    tunables.is_some_and(|t| {
        t.split([':', ','])
            .any(|kv| kv.trim().starts_with("glibc.malloc.mmap_threshold="))
    })
}

/// Fixes glibc's mmap threshold (see the module documentation) unless the operator set one.
/// Call once, first thing in `main`.
pub fn tune() -> Tuned {
    if operator_set(std::env::var(TUNABLES_ENV).ok().as_deref()) {
        return Tuned::OperatorSet;
    }
    fix_mmap_threshold()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_mmap_threshold() -> Tuned {
    let threshold = libc::c_int::try_from(MMAP_THRESHOLD).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only changes malloc's parameters; any value is checked by glibc.
    if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, threshold) } == 1 {
        Tuned::Fixed
    } else {
        Tuned::Refused
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_mmap_threshold() -> Tuned {
    Tuned::NotGlibc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_threshold_is_found_among_other_tunables() {
        assert!(operator_set(Some("glibc.malloc.mmap_threshold=65536")));
        assert!(operator_set(Some(
            "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=4096"
        )));
        assert!(!operator_set(Some("glibc.malloc.arena_max=2")));
        assert!(!operator_set(Some("glibc.malloc.mmap_threshold")));
        assert!(!operator_set(Some("")));
        assert!(!operator_set(None));
    }

    /// Without the fixed threshold, freeing a 16 MiB block raises glibc's threshold past 8 MiB and
    /// the next 8 MiB buffer comes from the heap; with it, the buffer is a mapping of its own.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_big_buffer_freed_does_not_move_the_next_one_into_the_heap() {
        if operator_set(std::env::var(TUNABLES_ENV).ok().as_deref()) {
            eprintln!("skipped: {TUNABLES_ENV} sets the mmap threshold");
            return;
        }
        assert_eq!(tune(), Tuned::Fixed);
        drop(std::hint::black_box(vec![1u8; 16 << 20]));
        // SAFETY: mallinfo2 only reads malloc's counters.
        let before = unsafe { libc::mallinfo2() }.hblkhd;
        let buffer = std::hint::black_box(vec![1u8; 8 << 20]);
        let during = unsafe { libc::mallinfo2() }.hblkhd;
        drop(buffer);
        assert!(
            during >= before + (8 << 20),
            "an 8 MiB buffer was not mapped on its own: mapped bytes {before} -> {during}"
        );
    }
}
