//! One module per area of the suite; each returns its section of BENCHMARKS.md.

pub mod admission;
pub mod backfill;
pub mod controllers;
pub mod kubectl;
pub mod memory;
pub mod real;
pub mod storm;
