//! GGUF container parsing (versions 2 and 3, little-endian): header, metadata key/values, tensor
//! infos and the aligned data section. Spec: ggml `docs/gguf.md`.
//!
//! Every count and offset comes from an untrusted file, so all reads are bounds-checked and no
//! allocation is sized from a count before the bytes behind it are known to exist.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::dequant::{dequantize, GgmlType};
use crate::{Error, HostTensor, Result};

/// One metadata value. Arrays hold values of a single type.
#[derive(Clone, Debug, PartialEq)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
}

impl GgufValue {
    /// Any integer type as u64 (negative values give None).
    pub fn as_u64(&self) -> Option<u64> {
        use GgufValue::*;
        match *self {
            U8(v) => Some(v as u64),
            U16(v) => Some(v as u64),
            U32(v) => Some(v as u64),
            U64(v) => Some(v),
            I8(v) => u64::try_from(v).ok(),
            I16(v) => u64::try_from(v).ok(),
            I32(v) => u64::try_from(v).ok(),
            I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(v as f64),
            GgufValue::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// A tensor's description; `shape` is already reversed to row-major (`[out, in]`).
#[derive(Clone, Debug)]
pub struct GgufTensorInfo {
    pub name: String,
    pub shape: Vec<usize>,
    pub ty: GgmlType,
    /// Offset from the start of the data section.
    pub offset: u64,
}

pub struct GgufFile<'a> {
    pub version: u32,
    pub metadata: HashMap<String, GgufValue>,
    pub tensors: Vec<GgufTensorInfo>,
    data: &'a [u8],
    path: PathBuf,
}

/// A bounds-checked little-endian cursor; errors name the file and the byte offset.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> Error {
        Error::format(self.path, format!("truncated or corrupt GGUF: {what} at byte {}", self.pos))
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| self.err(&format!("{what} ({n} bytes) runs past the end")))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("take returned N bytes"))
    }
    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A count that each item of which takes at least `min_item` bytes: rejects counts that could
    /// not fit in what is left of the file before anything is allocated for them.
    fn count(&mut self, min_item: usize, what: &str) -> Result<usize> {
        let n = self.u64(what)?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_item as u64) > left {
            return Err(self.err(&format!("{what} {n} is more than the file can hold")));
        }
        Ok(n as usize)
    }
    fn string(&mut self, what: &str) -> Result<String> {
        let n = self.count(1, what)?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err(&format!("{what} is not UTF-8")))
    }

    fn value(&mut self, ty: u32, key: &str) -> Result<GgufValue> {
        use GgufValue::*;
        Ok(match ty {
            0 => U8(self.array::<1>(key)?[0]),
            1 => I8(self.array::<1>(key)?[0] as i8),
            2 => U16(u16::from_le_bytes(self.array(key)?)),
            3 => I16(i16::from_le_bytes(self.array(key)?)),
            4 => U32(self.u32(key)?),
            5 => I32(i32::from_le_bytes(self.array(key)?)),
            6 => F32(f32::from_le_bytes(self.array(key)?)),
            7 => Bool(self.array::<1>(key)?[0] != 0),
            8 => String(self.string(key)?),
            9 => {
                let elem = self.u32(key)?;
                if elem == 9 {
                    // Nested arrays are allowed by the spec but no model uses them; reading them
                    // recursively would let a crafted file recurse without bound.
                    return Err(self.err(&format!("nested array in `{key}`")));
                }
                let n = self.count(1, key)?;
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    v.push(self.value(elem, key)?);
                }
                Array(v)
            }
            10 => U64(self.u64(key)?),
            11 => I64(i64::from_le_bytes(self.array(key)?)),
            12 => F64(f64::from_le_bytes(self.array(key)?)),
            t => return Err(self.err(&format!("unknown value type {t} for `{key}`"))),
        })
    }

    fn tensor_info(&mut self) -> Result<GgufTensorInfo> {
        let name = self.string("tensor name")?;
        let n_dims = self.u32("tensor dims")?;
        if n_dims > 8 {
            return Err(self.err(&format!("tensor `{name}` has {n_dims} dimensions")));
        }
        let mut shape = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = self.u64("tensor dim")?;
            shape.push(usize::try_from(d).map_err(|_| self.err("tensor dim too large"))?);
        }
        shape.reverse(); // GGUF lists the innermost dimension first.
        let ty = GgmlType(self.u32("tensor type")?);
        let offset = self.u64("tensor offset")?;
        Ok(GgufTensorInfo { name, shape, ty, offset })
    }
}

