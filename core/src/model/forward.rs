//! The masked forward, written once over the `Backend` op set for both families.
//!
//! Layer l maps the residual stream `resid_pre[l]` to `resid_pre[l+1]`:
//! `attn_out = mix_block(mix_heads(attention(norm1(x))) · W_O + b_O)`, `x += attn_out`,
//! `mlp_out = mix_block(mix_neurons(act(norm2(x) · W_in)) · W_out + b_out)`, `x += mlp_out`.
//! Mixes are skipped where every mask is 1, so an all-ones forward is the plain forward bit for bit.

use crate::backend::{AttnShape, Backend, RowMap};
use crate::mask::{Masks, Site};
use crate::model::ablation::DeviceAblation;
use crate::model::batch::Batch;
use crate::model::pack::Pack;
use crate::model::zeros::Zeros;
use crate::model::{Arch, LayerWeights, ModelConfig, ModelWeights, Part};
use crate::{Error, HostTensor, Result};

/// A model whose weights live on a backend.
pub struct Model<B: Backend> {
    pub config: ModelConfig,
    pub weights: ModelWeights<B::Tensor>,
    /// A standalone edge model's edges (`prune::edges`): then `forward` runs the edge forward with
    /// them, and only whole (no masks, ablation or captures).
    pub edges: Option<crate::model::edges::EdgeModel<B::Tensor>>,
}

/// Which intermediate tensors a forward keeps (all `[batch*seq, width]` unless said).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capture {
    /// The residual stream entering each layer, and after the last layer (`resid[n_layers]`).
    pub resid: bool,
    pub attn_out: bool,
    pub mlp_out: bool,
    /// Attention probabilities `[batch*heads*seq, seq]`.
    pub pattern: bool,
    /// Heads' z (attention output before W_O) `[batch*seq, heads*head_dim]`.
    pub z: bool,
    /// MLP hidden activations `[batch*seq, d_ff]`.
    pub hidden: bool,
}

impl Capture {
    pub const ALL: Capture = Capture { resid: true, attn_out: true, mlp_out: true, pattern: true, z: true, hidden: true };
}

/// Per-layer captures; `resid` has one more entry than the layers (the final residual stream).
pub struct Captured<T> {
    pub resid: Vec<Option<T>>,
    pub attn_out: Vec<Option<T>>,
    pub mlp_out: Vec<Option<T>>,
    pub pattern: Vec<Option<T>>,
    pub z: Vec<Option<T>>,
    pub hidden: Vec<Option<T>>,
}

impl<T> Captured<T> {
    fn new(n_layers: usize) -> Self {
        let v = || (0..n_layers).map(|_| None).collect::<Vec<_>>();
        Captured { resid: (0..=n_layers).map(|_| None).collect(), attn_out: v(), mlp_out: v(), pattern: v(), z: v(), hidden: v() }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogitsAt {
    /// `[batch*seq, vocab]`; a padding row (past its prompt's length) holds no prompt's output.
    #[default]
    All,
    /// `[batch, vocab]`, each prompt's last real position: what most methods need.
    Last,
    None,
}

/// What a forward does besides the plain pass.
pub struct ForwardArgs<'a, B: Backend> {
    pub masks: Option<&'a Masks>,
    /// Ablation values on the device; None is zero ablation.
    pub ablation: Option<&'a DeviceAblation<B>>,
    pub capture: Capture,
    pub logits: LogitsAt,
}

impl<B: Backend> Default for ForwardArgs<'_, B> {
    fn default() -> Self {
        ForwardArgs { masks: None, ablation: None, capture: Capture::default(), logits: LogitsAt::All }
    }
}

/// Different masks for consecutive groups of rows: batch rows `g·rows_per_group ..
/// (g+1)·rows_per_group` use `masks[g]`. Many candidate circuits then run in one batch (the same
/// prompts once per candidate); ablation values index rows within a group (1, `seq` or
/// `rows_per_group` rows).
pub struct MaskGroups<'a> {
    pub masks: &'a [Masks],
    pub rows_per_group: usize,
}

