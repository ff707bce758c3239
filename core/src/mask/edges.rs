//! The edges between components (edge-prune): writers put their output into the residual stream,
//! readers take their input from it, and an edge joins a writer to a later reader.
//!
//! Writers, in order: the token embedding `emb` (and GPT-2's position embedding `pos`), then per
//! layer its heads `L3H2` (each head's slice of W_O applied to its z) and its MLP `L3MLP`. Readers,
//! per layer: each query head's query input `L7H1.q`, each KV head's key and value inputs
//! `L9KV1.k`/`L9KV1.v` (under GQA one key/value input serves the group of query heads that share
//! the KV head), the MLP's input `L0MLP`; then the final `logits`. A reader of layer l reads every
//! writer of earlier layers and the embeddings; the MLP reader also reads its own layer's heads.
//! Because writers are ordered by layer, what a reader reads is a prefix of the writers, and the
//! edges are numbered reader by reader, writer by writer: GPT-2 small has 158 writers, 445
//! readers and 32,936 edges.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::components::parse_index;
use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Writer {
    Emb,
    /// GPT-2's learned position embedding.
    Pos,
    Head { layer: usize, head: usize },
    Mlp { layer: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reader {
    Q { layer: usize, head: usize },
    K { layer: usize, kv: usize },
    V { layer: usize, kv: usize },
    Mlp { layer: usize },
    Logits,
}

/// `writer -> reader`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Edge {
    pub writer: Writer,
    pub reader: Reader,
}

impl fmt::Display for Writer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Writer::Emb => write!(f, "emb"),
            Writer::Pos => write!(f, "pos"),
            Writer::Head { layer, head } => write!(f, "L{layer}H{head}"),
            Writer::Mlp { layer } => write!(f, "L{layer}MLP"),
        }
    }
}

impl fmt::Display for Reader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reader::Q { layer, head } => write!(f, "L{layer}H{head}.q"),
            Reader::K { layer, kv } => write!(f, "L{layer}KV{kv}.k"),
            Reader::V { layer, kv } => write!(f, "L{layer}KV{kv}.v"),
            Reader::Mlp { layer } => write!(f, "L{layer}MLP"),
            Reader::Logits => write!(f, "logits"),
        }
    }
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}", self.writer, self.reader)
    }
}

/// `L12` followed by the rest: (12, rest).
fn layer_prefix(s: &str) -> Option<(usize, &str)> {
    let rest = s.strip_prefix('L')?;
    let at = rest.find(|c: char| !c.is_ascii_digit())?;
    let (digits, tail) = rest.split_at_checked(at)?;
    Some((parse_index(digits)?, tail))
}

impl Writer {
    /// Parses `emb`, `pos`, `L3H2` or `L3MLP`.
    pub fn parse(s: &str) -> Result<Writer> {
        let bad = || Error::Input(format!("`{s}` is not a writer (emb, pos, L3H2 or L3MLP)"));
        match s {
            "emb" => return Ok(Writer::Emb),
            "pos" => return Ok(Writer::Pos),
            _ => {}
        }
        let (layer, tail) = layer_prefix(s).ok_or_else(bad)?;
        if tail == "MLP" {
            return Ok(Writer::Mlp { layer });
        }
        let head = tail.strip_prefix('H').and_then(parse_index).ok_or_else(bad)?;
        Ok(Writer::Head { layer, head })
    }
}

impl Reader {
    /// Parses `L7H1.q`, `L9KV1.k`, `L9KV1.v`, `L0MLP` or `logits`.
    pub fn parse(s: &str) -> Result<Reader> {
        let bad = || Error::Input(format!("`{s}` is not a reader (L7H1.q, L9KV1.k, L9KV1.v, L0MLP or logits)"));
        if s == "logits" {
            return Ok(Reader::Logits);
        }
        let (layer, tail) = layer_prefix(s).ok_or_else(bad)?;
        if tail == "MLP" {
            return Ok(Reader::Mlp { layer });
        }
        if let Some(h) = tail.strip_prefix('H').and_then(|t| t.strip_suffix(".q")) {
            return parse_index(h).map(|head| Reader::Q { layer, head }).ok_or_else(bad);
        }
        let kv = tail.strip_prefix("KV").ok_or_else(bad)?;
        if let Some(k) = kv.strip_suffix(".k") {
            return parse_index(k).map(|kv| Reader::K { layer, kv }).ok_or_else(bad);
        }
        let v = kv.strip_suffix(".v").ok_or_else(bad)?;
        parse_index(v).map(|kv| Reader::V { layer, kv }).ok_or_else(bad)
    }
}

impl Edge {
    /// Parses `writer -> reader`.
    pub fn parse(s: &str) -> Result<Edge> {
        let (w, r) = s
            .split_once(" -> ")
            .ok_or_else(|| Error::Input(format!("`{s}` is not an edge: write it `writer -> reader`, e.g. `L3H2 -> L7H1.q`")))?;
        Ok(Edge { writer: Writer::parse(w)?, reader: Reader::parse(r)? })
    }
}

