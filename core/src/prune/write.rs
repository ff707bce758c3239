//! A pruned model as an HF-style directory: `config.json` (the source config, layer count updated,
//! plus `carve_layers` with each layer's head, KV-head and MLP widths), `model.safetensors` (f32,
//! the canonical HF names, new biases included; blocks with nothing left have no tensors),
//! `tokenizer.json`, `circuit.json`, for a mean-ablation circuit `means.safetensors`, and for an
//! edge circuit `edges.safetensors` (named by `carve_edges` in config.json, see `edges`).
//! `model::load::load_path` reads it back.

use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::Dtype;
use serde_json::{json, Map, Value};

use super::PrunedModel;
use crate::model::tokenizer::Tokenizer;
use crate::model::{Arch, LayerWeights};
use crate::{Error, HostTensor, Result};

/// What goes into the directory besides the weights.
#[derive(Default)]
pub struct DirExtras<'a> {
    /// The source model's config.json, whose other keys are kept (None: written from scratch).
    pub base_config: Option<&'a Value>,
    pub tokenizer: Option<&'a Tokenizer>,
    /// The circuit file; a placeholder naming the directory's origin when None.
    pub circuit: Option<&'a Value>,
    /// Ablation values for the pruned model's own components (`means.safetensors`).
    pub means: Option<&'a crate::circuit::AblationValues>,
}

/// Writes the directory's files (creating it; files of the same names are replaced).
pub fn write_dir(dir: &Path, m: &PrunedModel, extras: &DirExtras) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    for (name, bytes) in dir_files(m, extras)? {
        std::fs::write(dir.join(name), bytes).map_err(|e| Error::io(dir.join(name), e))?;
    }
    Ok(())
}

/// The directory's files as (name, bytes), for places without a file system (the web app).
pub fn dir_files(m: &PrunedModel, extras: &DirExtras) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let pretty = |v: &Value| serde_json::to_vec_pretty(v).expect("JSON values serialize");
    let mut files = vec![("config.json", pretty(&config_json(m, extras.base_config)?)), ("model.safetensors", safetensors_bytes(m)?)];
    if let Some(t) = extras.tokenizer {
        let s = t.inner.to_string(false).map_err(|e| Error::Tokenizer(format!("cannot serialize the tokenizer: {e}")))?;
        files.push(("tokenizer.json", s.into_bytes()));
    }
    let placeholder = json!({
        "format": "carve-circuit",
        "note": "pruned model written without a circuit file",
        "layers": m.layers,
        "removed_layers": m.removed_layers,
    });
    files.push(("circuit.json", pretty(extras.circuit.unwrap_or(&placeholder))));
    if let Some(v) = extras.means {
        files.push((crate::circuit::MEANS_FILE, crate::circuit::means::to_bytes(v)?));
    }
    if let Some(e) = &m.edges {
        files.push((super::EDGES_FILE, e.to_bytes()?));
    }
    Ok(files)
}

/// Sets `keys[0]`, and any alias of it the base config already has, to `v`.
fn set(o: &mut Map<String, Value>, keys: &[&str], v: Value) {
    for k in &keys[1..] {
        if o.contains_key(*k) {
            o.insert(k.to_string(), v.clone());
        }
    }
    o.insert(keys[0].to_string(), v);
}

fn config_json(m: &PrunedModel, base: Option<&Value>) -> Result<Value> {
    let mut o = match base {
        None => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => return Err(Error::Input("the source config.json is not a JSON object".into())),
    };
    let c = &m.config;
    let common = [
        (&["vocab_size"][..], json!(c.vocab)),
        (&["tie_word_embeddings"][..], json!(c.tied_embeddings)),
        (&["bos_token_id"][..], json!(c.bos_token_id)),
        (&["eos_token_id"][..], json!(c.eos_token_id)),
    ];
    let arch: Vec<(&[&str], Value)> = match c.arch {
        Arch::Gpt2 => vec![
            (&["architectures"], json!(["GPT2LMHeadModel"])),
            (&["model_type"], json!("gpt2")),
            (&["n_embd", "hidden_size"], json!(c.d_model)),
            (&["n_head", "num_attention_heads"], json!(c.n_heads)),
            (&["n_layer", "num_hidden_layers"], json!(c.n_layers)),
            (&["n_inner"], json!(c.d_ff)),
            (&["n_positions", "n_ctx", "max_position_embeddings"], json!(c.n_ctx)),
            (&["layer_norm_epsilon"], json!(c.norm_eps)),
        ],
        Arch::Llama => vec![
            (&["architectures"], json!(["LlamaForCausalLM"])),
            (&["model_type"], json!("llama")),
            (&["hidden_size"], json!(c.d_model)),
            (&["num_attention_heads"], json!(c.n_heads)),
            (&["num_key_value_heads"], json!(c.n_kv_heads)),
            (&["head_dim"], json!(c.head_dim)),
            (&["num_hidden_layers"], json!(c.n_layers)),
            (&["intermediate_size"], json!(c.d_ff)),
            (&["max_position_embeddings"], json!(c.n_ctx)),
            (&["rms_norm_eps"], json!(c.norm_eps)),
        ],
    };
    for (k, v) in common.into_iter().chain(arch) {
        set(&mut o, k, v);
    }
    if c.arch == Arch::Llama && o.get("rope_parameters").is_none_or(|p| p.get("rope_theta").is_none()) {
        o.insert("rope_theta".into(), json!(c.rope_theta));
    }
    o.insert("carve_layers".into(), json!(m.layers));
    o.insert("carve_removed_layers".into(), json!(m.removed_layers));
    match &m.edges {
        Some(_) => o.insert("carve_edges".into(), json!(super::EDGES_FILE)),
        None => o.remove("carve_edges"),
    };
    Ok(Value::Object(o))
}

