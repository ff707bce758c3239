//! `carve logits`: every position's logits for some prompts, written as safetensors.

use crate::backend_pick::{dispatch_at, BackendChoice, Job, PrecisionChoice};
use crate::source;
use anyhow::{bail, Context, Result};
use carve_core::backend::Backend;
use carve_core::model::load::LoadedModel;
use carve_core::model::{check_logits, Batch, ForwardArgs};
use safetensors::tensor::{Dtype, TensorView};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A model directory, a GGUF file, or a hub name.
    #[arg(long)]
    model: String,
    /// A prompt (repeat for several).
    #[arg(long)]
    prompt: Vec<String>,
    /// A JSON file with a list of lists of token ids.
    #[arg(long)]
    token_ids: Option<PathBuf>,
    /// Put the model's BOS token in front of each encoded prompt.
    #[arg(long)]
    bos: bool,
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
    /// What every matrix product rounds its inputs to: f32, or mixed precision (f16 or bf16
    /// inputs, f32 sums).
    #[arg(long, value_enum, default_value = "f32")]
    precision: PrecisionChoice,
}

pub fn run(a: Args) -> Result<()> {
    let m = source::load(&a.model)?;
    let prompts = prompts(&a, &m)?;
    let logits = dispatch_at(a.backend, a.precision.into(), Run { m: &m, prompts: &prompts })?;
    write(&a.out, &prompts, &logits, m.config.vocab)?;
    println!("wrote {} prompt(s) to {}", prompts.len(), a.out.display());
    Ok(())
}

fn prompts(a: &Args, m: &LoadedModel) -> Result<Vec<Vec<u32>>> {
    let mut out = Vec::new();
    if let Some(f) = &a.token_ids {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        let ids: Vec<Vec<u32>> = serde_json::from_str(&text)
            .with_context(|| format!("{}: expected a JSON list of lists of token ids", f.display()))?;
        out.extend(ids);
    }
    if !a.prompt.is_empty() {
        let Some(tok) = &m.tokenizer else {
            bail!("{} has no tokenizer (no tokenizer.json): give --token-ids instead of --prompt", m.source);
        };
        for p in &a.prompt {
            out.push(tok.encode(p, a.bos)?);
        }
    }
    if out.is_empty() {
        bail!("give at least one --prompt or a --token-ids file");
    }
    Ok(out)
}

struct Run<'a> {
    m: &'a LoadedModel,
    prompts: &'a [Vec<u32>],
}

impl Job for Run<'_> {
    type Out = Vec<Vec<f32>>;
    fn run<B: Backend>(self, be: &B) -> Result<Vec<Vec<f32>>> {
        // Validate every prompt before any work.
        Batch::new(self.prompts, &self.m.config)?;
        let model = self.m.upload(be)?;
        let mut out = Vec::new();
        // Chunks bound the memory of all-position logits, and keep them within one binding.
        let v = self.m.config.vocab;
        let longest = self.prompts.iter().map(Vec::len).max().unwrap_or(1);
        let per_prompt = longest * v * 4;
        if per_prompt > be.max_tensor_bytes() {
            bail!(
                "the logits of a {longest}-token prompt take {} MiB, more than this backend's {} MiB binding limit: \
                 use shorter prompts or --backend cpu",
                per_prompt >> 20,
                be.max_tensor_bytes() >> 20
            );
        }
        let per_chunk = (be.max_tensor_bytes() / per_prompt).clamp(1, 16);
        for chunk in self.prompts.chunks(per_chunk) {
            let batch = Batch::new(chunk, &self.m.config)?;
            let args = ForwardArgs::default();
            let fwd = model.forward(be, &batch, &args)?;
            let l = pollster::block_on(be.read(fwd.logits.as_ref().context("the forward returned no logits")?))?;
            pollster::block_on(check_logits(&model, be, &batch, &args, &l))?;
            for (b, &len) in batch.lens.iter().enumerate() {
                out.push(l.data[b * batch.seq * v..(b * batch.seq + len) * v].to_vec());
            }
        }
        Ok(out)
    }
}

fn write(path: &PathBuf, prompts: &[Vec<u32>], logits: &[Vec<f32>], vocab: usize) -> Result<()> {
    let ids: Vec<Vec<u8>> = prompts.iter().map(|p| p.iter().flat_map(|&i| (i as i64).to_le_bytes()).collect()).collect();
    let ls: Vec<Vec<u8>> = logits.iter().map(|l| bytemuck_f32(l)).collect();
    let mut views = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        views.push((format!("input_ids.{i}"), TensorView::new(Dtype::I64, vec![p.len()], &ids[i])?));
        views.push((format!("logits.{i}"), TensorView::new(Dtype::F32, vec![p.len(), vocab], &ls[i])?));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    safetensors::serialize_to_file(views, None, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn bytemuck_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
