//! Tiny models for the fuzz corpora, a few kilobytes each: a GPT-2 and a Llama (GQA) of 2 layers,
//! d_model 8, 2 heads of 4, vocabulary 16, as an HF directory (config.json + model.safetensors)
//! and as GGUF with a byte-level BPE tokenizer. Weights are seeded noise: the loaders and the
//! forward only need the layout.

use safetensors::tensor::TensorView;
use safetensors::Dtype;

use super::Rng;

const D: usize = 8;
const HEADS: usize = 2;
const HEAD_DIM: usize = 4;
const VOCAB: usize = 16;
const CTX: usize = 8;
const LAYERS: usize = 2;
const GPT2_FF: usize = 32;
const LLAMA_FF: usize = 32;
const LLAMA_KV: usize = 1;

fn noise(rng: &mut Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| (rng.below(2001) as f32 - 1000.0) / 5000.0).collect()
}

/// (name, shape, values) of every tensor, in HF naming.
type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

fn push(ts: &mut Tensors, rng: &mut Rng, name: String, shape: &[usize]) {
    let n = shape.iter().product();
    let values = if name.contains("norm") || name.contains("ln_") && name.ends_with("weight") {
        vec![1.0; n]
    } else {
        noise(rng, n)
    };
    ts.push((name, shape.to_vec(), values));
}

fn safetensors_bytes(ts: &Tensors) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = ts.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: Vec<(String, TensorView)> = ts
        .iter()
        .zip(&bytes)
        .map(|((n, s, _), b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).expect("consistent view")))
        .collect();
    safetensors::serialize(views, None).expect("safetensors serializes")
}

/// config.json and model.safetensors of the tiny GPT-2 (Conv1D weights `[in, out]`, tied head).
pub fn gpt2_hf() -> (Vec<u8>, Vec<u8>) {
    let config = serde_json::json!({
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "activation_function": "gelu_new",
        "n_embd": D, "n_head": HEADS, "n_layer": LAYERS, "n_positions": CTX, "n_inner": null,
        "vocab_size": VOCAB, "layer_norm_epsilon": 1e-5, "bos_token_id": 0, "eos_token_id": 0,
        "tie_word_embeddings": true
    });
    let mut rng = Rng::new(2);
    let mut ts = Tensors::new();
    push(&mut ts, &mut rng, "wte.weight".into(), &[VOCAB, D]);
    push(&mut ts, &mut rng, "wpe.weight".into(), &[CTX, D]);
    for i in 0..LAYERS {
        let p = |s: &str| format!("h.{i}.{s}");
        for (s, shape) in [
            ("ln_1.weight", vec![D]),
            ("ln_1.bias", vec![D]),
            ("attn.c_attn.weight", vec![D, 3 * D]),
            ("attn.c_attn.bias", vec![3 * D]),
            ("attn.c_proj.weight", vec![D, D]),
            ("attn.c_proj.bias", vec![D]),
            ("ln_2.weight", vec![D]),
            ("ln_2.bias", vec![D]),
            ("mlp.c_fc.weight", vec![D, GPT2_FF]),
            ("mlp.c_fc.bias", vec![GPT2_FF]),
            ("mlp.c_proj.weight", vec![GPT2_FF, D]),
            ("mlp.c_proj.bias", vec![D]),
        ] {
            push(&mut ts, &mut rng, p(s), &shape);
        }
    }
    push(&mut ts, &mut rng, "ln_f.weight".into(), &[D]);
    push(&mut ts, &mut rng, "ln_f.bias".into(), &[D]);
    (serde_json::to_vec_pretty(&config).expect("JSON"), safetensors_bytes(&ts))
}

/// config.json and model.safetensors of the tiny Llama (GQA: 2 query heads share 1 key/value
/// head; an untied `lm_head`).
pub fn llama_hf() -> (Vec<u8>, Vec<u8>) {
    let config = serde_json::json!({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_act": "silu",
        "hidden_size": D, "num_attention_heads": HEADS, "num_key_value_heads": LLAMA_KV, "head_dim": HEAD_DIM,
        "num_hidden_layers": LAYERS, "intermediate_size": LLAMA_FF, "max_position_embeddings": CTX,
        "vocab_size": VOCAB, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2,
        "tie_word_embeddings": false, "attention_bias": false, "mlp_bias": false
    });
    let mut rng = Rng::new(3);
    let mut ts = Tensors::new();
    let (q, kv) = (HEADS * HEAD_DIM, LLAMA_KV * HEAD_DIM);
    push(&mut ts, &mut rng, "model.embed_tokens.weight".into(), &[VOCAB, D]);
    for i in 0..LAYERS {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        for (s, shape) in [
            ("input_layernorm.weight", vec![D]),
            ("self_attn.q_proj.weight", vec![q, D]),
            ("self_attn.k_proj.weight", vec![kv, D]),
            ("self_attn.v_proj.weight", vec![kv, D]),
            ("self_attn.o_proj.weight", vec![D, q]),
            ("post_attention_layernorm.weight", vec![D]),
            ("mlp.gate_proj.weight", vec![LLAMA_FF, D]),
            ("mlp.up_proj.weight", vec![LLAMA_FF, D]),
            ("mlp.down_proj.weight", vec![D, LLAMA_FF]),
        ] {
            push(&mut ts, &mut rng, p(s), &shape);
        }
    }
    push(&mut ts, &mut rng, "model.norm.weight".into(), &[D]);
    push(&mut ts, &mut rng, "lm_head.weight".into(), &[VOCAB, D]);
    (serde_json::to_vec_pretty(&config).expect("JSON"), safetensors_bytes(&ts))
}

