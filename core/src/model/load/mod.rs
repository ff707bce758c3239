//! Loaders: an HF directory, a GGUF file, or bytes of either (the web app has no file system).
//! Every loader returns the canonical `ModelWeights<HostTensor>` plus a config and a tokenizer.
//!
//! - `load_path`: a directory (config.json + safetensors) or a `.gguf` file (native only).
//! - `load_hf_bytes`, `load_gguf_bytes`: the same from bytes, everywhere (wasm included).
//! - `resolve_hub_cache`: a hub name → its snapshot directory in the local HF cache (native only).

mod assemble;
pub mod dequant;
pub mod gguf;
mod gguf_model;
mod gguf_tokenizer;
mod hf_config;
mod hf_weights;
mod safetensors;
mod validate;

#[cfg(not(target_arch = "wasm32"))]
mod hf_dir;
#[cfg(not(target_arch = "wasm32"))]
mod hub;

use std::path::{Path, PathBuf};

pub use hf_config::{parse_config, parse_layout, strip_bom, LayerLayout};
#[cfg(not(target_arch = "wasm32"))]
pub use hf_dir::weights_sha256;
#[cfg(not(target_arch = "wasm32"))]
pub use hub::{hub_cache_dir, resolve_hub_cache, resolve_in as resolve_hub_cache_in};

use crate::model::tokenizer::Tokenizer;
use crate::model::{Arch, ModelConfig, ModelWeights};
use crate::{Error, HostTensor, Result};

/// A model ready to be uploaded to a backend.
pub struct LoadedModel {
    pub config: ModelConfig,
    pub weights: ModelWeights<HostTensor>,
    /// None for a directory without tokenizer.json (then only token ids can be given).
    pub tokenizer: Option<Tokenizer>,
    /// Where it came from, for messages and reports.
    pub source: String,
    /// A standalone edge model's edges (`prune::edges`); the model runs only with them.
    pub edges: Option<crate::prune::EdgeModelWeights>,
}

/// A directory is read as an HF model directory, a `.gguf` file as GGUF.
#[cfg(not(target_arch = "wasm32"))]
pub fn load_path(path: &Path) -> Result<LoadedModel> {
    if path.is_dir() {
        return hf_dir::load_dir(path);
    }
    if !path.exists() {
        return Err(Error::io(path, std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory")));
    }
    let is_gguf = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gguf"));
    if is_gguf {
        return hf_dir::load_gguf_file(path);
    }
    Err(Error::Input(format!(
        "{}: carve loads a model directory (config.json + model.safetensors) or a .gguf file",
        path.display()
    )))
}

/// An HF model from bytes: config.json, one or more safetensors files (a single file or all shards
/// of an index, in any order) and, optionally, tokenizer.json.
pub fn load_hf_bytes(
    config_json: &[u8],
    safetensors_files: &[&[u8]],
    tokenizer_json: Option<&[u8]>,
) -> Result<LoadedModel> {
    let one = safetensors_files.len() == 1;
    let name = |i: usize| PathBuf::from(if one { "model.safetensors".into() } else { format!("shard {}", i + 1) });
    let files: Vec<(PathBuf, &[u8])> = safetensors_files.iter().enumerate().map(|(i, b)| (name(i), *b)).collect();
    let origin = if one { name(0) } else { PathBuf::from("safetensors shards") };
    build_hf(HfParts {
        config: config_json,
        config_path: Path::new("config.json"),
        files: &files,
        origin: &origin,
        tokenizer: tokenizer_json,
        source: "HF model (bytes)".into(),
        edges: None,
    })
}

/// A GGUF model from the bytes of the whole file.
pub fn load_gguf_bytes(bytes: &[u8]) -> Result<LoadedModel> {
    load_gguf_named(bytes, Path::new("model.gguf"))
}

/// Only the tokenizer of a GGUF file (`None` when it has none of a kind carve builds), without
/// dequantizing any weights.
pub fn load_gguf_tokenizer(bytes: &[u8]) -> Result<Option<Tokenizer>> {
    let file = gguf::GgufFile::parse(bytes, Path::new("model.gguf"))?;
    gguf_tokenizer::from_gguf(&file)
}

/// The pieces of an HF model, with the paths that messages name.
struct HfParts<'a> {
    config: &'a [u8],
    config_path: &'a Path,
    files: &'a [(PathBuf, &'a [u8])],
    origin: &'a Path,
    tokenizer: Option<&'a [u8]>,
    source: String,
    /// The edges file, when config.json names one (an edge model).
    edges: Option<&'a [u8]>,
}

