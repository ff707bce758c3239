//! Share links to a standalone edge model (format version 2), and the edge-mask file that stands
//! in for a mask too long for a link.
//!
//! `…#carve=2.<payload>.<bits>.<check>`: `payload` is the base64url (no padding) of
//! `{"m","h","t","p","e"}` (model URL, weights hash, task and prompt as in version 1, and `e` the
//! number of edges in the model's edge layout: the layout the page runs, a standalone edge model's
//! own); `bits` is the edge mask, one bit per edge in layout order (1 = on, LSB first in each
//! byte), base64url, beside the payload rather than inside its JSON so that it is encoded once:
//! six edges per character. `check` is the base64url of the first 6 bytes of
//! sha256(payload ‖ 0 ‖ bits). When the whole link would be longer than [`MAX_LINK_CHARS`] the
//! bits are left out (`bits` empty) and the mask travels as an [`EdgeMaskFile`].
//!
//! Decoding applies version 1's checks to the shared fields, bounds the edge count, and checks the
//! bit count against the model that is loaded (`edges_for`), so a mask made for another model is
//! an error that says so, never a panic.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::link::{check_fields, err, pack, printable, state_text, unpack, LinkError, LinkState, KEY, MAX_LINK_CHARS, VERSION};
use crate::mask::EdgeLayout;
use crate::{Error, Result};

pub const EDGE_VERSION: u32 = 2;
/// Enough for every edge of a model several times Llama 3 70B's size.
const MAX_EDGES: usize = 1 << 26;
const FILE_FORMAT: &str = "carve-edge-mask";
/// Longest edge-mask file read: `MAX_EDGES` bits and room for the rest.
pub const MAX_MASK_FILE_CHARS: usize = MAX_EDGES / 6 + 4096;
const EDGE_WORDS: (&str, &str, &str) = ("edge mask", "edges", "edge");

/// What an edge link carries: the page's state with a mask over the edges of the model it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeLinkState {
    /// Where the model directory can be fetched; may be empty (pick files locally).
    pub model_url: String,
    /// Leading hex digits of the model's weights sha256 (at least 16).
    pub model_sha256: String,
    /// Task name or empty.
    pub task: String,
    pub prompt: String,
    /// Edges in the model's edge layout.
    pub n_edges: usize,
    /// One bit per edge in layout order, true = on; None when the link leaves the mask out (it
    /// was too long: see [`EdgeMaskFile`]).
    pub edges: Option<Vec<bool>>,
}

/// The payload's JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    m: String,
    h: String,
    t: String,
    p: String,
    /// Edge count.
    e: usize,
}

fn check(payload: &[u8], bits: &str) -> String {
    let mut h = Sha256::new();
    h.update(payload);
    h.update([0u8]);
    h.update(bits.as_bytes());
    B64.encode(&h.finalize()[..6])
}

impl EdgeLinkState {
    /// The fragment (without `#`), with the mask's bits or without them.
    fn fragment(&self, with_bits: bool) -> String {
        let n = self.edges.as_ref().map_or(self.n_edges, Vec::len);
        let wire = Wire { m: self.model_url.clone(), h: self.model_sha256.clone(), t: self.task.clone(), p: self.prompt.clone(), e: n };
        let payload = serde_json::to_vec(&wire).expect("strings and numbers serialize");
        let bits = match (&self.edges, with_bits) {
            (Some(b), true) => pack(b),
            _ => String::new(),
        };
        format!("{KEY}{EDGE_VERSION}.{}.{bits}.{}", B64.encode(&payload), check(&payload, &bits))
    }

    /// A full link, `base` (any fragment dropped) + `#` + the state, and whether it holds the
    /// mask: it does unless the link would then be longer than [`MAX_LINK_CHARS`].
    pub fn encode(&self, base: &str) -> (String, bool) {
        self.encode_within(base, MAX_LINK_CHARS)
    }

    /// As `encode`, with the mask left out of links longer than `max_chars`.
    pub fn encode_within(&self, base: &str, max_chars: usize) -> (String, bool) {
        let base = base.split('#').next().unwrap_or("");
        let full = format!("{base}#{}", self.fragment(true));
        if self.edges.is_none() || full.len() <= max_chars {
            return (full, self.edges.is_some());
        }
        (format!("{base}#{}", self.fragment(false)), false)
    }

    /// Decodes a version-2 link (or fragment); anything else is an error that says what is wrong.
    pub fn decode(link: &str) -> std::result::Result<EdgeLinkState, LinkError> {
        let body = state_text(link)?;
        let mut parts = body.split('.');
        let (Some(ver), Some(payload), Some(bits), Some(sum), None) = (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return err(format!("a version-{EDGE_VERSION} state should be `{EDGE_VERSION}.payload.mask.checksum`"));
        };
        if ver != EDGE_VERSION.to_string() {
            return err(format!("format version `{}`; edge links are version {EDGE_VERSION}", printable(ver)));
        }
        let payload = B64.decode(payload).or_else(|_| err("the payload is not base64url"))?;
        if check(&payload, bits) != sum {
            return err("the checksum does not match (the link was altered or cut short)");
        }
        let w: Wire =
            serde_json::from_slice(&payload).map_err(|e| LinkError(format!("the payload is not a carve version-{EDGE_VERSION} state ({e})")))?;
        check_fields(&w.m, &w.h, &w.t, &w.p)?;
        if w.e > MAX_EDGES {
            return err(format!("the edge mask claims {} edges", w.e));
        }
        let edges = if bits.is_empty() && w.e > 0 { None } else { Some(unpack(bits, w.e, EDGE_WORDS)?) };
        Ok(EdgeLinkState { model_url: w.m, model_sha256: w.h.to_ascii_lowercase(), task: w.t, prompt: w.p, n_edges: w.e, edges })
    }

