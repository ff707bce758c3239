//! A tokenizer from GGUF metadata (`tokenizer.ggml.*`), built as the HF `tokenizer.json` that
//! transformers' GGUF converter would write, so that it tokenizes exactly as HF does.
//!
//! Only byte-level BPE (`tokenizer.ggml.model = gpt2`) is built. The pre-tokenizer follows
//! `tokenizer.ggml.pre` the way llama.cpp's `llama-vocab.cpp` does: `smollm` (and the other
//! StarCoder-style vocabularies) split every digit into its own piece (`\p{N}`) before the GPT-2
//! regex, which in HF terms is `Digits(individual_digits)` followed by `ByteLevel`.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::gguf::{GgufFile, GgufValue};
use super::gguf_model::{shown, token_id, wrong};
use crate::model::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Llama 3's split regex (llama.cpp `LLAMA_VOCAB_PRE_TYPE_LLAMA3`, HF `Split` + `ByteLevel`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF token types that HF treats as added tokens: 3 = control (special), 4 = user-defined.
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;

/// The tokenizer of a GGUF file; `Ok(None)` when it has none or one of a kind not built here.
/// The metadata is checked first (tokens unique, merges made of tokens, ids inside the vocabulary),
/// so that a corrupted file is reported as what it is.
pub fn from_gguf(f: &GgufFile) -> Result<Option<Tokenizer>> {
    let model = match f.get("tokenizer.ggml.model") {
        None => return Ok(None),
        Some(v) => v.as_str().ok_or_else(|| wrong(f, "tokenizer.ggml.model", v, "a string"))?,
    };
    if model != "gpt2" {
        tracing::warn!("{}: tokenizer model `{model}` is not supported; loading without a tokenizer", f.path().display());
        return Ok(None);
    }
    let json = tokenizer_json(f)?;
    let bytes = serde_json::to_vec(&json).expect("a JSON value serializes");
    let inner = tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| {
        bad(f, format!("the GGUF tokenizer metadata (`tokenizer.ggml.*`) do not make a tokenizer: {e}"))
    })?;
    let mut tok = Tokenizer::from_hf(inner);
    // The GGUF's own ids replace the guesses, and an absent BOS stays absent.
    tok.bos_id = id(f, "tokenizer.ggml.bos_token_id")?;
    tok.eos_id = id(f, "tokenizer.ggml.eos_token_id")?;
    Ok(Some(tok))
}

/// A special token id, which must be one of the tokens.
fn id(f: &GgufFile, key: &str) -> Result<Option<u32>> {
    let id = token_id(f, key)?;
    let n = f.get("tokenizer.ggml.tokens").and_then(GgufValue::as_array).map_or(0, <[_]>::len);
    match id {
        Some(i) if i as usize >= n => Err(bad(f, format!("`{key}` = {i}, but `tokenizer.ggml.tokens` has {n} tokens"))),
        _ => Ok(id),
    }
}

fn bad(f: &GgufFile, msg: String) -> Error {
    Error::format(f.path(), msg)
}

/// A string array from the metadata.
fn strings<'f>(f: &'f GgufFile, key: &str) -> Result<Vec<&'f str>> {
    let v = f.get(key).ok_or_else(|| bad(f, format!("GGUF has no array `{key}`")))?;
    let arr = v.as_array().ok_or_else(|| wrong(f, key, v, "an array of strings"))?;
    arr.iter()
        .enumerate()
        .map(|(i, x)| x.as_str().ok_or_else(|| bad(f, format!("`{key}` element {i} is {}; expected a string", shown(x)))))
        .collect()
}

fn tokenizer_json(f: &GgufFile) -> Result<Value> {
    let tokens = strings(f, "tokenizer.ggml.tokens")?;
    let merges = strings(f, "tokenizer.ggml.merges")?;
    let types: Vec<u64> = match f.get("tokenizer.ggml.token_type") {
        None => vec![1; tokens.len()],
        Some(v) => {
            let key = "tokenizer.ggml.token_type";
            let a = v.as_array().ok_or_else(|| wrong(f, key, v, "an array of integers"))?;
            if a.len() != tokens.len() {
                return Err(bad(f, format!("`{key}` has {} entries for {} tokens", a.len(), tokens.len())));
            }
            let each = |(i, x): (usize, &GgufValue)| {
                x.as_u64().ok_or_else(|| bad(f, format!("`{key}` element {i} is {}; expected an integer", shown(x))))
            };
            a.iter().enumerate().map(each).collect::<Result<_>>()?
        }
    };
    let mut vocab = Map::new();
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(tokens.len());
    let mut added = Vec::new();
    for (i, tok) in tokens.iter().enumerate() {
        if let Some(first) = index.insert(tok, i) {
            return Err(bad(f, format!("`tokenizer.ggml.tokens` has `{tok}` at both {first} and {i}")));
        }
        vocab.insert(tok.to_string(), json!(i));
        let ty = types[i];
        if ty == CONTROL || ty == USER_DEFINED {
            added.push(json!({"id": i, "content": tok, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": ty == CONTROL}));
        }
    }
    let merges: Vec<Value> = merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let key = "tokenizer.ggml.merges";
            let (a, b) = m.split_once(' ').ok_or_else(|| bad(f, format!("`{key}` entry {i} `{m}` has no space")))?;
            for part in [a, b, &format!("{a}{b}")] {
                if !index.contains_key(part) {
                    let msg = format!("`{key}` entry {i} `{m}` makes `{part}` of tokens, but `{part}` is not in `tokenizer.ggml.tokens`");
                    return Err(bad(f, msg));
                }
            }
            Ok(json!([a, b]))
        })
        .collect::<Result<_>>()?;
    let prefix = match f.get("tokenizer.ggml.add_space_prefix") {
        None => false,
        Some(GgufValue::Bool(b)) => *b,
        Some(v) => return Err(wrong(f, "tokenizer.ggml.add_space_prefix", v, "a boolean")),
    };
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
    let pre = match f.get("tokenizer.ggml.pre") {
        None => "default",
        Some(v) => v.as_str().ok_or_else(|| wrong(f, "tokenizer.ggml.pre", v, "a string"))?,
    };
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