/// The masks a forward applies: none, one set for every row, or one set per group of rows.
#[derive(Clone, Copy)]
enum Sel<'a> {
    One(Option<&'a Masks>),
    Groups(&'a [Masks], usize),
}

impl<'a> Sel<'a> {
    fn list(self) -> &'a [Masks] {
        match self {
            Sel::One(m) => m.map_or(&[], std::slice::from_ref),
            Sel::Groups(g, _) => g,
        }
    }
    fn row_map(self) -> RowMap {
        match self {
            Sel::One(_) => RowMap::SHARED,
            Sel::Groups(_, div) => RowMap { div },
        }
    }
}

pub struct ForwardOut<T> {
    pub logits: Option<T>,
    pub captured: Captured<T>,
}

impl<B: Backend> Model<B> {
    pub fn upload(be: &B, config: ModelConfig, weights: &ModelWeights<HostTensor>) -> Result<Self> {
        let up = |t: &HostTensor, part: Part| if part == Part::Product { be.upload_weight(t) } else { be.upload(t) };
        Ok(Model { config, weights: weights.try_map_parts(up)?, edges: None })
    }

    /// A standalone edge model: its weights and its edges (`prune::edges`).
    pub fn upload_edge_model(be: &B, config: ModelConfig, weights: &ModelWeights<HostTensor>,
        edges: &crate::prune::EdgeModelWeights) -> Result<Self> {
        let mut m = Model::upload(be, config, weights)?;
        let ew = crate::model::edges::EdgeWeights::new(be, &m, weights)?.with_reader_bias(be, &edges.reader_bias, m.config.d_model)?;
        let e = crate::model::edges::EdgeModel::new(be, ew, edges.gates.clone(), edges.writer_values.clone(), edges.reader_bias.clone())?;
        m.edges = Some(e);
        Ok(m)
    }

    /// Errors for a standalone edge model, which runs only whole.
    pub(crate) fn whole_only(&self, what: &str) -> Result<()> {
        match self.edges {
            None => Ok(()),
            Some(_) => Err(Error::Unsupported(format!(
                "this is a standalone edge model, which runs only whole: {what} needs the full model (and, for an edge \
                 circuit, its circuit.json: carve eval --circuit)"
            ))),
        }
    }

    /// The whole forward from token ids.
    pub fn forward(&self, be: &B, batch: &Batch, args: &ForwardArgs<B>) -> Result<ForwardOut<B::Tensor>> {
        if let Some(e) = &self.edges {
            if args.masks.is_some() || args.ablation.is_some() || args.capture != Capture::default() {
                self.whole_only("masking components or capturing activations")?;
            }
            let rows: Vec<u32> = match args.logits {
                LogitsAt::All => (0..batch.rows() as u32).collect(),
                LogitsAt::Last => batch.last_rows(),
                LogitsAt::None => return Ok(ForwardOut { logits: None, captured: Captured::new(self.config.n_layers) }),
            };
            let logits = self.standalone_edge_logits(be, e, batch, &rows)?;
            return Ok(ForwardOut { logits: Some(logits), captured: Captured::new(self.config.n_layers) });
        }
        let mut x = be.gather_rows(&self.weights.wte, &batch.ids)?;
        if let Some(wpe) = &self.weights.wpe {
            x = be.add(&x, &be.gather_rows(wpe, &batch.positions())?)?;
        }
        self.forward_from(be, batch, 0, x, args)
    }

    /// The forward from the residual stream entering layer `start` (as captured in `resid[start]`);
    /// `start == n_layers` goes straight to the final norm and the logits.
    pub fn forward_from(&self, be: &B, batch: &Batch, start: usize, resid: B::Tensor, args: &ForwardArgs<B>)
        -> Result<ForwardOut<B::Tensor>> {
        self.whole_only("a forward from a layer's residual stream")?;
        if let Some(m) = args.masks {
            self.check_masks(m)?;
        }
        if let Some(a) = args.ablation {
            a.check_rows(batch)?;
        }
        self.run_from(be, batch, start, resid, args, Sel::One(args.masks))
    }