/// A GGUF (version 3) under construction: metadata, tensor infos and the aligned data section.
#[derive(Default)]
struct Gguf {
    kv: Vec<u8>,
    n_kv: u64,
    infos: Vec<u8>,
    n_tensors: u64,
    data: Vec<u8>,
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend((s.len() as u64).to_le_bytes());
    buf.extend(s.as_bytes());
}

impl Gguf {
    fn key(&mut self, key: &str, ty: u32) -> &mut Vec<u8> {
        self.n_kv += 1;
        put_str(&mut self.kv, key);
        self.kv.extend(ty.to_le_bytes());
        &mut self.kv
    }
    fn u32(&mut self, key: &str, v: usize) {
        let v = u32::try_from(v).expect("fits");
        self.key(key, 4).extend(v.to_le_bytes());
    }
    fn f32(&mut self, key: &str, v: f32) {
        self.key(key, 6).extend(v.to_le_bytes());
    }
    fn string(&mut self, key: &str, v: &str) {
        put_str(self.key(key, 8), v);
    }
    fn bool(&mut self, key: &str, v: bool) {
        self.key(key, 7).push(v as u8);
    }
    fn strings(&mut self, key: &str, v: &[&str]) {
        let buf = self.key(key, 9);
        buf.extend(8u32.to_le_bytes());
        buf.extend((v.len() as u64).to_le_bytes());
        for s in v {
            put_str(buf, s);
        }
    }
    fn i32s(&mut self, key: &str, v: &[i32]) {
        let buf = self.key(key, 9);
        buf.extend(5u32.to_le_bytes());
        buf.extend((v.len() as u64).to_le_bytes());
        for x in v {
            buf.extend(x.to_le_bytes());
        }
    }
    /// A tensor of `shape` (outermost first, as in HF) stored as `ty` (0 F32, 8 Q8_0, 2 Q4_0).
    fn tensor(&mut self, rng: &mut Rng, name: &str, shape: &[usize], ty: u32) {
        let n: usize = shape.iter().product();
        let norm = name.contains("norm.weight");
        let bytes: Vec<u8> = match ty {
            0 => {
                let v = if norm { vec![1.0; n] } else { noise(rng, n) };
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
            // Per 32 values an f16 scale (1/64), then Q8_0: 32 signed bytes; Q4_0: 16 bytes of nibbles.
            8 | 2 => {
                let quants = if ty == 8 { 32 } else { 16 };
                let mut b = Vec::new();
                for _ in 0..n / 32 {
                    b.extend([0x00, 0x24]);
                    b.extend((0..quants).map(|_| rng.next() as u8));
                }
                b
            }
            _ => unreachable!("tensor types used here"),
        };
        while self.data.len() % 32 != 0 {
            self.data.push(0);
        }
        self.n_tensors += 1;
        put_str(&mut self.infos, name);
        self.infos.extend((shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            self.infos.extend((*d as u64).to_le_bytes());
        }
        self.infos.extend(ty.to_le_bytes());
        self.infos.extend((self.data.len() as u64).to_le_bytes());
        self.data.extend(bytes);
    }
    /// A byte-level BPE vocabulary of 16 tokens with a few merges; `pre` picks the pre-tokenizer.
    fn tokenizer(&mut self, pre: &str) {
        let tokens = ["<|endoftext|>", "a", "b", "c", "1", "2", "!", "Ġ", "Ġa", "ab", "ba", "Ġab", "Ġb", "12", "x", "y"];
        let mut types = vec![1; tokens.len()];
        types[0] = 3;
        self.string("tokenizer.ggml.model", "gpt2");
        self.string("tokenizer.ggml.pre", pre);
        self.strings("tokenizer.ggml.tokens", &tokens);
        self.i32s("tokenizer.ggml.token_type", &types);
        self.strings("tokenizer.ggml.merges", &["a b", "b a", "Ġ a", "Ġa b", "Ġ b", "1 2"]);
        self.u32("tokenizer.ggml.bos_token_id", 0);
        self.u32("tokenizer.ggml.eos_token_id", 0);
        self.bool("tokenizer.ggml.add_space_prefix", false);
    }
    fn finish(self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend(self.n_tensors.to_le_bytes());
        out.extend(self.n_kv.to_le_bytes());
        out.extend(self.kv);
        out.extend(self.infos);
        while out.len() % 32 != 0 {
            out.push(0);
        }
        out.extend(self.data);
        out
    }
}

/// The tiny GPT-2 as llama.cpp writes it: fused `attn_qkv`, `[out, in]` weights, biases, tied.
pub fn gpt2_gguf() -> Vec<u8> {
    let mut g = Gguf::default();
    let mut rng = Rng::new(4);
    g.string("general.architecture", "gpt2");
    g.u32("gpt2.embedding_length", D);
    g.u32("gpt2.attention.head_count", HEADS);
    g.u32("gpt2.block_count", LAYERS);
    g.u32("gpt2.feed_forward_length", GPT2_FF);
    g.u32("gpt2.context_length", CTX);
    g.f32("gpt2.attention.layer_norm_epsilon", 1e-5);
    g.tokenizer("default");
    g.tensor(&mut rng, "token_embd.weight", &[VOCAB, D], 0);
    g.tensor(&mut rng, "position_embd.weight", &[CTX, D], 0);
    for i in 0..LAYERS {
        let t = |s: &str| format!("blk.{i}.{s}");
        for (s, shape, ty) in [
            ("attn_norm.weight", vec![D], 0),
            ("attn_norm.bias", vec![D], 0),
            ("attn_qkv.weight", vec![3 * D, D], 0),
            ("attn_qkv.bias", vec![3 * D], 0),
            ("attn_output.weight", vec![D, D], 0),
            ("attn_output.bias", vec![D], 0),
            ("ffn_norm.weight", vec![D], 0),
            ("ffn_norm.bias", vec![D], 0),
            ("ffn_up.weight", vec![GPT2_FF, D], 0),
            ("ffn_up.bias", vec![GPT2_FF], 0),
            ("ffn_down.weight", vec![D, GPT2_FF], if i == 0 { 2 } else { 8 }),
            ("ffn_down.bias", vec![D], 0),
        ] {
            g.tensor(&mut rng, &t(s), &shape, ty);
        }
    }
    g.tensor(&mut rng, "output_norm.weight", &[D], 0);
    g.tensor(&mut rng, "output_norm.bias", &[D], 0);
    g.finish()
}

/// The tiny Llama as llama.cpp writes it (GQA, Q/K rows permuted for its RoPE, untied output).
pub fn llama_gguf() -> Vec<u8> {
    let mut g = Gguf::default();
    let mut rng = Rng::new(5);
    let (q, kv) = (HEADS * HEAD_DIM, LLAMA_KV * HEAD_DIM);
    g.string("general.architecture", "llama");
    g.u32("general.alignment", 32);
    g.u32("llama.embedding_length", D);
    g.u32("llama.attention.head_count", HEADS);
    g.u32("llama.attention.head_count_kv", LLAMA_KV);
    g.u32("llama.block_count", LAYERS);
    g.u32("llama.feed_forward_length", LLAMA_FF);
    g.u32("llama.context_length", CTX);
    g.u32("llama.rope.dimension_count", HEAD_DIM);
    g.f32("llama.attention.layer_norm_rms_epsilon", 1e-5);
    g.f32("llama.rope.freq_base", 10000.0);
    g.tokenizer("smollm");
    g.tensor(&mut rng, "token_embd.weight", &[VOCAB, D], 0);
    for i in 0..LAYERS {
        let t = |s: &str| format!("blk.{i}.{s}");
        for (s, shape, ty) in [
            ("attn_norm.weight", vec![D], 0),
            ("attn_q.weight", vec![q, D], 0),
            ("attn_k.weight", vec![kv, D], 0),
            ("attn_v.weight", vec![kv, D], 0),
            ("attn_output.weight", vec![D, q], 0),
            ("ffn_norm.weight", vec![D], 0),
            ("ffn_gate.weight", vec![LLAMA_FF, D], 0),
            ("ffn_up.weight", vec![LLAMA_FF, D], 0),
            ("ffn_down.weight", vec![D, LLAMA_FF], if i == 0 { 8 } else { 2 }),
        ] {
            g.tensor(&mut rng, &t(s), &shape, ty);
        }
    }
    g.tensor(&mut rng, "output_norm.weight", &[D], 0);
    g.tensor(&mut rng, "output.weight", &[VOCAB, D], 0);
    g.finish()
}
