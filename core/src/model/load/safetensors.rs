//! Tensors from one or more safetensors files (a single file or the shards of an index), looked up
//! by name with or without the `transformer.` / `model.` prefix that checkpoints differ on.
//!
//! Each header is checked here before the safetensors crate reads it, so that every error names the
//! file and the tensor: the crate's own errors for a bad size or overlapping offsets name neither.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use ::safetensors::{Dtype, SafeTensors};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use super::assemble::check_shape;
use super::dequant::{dequantize, GgmlType};
use super::hf_config::shown;
use super::validate::Shapes;
use crate::{Error, HostTensor, Result};

pub struct StTensors<'a> {
    files: Vec<(PathBuf, SafeTensors<'a>)>,
    /// Name without prefix → (file index, name as stored).
    by_name: HashMap<String, (usize, String)>,
    /// Every tensor's shape as the headers declare it, for the config checks.
    shapes: Shapes,
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
        let mut out =
            StTensors { files: Vec::new(), by_name: HashMap::new(), shapes: Shapes::new(origin), origin: origin.into() };
        for (i, (path, bytes)) in files.iter().enumerate() {
            for (name, shape) in check_header(path, bytes)? {
                out.shapes.insert(short_name(&name), &name, &shape);
                out.by_name.entry(short_name(&name).to_string()).or_insert((i, name));
            }
            out.files.push((path.clone(), parse_one(path, bytes)?));
        }
        Ok(out)
    }

    pub fn shapes(&self) -> &Shapes {
        &self.shapes
    }

    /// The tensor `name` (given without prefix) as f32, checked against `want`.
    pub fn get(&self, name: &str, want: &[usize]) -> Result<HostTensor> {
        self.opt(name, want)?.ok_or_else(|| Error::MissingTensor { name: name.to_string(), path: self.origin.clone() })
    }

    /// Like `get`, but `None` when the file does not have the tensor. The shape is checked before
    /// anything is converted.
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
        check_shape(path, stored, view.shape(), want)?;
        let data = dequantize(ty, view.data()).expect("float types always convert");
        Ok(Some(HostTensor::new(view.shape().to_vec(), data)))
    }

    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }
}

/// The largest header the safetensors format allows.
const MAX_HEADER: u64 = 100_000_000;

