//! What a run produces: the circuit file, the share link, the circuit's picture and the means
//! file. Components, masks and ablation values live in `mask/` (re-exported here).

pub mod edge_link;
pub mod edges;
pub mod file;
pub mod link;
pub mod means;
pub mod svg;
pub use crate::mask::{components, masks};
pub use crate::mask::{Ablation, AblationValues, Component, Masks, ModelShape, Site};
pub use edges::{EdgeCircuit, KeptEdge};
pub use file::CircuitFile;
pub use edge_link::{EdgeLinkState, EdgeMaskFile, Link};
pub use link::{LinkError, LinkState};
pub use means::MEANS_FILE;
