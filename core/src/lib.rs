//! carve-core: models, backends, masks and the masked forward.
//!
//! Data flows one way: `model::load` → weights on a `backend` → `model::forward`
//! (the masked forward, driven by `circuit::Masks`) → metrics → extraction methods.

pub mod backend;
pub mod circuit;
pub mod error;
pub mod extract;
pub mod mask;
pub mod metrics;
pub mod model;
pub mod optim;
pub mod prune;
pub mod tasks;
pub mod tensor;

pub use error::{Error, Result};
pub use tensor::HostTensor;