    /// `forward_from` with a set of masks per group of rows (`args.masks` must be None). The batch
    /// is whole groups of whole prompts, e.g. the same prompts repeated once per mask set.
    pub fn forward_from_groups(&self, be: &B, batch: &Batch, start: usize, resid: B::Tensor, args: &ForwardArgs<B>,
        groups: &MaskGroups) -> Result<ForwardOut<B::Tensor>> {
        self.whole_only("masking components")?;
        let (g, rpg) = (groups.masks.len(), groups.rows_per_group);
        if args.masks.is_some() {
            return Err(Error::Input("a forward takes one set of masks or mask groups, not both".into()));
        }
        if g == 0 || rpg == 0 || !rpg.is_multiple_of(batch.seq) || g * rpg != batch.rows() {
            return Err(Error::Input(format!(
                "{g} mask groups of {rpg} rows do not split a batch of {} rows of {} positions",
                batch.rows(),
                batch.seq
            )));
        }
        for m in groups.masks {
            self.check_masks(m)?;
        }
        if let Some(a) = args.ablation {
            let n = rpg / batch.seq;
            a.check_rows(&Batch { ids: batch.ids[..rpg].to_vec(), lens: batch.lens[..n].to_vec(), seq: batch.seq })?;
        }
        self.run_from(be, batch, start, resid, args, Sel::Groups(groups.masks, rpg))
    }

    fn run_from(&self, be: &B, batch: &Batch, start: usize, resid: B::Tensor, args: &ForwardArgs<B>, sel: Sel)
        -> Result<ForwardOut<B::Tensor>> {
        let n = self.weights.layers.len();
        if start > n {
            return Err(Error::Input(format!("layer {start} is past the model's {n} layers")));
        }
        let mut cap = Captured::new(n);
        let mut zeros = Zeros::new();
        let pack = Pack::new(be, batch);
        let mut x = resid;
        for l in start..n {
            if args.capture.resid {
                cap.resid[l] = Some(x.clone());
            }
            x = self.layer(be, batch, &pack, l, x, args, sel, &mut cap, &mut zeros)?;
        }
        if args.capture.resid {
            cap.resid[n] = Some(x.clone());
        }
        let logits = match args.logits {
            LogitsAt::None => None,
            LogitsAt::All => Some(self.unembed(be, &x)?),
            LogitsAt::Last => Some(self.unembed(be, &be.gather_rows(&x, &batch.last_rows())?)?),
        };
        Ok(ForwardOut { logits, captured: cap })
    }

    fn unembed(&self, be: &B, x: &B::Tensor) -> Result<B::Tensor> {
        let w = &self.weights;
        let h = self.norm(be, x, &w.ln_f_w, w.ln_f_b.as_ref())?;
        be.matmul(&h, w.lm_head.as_ref().unwrap_or(&w.wte), None)
    }

