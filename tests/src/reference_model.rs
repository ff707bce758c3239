//! A plain f64 masked forward of one prompt, written from the definitions (no backend, no
//! batching): the reference that gradients are checked against by finite differences.
//!
//! Masks act as in carve's forward: a head's mask mixes its z with the ablation value, a neuron's
//! the MLP hidden activation, a block's (times its layer's) the block output after its bias.

use carve_core::circuit::Masks;
use carve_core::model::{Arch, ModelConfig, ModelWeights};
use carve_core::HostTensor;

/// Ablation values, one row per site (`None`: zero), as `means.safetensors` holds them.
#[derive(Clone, Default)]
pub struct RefAblation {
    pub z: Vec<Option<Vec<f64>>>,
    pub hidden: Vec<Option<Vec<f64>>>,
    pub attn_out: Vec<Option<Vec<f64>>>,
    pub mlp_out: Vec<Option<Vec<f64>>>,
}

/// Masks in f64, shaped as `Masks`.
#[derive(Clone, Debug)]
pub struct RefMasks {
    pub heads: Vec<Vec<f64>>,
    pub attn: Vec<f64>,
    pub mlp: Vec<f64>,
    pub neurons: Vec<Vec<f64>>,
    pub layers: Vec<f64>,
}

impl RefMasks {
    pub fn from(m: &Masks) -> RefMasks {
        let v = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<_>>();
        RefMasks {
            heads: m.heads.iter().map(|h| v(h)).collect(),
            attn: v(&m.attn),
            mlp: v(&m.mlp),
            neurons: m.neurons.iter().map(|n| v(n)).collect(),
            layers: v(&m.layers),
        }
    }
    /// Every mask entry, by kind name and index, for perturbing one at a time.
    pub fn entry(&mut self, kind: &str, l: usize, i: usize) -> &mut f64 {
        match kind {
            "heads" => &mut self.heads[l][i],
            "attn" => &mut self.attn[l],
            "mlp" => &mut self.mlp[l],
            "neurons" => &mut self.neurons[l][i],
            "layers" => &mut self.layers[l],
            _ => panic!("no mask kind {kind}"),
        }
    }
}

pub(crate) struct Mat {
    pub(crate) rows: usize,
    pub(crate) cols: usize,
    pub(crate) d: Vec<f64>,
}

pub(crate) fn mat(t: &HostTensor) -> Mat {
    let (rows, cols) = t.rows_cols();
    Mat { rows, cols, d: t.data.iter().map(|&v| v as f64).collect() }
}

pub(crate) fn vecf(t: &Option<HostTensor>) -> Option<Vec<f64>> {
    t.as_ref().map(|t| t.data.iter().map(|&v| v as f64).collect())
}

/// `x [T, K] · wᵀ (w [N, K]) + b`.
pub(crate) fn linear(x: &[Vec<f64>], w: &Mat, b: Option<&Vec<f64>>) -> Vec<Vec<f64>> {
    x.iter()
        .map(|r| {
            (0..w.rows)
                .map(|n| r.iter().zip(&w.d[n * w.cols..(n + 1) * w.cols]).map(|(a, b)| a * b).sum::<f64>() + b.map_or(0.0, |b| b[n]))
                .collect()
        })
        .collect()
}

pub(crate) fn norm(cfg: &ModelConfig, x: &[f64], w: &[f64], b: Option<&Vec<f64>>) -> Vec<f64> {
    let n = x.len() as f64;
    let eps = cfg.norm_eps as f64;
    match cfg.arch {
        Arch::Gpt2 => {
            let mean = x.iter().sum::<f64>() / n;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            let r = 1.0 / (var + eps).sqrt();
            x.iter().enumerate().map(|(j, v)| (v - mean) * r * w[j] + b.unwrap()[j]).collect()
        }
        Arch::Llama => {
            let r = 1.0 / (x.iter().map(|v| v * v).sum::<f64>() / n + eps).sqrt();
            x.iter().enumerate().map(|(j, v)| v * r * w[j]).collect()
        }
    }
}

pub(crate) fn rope(cfg: &ModelConfig, x: &mut [f64], pos: usize, heads: usize) {
    let hd = cfg.head_dim;
    let half = hd / 2;
    for h in 0..heads {
        let v = &mut x[h * hd..(h + 1) * hd];
        for i in 0..half {
            let inv = 1.0 / (cfg.rope_theta as f64).powf((2 * i) as f64 / hd as f64);
            let (s, c) = (pos as f64 * inv).sin_cos();
            let (a, b) = (v[i], v[i + half]);
            v[i] = a * c - b * s;
            v[i + half] = b * c + a * s;
        }
    }
}

pub(crate) fn gelu_new(x: f64) -> f64 {
    0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
}

