//! Host-side pieces of the learned methods (node-prune, edge-prune): hard-concrete gates, AdamW and a
//! seeded random source whose state can be saved. Imports nothing of the rest of the crate.

pub mod adamw;
pub mod hard_concrete;
pub mod rng;

pub use adamw::{AdamW, Moments};
pub use rng::SplitMix64;
