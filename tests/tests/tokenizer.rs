//! Tokenizers against ids from HF `tokenizers`: GPT-2's tokenizer.json, and SmolLM2's tokenizer
//! rebuilt from its GGUF metadata (digits split one per token before the GPT-2 regex).

use carve_core::model::load::load_gguf_tokenizer;
use carve_core::model::tokenizer::Tokenizer;
use serde_json::Value;

use carve_tests::{fixture, smollm2_gguf};

/// (text, ids) pairs from a cases.json.
fn cases(file: &str) -> Vec<(String, Vec<u32>)> {
    let v: Value = serde_json::from_slice(&std::fs::read(fixture(file)).unwrap()).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let ids = c["ids"].as_array().unwrap().iter().map(|i| i.as_u64().unwrap() as u32).collect();
            (c["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

/// Every case must encode to exactly its ids and decode back to its text.
fn check_all(tok: &Tokenizer, cases: &[(String, Vec<u32>)]) {
    assert_eq!(cases.len(), 69);
    let mut bad = Vec::new();
    for (text, ids) in cases {
        let got = tok.encode(text, false).unwrap();
        if &got != ids {
            bad.push(format!("{text:?}\n  want {ids:?}\n  got  {got:?}"));
        } else if &tok.decode(ids).unwrap() != text {
            bad.push(format!("{text:?} does not decode back"));
        }
    }
    assert!(bad.is_empty(), "{} of {} cases differ:\n{}", bad.len(), cases.len(), bad.join("\n"));
}

#[test]
fn gpt2_tokenizer_json_matches_hf() {
    let tok = Tokenizer::from_json_bytes(&std::fs::read(fixture("gpt2-tokenizer/tokenizer.json")).unwrap()).unwrap();
    assert_eq!(tok.kind, "byte-level BPE, 50257 tokens");
    assert_eq!(tok.vocab_size(), 50257);
    check_all(&tok, &cases("gpt2-tokenizer/cases.json"));
    // No special token unless asked; then GPT-2's <|endoftext|> (its BOS) comes first.
    assert_eq!(tok.encode("Hello", false).unwrap(), [15496]);
    assert_eq!(tok.encode("Hello", true).unwrap(), [50256, 15496]);
    assert_eq!(tok.encode("<|endoftext|>", false).unwrap(), [50256]);
    assert!(tok.decode(&[50257]).is_err());
}

#[test]
fn smollm2_gguf_tokenizer_matches_hf() {
    let bytes = std::fs::read(smollm2_gguf()).unwrap();
    let tok = load_gguf_tokenizer(&bytes).unwrap().expect("the GGUF has a tokenizer");
    assert_eq!(tok.kind, "byte-level BPE, 49152 tokens");
    check_all(&tok, &cases("smollm2-135m/tokenizer-cases.json"));
    // Digits are one token each; BOS is <|im_start|> (id 1) per the GGUF metadata.
    let digits = tok.encode("2024", false).unwrap();
    assert_eq!(digits.len(), 4);
    assert_eq!(tok.encode("2024", true).unwrap()[0], 1);
    assert_eq!(tok.encode("<|im_start|>user", false).unwrap()[0], 1);
}
