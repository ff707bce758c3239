//! Models: configs, loaders, the weights in one canonical layout, tokenizers and the masked forward.

pub mod config;
pub mod forward;
pub mod load;
pub mod tokenizer;
pub mod weights;

pub use config::{Arch, ModelConfig};
pub use weights::{LayerWeights, ModelWeights};
