//! Malformed GGUF files: repeated keys, misplaced tensors, lengths that cannot fit, metadata that
//! contradicts the tensors or has the wrong type, a corrupted tokenizer. Each error says what is
//! wrong, naming the key or tensor.

use carve_core::model::load::{load_gguf_bytes, load_gguf_tokenizer};

#[path = "../fixtures/support.rs"]
mod support;
use support::{err_text, gstr, has_all, Gguf};

/// A metadata value.
#[derive(Clone)]
enum M {
    U32(u32),
    U64(u64),
    I32(i32),
    F32(f32),
    Str(&'static str),
    Strs(Vec<&'static str>),
}

/// A llama GGUF described by its metadata and tensor shapes (F32 zeros).
#[derive(Clone)]
struct Spec {
    meta: Vec<(String, M)>,
    tensors: Vec<(String, Vec<usize>)>,
}

/// 2 layers, d = 64, 4 heads of 16, 2 KV heads, MLP 128, vocab 8.
fn llama() -> Spec {
    let meta = vec![
        ("general.architecture", M::Str("llama")),
        ("llama.block_count", M::U32(2)),
        ("llama.context_length", M::U32(32)),
        ("llama.embedding_length", M::U32(64)),
        ("llama.feed_forward_length", M::U32(128)),
        ("llama.attention.head_count", M::U32(4)),
        ("llama.attention.head_count_kv", M::U32(2)),
        ("llama.rope.dimension_count", M::U32(16)),
        ("llama.attention.layer_norm_rms_epsilon", M::F32(1e-5)),
        ("llama.rope.freq_base", M::F32(10000.0)),
    ];
    let mut tensors = vec![("token_embd.weight".to_string(), vec![8, 64]), ("output_norm.weight".to_string(), vec![64])];
    for i in 0..2 {
        for (n, s) in [
            ("attn_norm", vec![64]),
            ("ffn_norm", vec![64]),
            ("attn_q", vec![64, 64]),
            ("attn_k", vec![32, 64]),
            ("attn_v", vec![32, 64]),
            ("attn_output", vec![64, 64]),
            ("ffn_gate", vec![128, 64]),
            ("ffn_up", vec![128, 64]),
            ("ffn_down", vec![64, 128]),
        ] {
            tensors.push((format!("blk.{i}.{n}.weight"), s));
        }
    }
    Spec { meta: meta.into_iter().map(|(k, v)| (k.to_string(), v)).collect(), tensors }
}

impl Spec {
    /// Sets `key` (replacing it where present).
    fn set(mut self, key: &str, v: M) -> Self {
        match self.meta.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = v,
            None => self.meta.push((key.to_string(), v)),
        }
        self
    }
    /// Appends `key` even if it is already there.
    fn push(mut self, key: &str, v: M) -> Self {
        self.meta.push((key.to_string(), v));
        self
    }
    fn shape(mut self, name: &str, shape: &[usize]) -> Self {
        self.tensors.iter_mut().find(|t| t.0 == name).unwrap().1 = shape.to_vec();
        self
    }
    fn bytes(&self) -> Vec<u8> {
        let mut g = Gguf::default();
        for (k, v) in &self.meta {
            match v {
                M::U32(x) => g.u32(k, *x),
                M::U64(x) => g.kv(k, 10, &x.to_le_bytes()),
                M::I32(x) => g.kv(k, 5, &x.to_le_bytes()),
                M::F32(x) => g.kv(k, 6, &x.to_le_bytes()),
                M::Str(s) => g.str(k, s),
                M::Strs(v) => {
                    let mut b = 8u32.to_le_bytes().to_vec();
                    b.extend((v.len() as u64).to_le_bytes());
                    v.iter().for_each(|s| gstr(&mut b, s));
                    g.kv(k, 9, &b)
                }
            };
        }
        for (n, s) in &self.tensors {
            g.tensor(n, s, 0, &vec![0u8; s.iter().product::<usize>() * 4]);
        }
        g.bytes()
    }
    fn err(&self) -> String {
        err_text(load_gguf_bytes(&self.bytes()))
    }
}

#[test]
fn the_fixture_loads() {
    let m = load_gguf_bytes(&llama().bytes()).unwrap();
    assert_eq!((m.config.n_layers, m.config.n_heads, m.config.n_kv_heads, m.config.head_dim), (2, 4, 2, 16));
}

#[test]
fn a_repeated_metadata_key_is_refused() {
    has_all(&llama().push("llama.block_count", M::U32(1)).err(), &["`llama.block_count`", "twice"]);
}

#[test]
fn misaligned_overlapping_and_outside_tensors_are_refused() {
    let file = |f: &dyn Fn(&mut Gguf)| {
        let mut g = Gguf::default();
        g.str("general.architecture", "llama");
        f(&mut g);
        err_text(load_gguf_bytes(&g.bytes()))
    };
    let msg = file(&|g| {
        g.tensor_at("a", &[8], 0, 0).tensor_at("b", &[8], 0, 36).data(&[0u8; 96]);
    });
    has_all(&msg, &["`b`", "36", "alignment 32"]);
    let msg = file(&|g| {
        g.u32("general.alignment", 16).tensor_at("a", &[8], 0, 0).tensor_at("b", &[8], 0, 24).data(&[0u8; 96]);
    });
    has_all(&msg, &["`b`", "24", "alignment 16"]);
    let msg = file(&|g| {
        g.str("general.alignment", "32").tensor_at("a", &[8], 0, 0).data(&[0u8; 32]);
    });
    has_all(&msg, &["`general.alignment`", "32"]);
    let msg = file(&|g| {
        g.tensor_at("a", &[16], 0, 0).tensor_at("b", &[8], 0, 32).data(&[0u8; 96]);
    });
    has_all(&msg, &["`a`", "`b`", "overlap"]);
    let msg = file(&|g| {
        g.tensor_at("a", &[8], 0, 0).tensor_at("a", &[8], 0, 32).data(&[0u8; 96]);
    });
    has_all(&msg, &["`a`", "twice"]);
    let msg = file(&|g| {
        g.tensor_at("a", &[8], 0, 0).tensor_at("b", &[8], 0, 1 << 20).data(&[0u8; 32]);
    });
    has_all(&msg, &["`b`", "past the end"]);
    // A quantized row must be whole blocks: 48 values of Q8_0 per row would straddle blocks.
    let msg = file(&|g| {
        g.tensor_at("q", &[2, 48], 8, 0).data(&[0u8; 102]);
    });
    has_all(&msg, &["`q`", "48", "Q8_0"]);
}

#[test]
fn lengths_and_counts_that_cannot_fit_are_named() {
    let header = |n_t: u64, n_kv: u64| {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(n_t.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b
    };
    // The length of a key.
    let mut b = header(0, 1);
    b.extend(u64::MAX.to_le_bytes());
    b.extend([0u8; 16]);
    let msg = err_text(load_gguf_bytes(&b));
    has_all(&msg, &["length", "metadata key", "18446744073709551615"]);
    assert!(!msg.contains("metadata key 18446744073709551615"), "{msg}");
    // The length of a string value.
    let mut b = header(0, 1);
    gstr(&mut b, "general.architecture");
    b.extend(8u32.to_le_bytes());
    b.extend((1u64 << 40).to_le_bytes());
    b.extend(b"llama");
    has_all(&err_text(load_gguf_bytes(&b)), &["length", "`general.architecture`", "1099511627776"]);
    // The element count of an array.
    let mut b = header(0, 1);
    gstr(&mut b, "tokenizer.ggml.tokens");
    b.extend(9u32.to_le_bytes());
    b.extend(8u32.to_le_bytes());
    b.extend((1u64 << 40).to_le_bytes());
    has_all(&err_text(load_gguf_bytes(&b)), &["`tokenizer.ggml.tokens`", "1099511627776 elements"]);
    // The length of a tensor name, and the tensor count.
    let mut b = header(1, 0);
    b.extend((1u64 << 40).to_le_bytes());
    b.extend([0u8; 32]);
    has_all(&err_text(load_gguf_bytes(&b)), &["length", "name of tensor", "1099511627776"]);
    has_all(&err_text(load_gguf_bytes(&header(1 << 40, 0))), &["tensor count", "1099511627776"]);
}

fn with_tokenizer(s: Spec, tokens: Vec<&'static str>, merges: Vec<&'static str>) -> Spec {
    s.set("tokenizer.ggml.model", M::Str("gpt2")).set("tokenizer.ggml.tokens", M::Strs(tokens)).set("tokenizer.ggml.merges", M::Strs(merges))
}

#[test]
fn a_corrupted_tokenizer_names_the_gguf_metadata() {
    let tokens = vec!["a", "b", "ab", "c", "d", "cd", "e", "f"];
    let merges = vec!["a b", "c d"];
    let ok = with_tokenizer(llama(), tokens.clone(), merges.clone()).bytes();
    assert_eq!(load_gguf_tokenizer(&ok).unwrap().unwrap().vocab_size(), 8);
    let mut t = tokens.clone();
    t[2] = "aX";
    let msg = err_text(load_gguf_bytes(&with_tokenizer(llama(), t, merges.clone()).bytes()));
    has_all(&msg, &["`tokenizer.ggml.merges`", "`a b`", "`ab`"]);
    assert!(!msg.contains("tokenizer.json"), "{msg}");
    let mut t = tokens.clone();
    t[3] = "a";
    let msg = err_text(load_gguf_bytes(&with_tokenizer(llama(), t, merges.clone()).bytes()));
    has_all(&msg, &["`tokenizer.ggml.tokens`", "`a`", "0 and 3"]);
    let msg = err_text(load_gguf_bytes(&with_tokenizer(llama(), tokens.clone(), vec!["ab"]).bytes()));
    has_all(&msg, &["`tokenizer.ggml.merges`", "`ab`"]);
    let s = with_tokenizer(llama(), tokens.clone(), merges.clone()).set("tokenizer.ggml.token_type", M::Strs(vec!["1"; 8]));
    has_all(&s.err(), &["`tokenizer.ggml.token_type`"]);
    let s = with_tokenizer(llama(), tokens.clone(), merges.clone()).set("tokenizer.ggml.eos_token_id", M::U32(8));
    has_all(&s.err(), &["`tokenizer.ggml.eos_token_id` = 8", "8 rows"]);
    let s = with_tokenizer(llama(), tokens, merges).set("tokenizer.ggml.bos_token_id", M::Str("1"));
    has_all(&s.err(), &["`tokenizer.ggml.bos_token_id`", "an unsigned integer"]);
}

#[test]
fn a_head_count_contradicting_the_tensors_is_named_as_such() {
    for kv in [2, 1] {
        let msg = llama().set("llama.attention.head_count", M::U32(1)).set("llama.attention.head_count_kv", M::U32(kv)).err();
        has_all(&msg, &["`llama.attention.head_count` = 1"]);
        assert!(!msg.contains("RoPE on"), "{msg}");
    }
    // Tensors made for one head of 64, but a RoPE dimension count for heads of 16.
    let one_head = llama()
        .set("llama.attention.head_count", M::U32(1))
        .set("llama.attention.head_count_kv", M::U32(1))
        .shape("blk.0.attn_k.weight", &[64, 64])
        .shape("blk.0.attn_v.weight", &[64, 64])
        .shape("blk.1.attn_k.weight", &[64, 64])
        .shape("blk.1.attn_v.weight", &[64, 64]);
    let msg = one_head.err();
    has_all(&msg, &["`llama.rope.dimension_count` = 16", "`llama.attention.head_count` = 1", "head_dim 64", "4 heads"]);
    assert!(!msg.contains("RoPE on 16 of 64"), "{msg}");
    assert!(load_gguf_bytes(&one_head.set("llama.rope.dimension_count", M::U32(64)).bytes()).is_ok());
}

#[test]
fn metadata_contradicting_the_tensors_is_refused() {
    let cases: [(&str, M, &[&str]); 9] = [
        ("llama.block_count", M::U32(1), &["`llama.block_count` = 1", "blk.1."]),
        ("llama.block_count", M::U32(3), &["`llama.block_count` = 3", "2 layers"]),
        ("llama.block_count", M::U64(1 << 63), &["`llama.block_count` = 9223372036854775808", "2 layers"]),
        ("llama.embedding_length", M::U64(1 << 63), &["`llama.embedding_length` = 9223372036854775808", "token_embd.weight", "[8, 64]"]),
        ("llama.embedding_length", M::U64(u64::MAX), &["`llama.embedding_length` = 18446744073709551615", "[8, 64]"]),
        ("llama.attention.head_count", M::U32(0), &["`llama.attention.head_count` = 0"]),
        ("llama.attention.head_count_kv", M::U64(1 << 63), &["`llama.attention.head_count_kv` = 9223372036854775808", "attn_k"]),
        ("llama.feed_forward_length", M::U32(0), &["`llama.feed_forward_length` = 0", "ffn_gate.weight", "[128, 64]"]),
        ("llama.context_length", M::U32(0), &["`llama.context_length` = 0"]),
    ];
    for (key, v, parts) in cases {
        has_all(&llama().set(key, v).err(), parts);
    }
    // The embedding must be a matrix.
    has_all(&llama().shape("token_embd.weight", &[512]).err(), &["token_embd.weight", "[512]"]);
}

#[test]
fn non_positive_epsilon_and_rope_theta_are_refused() {
    for x in [-1e-5, 0.0, f32::NAN, f32::INFINITY] {
        let msg = llama().set("llama.attention.layer_norm_rms_epsilon", M::F32(x)).err();
        has_all(&msg, &["`llama.attention.layer_norm_rms_epsilon`", "positive"]);
        has_all(&llama().set("llama.rope.freq_base", M::F32(x)).err(), &["`llama.rope.freq_base`", "positive"]);
    }
}

#[test]
fn wrongly_typed_metadata_is_refused_with_the_expected_type() {
    let cases: [(&str, M, &[&str]); 5] = [
        ("llama.block_count", M::Str("2"), &["`llama.block_count`", "an unsigned integer"]),
        ("llama.attention.head_count", M::I32(-4), &["`llama.attention.head_count`", "an unsigned integer"]),
        ("llama.rope.freq_base", M::Str("1e4"), &["`llama.rope.freq_base`", "a number"]),
        ("general.architecture", M::U32(5), &["`general.architecture`", "a string"]),
        ("llama.rope.scaling.type", M::U32(1), &["`llama.rope.scaling.type`", "a string"]),
    ];
    for (key, v, parts) in cases {
        has_all(&llama().set(key, v).err(), parts);
    }
}

#[test]
fn smollm2_with_one_head_names_the_contradiction() {
    let mut bytes = std::fs::read(carve_tests::smollm2_gguf()).unwrap();
    let key = "llama.attention.head_count";
    let mut pat = (key.len() as u64).to_le_bytes().to_vec();
    pat.extend(key.as_bytes());
    pat.extend(4u32.to_le_bytes());
    let at = bytes.windows(pat.len()).position(|w| w == pat.as_slice()).unwrap() + pat.len();
    assert_eq!(bytes[at..at + 4], 9u32.to_le_bytes());
    bytes[at..at + 4].copy_from_slice(&1u32.to_le_bytes());
    let msg = err_text(load_gguf_bytes(&bytes));
    has_all(&msg, &["`llama.attention.head_count` = 1", "head_dim 576"]);
    assert!(!msg.contains("RoPE on"), "{msg}");
}
