//! A batch of prompts, right-padded to one length. With causal attention a real position never
//! attends to a padded one (padding comes after it), so each prompt's logits equal those of running
//! it alone, and positions are simply 0..len.

use crate::model::ModelConfig;
use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// `batch * seq` ids, prompt-major, padded with `pad`.
    pub ids: Vec<u32>,
    pub lens: Vec<usize>,
    pub seq: usize,
}

impl Batch {
    /// Checks every prompt against the model: non-empty, within the context, ids below the vocab.
    pub fn new(prompts: &[Vec<u32>], cfg: &ModelConfig) -> Result<Batch> {
        if prompts.is_empty() {
            return Err(Error::Input("no prompts given".into()));
        }
        for (i, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                return Err(Error::Input(format!("prompt {i} is empty: give at least one token")));
            }
            if p.len() > cfg.n_ctx {
                return Err(Error::Input(format!(
                    "prompt {i} has {} tokens, more than the model's context of {}",
                    p.len(),
                    cfg.n_ctx
                )));
            }
            if let Some((pos, &id)) = p.iter().enumerate().find(|(_, &id)| id as usize >= cfg.vocab) {
                return Err(Error::Input(format!(
                    "token id {id} at position {pos} of prompt {i} is not below the vocabulary size {}",
                    cfg.vocab
                )));
            }
        }
        let seq = prompts.iter().map(Vec::len).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(prompts.len() * seq);
        for p in prompts {
            ids.extend_from_slice(p);
            ids.extend(std::iter::repeat_n(p[0], seq - p.len()));
        }
        Ok(Batch { ids, lens: prompts.iter().map(Vec::len).collect(), seq })
    }

    pub fn size(&self) -> usize {
        self.lens.len()
    }
    pub fn rows(&self) -> usize {
        self.ids.len()
    }
    /// Row index of each prompt's last real token.
    pub fn last_rows(&self) -> Vec<u32> {
        self.lens.iter().enumerate().map(|(b, &l)| (b * self.seq + l - 1) as u32).collect()
    }
    /// Row index of every real (unpadded) token, in order.
    pub fn real_rows(&self) -> Vec<u32> {
        self.lens.iter().enumerate().flat_map(|(b, &l)| (b * self.seq..b * self.seq + l).map(|r| r as u32)).collect()
    }
    /// Position of every row (`r % seq`), for learned position embeddings.
    pub fn positions(&self) -> Vec<u32> {
        (0..self.rows()).map(|r| (r % self.seq) as u32).collect()
    }
}