/// Checks one file's header and returns each tensor's name and shape: the header's length, its JSON,
/// each entry's dtype, shape and offsets, and that the tensors tile the data section exactly (no
/// overlap, no gap, nothing past the end).
fn check_header(path: &Path, bytes: &[u8]) -> Result<Vec<(String, Vec<usize>)>> {
    let err = |msg: String| Error::format(path, msg);
    let Some((len, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(err(format!("truncated safetensors file: {} bytes, no header", bytes.len())));
    };
    let n = u64::from_le_bytes(*len);
    if n > rest.len() as u64 {
        return Err(err(format!("truncated safetensors file: header says {n} bytes, file has {}", rest.len())));
    }
    if n > MAX_HEADER {
        return Err(err(format!("safetensors header of {n} bytes (the format allows {MAX_HEADER})")));
    }
    let (header, data) = rest.split_at(n as usize);
    let text = std::str::from_utf8(header).map_err(|e| err(format!("safetensors header is not UTF-8: {e}")))?;
    let Entries(entries) =
        serde_json::from_str(text).map_err(|e| err(format!("safetensors header is not a valid JSON object: {e}")))?;
    let mut seen = HashSet::new();
    let mut tensors = Vec::with_capacity(entries.len());
    for (name, v) in entries {
        if !seen.insert(name.clone()) {
            return Err(err(format!("tensor `{name}` appears twice in the safetensors header")));
        }
        if name == "__metadata__" {
            if !v.as_object().is_some_and(|m| m.values().all(Value::is_string)) {
                return Err(err("safetensors `__metadata__` is not an object of strings".into()));
            }
            continue;
        }
        let t = entry(&v, data.len()).map_err(|m| err(format!("safetensors tensor `{name}`: {m}")))?;
        tensors.push((name, t));
    }
    let mut by_offset: Vec<&(String, Entry)> = tensors.iter().collect();
    by_offset.sort_by_key(|(_, e)| (e.start, e.end));
    let mut prev: Option<&(String, Entry)> = None;
    for t in &by_offset {
        let end = prev.map_or(0, |p| p.1.end);
        if t.1.start < end {
            let p = prev.expect("an end past 0 comes from a tensor");
            return Err(err(format!(
                "safetensors tensors `{}` (bytes {}..{}) and `{}` (bytes {}..{}) overlap",
                p.0, p.1.start, p.1.end, t.0, t.1.start, t.1.end
            )));
        }
        if t.1.start > end {
            return Err(err(format!("safetensors data bytes {end}..{} belong to no tensor (before `{}`)", t.1.start, t.0)));
        }
        prev = Some(t);
    }
    let end = prev.map_or(0, |p| p.1.end);
    if end != data.len() {
        let after = prev.map_or(String::new(), |p| format!(" (after `{}`)", p.0));
        return Err(err(format!("safetensors data bytes {end}..{} belong to no tensor{after}", data.len())));
    }
    Ok(tensors.into_iter().map(|(n, e)| (n, e.shape)).collect())
}

/// A header entry's dtype-checked shape and byte range.
struct Entry {
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// Reads one header entry; `data_len` is the size of the file's data section.
fn entry(v: &Value, data_len: usize) -> std::result::Result<Entry, String> {
    let obj = v.as_object().ok_or_else(|| format!("is {}; expected an object with dtype, shape and data_offsets", shown(v)))?;
    let field = |k: &str| obj.get(k).ok_or_else(|| format!("has no `{k}`"));
    let dv = field("dtype")?;
    let dtype: Dtype = serde_json::from_value(dv.clone()).map_err(|_| format!("unknown dtype {}", shown(dv)))?;
    let whole = |k: &str, v: &Value| -> std::result::Result<Vec<usize>, String> {
        let bad = || format!("`{k}` is {}; expected a list of whole numbers", shown(v));
        let a = v.as_array().ok_or_else(bad)?;
        a.iter().map(|x| x.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(bad)).collect()
    };
    let shape = whole("shape", field("shape")?)?;
    let offsets = whole("data_offsets", field("data_offsets")?)?;
    let [start, end] = offsets[..] else {
        return Err(format!("`data_offsets` {offsets:?} is not a [start, end] pair"));
    };
    let bits = shape.iter().try_fold(dtype.bitsize(), |a, &d| a.checked_mul(d));
    let size = bits.filter(|b| b % 8 == 0).map(|b| b / 8);
    let Some(size) = size else {
        return Err(format!("shape {shape:?} of {dtype:?} overflows, or is not a whole number of bytes"));
    };
    if end > data_len {
        return Err(format!(
            "data_offsets [{start}, {end}] run past the end of the data ({data_len} bytes): truncated, or a lying header"
        ));
    }
    if end < start || end - start != size {
        return Err(format!("shape {shape:?} of {dtype:?} takes {size} bytes, but its data_offsets [{start}, {end}] do not span that"));
    }
    Ok(Entry { shape, start, end })
}

/// A JSON object's entries in file order, repeated keys kept (serde_json's maps keep the last).
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> std::result::Result<Entries, A::Error> {
                let mut v = Vec::new();
                while let Some(e) = m.next_entry::<String, Value>()? {
                    v.push(e);
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V)
    }
}

/// Reads a file whose header `check_header` accepted (the crate's own errors are kept, prefixed
/// by the file name, for anything the checks above did not foresee).
fn parse_one<'a>(path: &Path, bytes: &'a [u8]) -> Result<SafeTensors<'a>> {
    SafeTensors::deserialize(bytes).map_err(|e| Error::format(path, format!("invalid safetensors file: {e}")))
}
