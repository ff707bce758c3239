//! Models: configs, loaders, the weights in one canonical layout, tokenizers and the masked forward.

pub mod ablation;
pub mod backward;
pub mod batch;
pub mod config;
pub mod edges;
pub mod forward;
pub mod load;
pub mod non_finite;
mod pack;
pub mod tokenizer;
pub mod weights;
mod zeros;

pub use backward::Tape;
pub use batch::Batch;
pub use config::{Arch, ModelConfig};
pub use edges::EdgeModel;
pub use forward::{Capture, ForwardArgs, ForwardOut, LogitsAt, Model};
pub use non_finite::{check_logits, locate_non_finite};
pub use weights::{LayerWeights, ModelWeights, Part};
