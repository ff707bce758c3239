//! A tokenizer from GGUF metadata (`tokenizer.ggml.*`), built as the HF `tokenizer.json` that
//! transformers' GGUF converter would write, so that it tokenizes exactly as HF does.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = gpt2`) is built. The pre-tokenizer follows
//! `tokenizer.ggml.pre` the way llama.cpp's `llama-vocab.cpp` does: `smollm` (and the other
//! StarCoder-style vocabularies) split every digit into its own piece (`\p{N}`) before the GPT-2
//! regex, which in HF terms is `Digits(individual_digits)` followed by `ByteLevel`.

use serde_json::{json, Map, Value};

use super::gguf::{GgufFile, GgufValue};
use crate::model::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Llama 3's split regex (llama.cpp `LLAMA_VOCAB_PRE_TYPE_LLAMA3`, HF `Split` + `ByteLevel`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types that HF treats as added tokens: 3 = control (special), 4 = user-defined.
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;

/// The tokenizer of a GGUF file; `Ok(None)` when it has none or one of a kind not built here.
pub fn from_gguf(f: &GgufFile) -> Result<Option<Tokenizer>> {
    let model = f.get("tokenizer.ggml.model").and_then(GgufValue::as_str);
    match model {
        None => return Ok(None),
        Some("gpt2") => {}
        Some(other) => {
            tracing::warn!(
                "{}: tokenizer model `{other}` is not supported; loading without a tokenizer",
                f.path().display()
            );
            return Ok(None);
        }
    }
    let json = tokenizer_json(f)?;
    let bytes = serde_json::to_vec(&json).expect("a JSON value serializes");
    let bos = id(f, "tokenizer.ggml.bos_token_id");
    let eos = id(f, "tokenizer.ggml.eos_token_id");
    let mut tok = Tokenizer::from_json_bytes(&bytes)?;
    // The GGUF's own ids replace the guesses, and an absent BOS stays absent.
    tok.bos_id = bos;
    tok.eos_id = eos;
    Ok(Some(tok))
}

fn id(f: &GgufFile, key: &str) -> Option<u32> {
    f.get(key).and_then(GgufValue::as_u64).and_then(|n| u32::try_from(n).ok())
}

fn bad(f: &GgufFile, msg: String) -> Error {
    Error::format(f.path(), msg)
}

/// A string array from the metadata.
fn strings<'f>(f: &'f GgufFile, key: &str) -> Result<Vec<&'f str>> {
    let arr = f.get(key).and_then(GgufValue::as_array).ok_or_else(|| bad(f, format!("GGUF has no array `{key}`")))?;
    arr.iter().map(|v| v.as_str().ok_or_else(|| bad(f, format!("`{key}` holds a non-string")))).collect()
}

fn tokenizer_json(f: &GgufFile) -> Result<Value> {
    let tokens = strings(f, "tokenizer.ggml.tokens")?;
    let merges = strings(f, "tokenizer.ggml.merges")?;
    let types: Vec<u64> = match f.get("tokenizer.ggml.token_type").and_then(GgufValue::as_array) {
        Some(a) => a.iter().map(|v| v.as_u64().unwrap_or(1)).collect(),
        None => vec![1; tokens.len()],
    };
    let mut vocab = Map::new();
    let mut added = Vec::new();
    for (i, tok) in tokens.iter().enumerate() {
        vocab.insert(tok.to_string(), json!(i));
        let ty = types.get(i).copied().unwrap_or(1);
        if ty == CONTROL || ty == USER_DEFINED {
            added.push(json!({"id": i, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty == CONTROL}));
        }
    }
    let merges: Vec<Value> = merges
        .iter()
        .map(|m| {
            let (a, b) = m.split_once(' ').ok_or_else(|| bad(f, format!("merge `{m}` has no space")))?;
            Ok(json!([a, b]))
        })
        .collect::<Result<_>>()?;
    let prefix = matches!(f.get("tokenizer.ggml.add_space_prefix"), Some(GgufValue::Bool(true)));
    Ok(json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer(f, prefix)?,
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges},
    }))
}

/// The HF pre-tokenizer matching llama.cpp's regexes for `tokenizer.ggml.pre`.
fn pre_tokenizer(f: &GgufFile, add_prefix_space: bool) -> Result<Value> {
    let byte_level = |use_regex: bool| json!({"type": "ByteLevel", "add_prefix_space": add_prefix_space, "trim_offsets": true, "use_regex": use_regex});
    let pre = f.get("tokenizer.ggml.pre").and_then(GgufValue::as_str).unwrap_or("default");
    Ok(match pre {
        "default" | "gpt2" | "gpt-2" | "mpt" | "olmo" | "jais" => byte_level(true),
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva-7b" => json!({
            "type": "Sequence",
            "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level(true)],
        }),
        "llama3" | "llama-v3" | "llama-bpe" => json!({
            "type": "Sequence",
            "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": LLAMA3_REGEX}, "behavior": "Isolated", "invert": false},
                byte_level(false),
            ],
        }),
        other => {
            return Err(Error::Unsupported(format!(
                "{}: tokenizer.ggml.pre `{other}` (carve builds gpt2, smollm/starcoder-style and llama3 \
                 pre-tokenizers)",
                f.path().display()
            )))
        }
    })
}
