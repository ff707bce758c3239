//! Tensors from one or more safetensors files (a single file or the shards of an index), looked up
//! by name with or without the `transformer.` / `model.` prefix that checkpoints differ on.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ::safetensors::{Dtype, SafeTensors};

use super::assemble::check_shape;
use super::dequant::{dequantize, GgmlType};
use crate::{Error, HostTensor, Result};

pub struct StTensors<'a> {
    files: Vec<(PathBuf, SafeTensors<'a>)>,
    /// Name without prefix → (file index, name as stored).
    by_name: HashMap<String, (usize, String)>,
    /// What error messages call the collection (the file, or the shard index).
    origin: PathBuf,
}

/// The prefixes under which `save_pretrained` nests the base model; hub files often lack them.
const PREFIXES: [&str; 2] = ["transformer.", "model."];

fn short_name(name: &str) -> &str {
    PREFIXES.iter().find_map(|p| name.strip_prefix(p)).unwrap_or(name)
}

impl<'a> StTensors<'a> {
    /// Parses each file's header; `files` pairs a path (for messages) with the file's bytes.
    pub fn parse(files: &[(PathBuf, &'a [u8])], origin: &Path) -> Result<Self> {
        let mut out = StTensors { files: Vec::new(), by_name: HashMap::new(), origin: origin.into() };
        for (i, (path, bytes)) in files.iter().enumerate() {
            let st = parse_one(path, bytes)?;
            for name in st.names() {
                out.by_name.entry(short_name(name).to_string()).or_insert((i, name.to_string()));
            }
            out.files.push((path.clone(), st));
        }
        Ok(out)
    }

    /// The tensor `name` (given without prefix) as f32, checked against `want`.
    pub fn get(&self, name: &str, want: &[usize]) -> Result<HostTensor> {
        self.opt(name, want)?.ok_or_else(|| Error::MissingTensor { name: name.to_string(), path: self.origin.clone() })
    }

    /// Like `get`, but `None` when the file does not have the tensor.
    pub fn opt(&self, name: &str, want: &[usize]) -> Result<Option<HostTensor>> {
        let Some((i, stored)) = self.by_name.get(name) else { return Ok(None) };
        let (path, st) = &self.files[*i];
        let view = st.tensor(stored).map_err(|e| Error::format(path, format!("tensor `{stored}`: {e}")))?;
        let ty = match view.dtype() {
            Dtype::F32 => GgmlType::F32,
            Dtype::F16 => GgmlType::F16,
            Dtype::BF16 => GgmlType::BF16,
            d => {
                return Err(Error::Unsupported(format!(
                    "{}: tensor `{stored}` has dtype {d:?}; carve reads F32, F16 and BF16",
                    path.display()
                )))
            }
        };
        let data = dequantize(ty, view.data()).expect("float types always convert");
        let t = HostTensor::new(view.shape().to_vec(), data);
        check_shape(stored, &t, want)?;
        Ok(Some(t))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

/// Parses one file, with the length checks done first so that the message says what is wrong in
/// words (the crate's own errors are kept, prefixed by the file name).
fn parse_one<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    if bytes.len() < 8 {
        return Err(Error::format(path, format!("truncated safetensors file: {} bytes, no header", bytes.len())));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    if n > (bytes.len() - 8) as u64 {
        let msg = format!("truncated safetensors file: header says {n} bytes, file has {}", bytes.len() - 8);
        return Err(Error::format(path, msg));
    }
    SafeTensors::deserialize(bytes).map_err(|e| {
        let hint = match e {
            ::safetensors::SafeTensorError::MetadataIncompleteBuffer => {
                " (the header's offsets do not match the file length: truncated, or a lying header)"
            }
            ::safetensors::SafeTensorError::InvalidOffset(_) => " (the header's offsets are inconsistent)",
            _ => "",
        };
        Error::format(path, format!("invalid safetensors file: {e}{hint}"))
    })
}
