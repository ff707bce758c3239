//! Share links (DESIGN.md "Outputs"): the web app's whole state in the URL fragment, so a
//! colleague who opens the link sees the same model, task, prompt and mask.
//!
//! `…#carve=1.<payload>.<check>`: `1` is the format version, `payload` the base64url (no padding) of
//! a small JSON object, `check` the base64url of the first 6 bytes of the payload's sha256. The
//! mask is a bitset over the model's components in the fixed order of [`ModelShape::components`]
//! (heads then the MLP, layer by layer; 1 = kept), base64url too, with its bit count.
//!
//! Decoding takes untrusted text: every failure is a [`LinkError`] that says what is wrong, never
//! a panic; lengths are bounded before anything is decoded; and the decoded strings are plain data
//! (the page must insert them as text, never as markup).
//!
//! Version 2 (`edge_link`) carries a mask over a standalone edge model's edges instead; [`Link`]
//! reads either version.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Component, ModelShape};

pub const VERSION: u32 = 1;
pub(super) const KEY: &str = "carve=";
/// Longest link decoded at all; a longer one is refused before any work.
pub const MAX_LINK_CHARS: usize = 64 * 1024;
pub const MAX_PROMPT_CHARS: usize = 8192;
const MAX_FIELD_CHARS: usize = 2048;
/// Enough bits for every head and MLP of a model ten times Llama 3 70B's.
const MAX_BITS: usize = 1 << 20;

/// What a link carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    /// Where the model directory (or GGUF) can be fetched; may be empty (pick files locally).
    pub model_url: String,
    /// Leading hex digits of the model's weights sha256 (at least 16), to check what was fetched.
    pub model_sha256: String,
    /// Task name (`ioi`, …) or empty.
    pub task: String,
    pub prompt: String,
    /// One bit per component in `ModelShape::components(false)` order; true = kept.
    pub mask: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkError(pub String);

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "broken share link: {}", self.0)
    }
}

impl std::error::Error for LinkError {}

pub(super) fn err<T>(msg: impl Into<String>) -> Result<T, LinkError> {
    Err(LinkError(msg.into()))
}

/// The JSON inside the payload: short keys, the mask packed.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    m: String,
    h: String,
    t: String,
    p: String,
    /// Bit count of `k`.
    n: usize,
    /// The mask, LSB first in each byte, base64url.
    k: String,
}

fn check(payload: &[u8]) -> String {
    B64.encode(&Sha256::digest(payload)[..6])
}

impl LinkState {
    /// How a link names a task: a built-in name as is, a task file by its file name (a path on
    /// the maker's disk means nothing to whoever opens the link).
    pub fn task_label(task: &str) -> String {
        task.rsplit(['/', '\\']).next().unwrap_or(task).to_string()
    }

    /// The fragment (without `#`): `carve=1.<payload>.<check>`.
    pub fn encode_fragment(&self) -> String {
        let wire = Wire {
            m: self.model_url.clone(),
            h: self.model_sha256.clone(),
            t: self.task.clone(),
            p: self.prompt.clone(),
            n: self.mask.len(),
            k: pack(&self.mask),
        };
        let payload = serde_json::to_vec(&wire).expect("strings and numbers serialize");
        format!("{KEY}{VERSION}.{}.{}", B64.encode(&payload), check(&payload))
    }

    /// A full link: `base` (the app's address, any fragment dropped) + `#` + the fragment.
    pub fn encode(&self, base: &str) -> String {
        let base = base.split('#').next().unwrap_or("");
        format!("{base}#{}", self.encode_fragment())
    }

    /// Decodes a link, a fragment (with or without `#`), or anything else, which gets an error.
    pub fn decode(link: &str) -> Result<LinkState, LinkError> {
        let body = state_text(link)?;
        let mut parts = body.split('.');
        let (Some(ver), Some(payload), Some(sum), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return err("the state should be `version.payload.checksum`");
        };
        if ver != VERSION.to_string() {
            return err(format!("format version `{}`; this carve reads version {VERSION}", printable(ver)));
        }
        let payload = B64.decode(payload).or_else(|_| err("the payload is not base64url"))?;
        if check(&payload) != sum {
            return err("the checksum does not match (the link was altered or cut short)");
        }
        let w: Wire = serde_json::from_slice(&payload).map_err(|e| LinkError(format!("the payload is not a carve state ({e})")))?;
        Self::from_wire(w)
    }

