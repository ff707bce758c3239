//! Components, masks and ablation values (later: circuit files and share links).

pub mod components;
pub mod masks;
pub use components::{Component, ModelShape};
pub use masks::{Ablation, AblationValues, Masks};