/// Tensors under their HF names; GPT-2's Conv1D weights go back to `[in, out]`.
fn named_tensors(m: &PrunedModel) -> Vec<(String, HostTensor)> {
    let w = &m.weights;
    let mut v: Vec<(String, HostTensor)> = Vec::new();
    let mut put = |n: String, t: &HostTensor| v.push((n, t.clone()));
    let gpt2 = m.config.arch == Arch::Gpt2;
    let (emb, pre) = if gpt2 { ("transformer.wte.weight", "transformer.h") } else { ("model.embed_tokens.weight", "model.layers") };
    put(emb.into(), &w.wte);
    if let Some(p) = &w.wpe {
        put("transformer.wpe.weight".into(), p);
    }
    let (nf, nfb) = if gpt2 { ("transformer.ln_f.weight", "transformer.ln_f.bias") } else { ("model.norm.weight", "model.norm.bias") };
    put(nf.into(), &w.ln_f_w);
    if let Some(b) = &w.ln_f_b {
        put(nfb.into(), b);
    }
    if let Some(h) = &w.lm_head {
        put("lm_head.weight".into(), h);
    }
    for (i, lw) in w.layers.iter().enumerate() {
        let p = format!("{pre}.{i}");
        if gpt2 {
            gpt2_layer(&p, lw, &mut put)
        } else {
            llama_layer(&p, lw, &mut put)
        }
    }
    v
}

type Put<'a> = dyn FnMut(String, &HostTensor) + 'a;

fn gpt2_layer(p: &str, lw: &LayerWeights<HostTensor>, put: &mut Put) {
    let cat = |ts: [&HostTensor; 3]| {
        let data: Vec<f32> = ts.iter().flat_map(|t| t.data.iter().copied()).collect();
        let rows = ts.iter().map(|t| t.shape[0]).sum();
        let shape = if ts[0].shape.len() == 1 { vec![rows] } else { vec![rows, ts[0].shape[1]] };
        HostTensor::new(shape, data)
    };
    if lw.n_heads > 0 {
        put(format!("{p}.ln_1.weight"), &lw.ln1_w);
        lw.ln1_b.iter().for_each(|b| put(format!("{p}.ln_1.bias"), b));
        put(format!("{p}.attn.c_attn.weight"), &cat([&lw.wq, &lw.wk, &lw.wv]).transposed());
        if let (Some(q), Some(k), Some(v)) = (&lw.bq, &lw.bk, &lw.bv) {
            put(format!("{p}.attn.c_attn.bias"), &cat([q, k, v]));
        }
        put(format!("{p}.attn.c_proj.weight"), &lw.wo.transposed());
    }
    lw.bo.iter().for_each(|b| put(format!("{p}.attn.c_proj.bias"), b));
    if lw.w_up.shape[0] > 0 {
        put(format!("{p}.ln_2.weight"), &lw.ln2_w);
        lw.ln2_b.iter().for_each(|b| put(format!("{p}.ln_2.bias"), b));
        put(format!("{p}.mlp.c_fc.weight"), &lw.w_up.transposed());
        lw.b_up.iter().for_each(|b| put(format!("{p}.mlp.c_fc.bias"), b));
        put(format!("{p}.mlp.c_proj.weight"), &lw.w_down.transposed());
    }
    lw.b_down.iter().for_each(|b| put(format!("{p}.mlp.c_proj.bias"), b));
}

fn llama_layer(p: &str, lw: &LayerWeights<HostTensor>, put: &mut Put) {
    let mut pair = |name: &str, w: &HostTensor, b: &Option<HostTensor>| {
        put(format!("{p}.{name}.weight"), w);
        b.iter().for_each(|b| put(format!("{p}.{name}.bias"), b));
    };
    if lw.n_heads > 0 {
        pair("input_layernorm", &lw.ln1_w, &None);
        pair("self_attn.q_proj", &lw.wq, &lw.bq);
        pair("self_attn.k_proj", &lw.wk, &lw.bk);
        pair("self_attn.v_proj", &lw.wv, &lw.bv);
        pair("self_attn.o_proj", &lw.wo, &None);
    }
    if lw.w_up.shape[0] > 0 {
        pair("post_attention_layernorm", &lw.ln2_w, &None);
        if let Some(g) = &lw.w_gate {
            pair("mlp.gate_proj", g, &None);
        }
        pair("mlp.up_proj", &lw.w_up, &lw.b_up);
        pair("mlp.down_proj", &lw.w_down, &None);
    }
    lw.bo.iter().for_each(|b| put(format!("{p}.self_attn.o_proj.bias"), b));
    lw.b_down.iter().for_each(|b| put(format!("{p}.mlp.down_proj.bias"), b));
}


fn safetensors_bytes(m: &PrunedModel) -> Result<Vec<u8>> {
    let tensors = named_tensors(m);
    let bytes: Vec<(String, Vec<usize>, &[u8])> =
        tensors.iter().map(|(n, t)| (n.clone(), t.shape.clone(), bytemuck::cast_slice(&t.data))).collect();
    let views = bytes
        .iter()
        .map(|(n, s, b)| TensorView::new(Dtype::F32, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Input(format!("cannot lay out the pruned weights: {e}")))?;
    safetensors::serialize(views, None).map_err(|e| Error::Input(format!("cannot write the pruned weights: {e}")))
}
