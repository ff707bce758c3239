//! GGUF container parsing (versions 2 and 3, little-endian): header, metadata key/values, tensor
//! infos and the aligned data section. Spec: ggml `docs/gguf.md`.
//!
//! Every count and offset comes from an untrusted file, so all reads are bounds-checked and no
//! allocation is sized from a count before the bytes behind it are known to exist. A key or tensor
//! name given twice, and tensors that are misaligned, overlap or run past the end, are refused.

use std::collections::HashMap;
use std::fmt;
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
    /// Tensor name → its index in `tensors`.
    index: HashMap<String, usize>,
    data: &'a [u8],
    path: PathBuf,
}

/// A bounds-checked little-endian cursor; errors name the file and the byte offset.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

/// The fewest bytes one value of GGUF type `ty` takes (a string: its 8-byte length); None for a
/// type that is not in the spec.
fn min_size(ty: u32) -> Option<usize> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        8..=12 => Some(8),
        _ => None,
    }
}

/// Text for a message, formatted only when an error needs it (a GGUF holds ~10^5 array elements).
struct Lazy<F: Fn(&mut fmt::Formatter) -> fmt::Result>(F);

impl<F: Fn(&mut fmt::Formatter) -> fmt::Result> fmt::Display for Lazy<F> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        (self.0)(f)
    }
}

/// What a read is for, in messages.
type What<'w> = &'w dyn fmt::Display;

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> Error {
        Error::format(self.path, format!("truncated or corrupt GGUF: {what} at byte {}", self.pos))
    }
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }
    fn take(&mut self, n: usize, what: What) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| self.err(&format!("{what} ({n} bytes) runs past the end")))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self, what: What) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("take returned N bytes"))
    }
    fn u32(&mut self, what: What) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: What) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A count (`what`, in `unit`s) of items of at least `min_item` bytes each: a count that could
    /// not fit in what is left of the file is refused before anything is allocated.
    fn count(&mut self, min_item: usize, what: What, unit: &str) -> Result<usize> {
        let n = self.u64(what)?;
        let left = self.left();
        match usize::try_from(n) {
            Ok(c) if c.checked_mul(min_item).is_some_and(|b| b <= left) => Ok(c),
            _ => Err(self.err(&format!("{what} is {n}{unit}, more than the file can hold ({left} bytes are left)"))),
        }
    }
    /// A length-prefixed UTF-8 string; `what` names it ("metadata key 3", "the value of `x`").
    fn string(&mut self, what: What) -> Result<String> {
        let n = self.count(1, &Lazy(|f| write!(f, "the length of {what}")), " bytes")?;
        let b = self.take(n, what)?;
        String::from_utf8(b.to_vec()).map_err(|_| self.err(&format!("{what} is not UTF-8")))
    }

    /// A value of type `ty`; `what` names it in messages.
    fn value(&mut self, ty: u32, what: What) -> Result<GgufValue> {
        use GgufValue::*;
        Ok(match ty {
            0 => U8(self.array::<1>(what)?[0]),
            1 => I8(self.array::<1>(what)?[0] as i8),
            2 => U16(u16::from_le_bytes(self.array(what)?)),
            3 => I16(i16::from_le_bytes(self.array(what)?)),
            4 => U32(self.u32(what)?),
            5 => I32(i32::from_le_bytes(self.array(what)?)),
            6 => F32(f32::from_le_bytes(self.array(what)?)),
            7 => Bool(self.array::<1>(what)?[0] != 0),
            8 => String(self.string(what)?),
            10 => U64(self.u64(what)?),
            11 => I64(i64::from_le_bytes(self.array(what)?)),
            12 => F64(f64::from_le_bytes(self.array(what)?)),
            t => return Err(self.err(&format!("unknown value type {t} for {what}"))),
        })
    }

    /// The value of metadata key `key`: a scalar, or an array of scalars.
    fn metadata_value(&mut self, ty: u32, key: &str) -> Result<GgufValue> {
        if ty != 9 {
            return self.value(ty, &Lazy(|f| write!(f, "the value of `{key}`")));
        }
        let elem = self.u32(&Lazy(|f| write!(f, "the element type of array `{key}`")))?;
        // Nested arrays are allowed by the spec but no model uses them; reading them recursively
        // would let a crafted file recurse without bound.
        let min = match elem {
            9 => return Err(self.err(&format!("nested array in `{key}`"))),
            t => min_size(t).ok_or_else(|| self.err(&format!("unknown element type {t} in array `{key}`")))?,
        };
        let n = self.count(min, &Lazy(|f| write!(f, "the length of array `{key}`")), " elements")?;
        // Each element is a 32-byte value however few bytes it took in the file: grown as read.
        let mut v = Vec::with_capacity(n.min(1 << 16));
        for j in 0..n {
            v.push(self.value(elem, &Lazy(|f| write!(f, "element {j} of `{key}`")))?);
        }
        Ok(GgufValue::Array(v))
    }

    /// Tensor info number `i` (from 1, for messages).
    fn tensor_info(&mut self, i: usize) -> Result<GgufTensorInfo> {
        let name = self.string(&Lazy(|f| write!(f, "the name of tensor {i}")))?;
        let n_dims = self.u32(&"tensor dims")?;
        if n_dims > 8 {
            return Err(self.err(&format!("tensor `{name}` has {n_dims} dimensions")));
        }
        let mut shape = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            let d = self.u64(&"tensor dim")?;
            shape.push(usize::try_from(d).map_err(|_| self.err(&format!("tensor `{name}`: dimension {d} is too large")))?);
        }
        shape.reverse(); // GGUF lists the innermost dimension first.
        let ty = GgmlType(self.u32(&"tensor type")?);
        let offset = self.u64(&"tensor offset")?;
        Ok(GgufTensorInfo { name, shape, ty, offset })
    }
}