// JSON spells an edge by its name.
impl Serialize for Edge {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Edge {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Edge::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A model's writers, readers and edges, numbered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeLayout {
    pub writers: Vec<Writer>,
    pub readers: Vec<Reader>,
    /// `reads[r]`: reader r reads writers `0..reads[r]`.
    pub reads: Vec<usize>,
    /// `first[r]`: the number of reader r's first edge (`first[readers.len()]`: the edge count).
    pub first: Vec<usize>,
}

impl EdgeLayout {
    /// From per-layer query-head and KV-head counts and MLP presence; `pos`: a position-embedding
    /// writer (GPT-2).
    pub fn new(n_heads: &[usize], n_kv: &[usize], has_mlp: &[bool], pos: bool) -> Result<EdgeLayout> {
        let layers = n_heads.len();
        if n_kv.len() != layers || has_mlp.len() != layers {
            return Err(Error::Input(format!(
                "edge layout: {layers} layers of heads, {} of KV heads, {} of MLPs",
                n_kv.len(),
                has_mlp.len()
            )));
        }
        let mut writers = vec![Writer::Emb];
        if pos {
            writers.push(Writer::Pos);
        }
        let (mut readers, mut reads) = (Vec::new(), Vec::new());
        for layer in 0..layers {
            let before = writers.len();
            for head in 0..n_heads[layer] {
                readers.push(Reader::Q { layer, head });
            }
            for kv in 0..n_kv[layer] {
                readers.push(Reader::K { layer, kv });
            }
            for kv in 0..n_kv[layer] {
                readers.push(Reader::V { layer, kv });
            }
            reads.resize(readers.len(), before);
            writers.extend((0..n_heads[layer]).map(|head| Writer::Head { layer, head }));
            if has_mlp[layer] {
                readers.push(Reader::Mlp { layer });
                reads.push(writers.len());
                writers.push(Writer::Mlp { layer });
            }
        }
        readers.push(Reader::Logits);
        reads.push(writers.len());
        let mut first = Vec::with_capacity(reads.len() + 1);
        let mut at = 0usize;
        for &n in &reads {
            first.push(at);
            at += n;
        }
        first.push(at);
        Ok(EdgeLayout { writers, readers, reads, first })
    }

    pub fn n_edges(&self) -> usize {
        *self.first.last().expect("first holds the count")
    }

    /// The edge numbered `i`.
    pub fn edge(&self, i: usize) -> Option<Edge> {
        if i >= self.n_edges() {
            return None;
        }
        let r = self.first.partition_point(|&f| f <= i) - 1;
        Some(Edge { writer: self.writers[i - self.first[r]], reader: self.readers[r] })
    }

    /// The number of `e`, or an error naming it when the model has no such edge.
    pub fn index(&self, e: Edge) -> Result<usize> {
        let r = self.readers.iter().position(|&r| r == e.reader);
        let w = self.writers.iter().position(|&w| w == e.writer);
        match (r, w) {
            (Some(r), Some(w)) if w < self.reads[r] => Ok(self.first[r] + w),
            (None, _) => Err(Error::Input(format!("edge `{e}`: the model has no reader {}", e.reader))),
            (_, None) => Err(Error::Input(format!("edge `{e}`: the model has no writer {}", e.writer))),
            _ => Err(Error::Input(format!("edge `{e}`: {} does not come before {}", e.writer, e.reader))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GPT-2 small with both embedding writers: the 32,936 edges of Bhaskar et al.
    #[test]
    fn gpt2_small_has_32936_edges() {
        let l = EdgeLayout::new(&[12; 12], &[12; 12], &[true; 12], true).unwrap();
        assert_eq!((l.writers.len(), l.readers.len(), l.n_edges()), (158, 445, 32_936));
    }

    /// Every edge by number and by name: the writer comes before the reader, names round-trip.
    #[test]
    fn edges_number_and_name_both_ways() {
        let l = EdgeLayout::new(&[3, 0, 2], &[1, 0, 2], &[true, false, true], false).unwrap();
        for i in 0..l.n_edges() {
            let e = l.edge(i).unwrap();
            assert_eq!(l.index(e).unwrap(), i, "{e}");
            assert_eq!(Edge::parse(&e.to_string()).unwrap(), e);
        }
        assert!(l.edge(l.n_edges()).is_none());
        let e = Edge::parse("L0H1 -> L0MLP").unwrap();
        assert_eq!(l.index(e).unwrap(), l.first[l.readers.iter().position(|&r| r == Reader::Mlp { layer: 0 }).unwrap()] + 2);
        for (bad, needle) in [
            ("L2H0 -> L0MLP", "does not come before"),
            ("L0H1 -> L1MLP", "no reader"),
            ("L1H0 -> logits", "no writer"),
            ("pos -> logits", "no writer"),
            ("L0H0 -> L0H1.q", "does not come before"),
        ] {
            let err = l.index(Edge::parse(bad).unwrap()).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        for bad in ["L0H0->logits", "L0H0 -> L0H0", "L00H1 -> logits", "emb -> L1KV.k", "x -> logits", "L3H2 -> L7H1.z", ""] {
            assert!(Edge::parse(bad).is_err(), "{bad} parsed");
        }
    }
}
