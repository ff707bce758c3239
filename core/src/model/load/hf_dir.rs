//! Files on disk: an HF model directory, or a GGUF file. Weight files are memory-mapped so that a
//! multi-GB checkpoint is not copied into memory before it is converted to f32.

use std::collections::BTreeSet;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use super::LoadedModel;
use crate::{Error, Result};

/// A file's bytes: mapped when the OS allows it, read otherwise (empty files, odd file systems).
enum FileBytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(m) => m,
            FileBytes::Read(v) => v,
        }
    }
}

fn open(path: &Path) -> Result<FileBytes> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: the map is read-only and lives only until the load has converted it to f32. A model
    // file rewritten during those seconds is the one case this cannot guard against (as with every
    // mmap-based loader, safetensors' and llama.cpp's included).
    match unsafe { memmap2::Mmap::map(&file) } {
        Ok(m) => Ok(FileBytes::Mapped(m)),
        Err(_) => std::fs::read(path).map(FileBytes::Read).map_err(|e| Error::io(path, e)),
    }
}

fn read_small(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

pub fn load_gguf_file(path: &Path) -> Result<LoadedModel> {
    let bytes = open(path)?;
    super::load_gguf_named(&bytes, path)
}

/// An HF directory: config.json, model.safetensors or a sharded index, and tokenizer.json if any.
pub fn load_dir(dir: &Path) -> Result<LoadedModel> {
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(Error::Input(format!(
            "{} is not a model directory: it has no config.json (carve reads HF directories with \
             config.json + model.safetensors, or .gguf files)",
            dir.display()
        )));
    }
    let config = read_small(&config_path)?;
    let (origin, shards) = weight_files(dir)?;
    let maps = shards.iter().map(|p| open(p)).collect::<Result<Vec<_>>>()?;
    let files: Vec<(PathBuf, &[u8])> = shards.iter().cloned().zip(maps.iter().map(|m| &m[..])).collect();
    let tok_path = dir.join("tokenizer.json");
    let tokenizer = if tok_path.is_file() { Some(read_small(&tok_path)?) } else { None };
    let edges_path = super::hf_config::edges_file(&config, &config_path)?.map(|n| dir.join(n)).filter(|p| p.is_file());
    let edges = edges_path.as_deref().map(read_small).transpose()?;
    let parts = super::HfParts {
        config: &config,
        config_path: &config_path,
        files: &files,
        origin: &origin,
        tokenizer: tokenizer.as_deref(),
        source: dir.display().to_string(),
        edges: edges.as_deref(),
    };
    super::build_hf(parts)
}

/// The safetensors files of a directory, and what to call them in messages: `model.safetensors`,
/// or the shards that `model.safetensors.index.json` names.
fn weight_files(dir: &Path) -> Result<(PathBuf, Vec<PathBuf>)> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok((single.clone(), vec![single]));
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        return Ok((index.clone(), shards(dir, &index)?));
    }
    let msg = if dir.join("pytorch_model.bin").is_file() {
        "only pytorch_model.bin is there: carve reads safetensors (convert it, or download model.safetensors)"
    } else {
        "neither model.safetensors nor model.safetensors.index.json is there"
    };
    Err(Error::Input(format!("{}: {msg}", dir.display())))
}

/// The distinct files of an index's `weight_map`, each a plain file name inside `dir`.
fn shards(dir: &Path, index: &Path) -> Result<Vec<PathBuf>> {
    let v: serde_json::Value =
        serde_json::from_slice(super::hf_config::strip_bom(&read_small(index)?)).map_err(|e| Error::format(index, format!("invalid JSON: {e}")))?;
    let map = v.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| Error::format(index, "no `weight_map`"))?;
    let mut names = BTreeSet::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| Error::format(index, format!("`{tensor}` maps to a non-string")))?;
        // Shards live beside the index; a path that leaves the directory is refused.
        if file.is_empty() || file.contains(['/', '\\']) || file == ".." {
            return Err(Error::format(index, format!("shard name `{file}` is not a file name")));
        }
        names.insert(file.to_string());
    }
    if names.is_empty() {
        return Err(Error::format(index, "`weight_map` is empty"));
    }
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

/// The model's identity in circuit files and share links: sha256 (hex) of its weight bytes — the
/// GGUF file, `model.safetensors`, or the shards in name order, streamed as one.
pub fn weights_sha256(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let files = if path.is_dir() { weight_files(path)?.1 } else { vec![path.to_path_buf()] };
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for f in &files {
        let mut file = std::fs::File::open(f).map_err(|e| Error::io(f, e))?;
        loop {
            let n = file.read(&mut buf).map_err(|e| Error::io(f, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(super::hex(&h.finalize()))
}
