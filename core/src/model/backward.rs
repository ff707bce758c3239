//! The masked forward that keeps what its backward needs, and that backward: the gradient of a
//! loss at the last positions with respect to every mask (weights frozen).
//!
//! `layer_forward` and `layer_backward` are one function read top-down and bottom-up, op by op,
//! with the same names: `x0 → h1 → q, k, v → p → z → zm → o → om → x1 → h2 → up (gate) → act →
//! actm → d → dm → x2`. Unlike the plain forward, every mix runs even at mask 1, so gradients at
//! m = 1 (attribution) come out too. Blocks and layers act as in `forward.rs`: a head's mask on
//! its z, a neuron's on the MLP hidden activation, a block's (times its layer's) on the block output.

use crate::backend::{AttnShape, Backend, RowMap};
use crate::mask::{Masks, Site};
use crate::model::ablation::DeviceAblation;
use crate::model::batch::Batch;
use crate::model::forward::Model;
use crate::model::pack::Pack;
use crate::model::zeros::Zeros;
use crate::model::{Arch, LayerWeights};
use crate::{Error, HostTensor, Result};

/// What one layer's backward reads from its forward. The matrix products run on the batch's
/// real rows (`Pack`): `x0` and `x1` are the norms' inputs at those rows, as are `up` and `gate`;
/// the rest is on every row.
struct LayerTape<T> {
    x0: T,
    h1: Option<T>,
    q: Option<T>,
    k: Option<T>,
    v: Option<T>,
    p: Option<T>,
    z: Option<T>,
    o: Option<T>,
    x1: T,
    h2: Option<T>,
    up: Option<T>,
    gate: Option<T>,
    act: Option<T>,
    d: Option<T>,
    /// Mask tensors as the mixes took them (per column: heads, neurons; per block), and the
    /// ablation values they mixed with.
    m_heads: Option<T>,
    m_attn: Option<T>,
    m_neurons: Option<T>,
    m_mlp: Option<T>,
    a_heads: Option<T>,
    a_attn: Option<T>,
    a_neurons: Option<T>,
    a_mlp: Option<T>,
}

/// A forward kept for its backward: the logits at the rows asked for (`[rows, vocab]`; each
/// prompt's last position by default) and every layer's tape.
pub struct Tape<B: Backend> {
    pub logits: B::Tensor,
    /// Rows of the batch the logits are at.
    rows: Vec<u32>,
    layers: Vec<LayerTape<B::Tensor>>,
    /// The residual stream after the last layer at those rows, before the final norm.
    last: B::Tensor,
    masks: Masks,
}

/// Masks on a backend as the mixes take them: `[1, width]`, each mask repeated over its columns.
fn mask_cols<B: Backend>(be: &B, masks: &[f32], group: usize) -> Result<B::Tensor> {
    let data: Vec<f32> = masks.iter().flat_map(|&m| std::iter::repeat_n(m, group)).collect();
    be.upload(&HostTensor::new(vec![1, data.len()], data))
}

/// Sums a `[1, n·group]` mask gradient over each group of columns (a head's `head_dim`, a block's width).
fn sum_groups(g: &HostTensor, group: usize) -> Vec<f32> {
    g.data.chunks(group.max(1)).map(|c| c.iter().map(|&v| v as f64).sum::<f64>() as f32).collect()
}

impl<B: Backend> Model<B> {
    /// The masked forward on `batch`, keeping what the backward needs; logits at each prompt's
    /// last position. Ablation values as in `forward` (None: zero).
    pub fn forward_tape(&self, be: &B, batch: &Batch, masks: &Masks, ablation: Option<&DeviceAblation<B>>)
        -> Result<Tape<B>> {
        self.forward_tape_at(be, batch, masks, ablation, batch.last_rows())
    }

