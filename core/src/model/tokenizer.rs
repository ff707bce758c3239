//! Tokenizers: HF `tokenizer.json`, or one built from GGUF metadata.

pub struct Tokenizer {
    pub inner: tokenizers::Tokenizer,
    /// "byte-level BPE" etc., for `carve info`.
    pub kind: String,
}
