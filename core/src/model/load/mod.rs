//! Loaders: an HF directory, a GGUF file, or bytes of either (the web app has no file system).
//! Every loader returns the canonical `ModelWeights<HostTensor>` plus a config and a tokenizer.

use crate::model::tokenizer::Tokenizer;
use crate::model::{ModelConfig, ModelWeights};
use crate::HostTensor;

/// A model ready to be uploaded to a backend.
pub struct LoadedModel {
    pub config: ModelConfig,
    pub weights: ModelWeights<HostTensor>,
    /// None for a directory without tokenizer.json (then only token ids can be given).
    pub tokenizer: Option<Tokenizer>,
    /// Where it came from, for messages and reports.
    pub source: String,
}
