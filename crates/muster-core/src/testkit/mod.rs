//! The shared test kit (feature `testkit`): a fake backend that keeps its
//! jobs in memory, an in-memory store and timeline, a clock tests advance
//! by hand, a fake scheduler HTTP API on loopback, and [`contract`], the one
//! suite of checks every backend passes. Fakes serve unit tests of the
//! reconciler and the contract; they never replace the real-service tests.

pub mod contract;
mod fakes;

pub use fakes::{FakeBackend, FakeScheduler, MemoryStore, MemoryTimeline, TestClock};
