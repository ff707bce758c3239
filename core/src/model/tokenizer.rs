//! Tokenizers: HF `tokenizer.json`, or one built from GGUF metadata (see `load::gguf_tokenizer`).
//!
//! Encoding never adds the tokenizer's own special tokens (post-processor templates differ between
//! files and would silently change prompts); a BOS is prepended only when asked for.

use tokenizers::models::ModelWrapper;

use crate::{Error, Result};

pub struct Tokenizer {
    pub inner: tokenizers::Tokenizer,
    /// "byte-level BPE, 50257 tokens" etc., for `carve info`.
    pub kind: String,
    /// The id `encode(.., add_bos = true)` prepends; from config.json or GGUF metadata when known.
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
}

/// BOS / EOS spellings tried when a bare tokenizer.json comes without a config saying which id it is.
const BOS_GUESSES: [&str; 3] = ["<|begin_of_text|>", "<s>", "<|endoftext|>"];
const EOS_GUESSES: [&str; 3] = ["<|end_of_text|>", "</s>", "<|endoftext|>"];

impl Tokenizer {
    /// Parses an HF `tokenizer.json`. BOS/EOS are guessed from common spellings; loaders that know
    /// better (config.json, GGUF) override them with `with_special_ids`.
    pub fn from_json_bytes(bytes: &[u8]) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes)
            .map_err(|e| Error::Tokenizer(format!("cannot read tokenizer.json: {e}")))?;
        Ok(Self::from_hf(inner))
    }

    /// Wraps a tokenizer built by the `tokenizers` crate, guessing BOS/EOS as `from_json_bytes` does.
    pub fn from_hf(inner: tokenizers::Tokenizer) -> Self {
        let bos_id = BOS_GUESSES.iter().find_map(|t| inner.token_to_id(t));
        let eos_id = EOS_GUESSES.iter().find_map(|t| inner.token_to_id(t));
        let kind = describe(&inner);
        Tokenizer { inner, kind, bos_id, eos_id }
    }

    /// Sets BOS/EOS ids, keeping the current ones where `None` is given.
    pub fn with_special_ids(mut self, bos: Option<u32>, eos: Option<u32>) -> Self {
        self.bos_id = bos.or(self.bos_id);
        self.eos_id = eos.or(self.eos_id);
        self
    }

    /// Token ids of `text`, with the model's BOS first when `add_bos`.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Tokenizer(format!("encode: {e}")))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if add_bos {
            let bos = self
                .bos_id
                .ok_or_else(|| Error::Tokenizer("a BOS token was asked for, but this tokenizer has none".into()))?;
            ids.push(bos);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Text of `ids`, special tokens included (so that a decoded prompt shows what the model saw).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let vocab = self.vocab_size();
        if let Some(bad) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(Error::Tokenizer(format!("token id {bad} is outside the vocabulary ({vocab})")));
        }
        self.inner.decode(ids, false).map_err(|e| Error::Tokenizer(format!("decode: {e}")))
    }

    /// Number of ids, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn kind(&self) -> &str {
        &self.kind
    }
}

/// A short human description: the model type, byte-level or not, and the vocabulary size.
fn describe(t: &tokenizers::Tokenizer) -> String {
    let byte_level =
        serde_json::to_value(t.get_pre_tokenizer()).map(|v| v.to_string().contains("\"ByteLevel\"")).unwrap_or(false);
    let model = match t.get_model() {
        ModelWrapper::BPE(b) if b.byte_fallback => "BPE with byte fallback",
        ModelWrapper::BPE(_) if byte_level => "byte-level BPE",
        ModelWrapper::BPE(_) => "BPE",
        ModelWrapper::WordPiece(_) => "WordPiece",
        ModelWrapper::WordLevel(_) => "word-level",
        ModelWrapper::Unigram(_) => "Unigram",
    };
    format!("{model}, {} tokens", t.get_vocab_size(true))
}
