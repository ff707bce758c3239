//! Components, masks and ablation values, the circuit file and its picture.

pub mod components;
pub mod file;
pub mod link;
pub mod masks;
pub mod means;
pub mod svg;
pub use components::{Component, ModelShape};
pub use file::CircuitFile;
pub use link::{LinkError, LinkState};
pub use masks::{Ablation, AblationValues, Masks};
pub use means::MEANS_FILE;