impl<'a> GgufFile<'a> {
    /// Parses the header, metadata and tensor infos; checks that no key or tensor name repeats and
    /// that every tensor lies inside the file, aligned, overlapping no other.
    pub fn parse(buf: &'a [u8], path: &Path) -> Result<Self> {
        let mut r = Reader { buf, pos: 0, path };
        if r.take(4, &"magic")? != b"GGUF" {
            return Err(Error::format(path, "not a GGUF file (magic is not `GGUF`)"));
        }
        let version = r.u32(&"version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::Unsupported(format!(
                "{}: GGUF version {version} (carve reads versions 2 and 3, little-endian)",
                path.display()
            )));
        }
        // A tensor info takes at least 8 (name len) + 4 (dims) + 4 (type) + 8 (offset) bytes.
        let n_tensors = r.count(24, &"the tensor count", "")?;
        // A key/value takes at least 8 (key len) + 4 (type) + 1 bytes.
        let n_kv = r.count(13, &"the metadata count", "")?;
        let mut metadata = HashMap::new();
        for i in 1..=n_kv {
            let key = r.string(&Lazy(|f| write!(f, "metadata key {i}")))?;
            let ty = r.u32(&Lazy(|f| write!(f, "the type of `{key}`")))?;
            let v = r.metadata_value(ty, &key)?;
            if metadata.contains_key(&key) {
                return Err(Error::format(path, format!("metadata key `{key}` appears twice")));
            }
            metadata.insert(key, v);
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut index = HashMap::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let t = r.tensor_info(i + 1)?;
            if index.insert(t.name.clone(), i).is_some() {
                return Err(Error::format(path, format!("tensor `{}` appears twice", t.name)));
            }
            tensors.push(t);
        }
        let align = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a as usize,
                _ => return Err(Error::format(path, format!("`general.alignment` {v:?} is not a power of two up to 2^20"))),
            },
        };
        let start = r.pos.div_ceil(align) * align;
        let data = buf.get(start..).unwrap_or(&[]);
        let file = GgufFile { version, metadata, tensors, index, data, path: path.to_path_buf() };
        file.check_placement(align)?;
        Ok(file)
    }

    /// Every tensor aligned, inside the data section, and sharing no byte with another.
    fn check_placement(&self, align: usize) -> Result<()> {
        let mut spans = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let size = self.tensor_bytes(t)?.len();
            if t.offset % align as u64 != 0 {
                let msg = format!(
                    "tensor `{}`: data offset {} is not a multiple of the alignment {align} (`general.alignment`, 32 when absent)",
                    t.name, t.offset
                );
                return Err(Error::format(&self.path, msg));
            }
            // tensor_bytes has checked that offset + size lies inside the data section.
            spans.push((t.offset as usize, t.offset as usize + size, &t.name));
        }
        spans.sort();
        for w in spans.windows(2) {
            let ((s0, e0, a), (s1, e1, b)) = (w[0], w[1]);
            if s1 < e0 {
                let msg = format!("tensors `{a}` (data bytes {s0}..{e0}) and `{b}` (data bytes {s1}..{e1}) overlap");
                return Err(Error::format(&self.path, msg));
            }
        }
        Ok(())
    }

    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    pub fn info(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// The raw bytes of a tensor; errors for unsupported types, rows that are not whole blocks, and
    /// data past the end.
    pub fn tensor_bytes(&self, t: &GgufTensorInfo) -> Result<&'a [u8]> {
        let n = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        let Some((per_block, _)) = t.ty.block_layout() else {
            return Err(Error::Unsupported(format!(
                "{}: tensor `{}` has type {}; carve reads F32, F16, BF16, Q8_0, Q4_0 and Q4_1",
                self.path.display(),
                t.name,
                t.ty.name()
            )));
        };
        let row = t.shape.last().copied().unwrap_or(1);
        if !row.is_multiple_of(per_block) {
            let msg = format!("tensor `{}`: rows of {row} values are not whole {} blocks of {per_block}", t.name, t.ty.name());
            return Err(Error::format(&self.path, msg));
        }
        let size = n.and_then(|n| t.ty.byte_size(n)).ok_or_else(|| {
            let msg = format!("tensor `{}` shape {:?} is too large for {} data", t.name, t.shape, t.ty.name());
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