impl<'a> GgufFile<'a> {
    /// Parses the header, metadata and tensor infos; checks every tensor lies inside the file.
    pub fn parse(buf: &'a [u8], path: &Path) -> Result<Self> {
        let mut r = Reader { buf, pos: 0, path };
        if r.take(4, "magic")? != b"GGUF" {
            return Err(Error::format(path, "not a GGUF file (magic is not `GGUF`)"));
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::Unsupported(format!(
                "{}: GGUF version {version} (carve reads versions 2 and 3, little-endian)",
                path.display()
            )));
        }
        // A tensor info takes at least 8 (name len) + 4 (dims) + 4 (type) + 8 (offset) bytes.
        let n_tensors = r.count(24, "tensor count")?;
        let n_kv = r.count(12, "metadata count")?;
        let mut metadata = HashMap::new();
        for _ in 0..n_kv {
            let key = r.string("metadata key")?;
            let ty = r.u32("metadata type")?;
            let v = r.value(ty, &key)?;
            metadata.insert(key, v);
        }
        let tensors = (0..n_tensors).map(|_| r.tensor_info()).collect::<Result<Vec<_>>>()?;
        let align = match metadata.get("general.alignment").and_then(GgufValue::as_u64) {
            Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a as usize,
            Some(a) => return Err(Error::format(path, format!("general.alignment {a} is invalid"))),
            None => 32,
        };
        let start = r.pos.div_ceil(align) * align;
        let data = buf.get(start..).unwrap_or(&[]);
        let file = GgufFile { version, metadata, tensors, data, path: path.to_path_buf() };
        for t in &file.tensors {
            file.tensor_bytes(t)?;
        }
        Ok(file)
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    pub fn info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor; errors for unsupported types and for data past the end.
    pub fn tensor_bytes(&self, t: &GgufTensorInfo) -> Result<&'a [u8]> {
        let n = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let unsupported = || {
            Error::Unsupported(format!(
                "{}: tensor `{}` has type {}; carve reads F32, F16, BF16, Q8_0, Q4_0 and Q4_1",
                self.path.display(),
                t.name,
                t.ty.name()
            ))
        };
        let size = match (t.ty.block_layout(), n) {
            (None, _) => return Err(unsupported()),
            (Some(_), Some(n)) => t.ty.byte_size(n),
            (Some(_), None) => None,
        };
        let size = size.ok_or_else(|| {
            let msg = format!("tensor `{}` shape {:?} is not whole {} blocks", t.name, t.shape, t.ty.name());
            Error::format(&self.path, msg)
        })?;
        let range = usize::try_from(t.offset).ok().and_then(|o| Some(o..o.checked_add(size)?));
        range.and_then(|r| self.data.get(r)).ok_or_else(|| {
            let msg = format!(
                "truncated GGUF: tensor `{}` ({size} bytes at data offset {}) runs past the end of the file \
                 ({} data bytes)",
                t.name,
                t.offset,
                self.data.len()
            );
            Error::format(&self.path, msg)
        })
    }

    /// A tensor dequantized to f32 in row-major `[out, in]` layout.
    pub fn tensor(&self, t: &GgufTensorInfo) -> Result<HostTensor> {
        let bytes = self.tensor_bytes(t)?;
        let data = dequantize(t.ty, bytes).expect("tensor_bytes accepted the type");
        Ok(HostTensor::new(t.shape.clone(), data))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