    fn norm(&self, be: &B, x: &B::Tensor, w: &B::Tensor, b: Option<&B::Tensor>) -> Result<B::Tensor> {
        match (self.config.arch, b) {
            (Arch::Gpt2, Some(b)) => be.layer_norm(x, w, b, self.config.norm_eps),
            (Arch::Gpt2, None) => Err(Error::Unsupported("GPT-2 LayerNorm without a bias".into())),
            (Arch::Llama, _) => be.rms_norm(x, w, self.config.norm_eps),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn layer(&self, be: &B, batch: &Batch, pack: &Pack, l: usize, x: B::Tensor, args: &ForwardArgs<B>, sel: Sel,
        cap: &mut Captured<B::Tensor>, zeros: &mut Zeros<B>) -> Result<B::Tensor> {
        let lw = &self.weights.layers[l];
        let masks = sel.list();
        let abl = |site: Site| args.ablation.and_then(|a| a.get(site, l));

        // A block with no heads (or no neurons) left but a bias, as in a pruned model, adds its bias.
        let mut attn = if lw.n_heads == 0 {
            lw.bo.as_ref().map(|b| bias_rows(be, &x, b, zeros)).transpose()?
        } else {
            let h = self.norm(be, &pack.gather(be, &x)?, &lw.ln1_w, lw.ln1_b.as_ref())?;
            let (z, p) = self.attention(be, batch, pack, lw, &h, args.capture.pattern)?;
            let z = if masks.iter().any(|m| !m.heads_all_on(l)) {
                let rows: Vec<&[f32]> = masks.iter().map(|m| &m.heads[l][..]).collect();
                mix_cols(be, &z, &rows, self.config.head_dim, sel.row_map(), abl(Site::Z), zeros)?
            } else {
                z
            };
            if let Some(p) = p {
                cap.pattern[l] = Some(p);
            }
            keep(args.capture.z, &mut cap.z[l], z.clone());
            Some(pack.scatter(be, &be.matmul(&pack.gather(be, &z)?, &lw.wo, lw.bo.as_ref())?)?)
        };
        let m: Vec<f32> = masks.iter().map(|m| m.attn_block(l)).collect();
        attn = self.mix_block(be, attn, &m, sel.row_map(), abl(Site::AttnOut), zeros)?;
        let x = match &attn {
            Some(a) => be.add(&x, a)?,
            None => x,
        };
        if let Some(a) = attn {
            keep(args.capture.attn_out, &mut cap.attn_out[l], a);
        }

        let d_ff = be.shape(&lw.w_up)[0];
        let mut mlp = if d_ff == 0 {
            lw.b_down.as_ref().map(|b| bias_rows(be, &x, b, zeros)).transpose()?
        } else {
            // Packed rows from the norm to the down projection; the mix, which may index its
            // ablation values by position, runs on the padded rows.
            let h = self.norm(be, &pack.gather(be, &x)?, &lw.ln2_w, lw.ln2_b.as_ref())?;
            let up = be.matmul(&h, &lw.w_up, lw.b_up.as_ref())?;
            let hidden = match &lw.w_gate {
                Some(g) => be.silu_mul(&be.matmul(&h, g, None)?, &up)?,
                None => be.gelu_new(&up)?,
            };
            let hidden = if masks.iter().any(|m| !m.neurons_all_on(l)) {
                let rows: Vec<&[f32]> = masks.iter().map(|m| &m.neurons[l][..]).collect();
                let mixed = mix_cols(be, &pack.scatter(be, &hidden)?, &rows, 1, sel.row_map(), abl(Site::Hidden), zeros)?;
                keep(args.capture.hidden, &mut cap.hidden[l], mixed.clone());
                pack.gather(be, &mixed)?
            } else {
                if args.capture.hidden {
                    cap.hidden[l] = Some(pack.scatter(be, &hidden)?);
                }
                hidden
            };
            Some(pack.scatter(be, &be.matmul(&hidden, &lw.w_down, lw.b_down.as_ref())?)?)
        };
        let m: Vec<f32> = masks.iter().map(|m| m.mlp_block(l)).collect();
        mlp = self.mix_block(be, mlp, &m, sel.row_map(), abl(Site::MlpOut), zeros)?;
        let x = match &mlp {
            Some(m) => be.add(&x, m)?,
            None => x,
        };
        if let Some(m) = mlp {
            keep(args.capture.mlp_out, &mut cap.mlp_out[l], m);
        }
        Ok(x)
    }

    /// Causal self-attention up to z (before W_O) from the normed real rows `h`; returns z (padded
    /// rows), and the probabilities when asked (else the backend may fuse the two products and
    /// never form them).
    fn attention(&self, be: &B, batch: &Batch, pack: &Pack, lw: &LayerWeights<B::Tensor>, h: &B::Tensor, probs: bool)
        -> Result<(B::Tensor, Option<B::Tensor>)> {
        let c = &self.config;
        let s = AttnShape {
            batch: batch.size(),
            seq: batch.seq,
            n_heads: lw.n_heads,
            n_kv_heads: lw.n_kv_heads,
            head_dim: c.head_dim,
            scale: 1.0 / (c.head_dim as f32).sqrt(),
        };
        let mut q = pack.scatter(be, &be.matmul(h, &lw.wq, lw.bq.as_ref())?)?;
        let mut k = pack.scatter(be, &be.matmul(h, &lw.wk, lw.bk.as_ref())?)?;
        let v = pack.scatter(be, &be.matmul(h, &lw.wv, lw.bv.as_ref())?)?;
        if c.arch == Arch::Llama {
            q = be.rope(&q, batch.seq, lw.n_heads, c.head_dim, c.rope_theta)?;
            k = be.rope(&k, batch.seq, lw.n_kv_heads, c.head_dim, c.rope_theta)?;
        }
        if !probs {
            return Ok((be.attention(&q, &k, &v, s)?, None));
        }
        let p = be.attn_scores(&q, &k, s)?;
        Ok((be.attn_apply(&p, &v, s)?, Some(p)))
    }

    /// A block's output mixed with its ablation value; `m` holds one mask per group of rows, and
    /// all at 1 leaves the block untouched.
    fn mix_block(&self, be: &B, out: Option<B::Tensor>, m: &[f32], rows: RowMap, a: Option<&B::Tensor>,
        zeros: &mut Zeros<B>) -> Result<Option<B::Tensor>> {
        match out {
            Some(o) if m.iter().any(|&m| m != 1.0) => {
                let d = be.shape(&o)[1];
                let full: Vec<Vec<f32>> = m.iter().map(|&m| vec![m; d]).collect();
                let rows_ref: Vec<&[f32]> = full.iter().map(|r| &r[..]).collect();
                Ok(Some(mix_cols(be, &o, &rows_ref, 1, rows, a, zeros)?))
            }
            o => Ok(o),
        }
    }

    pub(crate) fn check_masks(&self, m: &Masks) -> Result<()> {
        let layers = &self.weights.layers;
        let bad = m.n_layers() != layers.len()
            || m.attn.len() != layers.len()
            || m.mlp.len() != layers.len()
            || layers.iter().zip(&m.heads).any(|(l, h)| h.len() != l.n_heads)
            || m.heads.len() != layers.len()
            || m.neurons.len() != layers.len();
        if bad {
            return Err(Error::Input(format!("masks do not fit the model's {} layers and their heads", layers.len())));
        }
        Ok(())
    }
}

/// Mixes `x` column-wise with masks given per group of `group` columns (a head's `head_dim`, or 1
/// per neuron); `mask` has one row per mask set, picked for each row of x by `rows`. Zero
/// ablation when `abl` is None.
#[allow(clippy::too_many_arguments)]
fn mix_cols<B: Backend>(be: &B, x: &B::Tensor, mask: &[&[f32]], group: usize, rows: RowMap, abl: Option<&B::Tensor>,
    zeros: &mut Zeros<B>) -> Result<B::Tensor> {
    let cols = mask[0].len() * group;
    let expanded: Vec<f32> = mask.iter().flat_map(|r| r.iter().flat_map(|&m| std::iter::repeat_n(m, group))).collect();
    let mask_t = be.upload(&HostTensor::new(vec![mask.len(), cols], expanded))?;
    let a = match abl {
        Some(a) => a.clone(),
        None => zeros.get(be, cols)?,
    };
    be.mix(x, &mask_t, rows, &a, RowMap::SHARED)
}

/// `bias` on every row of x's shape: a mix with mask 0 (exactly `bias`, for finite x).
fn bias_rows<B: Backend>(be: &B, x: &B::Tensor, bias: &B::Tensor, zeros: &mut Zeros<B>) -> Result<B::Tensor> {
    let d = be.shape(bias).iter().product();
    be.mix(x, &zeros.get(be, d)?, RowMap::SHARED, bias, RowMap::SHARED)
}

fn keep<T>(on: bool, slot: &mut Option<T>, t: T) {
    if on {
        *slot = Some(t);
    }
}