    /// `forward_tape` with logits at the given rows of the batch (`b·seq + position`).
    pub fn forward_tape_at(&self, be: &B, batch: &Batch, masks: &Masks, ablation: Option<&DeviceAblation<B>>,
        rows: Vec<u32>) -> Result<Tape<B>> {
        self.whole_only("node-prune's masked forward")?;
        self.check_masks(masks)?;
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= batch.rows()) {
            return Err(Error::Input(format!("row {r} is past the batch's {} rows", batch.rows())));
        }
        if let Some(a) = ablation {
            a.check_rows(batch)?;
        }
        let w = &self.weights;
        let mut x = be.gather_rows(&w.wte, &batch.ids)?;
        if let Some(wpe) = &w.wpe {
            x = be.add(&x, &be.gather_rows(wpe, &batch.positions())?)?;
        }
        let mut zeros = Zeros::new();
        let pack = Pack::new(be, batch);
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in 0..w.layers.len() {
            let (x2, tape) = self.layer_forward(be, batch, &pack, l, x, masks, ablation, &mut zeros)?;
            layers.push(tape);
            x = x2;
        }
        let last = be.gather_rows(&x, &rows)?;
        let hf = self.norm_fwd(be, &last, &w.ln_f_w, w.ln_f_b.as_ref())?;
        let logits = be.matmul(&hf, w.lm_head.as_ref().unwrap_or(&w.wte), None)?;
        Ok(Tape { logits, rows, layers, last, masks: masks.clone() })
    }

    /// The gradient of a loss with respect to every mask, given `dlogits`, the loss's gradient
    /// with respect to `tape.logits` (`[rows, vocab]`). The result is shaped like the masks.
    pub async fn backward(&self, be: &B, batch: &Batch, tape: Tape<B>, dlogits: &HostTensor) -> Result<Masks> {
        let (b, vocab) = (tape.rows.len(), self.config.vocab);
        if dlogits.shape != [b, vocab] {
            return Err(Error::Input(format!("logit gradient {:?} for {b} rows of {vocab} logits", dlogits.shape)));
        }
        let dlogits = be.upload(dlogits)?;
        Ok(self.backward_on_device(be, batch, tape, &dlogits, &[]).await?.0)
    }

    /// `backward` from a logit gradient already on the device (a loss computed there), reading
    /// `also` back in the same read as the mask gradients: on wgpu a training step is then one
    /// submit, and nothing else leaves the device.
    pub async fn backward_on_device(&self, be: &B, batch: &Batch, tape: Tape<B>, dlogits: &B::Tensor, also: &[&B::Tensor])
        -> Result<(Masks, Vec<HostTensor>)> {
        let w = &self.weights;
        let (b, vocab) = (tape.rows.len(), self.config.vocab);
        if be.shape(dlogits) != [b, vocab] {
            return Err(Error::Input(format!("logit gradient {:?} for {b} rows of {vocab} logits", be.shape(dlogits))));
        }
        let Tape { layers, last, masks, rows, .. } = tape;
        let dhf = be.matmul_backward(dlogits, w.lm_head.as_ref().unwrap_or(&w.wte))?;
        let dlast = self.norm_bwd(be, &last, &w.ln_f_w, &dhf)?;
        let mut dx = be.scatter_rows(&dlast, &rows, batch.rows())?;
        let pack = Pack::new(be, batch);
        let mut grads: Vec<LayerGrads<B::Tensor>> = Vec::with_capacity(layers.len());
        for (l, t) in layers.iter().enumerate().rev() {
            let (dx0, g) = self.layer_backward(be, batch, &pack, l, t, dx)?;
            grads.push(g);
            dx = dx0;
        }
        grads.reverse();
        let mut out = Masks {
            heads: masks.heads.iter().map(|h| vec![0.0; h.len()]).collect(),
            attn: vec![0.0; masks.n_layers()],
            mlp: vec![0.0; masks.n_layers()],
            neurons: masks.neurons.iter().map(|n| vec![0.0; n.len()]).collect(),
            layers: vec![0.0; masks.n_layers()],
        };
        // Every layer's mask gradients come back in one read.
        let hd = self.config.head_dim;
        let mut all: Vec<&B::Tensor> =
            grads.iter().flat_map(|g| [&g.heads, &g.attn, &g.neurons, &g.mlp]).flatten().collect();
        all.extend_from_slice(also);
        let mut host = be.read_many(&all).await?.into_iter();
        for (l, g) in grads.iter().enumerate() {
            let mut next = |t: &Option<B::Tensor>| t.as_ref().map(|_| host.next().expect("one read per tensor"));
            let (gh, ga, gn, gm) = (next(&g.heads), next(&g.attn), next(&g.neurons), next(&g.mlp));
            if let Some(t) = gh {
                out.heads[l] = sum_groups(&t, hd);
            }
            if let Some(t) = gn {
                out.neurons[l] = t.data;
            }
            let block = |t: Option<HostTensor>| t.map_or(0.0, |t| sum_groups(&t, usize::MAX)[0]);
            // The block mix used attn·layer (mlp·layer): the product rule splits its gradient.
            let (ga, gm) = (block(ga), block(gm));
            out.attn[l] = ga * masks.layers[l];
            out.mlp[l] = gm * masks.layers[l];
            out.layers[l] = ga * masks.attn[l] + gm * masks.mlp[l];
        }
        Ok((out, host.collect()))
    }

    pub(crate) fn norm_fwd(&self, be: &B, x: &B::Tensor, w: &B::Tensor, b: Option<&B::Tensor>) -> Result<B::Tensor> {
        match (self.config.arch, b) {
            (Arch::Gpt2, Some(b)) => be.layer_norm(x, w, b, self.config.norm_eps),
            (Arch::Gpt2, None) => Err(Error::Unsupported("GPT-2 LayerNorm without a bias".into())),
            (Arch::Llama, _) => be.rms_norm(x, w, self.config.norm_eps),
        }
    }

    pub(crate) fn norm_bwd(&self, be: &B, x: &B::Tensor, w: &B::Tensor, dy: &B::Tensor) -> Result<B::Tensor> {
        match self.config.arch {
            Arch::Gpt2 => be.layer_norm_backward(x, w, dy, self.config.norm_eps),
            Arch::Llama => be.rms_norm_backward(x, w, dy, self.config.norm_eps),
        }
    }

    fn attn_shape(&self, batch: &Batch, lw: &LayerWeights<B::Tensor>) -> AttnShape {
        let hd = self.config.head_dim;
        AttnShape {
            batch: batch.size(),
            seq: batch.seq,
            n_heads: lw.n_heads,
            n_kv_heads: lw.n_kv_heads,
            head_dim: hd,
            scale: 1.0 / (hd as f32).sqrt(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn layer_forward(&self, be: &B, batch: &Batch, pack: &Pack, l: usize, x0: B::Tensor, masks: &Masks,
        abl: Option<&DeviceAblation<B>>, zeros: &mut Zeros<B>) -> Result<(B::Tensor, LayerTape<B::Tensor>)> {
        let c = &self.config;
        let lw = &self.weights.layers[l];
        let d_model = be.shape(&x0)[1];
        let value = |zeros: &mut Zeros<B>, site: Option<&B::Tensor>, width: usize| -> Result<B::Tensor> {
            site.cloned().map_or_else(|| zeros.get(be, width), Ok)
        };
        let mut t = LayerTape {
            x0: x0.clone(), h1: None, q: None, k: None, v: None, p: None, z: None, o: None, x1: x0.clone(), h2: None,
            up: None, gate: None, act: None, d: None, m_heads: None, m_attn: None, m_neurons: None, m_mlp: None,
            a_heads: None, a_attn: None, a_neurons: None, a_mlp: None,
        };

        // Attention: o = mix_heads(attention(norm1(x0)))·W_O + b_O; om = mix_block(o); x1 = x0 + om.
        let o = if lw.n_heads == 0 {
            lw.bo.as_ref().map(|b| be.mix(&x0, &zeros.get(be, d_model)?, RowMap::SHARED, b, RowMap::SHARED)).transpose()?
        } else {
            let s = self.attn_shape(batch, lw);
            let x0r = pack.gather(be, &x0)?;
            let h1 = self.norm_fwd(be, &x0r, &lw.ln1_w, lw.ln1_b.as_ref())?;
            let mut q = pack.scatter(be, &be.matmul(&h1, &lw.wq, lw.bq.as_ref())?)?;
            let mut k = pack.scatter(be, &be.matmul(&h1, &lw.wk, lw.bk.as_ref())?)?;
            let v = pack.scatter(be, &be.matmul(&h1, &lw.wv, lw.bv.as_ref())?)?;
            if c.arch == Arch::Llama {
                q = be.rope(&q, batch.seq, lw.n_heads, c.head_dim, c.rope_theta)?;
                k = be.rope(&k, batch.seq, lw.n_kv_heads, c.head_dim, c.rope_theta)?;
            }
            let p = be.attn_scores(&q, &k, s)?;
            let z = be.attn_apply(&p, &v, s)?;
            let m = mask_cols(be, &masks.heads[l], c.head_dim)?;
            let a = value(zeros, abl.and_then(|a| a.get(Site::Z, l)), lw.n_heads * c.head_dim)?;
            let zm = be.mix(&z, &m, RowMap::SHARED, &a, RowMap::SHARED)?;
            let o = pack.scatter(be, &be.matmul(&pack.gather(be, &zm)?, &lw.wo, lw.bo.as_ref())?)?;
            t.x0 = x0r;
            (t.h1, t.q, t.k, t.v, t.p, t.z) = (Some(h1), Some(q), Some(k), Some(v), Some(p), Some(z));
            (t.m_heads, t.a_heads) = (Some(m), Some(a));
            Some(o)
        };
        let x1 = match &o {
            Some(o) => {
                let m = mask_cols(be, &[masks.attn_block(l)], d_model)?;
                let a = value(zeros, abl.and_then(|a| a.get(Site::AttnOut, l)), d_model)?;
                let om = be.mix(o, &m, RowMap::SHARED, &a, RowMap::SHARED)?;
                (t.m_attn, t.a_attn) = (Some(m), Some(a));
                be.add(&x0, &om)?
            }
            None => x0,
        };
        t.o = o;
        t.x1 = x1.clone();

        // MLP: d = mix_neurons(act(norm2(x1)·W_in))·W_out + b_out; dm = mix_block(d); x2 = x1 + dm.
        let d_ff = be.shape(&lw.w_up)[0];
        let d = if d_ff == 0 {
            lw.b_down.as_ref().map(|b| be.mix(&x1, &zeros.get(be, d_model)?, RowMap::SHARED, b, RowMap::SHARED)).transpose()?
        } else {
            let x1r = pack.gather(be, &x1)?;
            let h2 = self.norm_fwd(be, &x1r, &lw.ln2_w, lw.ln2_b.as_ref())?;
            let up = be.matmul(&h2, &lw.w_up, lw.b_up.as_ref())?;
            let (act, gate) = match &lw.w_gate {
                Some(g) => {
                    let gate = be.matmul(&h2, g, None)?;
                    (be.silu_mul(&gate, &up)?, Some(gate))
                }
                None => (be.gelu_new(&up)?, None),
            };
            // The mix on every row (its ablation values may be per position).
            let act = pack.scatter(be, &act)?;
            let m = mask_cols(be, &masks.neurons[l], 1)?;
            let a = value(zeros, abl.and_then(|a| a.get(Site::Hidden, l)), d_ff)?;
            let actm = be.mix(&act, &m, RowMap::SHARED, &a, RowMap::SHARED)?;
            let d = pack.scatter(be, &be.matmul(&pack.gather(be, &actm)?, &lw.w_down, lw.b_down.as_ref())?)?;
            t.x1 = x1r;
            (t.h2, t.up, t.gate, t.act) = (Some(h2), Some(up), gate, Some(act));
            (t.m_neurons, t.a_neurons) = (Some(m), Some(a));
            Some(d)
        };
        let x2 = match &d {
            Some(d) => {
                let m = mask_cols(be, &[masks.mlp_block(l)], d_model)?;
                let a = value(zeros, abl.and_then(|a| a.get(Site::MlpOut, l)), d_model)?;
                let dm = be.mix(d, &m, RowMap::SHARED, &a, RowMap::SHARED)?;
                (t.m_mlp, t.a_mlp) = (Some(m), Some(a));
                be.add(&x1, &dm)?
            }
            None => x1,
        };
        t.d = d;
        Ok((x2, t))
    }

    /// `layer_forward` read bottom-up: from `dx2` to `dx0`, collecting the mask gradients.
    #[allow(clippy::too_many_arguments)]
    fn layer_backward(&self, be: &B, batch: &Batch, pack: &Pack, l: usize, t: &LayerTape<B::Tensor>, dx2: B::Tensor)
        -> Result<(B::Tensor, LayerGrads<B::Tensor>)> {
        let c = &self.config;
        let lw = &self.weights.layers[l];
        let mut g = LayerGrads { heads: None, attn: None, neurons: None, mlp: None };

        // MLP, bottom-up: x2 = x1 + dm.
        let mut dx1 = dx2.clone();
        if let (Some(d), Some(m), Some(a)) = (&t.d, &t.m_mlp, &t.a_mlp) {
            let (dd, gm) = be.mix_backward(d, m, RowMap::SHARED, a, RowMap::SHARED, &dx2)?;
            g.mlp = Some(gm);
            if let (Some(act), Some(m), Some(a), Some(up)) = (&t.act, &t.m_neurons, &t.a_neurons, &t.up) {
                let dactm = pack.scatter(be, &be.matmul_backward(&pack.gather(be, &dd)?, &lw.w_down)?)?;
                let (dact, gn) = be.mix_backward(act, m, RowMap::SHARED, a, RowMap::SHARED, &dactm)?;
                g.neurons = Some(gn);
                let dact = pack.gather(be, &dact)?;
                let dh2 = match (&t.gate, &lw.w_gate) {
                    (Some(gate), Some(wg)) => {
                        let (dgate, dup) = be.silu_mul_backward(gate, up, &dact)?;
                        be.add(&be.matmul_backward(&dup, &lw.w_up)?, &be.matmul_backward(&dgate, wg)?)?
                    }
                    _ => be.matmul_backward(&be.gelu_new_backward(up, &dact)?, &lw.w_up)?,
                };
                dx1 = be.add(&dx1, &pack.scatter(be, &self.norm_bwd(be, &t.x1, &lw.ln2_w, &dh2)?)?)?;
            }
        }

        // Attention, bottom-up: x1 = x0 + om.
        let mut dx0 = dx1.clone();
        if let (Some(o), Some(m), Some(a)) = (&t.o, &t.m_attn, &t.a_attn) {
            let (do_, ga) = be.mix_backward(o, m, RowMap::SHARED, a, RowMap::SHARED, &dx1)?;
            g.attn = Some(ga);
            if let (Some(z), Some(m), Some(a), Some(p), Some(q), Some(k), Some(v)) =
                (&t.z, &t.m_heads, &t.a_heads, &t.p, &t.q, &t.k, &t.v) {
                let s = self.attn_shape(batch, lw);
                let dzm = pack.scatter(be, &be.matmul_backward(&pack.gather(be, &do_)?, &lw.wo)?)?;
                let (dz, gh) = be.mix_backward(z, m, RowMap::SHARED, a, RowMap::SHARED, &dzm)?;
                g.heads = Some(gh);
                let (dp, dv) = be.attn_apply_backward(p, v, &dz, s)?;
                let (mut dq, mut dk) = be.attn_scores_backward(q, k, p, &dp, s)?;
                if c.arch == Arch::Llama {
                    dq = be.rope_backward(&dq, batch.seq, lw.n_heads, c.head_dim, c.rope_theta)?;
                    dk = be.rope_backward(&dk, batch.seq, lw.n_kv_heads, c.head_dim, c.rope_theta)?;
                }
                let (dq, dk, dv) = (pack.gather(be, &dq)?, pack.gather(be, &dk)?, pack.gather(be, &dv)?);
                let dh1 = be.add(
                    &be.add(&be.matmul_backward(&dq, &lw.wq)?, &be.matmul_backward(&dk, &lw.wk)?)?,
                    &be.matmul_backward(&dv, &lw.wv)?,
                )?;
                dx0 = be.add(&dx0, &pack.scatter(be, &self.norm_bwd(be, &t.x0, &lw.ln1_w, &dh1)?)?)?;
            }
        }
        Ok((dx0, g))
    }
}

/// One layer's mask gradients as the mixes produced them (`[1, width]`).
struct LayerGrads<T> {
    heads: Option<T>,
    attn: Option<T>,
    neurons: Option<T>,
    mlp: Option<T>,
}