    /// The mask for a model of edge layout `layout` (None when the link left it out); an error
    /// when the edge count is not the model's.
    pub fn edges_for(&self, layout: &EdgeLayout) -> std::result::Result<Option<&[bool]>, LinkError> {
        if self.n_edges != layout.n_edges() {
            return err(format!("the edge mask has {} edges, the model {}: it is for another model", self.n_edges, layout.n_edges()));
        }
        Ok(self.edges.as_deref())
    }
}

/// A share link of either version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Version 1: a mask over the model's components.
    Components(LinkState),
    /// Version 2: a mask over a standalone edge model's edges.
    Edges(EdgeLinkState),
}

impl Link {
    /// Decodes a link of either version.
    pub fn decode(link: &str) -> std::result::Result<Link, LinkError> {
        let body = state_text(link)?;
        match body.split_once('.').map(|(v, _)| v) {
            Some(v) if v == VERSION.to_string() => LinkState::decode(link).map(Link::Components),
            Some(v) if v == EDGE_VERSION.to_string() => EdgeLinkState::decode(link).map(Link::Edges),
            Some(v) => err(format!("format version `{}`; this carve reads versions {VERSION} and {EDGE_VERSION}", printable(v))),
            None => err("the state should be `version.payload.checksum`"),
        }
    }

    pub fn model_url(&self) -> &str {
        match self {
            Link::Components(s) => &s.model_url,
            Link::Edges(s) => &s.model_url,
        }
    }

    pub fn model_sha256(&self) -> &str {
        match self {
            Link::Components(s) => &s.model_sha256,
            Link::Edges(s) => &s.model_sha256,
        }
    }

    pub fn task(&self) -> &str {
        match self {
            Link::Components(s) => &s.task,
            Link::Edges(s) => &s.task,
        }
    }

    pub fn prompt(&self) -> &str {
        match self {
            Link::Components(s) => &s.prompt,
            Link::Edges(s) => &s.prompt,
        }
    }
}

/// An edge mask as a file, for a mask too long for a link: JSON
/// `{"format": "carve-edge-mask", "version": 1, "model_sha256": "…", "edges": N, "mask": "…"}`,
/// the mask packed as in a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdgeMaskFile {
    /// Leading hex digits (at least 16) of the model's weights sha256.
    pub model_sha256: String,
    /// One bit per edge of the model's edge layout, true = on.
    pub edges: Vec<bool>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWire {
    format: String,
    version: u32,
    model_sha256: String,
    edges: usize,
    mask: String,
}

impl EdgeMaskFile {
    pub fn to_json(&self) -> String {
        let w = FileWire {
            format: FILE_FORMAT.into(),
            version: 1,
            model_sha256: self.model_sha256.clone(),
            edges: self.edges.len(),
            mask: pack(&self.edges),
        };
        serde_json::to_string_pretty(&w).expect("strings and numbers serialize") + "\n"
    }

    /// Reads a mask file (untrusted): its size bounded first, every field checked.
    pub fn from_json(text: &str) -> Result<EdgeMaskFile> {
        let bad = |m: String| Error::Input(format!("edge mask file: {m}"));
        if text.len() > MAX_MASK_FILE_CHARS {
            return Err(bad(format!("it is {} characters long; a mask file is at most {MAX_MASK_FILE_CHARS}", text.len())));
        }
        let w: FileWire = serde_json::from_str(text).map_err(|e| bad(format!("not a carve edge mask ({e})")))?;
        if w.format != FILE_FORMAT || w.version != 1 {
            return Err(bad(format!("format `{}` version {}; this carve reads `{FILE_FORMAT}` version 1", printable(&w.format), w.version)));
        }
        let h = &w.model_sha256;
        if h.len() < 16 || h.len() > 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("`model_sha256` should be 16 to 64 hex digits".into()));
        }
        if w.edges > MAX_EDGES {
            return Err(bad(format!("it claims {} edges", w.edges)));
        }
        let edges = unpack(&w.mask, w.edges, EDGE_WORDS).map_err(|e| bad(e.0))?;
        Ok(EdgeMaskFile { model_sha256: h.to_ascii_lowercase(), edges })
    }

    /// The mask for the model whose weights have sha256 `sha256` (hex) and edge layout `layout`;
    /// an error naming the mismatch when it was made for another model.
    pub fn edges_for(&self, sha256: &str, layout: &EdgeLayout) -> Result<&[bool]> {
        if !sha256.to_ascii_lowercase().starts_with(&self.model_sha256) {
            return Err(Error::Input(format!(
                "edge mask file: it was made for the model with sha256 {}…, this one has {}…",
                self.model_sha256.get(..16).unwrap_or(&self.model_sha256),
                sha256.get(..16).unwrap_or(sha256)
            )));
        }
        if self.edges.len() != layout.n_edges() {
            return Err(Error::Input(format!("edge mask file: it has {} edges, the model {}", self.edges.len(), layout.n_edges())));
        }
        Ok(&self.edges)
    }
}

#[cfg(test)]
mod tests;