/// Last-position logits of one prompt under masks and ablation values, in f64.
pub fn last_logits(cfg: &ModelConfig, w: &ModelWeights<HostTensor>, ids: &[u32], m: &RefMasks, a: &RefAblation)
    -> Vec<f64> {
    let t = ids.len();
    let wte = mat(&w.wte);
    let mut x: Vec<Vec<f64>> = ids.iter().map(|&i| wte.d[i as usize * wte.cols..(i as usize + 1) * wte.cols].to_vec()).collect();
    if let Some(wpe) = &w.wpe {
        let wpe = mat(wpe);
        for (p, r) in x.iter_mut().enumerate() {
            for (v, e) in r.iter_mut().zip(&wpe.d[p * wpe.cols..]) {
                *v += e;
            }
        }
    }
    let hd = cfg.head_dim;
    let mix = |v: f64, m: f64, a: Option<&Vec<f64>>, j: usize| m * v + (1.0 - m) * a.map_or(0.0, |a| a[j]);
    for (l, lw) in w.layers.iter().enumerate() {
        let v1 = |t: &Option<HostTensor>| vecf(t);
        let ln1w = mat(&lw.ln1_w).d;
        let h1: Vec<Vec<f64>> = x.iter().map(|r| norm(cfg, r, &ln1w, v1(&lw.ln1_b).as_ref())).collect();
        let mut q = linear(&h1, &mat(&lw.wq), v1(&lw.bq).as_ref());
        let mut k = linear(&h1, &mat(&lw.wk), v1(&lw.bk).as_ref());
        let v = linear(&h1, &mat(&lw.wv), v1(&lw.bv).as_ref());
        if cfg.arch == Arch::Llama {
            for p in 0..t {
                rope(cfg, &mut q[p], p, lw.n_heads);
                rope(cfg, &mut k[p], p, lw.n_kv_heads);
            }
        }
        let g = lw.n_heads / lw.n_kv_heads.max(1);
        let mut z = vec![vec![0.0; lw.n_heads * hd]; t];
        for h in 0..lw.n_heads {
            let kh = h / g;
            for i in 0..t {
                let s: Vec<f64> = (0..=i)
                    .map(|j| (0..hd).map(|e| q[i][h * hd + e] * k[j][kh * hd + e]).sum::<f64>() / (hd as f64).sqrt())
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let ex: Vec<f64> = s.iter().map(|v| (v - mx).exp()).collect();
                let sum: f64 = ex.iter().sum();
                for j in 0..=i {
                    for e in 0..hd {
                        z[i][h * hd + e] += ex[j] / sum * v[j][kh * hd + e];
                    }
                }
            }
        }
        let az = a.z.get(l).cloned().flatten();
        for r in z.iter_mut() {
            for (j, v) in r.iter_mut().enumerate() {
                *v = mix(*v, m.heads[l][j / hd], az.as_ref(), j);
            }
        }
        let mut o = linear(&z, &mat(&lw.wo), v1(&lw.bo).as_ref());
        let aa = a.attn_out.get(l).cloned().flatten();
        let mb = m.attn[l] * m.layers[l];
        for (xr, orow) in x.iter_mut().zip(o.iter_mut()) {
            for (j, (xv, ov)) in xr.iter_mut().zip(orow.iter_mut()).enumerate() {
                *xv += mix(*ov, mb, aa.as_ref(), j);
            }
        }
        let ln2w = mat(&lw.ln2_w).d;
        let h2: Vec<Vec<f64>> = x.iter().map(|r| norm(cfg, r, &ln2w, v1(&lw.ln2_b).as_ref())).collect();
        let up = linear(&h2, &mat(&lw.w_up), v1(&lw.b_up).as_ref());
        let mut act: Vec<Vec<f64>> = match &lw.w_gate {
            Some(wg) => {
                let gate = linear(&h2, &mat(wg), None);
                gate.iter().zip(&up).map(|(g, u)| g.iter().zip(u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect()).collect()
            }
            None => up.iter().map(|r| r.iter().map(|&v| gelu_new(v)).collect()).collect(),
        };
        let ah = a.hidden.get(l).cloned().flatten();
        for r in act.iter_mut() {
            for (j, v) in r.iter_mut().enumerate() {
                *v = mix(*v, m.neurons[l][j], ah.as_ref(), j);
            }
        }
        let mut dn = linear(&act, &mat(&lw.w_down), v1(&lw.b_down).as_ref());
        let am = a.mlp_out.get(l).cloned().flatten();
        let mb = m.mlp[l] * m.layers[l];
        for (xr, drow) in x.iter_mut().zip(dn.iter_mut()) {
            for (j, (xv, dv)) in xr.iter_mut().zip(drow.iter_mut()).enumerate() {
                *xv += mix(*dv, mb, am.as_ref(), j);
            }
        }
    }
    let lnf = mat(&w.ln_f_w).d;
    let hf = norm(cfg, &x[t - 1], &lnf, vecf(&w.ln_f_b).as_ref());
    let un = mat(w.lm_head.as_ref().unwrap_or(&w.wte));
    (0..un.rows).map(|n| hf.iter().zip(&un.d[n * un.cols..(n + 1) * un.cols]).map(|(a, b)| a * b).sum()).collect()
}

/// KL(softmax(p) ‖ softmax(q)) in f64.
pub fn kl(p: &[f64], q: &[f64]) -> f64 {
    let lse = |x: &[f64]| {
        let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        m + x.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
    };
    let (lp, lq) = (lse(p), lse(q));
    p.iter().zip(q).map(|(a, b)| (a - lp).exp() * ((a - lp) - (b - lq))).sum()
}

/// Ablation values from carve's own (one row per site), in f64.
pub fn ref_ablation(v: &carve_core::circuit::AblationValues) -> RefAblation {
    let f = |s: &Vec<Option<HostTensor>>| s.iter().map(vecf).collect();
    RefAblation { z: f(&v.z), hidden: f(&v.hidden), attn_out: f(&v.attn_out), mlp_out: f(&v.mlp_out) }
}
