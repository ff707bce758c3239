//! What the masked forward takes: components by name, the model's shape, masks and ablation
//! values. A leaf: `model/` uses it, and it imports nothing of the crate's other modules
//! (`circuit/` holds the output formats built on it: the circuit file, links, svg, means).

pub mod components;
pub mod edges;
pub mod masks;

pub use components::{Component, ModelShape};
pub use edges::{Edge, EdgeLayout, Reader, Writer};
pub use masks::{Ablation, AblationValues, Masks, Site};
