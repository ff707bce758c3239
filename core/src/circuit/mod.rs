//! Components, masks and ablation values (later: circuit files and share links).

pub mod masks;
pub use masks::{Ablation, AblationValues, Masks};