    fn from_wire(w: Wire) -> Result<LinkState, LinkError> {
        check_fields(&w.m, &w.h, &w.t, &w.p)?;
        if w.n > MAX_BITS {
            return err(format!("the mask claims {} components", w.n));
        }
        let mask = unpack(&w.k, w.n, ("mask", "components", "component"))?;
        Ok(LinkState { model_url: w.m, model_sha256: w.h.to_ascii_lowercase(), task: w.t, prompt: w.p, mask })
    }

    /// The mask as the set of removed components of a model of `shape`; errors when the bit count
    /// is not the model's component count.
    pub fn removed(&self, shape: &ModelShape) -> Result<Vec<Component>, LinkError> {
        let comps = shape.components(false);
        if comps.len() != self.mask.len() {
            return err(format!("the mask has {} components, the model {}: it is for another model", self.mask.len(), comps.len()));
        }
        Ok(comps.into_iter().zip(&self.mask).filter(|(_, &keep)| !keep).map(|(c, _)| c).collect())
    }

    /// The mask bits for a model of `shape` with `removed` ablated.
    pub fn mask_for(shape: &ModelShape, removed: &[Component]) -> Vec<bool> {
        shape.components(false).iter().map(|c| !removed.contains(c)).collect()
    }
}

/// The `carve=` state of a link, a fragment (with or without `#`) or anything else (an error),
/// after the length bound.
pub(super) fn state_text(link: &str) -> Result<&str, LinkError> {
    if link.len() > MAX_LINK_CHARS {
        return err(format!("it is {} characters long; links are at most {MAX_LINK_CHARS}", link.len()));
    }
    let frag = link.split_once('#').map_or(link, |(_, f)| f);
    let Some((_, body)) = frag.split_once(KEY) else {
        return err("it has no `carve=` state (was it cut short when copied?)");
    };
    Ok(body.split('&').next().unwrap_or(""))
}

/// Checks the fields every version carries: model URL (http(s) or a path on this server), hash
/// (hex), task and prompt (bounded, no control characters but newlines and tabs).
pub(super) fn check_fields(m: &str, h: &str, t: &str, p: &str) -> Result<(), LinkError> {
    let field = |name: &str, v: &str, max: usize| -> Result<(), LinkError> {
        if v.chars().count() > max {
            return err(format!("the {name} is longer than {max} characters"));
        }
        if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return err(format!("the {name} holds control characters"));
        }
        Ok(())
    };
    field("model URL", m, MAX_FIELD_CHARS)?;
    field("task", t, 256)?;
    field("prompt", p, MAX_PROMPT_CHARS)?;
    if !(m.is_empty() || m.starts_with("https://") || m.starts_with("http://") || m.starts_with('/') || m.starts_with("./")) {
        return err("the model URL must be http(s) or a path on this server");
    }
    if !h.is_empty() && (h.len() < 16 || h.len() > 64 || !h.bytes().all(|b| b.is_ascii_hexdigit())) {
        return err("the model hash should be 16 to 64 hex digits");
    }
    Ok(())
}

/// A bitset, LSB first in each byte, as base64url.
pub(super) fn pack(bits: &[bool]) -> String {
    let mut bytes = vec![0u8; bits.len().div_ceil(8)];
    for (i, _) in bits.iter().enumerate().filter(|(_, &b)| b) {
        bytes[i / 8] |= 1 << (i % 8);
    }
    B64.encode(&bytes)
}

/// `n` bits from `pack`'s text; `what` names the mask and its items for messages (`("mask",
/// "components", "component")`). The caller bounds `n` and the text's length.
pub(super) fn unpack(text: &str, n: usize, what: (&str, &str, &str)) -> Result<Vec<bool>, LinkError> {
    let (mask, items, item) = what;
    let bytes = B64.decode(text).or_else(|_| err(format!("the {mask} is not base64url")))?;
    if bytes.len() != n.div_ceil(8) {
        return err(format!("the {mask} has {} bytes for {n} {items}", bytes.len()));
    }
    if !n.is_multiple_of(8) && bytes.last().is_some_and(|&b| b >> (n % 8) != 0) {
        return err(format!("the {mask} has bits past its last {item}"));
    }
    Ok((0..n).map(|i| bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)).collect())
}

/// Text from a link for a message: at most 40 characters, no control characters.
pub(super) fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(40).collect()
}