/// Reads the config and the weights' headers, checks the one against the other (`validate`), and
/// only then converts the weights.
fn build_hf(p: HfParts) -> Result<LoadedModel> {
    let (config, source) = hf_config::parse(p.config, p.config_path)?;
    let layout = hf_config::parse_layout(p.config, p.config_path, &config)?;
    let st = safetensors::StTensors::parse(p.files, p.origin)?;
    let naming = match config.arch {
        Arch::Gpt2 => &validate::HF_GPT2,
        Arch::Llama => &validate::HF_LLAMA,
    };
    validate::check(&config, &source, naming, st.shapes(), layout.as_deref())?;
    let weights = hf_weights::build(&config, layout.as_deref(), &st)?;
    let tokenizer = match p.tokenizer {
        None => None,
        Some(b) => Some(Tokenizer::from_json_bytes(b)?.with_special_ids(config.bos_token_id, config.eos_token_id)),
    };
    check_vocab(&config, tokenizer.as_ref())?;
    let edges = match (hf_config::edges_file(p.config, p.config_path)?, p.edges) {
        (None, _) => None,
        (Some(name), None) => {
            return Err(Error::format(
                p.config_path,
                format!("config.json says this is an edge model whose edges are in `{name}`, and no such file was found beside it"),
            ))
        }
        (Some(name), Some(bytes)) => Some(edge_model(&config, &weights, bytes, &name)?),
    };
    Ok(LoadedModel { config, weights, tokenizer, source: p.source, edges })
}

/// An edge model's edges, read against the layout of its weights.
fn edge_model(config: &ModelConfig, w: &crate::model::ModelWeights<crate::HostTensor>, bytes: &[u8], name: &str)
    -> Result<crate::prune::EdgeModelWeights> {
    let n_heads: Vec<usize> = w.layers.iter().map(|l| l.n_heads).collect();
    let n_kv: Vec<usize> = w.layers.iter().map(|l| l.n_kv_heads).collect();
    let has_mlp: Vec<bool> = w.layers.iter().map(|l| l.w_up.shape[0] > 0).collect();
    let layout = crate::mask::EdgeLayout::new(&n_heads, &n_kv, &has_mlp, w.wpe.is_some())?;
    crate::prune::EdgeModelWeights::from_bytes(bytes, name, &layout, config.d_model)
}

fn load_gguf_named(bytes: &[u8], path: &Path) -> Result<LoadedModel> {
    let file = gguf::GgufFile::parse(bytes, path)?;
    // The metadata, checked against the tensor infos before any tensor is dequantized.
    let config = gguf_model::config(&file)?;
    // The tokenizer is built on one thread while the weights dequantize on the others.
    let (weights, tokenizer) = rayon::join(|| gguf_model::weights(&file, &config), || gguf_tokenizer::from_gguf(&file));
    let (weights, tokenizer) = (weights?, tokenizer?);
    check_vocab(&config, tokenizer.as_ref())?;
    Ok(LoadedModel { config, weights, tokenizer, source: path.display().to_string(), edges: None })
}

/// A tokenizer that can produce ids past the embedding would index out of bounds at run time.
/// (Fewer tokens than embedding rows is normal: vocabularies are padded.)
fn check_vocab(config: &ModelConfig, tokenizer: Option<&Tokenizer>) -> Result<()> {
    match tokenizer {
        Some(t) if t.vocab_size() > config.vocab => Err(Error::Tokenizer(format!(
            "the tokenizer has {} tokens but the model's embedding has only {} rows",
            t.vocab_size(),
            config.vocab
        ))),
        _ => Ok(()),
    }
}

/// sha256 (hex) of bytes held in memory (the web app's downloads).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl LoadedModel {
    /// The model on `be`, with its edges when it is a standalone edge model.
    pub fn upload<B: crate::backend::Backend>(&self, be: &B) -> Result<crate::model::Model<B>> {
        match &self.edges {
            None => crate::model::Model::upload(be, self.config.clone(), &self.weights),
            Some(e) => crate::model::Model::upload_edge_model(be, self.config.clone(), &self.weights, e),
        }
    }
}
