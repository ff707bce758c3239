//! Planted circuits: small models built in code whose circuit is known by construction. ablate with
//! zero ablation must keep exactly the planted heads and remove everything else.
//!
//! - GPT-2 (LayerNorm): a previous-token head (L0H0) feeding an induction head (L1H0) that
//!   predicts the token after the earlier occurrence of the last token. Irrelevant by
//!   construction: heads with W_O = 0, heads whose V is 0, and heads and MLPs that write only
//!   along the all-ones direction, which every LayerNorm removes (its mean subtraction).
//! - Llama (RMSNorm, RoPE, GQA 4 heads on 2 KV heads): a mover head (L0H2) that copies the one
//!   "class A" token to the final marker position, and a reader head (L1H1) that writes what was
//!   moved to the unembedded subspace. Irrelevant: W_O = 0 (L0H3 shares its KV head with the
//!   mover, L1H0 with the reader), V = 0 (the other KV heads), MLPs with W_down = 0.
//! - GPT-2: Tracr's frac_prevs compiled by hand (edge-prune only): MLP0 maps "x" to an is-x
//!   feature, L1H0 averages it over the positions so far, the unembedding says whether that
//!   fraction is above ½. Every other head and MLP writes exactly 0.
//!
//! Feature subspaces are written with ±1 entries so that each signal is read by one weight; QK
//! signals sit in RoPE's slowest pair of dimensions (7, 15), which turns by < 0.01 rad over 32
//! positions.

use carve_core::backend::Backend;
use carve_core::circuit::{Ablation, Component};
use carve_core::extract::*;
use carve_core::metrics::argmax;
use carve_core::model::{Arch, Batch, ForwardArgs, LayerWeights, LogitsAt, Model, ModelConfig, ModelWeights};
use carve_core::prune::prune;
use carve_core::HostTensor;
use carve_tests::*;

/// A deterministic generator: weights of irrelevant parts and the prompts.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn weight(&mut self) -> f32 {
        (self.next() % 2001) as f32 / 1000.0 - 1.0
    }
    fn matrix(&mut self, r: usize, c: usize) -> HostTensor {
        HostTensor::new(vec![r, c], (0..r * c).map(|_| 0.3 * self.weight()).collect())
    }
}

fn zeros(r: usize, c: usize) -> HostTensor {
    HostTensor::zeros(vec![r, c])
}
fn ones(n: usize) -> HostTensor {
    HostTensor::new(vec![n], vec![1.0; n])
}
fn set(t: &mut HostTensor, r: usize, c: usize, v: f32) {
    let cols = t.shape[1];
    t.data[r * cols + c] = v;
}
/// A GPT-2 of 4 heads a layer from its parts (vocabulary and width from `wte`, context from
/// `wpe`); the final LayerNorm is the identity.
fn gpt2_model(layers: Vec<LayerWeights<HostTensor>>, wte: HostTensor, wpe: HostTensor, lm_head: HostTensor, head_dim: usize,
    d_ff: usize) -> (ModelConfig, ModelWeights<HostTensor>) {
    let (vocab, d) = (wte.shape[0], wte.shape[1]);
    let cfg = ModelConfig {
        arch: Arch::Gpt2, n_layers: layers.len(), n_heads: 4, n_kv_heads: 4, head_dim, d_model: d, d_ff, vocab,
        n_ctx: wpe.shape[0], norm_eps: 1e-5, rope_theta: 10000.0, tied_embeddings: false, bos_token_id: None, eos_token_id: None,
    };
    let ln_f_b = Some(HostTensor::zeros(vec![d]));
    (cfg, ModelWeights { wte, wpe: Some(wpe), layers, ln_f_w: ones(d), ln_f_b, lm_head: Some(lm_head) })
}

/// Asserts that `model` answers every prompt of `data` (the construction works).
fn answers_all<B: Backend>(be: &B, what: &str, model: &Model<B>, data: &[(Vec<u32>, u32)]) {
    let prompts: Vec<Vec<u32>> = data.iter().map(|d| d.0.clone()).collect();
    let batch = Batch::new(&prompts, &model.config).unwrap();
    let args = ForwardArgs { logits: LogitsAt::Last, ..ForwardArgs::default() };
    let logits = pollster::block_on(be.read(model.forward(be, &batch, &args).unwrap().logits.as_ref().unwrap())).unwrap();
    for (i, (p, answer)) in data.iter().enumerate() {
        assert_eq!(argmax(logits.row(i)) as u32, *answer, "{what}: the planted model gets prompt {p:?} wrong");
    }
}

// ---------- GPT-2: previous-token head → induction head ----------
const GV: usize = 20; // vocabulary
const GCTX: usize = 16;
const GF: usize = 3 * GV + GCTX; // features: token, position, previous token, output
const GD: usize = 2 * GF; // each feature f stored as +x at f and −x at GF + f: the mean stays 0
const GHD: usize = GD / 4;
const GFF: usize = 32;
const fn tok(t: usize) -> usize { t }
const fn pos(p: usize) -> usize { GV + p }
const fn prev(t: usize) -> usize { GV + GCTX + t }
const fn out(t: usize) -> usize { 2 * GV + GCTX + t }

/// Writes `v` to feature `f` of column `c` of a `[GD, *]` matrix, mirrored.
fn write_feature(w: &mut HostTensor, f: usize, c: usize, v: f32) {
    set(w, f, c, v);
    set(w, GF + f, c, -v);
}

fn gpt2_layer(g: &mut Lcg) -> LayerWeights<HostTensor> {
    let n = 4 * GHD;
    LayerWeights {
        n_heads: 4, n_kv_heads: 4,
        ln1_w: ones(GD), ln1_b: Some(HostTensor::zeros(vec![GD])),
        wq: g.matrix(n, GD), bq: None, wk: g.matrix(n, GD), bk: None, wv: g.matrix(n, GD), bv: None,
        wo: zeros(GD, n), bo: None,
        ln2_w: ones(GD), ln2_b: Some(HostTensor::zeros(vec![GD])),
        w_gate: None, w_up: g.matrix(GFF, GD), b_up: Some(HostTensor::new(vec![GFF], (0..GFF).map(|_| g.weight()).collect())),
        w_down: zeros(GD, GFF), b_down: None,
    }
}

/// Head `h` writes only along the all-ones direction.
fn head_along_ones(l: &mut LayerWeights<HostTensor>, h: usize, g: &mut Lcg) {
    for k in 0..GHD {
        let w = g.weight();
        (0..GD).for_each(|r| set(&mut l.wo, r, h * GHD + k, w));
    }
}

/// Clears head `h`'s rows of Q, K and V, for a planted head to fill in.
fn clear_head(l: &mut LayerWeights<HostTensor>, h: usize) {
    for w in [&mut l.wq, &mut l.wk, &mut l.wv] {
        w.data[h * GHD * GD..(h + 1) * GHD * GD].fill(0.0);
    }
}

/// Head `h` reads nothing (V = 0) but writes through a random W_O.
fn head_without_v(l: &mut LayerWeights<HostTensor>, h: usize, g: &mut Lcg) {
    l.wv.data[h * GHD * GD..(h + 1) * GHD * GD].fill(0.0);
    (0..GD).for_each(|r| (h * GHD..(h + 1) * GHD).for_each(|k| set(&mut l.wo, r, k, 0.3 * g.weight())));
}

fn gpt2_planted() -> (ModelConfig, ModelWeights<HostTensor>) {
    let mut g = Lcg(7);
    let (s, c, u) = (4.0, 0.16, 3.0);
    let mut l0 = gpt2_layer(&mut g);
    // L0H0, previous token: the query at position p looks for the key of position p − 1 and
    // copies that token into the previous-token subspace.
    clear_head(&mut l0, 0);
    (1..GCTX).for_each(|p| set(&mut l0.wq, p - 1, pos(p), s));
    (0..GCTX).for_each(|p| set(&mut l0.wk, p, pos(p), 1.0));
    (0..GV).for_each(|t| {
        set(&mut l0.wv, t, tok(t), 1.0);
        write_feature(&mut l0.wo, prev(t), t, c);
    });
    // L0H1: W_O = 0. L0H2: along ones. L0H3: V = 0. MLP0: along ones, weights and bias.
    head_along_ones(&mut l0, 2, &mut g);
    head_without_v(&mut l0, 3, &mut g);
    for n in 0..GFF {
        let w = g.weight();
        (0..GD).for_each(|r| set(&mut l0.w_down, r, n, w));
    }
    l0.b_down = Some(HostTensor::new(vec![GD], vec![0.3; GD]));

    let mut l1 = gpt2_layer(&mut g);
    // L1H0, induction: the current token looks for the position whose previous token it is and
    // copies that position's token to the output subspace.
    clear_head(&mut l1, 0);
    (0..GV).for_each(|t| {
        set(&mut l1.wq, t, tok(t), s);
        set(&mut l1.wk, t, prev(t), 1.0);
        set(&mut l1.wv, t, tok(t), 1.0);
        write_feature(&mut l1.wo, out(t), t, c);
    });
    // L1H1: along ones. L1H2: W_O = 0. L1H3: V = 0. MLP1: W_down = 0, a bias along ones.
    head_along_ones(&mut l1, 1, &mut g);
    head_without_v(&mut l1, 3, &mut g);
    l1.b_down = Some(HostTensor::new(vec![GD], vec![-0.2; GD]));

    let mut wte = zeros(GV, GD);
    (0..GV).for_each(|t| { set(&mut wte, t, tok(t), 1.0); set(&mut wte, t, GF + tok(t), -1.0) });
    let mut wpe = zeros(GCTX, GD);
    (0..GCTX).for_each(|p| { set(&mut wpe, p, pos(p), 1.0); set(&mut wpe, p, GF + pos(p), -1.0) });
    let mut lm_head = zeros(GV, GD);
    (0..GV).for_each(|t| set(&mut lm_head, t, out(t), u));
    gpt2_model(vec![l0, l1], wte, wpe, lm_head, GHD, GFF)
}

/// Distinct random tokens, then an earlier one again: the answer is the token that followed it.
/// Not the first one: position 0 has no previous token, so its previous-token head copies its own
/// token and would match too.
fn induction_prompts(n: usize, g: &mut Lcg) -> Vec<(Vec<u32>, u32)> {
    (0..n)
        .map(|_| {
            let len = 5 + g.below(8);
            let mut toks: Vec<u32> = Vec::new();
            while toks.len() < len {
                let t = g.below(GV) as u32;
                if !toks.contains(&t) {
                    toks.push(t);
                }
            }
            let j = 1 + g.below(len - 2);
            let answer = toks[j + 1];
            toks.push(toks[j]);
            (toks, answer)
        })
        .collect()
}

// ---------- Llama: mover head → reader head, with GQA ----------
const LV: usize = 16; // tokens 0..8: class A; 8..15: fillers; 15: the marker
const MARKER: u32 = 15;
const LD: usize = 64;
const LHD: usize = 16;
const LFF: usize = 24;
const CLASS: usize = 16;
const MARK: usize = 17;
const fn moved(t: usize) -> usize { 18 + t }
const fn said(t: usize) -> usize { 34 + t }
const KONST: usize = 50; // a constant feature on every token keeps the RMS from collapsing
/// RoPE's slowest pair is (7, 15): QK signals go in dimension 7 of a head.
const SLOW: usize = 7;

fn llama_planted() -> (ModelConfig, ModelWeights<HostTensor>) {
    let mut g = Lcg(11);
    let (s, c, u) = (3.0, 0.25, 4.0);
    let layer = |g: &mut Lcg| LayerWeights {
        n_heads: 4, n_kv_heads: 2,
        ln1_w: ones(LD), ln1_b: None,
        wq: g.matrix(4 * LHD, LD), bq: None, wk: g.matrix(2 * LHD, LD), bk: None, wv: g.matrix(2 * LHD, LD), bv: None,
        wo: g.matrix(LD, 4 * LHD), bo: None,
        ln2_w: ones(LD), ln2_b: None,
        w_gate: Some(g.matrix(LFF, LD)), w_up: g.matrix(LFF, LD), b_up: None, w_down: zeros(LD, LFF), b_down: None,
    };
    let clear = |w: &mut HostTensor, head: usize| w.data[head * LHD * LD..(head + 1) * LHD * LD].fill(0.0);
    let clear_o = |w: &mut HostTensor, head: usize| (0..LD).for_each(|r| (head * LHD..(head + 1) * LHD).for_each(|k| set(w, r, k, 0.0)));
    // Layer 0: KV head 0 has V = 0 (heads 0, 1 irrelevant); head 2 moves the class-A token to the
    // marker; head 3 shares KV head 1 but has W_O = 0.
    let mut l0 = layer(&mut g);
    clear(&mut l0.wv, 0);
    for w in [&mut l0.wk, &mut l0.wv] {
        clear(w, 1);
    }
    clear(&mut l0.wq, 2);
    clear_o(&mut l0.wo, 2);
    clear_o(&mut l0.wo, 3);
    set(&mut l0.wq, 2 * LHD + SLOW, MARK, s);
    set(&mut l0.wk, LHD + SLOW, CLASS, 1.0);
    (0..LV).for_each(|t| {
        set(&mut l0.wv, LHD + t, t, 1.0);
        set(&mut l0.wo, moved(t), 2 * LHD + t, c);
    });
    // Layer 1: KV head 1 has V = 0 (heads 2, 3 irrelevant); head 1 reads what was moved, at the
    // marker attending to itself; head 0 shares KV head 0 but has W_O = 0.
    let mut l1 = layer(&mut g);
    clear(&mut l1.wv, 1);
    for w in [&mut l1.wk, &mut l1.wv] {
        clear(w, 0);
    }
    clear(&mut l1.wq, 1);
    clear_o(&mut l1.wo, 0);
    clear_o(&mut l1.wo, 1);
    set(&mut l1.wq, LHD + SLOW, MARK, s);
    set(&mut l1.wk, SLOW, MARK, 1.0);
    (0..LV).for_each(|t| {
        set(&mut l1.wv, t, moved(t), 1.0);
        set(&mut l1.wo, said(t), LHD + t, c);
    });
    let mut wte = zeros(LV, LD);
    for t in 0..LV {
        set(&mut wte, t, t, 1.0);
        set(&mut wte, t, KONST, 1.0);
        if t < 8 {
            set(&mut wte, t, CLASS, 1.0);
        }
    }
    set(&mut wte, MARKER as usize, MARK, 1.0);
    let mut lm_head = zeros(LV, LD);
    (0..LV).for_each(|t| set(&mut lm_head, t, said(t), u));
    let cfg = ModelConfig {
        arch: Arch::Llama, n_layers: 2, n_heads: 4, n_kv_heads: 2, head_dim: LHD, d_model: LD, d_ff: LFF, vocab: LV,
        n_ctx: 32, norm_eps: 1e-5, rope_theta: 10000.0, tied_embeddings: false, bos_token_id: None, eos_token_id: None,
    };
    (cfg, ModelWeights { wte, wpe: None, layers: vec![l0, l1], ln_f_w: ones(LD), ln_f_b: None, lm_head: Some(lm_head) })
}

/// Fillers with one class-A token somewhere, then the marker: the answer is the class-A token.
fn copy_prompts(n: usize, g: &mut Lcg) -> Vec<(Vec<u32>, u32)> {
    (0..n)
        .map(|_| {
            let len = 3 + g.below(20);
            let mut toks: Vec<u32> = (0..len).map(|_| 8 + g.below(7) as u32).collect();
            let answer = g.below(8) as u32;
            toks[g.below(len)] = answer;
            toks.push(MARKER);
            (toks, answer)
        })
        .collect()
}

// ---------- GPT-2: Tracr's frac_prevs, compiled by hand ----------
// The fraction of the tokens so far that are "x" (Tracr's `make_frac_prevs`, one of the two
// programs edge pruning was shown to recover): MLP0 maps the token to a numeric is-x feature
// (Tracr's numerical Map), L1H0 averages it over every position up to the current one (Aggregate
// of Select(indices, indices, LEQ); here W_Q = W_K = 0, so causal attention is uniform), and the
// unembedding says whether the fraction is above ½. Tracr's models have no LayerNorm; here a large
// constant feature in the embedding keeps every LayerNorm's scale nearly fixed (cutting the
// position out of a reader moves it by under 1%), so that the program's edges are the ones that
// matter and the norms couple others in only weakly.
const FV: usize = 8; // tokens: 0 is "x", 1..6 the others, 6 and 7 the answers "above" and "below"
const FX: u32 = 0;
const FABOVE: u32 = 6;
const FBELOW: u32 = 7;
const FCTX: usize = 16;
const FF: usize = FV + FCTX + 3; // features: token, position, one, is-x, fraction
const FD: usize = 2 * FF; // mirrored as in the induction model: every LayerNorm's mean stays 0
const FHD: usize = 4;
const FFF: usize = 8;
const FONE: usize = FV + FCTX;
const FISX: usize = FONE + 1;
const FFRAC: usize = FONE + 2;

fn write_f(w: &mut HostTensor, f: usize, c: usize, v: f32) {
    set(w, f, c, v);
    set(w, FF + f, c, -v);
}

/// Every writer but the embeddings, MLP0 and L1H0 outputs exactly 0 (W_O = 0, W_down = 0): the
/// other heads and L1's MLP compute from random weights and write nothing.
fn frac_prevs_planted() -> (ModelConfig, ModelWeights<HostTensor>) {
    let mut g = Lcg(29);
    let layer = |g: &mut Lcg| LayerWeights {
        n_heads: 4, n_kv_heads: 4,
        ln1_w: ones(FD), ln1_b: Some(HostTensor::zeros(vec![FD])),
        wq: g.matrix(4 * FHD, FD), bq: None, wk: g.matrix(4 * FHD, FD), bk: None, wv: g.matrix(4 * FHD, FD), bv: None,
        wo: zeros(FD, 4 * FHD), bo: None,
        ln2_w: ones(FD), ln2_b: Some(HostTensor::zeros(vec![FD])),
        w_gate: None, w_up: g.matrix(FFF, FD), b_up: Some(HostTensor::new(vec![FFF], (0..FFF).map(|_| g.weight()).collect())),
        w_down: zeros(FD, FFF), b_down: None,
    };
    // The embedding writes the token and the position (±1 each) and the constant one (±B).
    // LayerNorm divides a residual of those by σ0; with is-x added, by σ1.
    let big = 8.0f32;
    let sigma = |entries: f32| ((2.0 * entries + 2.0 * big * big) / FD as f32).sqrt();
    let (sigma0, sigma1) = (sigma(2.0), sigma(3.0));
    // MLP0, neuron 0: GELU(6) ≈ 6 on "x", GELU(0) = 0 on any other token; written as is-x = 1.
    let mut l0 = layer(&mut g);
    l0.w_up.data[..FD].fill(0.0);
    set(&mut l0.w_up, 0, FX as usize, 6.0 * sigma0);
    l0.b_up.as_mut().unwrap().data[0] = 0.0;
    write_f(&mut l0.w_down, FISX, 0, 1.0 / 6.0);
    // L1H0: value is-x (1 / σ1 on an "x" after LayerNorm), uniform attention, written as the
    // fraction.
    let mut l1 = layer(&mut g);
    for w in [&mut l1.wq, &mut l1.wk, &mut l1.wv] {
        w.data[..FHD * FD].fill(0.0);
    }
    set(&mut l1.wv, 0, FISX, 1.0);
    write_f(&mut l1.wo, FFRAC, 0, sigma1);
    // Rows of wte, wpe and the unembedding are tokens or positions, columns features.
    let row = |m: &mut HostTensor, r: usize, f: usize, v: f32| {
        set(m, r, f, v);
        set(m, r, FF + f, -v);
    };
    let mut wte = zeros(FV, FD);
    (0..FV).for_each(|t| {
        row(&mut wte, t, t, 1.0);
        row(&mut wte, t, FONE, big);
    });
    let mut wpe = zeros(FCTX, FD);
    (0..FCTX).for_each(|p| row(&mut wpe, p, FV + p, 1.0));
    // "above" − "below" = 2u·(fraction − ½) / σ, both read through the final LayerNorm's one σ.
    let u = 8.0;
    let mut lm_head = zeros(FV, FD);
    for (t, sign) in [(FABOVE as usize, 1.0), (FBELOW as usize, -1.0)] {
        row(&mut lm_head, t, FFRAC, sign * u / 2.0);
        row(&mut lm_head, t, FONE, -sign * u / (4.0 * big));
    }
    gpt2_model(vec![l0, l1], wte, wpe, lm_head, FHD, FFF)
}

/// Tokens 0..6 with "x" about half of them; the answer says whether more than half are "x" (prompts
/// with exactly half are skipped).
fn frac_prevs_prompts(n: usize, g: &mut Lcg) -> Vec<(Vec<u32>, u32)> {
    let mut out = Vec::new();
    while out.len() < n {
        let len = 3 + g.below(10);
        let toks: Vec<u32> = (0..len).map(|_| if g.below(2) == 0 { FX } else { 1 + g.below(5) as u32 }).collect();
        let x = toks.iter().filter(|&&t| t == FX).count();
        if 2 * x != len {
            out.push((toks, if 2 * x > len { FABOVE } else { FBELOW }));
        }
    }
    out
}

// ---------- the checks ----------

/// The full model answers every prompt (the construction works), then ablate keeps exactly the
/// planted heads, whatever the implementation and whether MLPs are candidates; the circuit's KL is
/// ~0 (everything removed was irrelevant), and it prunes to one head per layer and no MLP.
fn recovers<B: Backend>(be: &B, what: &str, (cfg, w): (ModelConfig, ModelWeights<HostTensor>), data: Vec<(Vec<u32>, u32)>, planted: [Component; 2]) {
    let model = Model::upload(be, cfg.clone(), &w).unwrap();
    answers_all(be, what, &model, &data);
    let prompts: Vec<Vec<u32>> = data.iter().map(|d| d.0.clone()).collect();
    let d = AblateData { discovery: prompts, ..AblateData::default() };
    for mlps in [false, true] {
        for implementation in [Implementation::Fast, Implementation::Reference] {
            let o = AblateOptions { alpha: 0.01, ablation: AblationKind::Zero, mlps, neurons: false };
            let run = RunOptions { implementation, ..RunOptions::default() };
            let r = pollster::block_on(ablate(&model, be, &d, &o, &run, None, &mut ())).unwrap();
            let kept_heads: Vec<Component> = r.kept.iter().copied().filter(|c| matches!(c, Component::Head { .. })).collect();
            assert_eq!(kept_heads, planted, "{what} mlps={mlps} {implementation:?}");
            let kept_mlps = r.kept.len() - kept_heads.len();
            assert_eq!(kept_mlps, if mlps { 0 } else { 2 }, "{what} mlps={mlps}: MLPs kept {:?}", r.kept);
            assert_eq!(r.removed.len(), 6 + if mlps { 2 } else { 0 });
            assert!(r.state.kl_cur() < 1e-6, "{what}: the circuit's KL {} should be ~0", r.state.kl_cur());
            // Each planted head is needed: its removal was rejected with a large KL.
            for c in planted {
                let dec = r.state.decisions.iter().find(|d| d.component == c).unwrap();
                assert!(!dec.accepted && dec.kl > 0.5, "{what}: {c} decision {dec:?}");
            }
            if mlps {
                let p = prune(&cfg, &w, &r.masks, &Ablation::Zero).unwrap();
                assert!(p.layers.iter().all(|l| l.n_heads == 1 && l.n_kv_heads == 1 && l.d_ff == 0), "{what}: {:?}", p.layers);
            }
        }
    }
}

#[test]
fn induction_gpt2_cpu() {
    recovers(&cpu(), "GPT-2 induction", gpt2_planted(), induction_prompts(12, &mut Lcg(3)), [Component::Head { layer: 0, head: 0 }, Component::Head { layer: 1, head: 0 }]);
}
#[test]
fn induction_gpt2_gpu() {
    recovers(gpu(), "GPT-2 induction", gpt2_planted(), induction_prompts(12, &mut Lcg(3)), [Component::Head { layer: 0, head: 0 }, Component::Head { layer: 1, head: 0 }]);
}
#[test]
fn copy_llama_cpu() {
    recovers(&cpu(), "Llama copy", llama_planted(), copy_prompts(12, &mut Lcg(5)), [Component::Head { layer: 0, head: 2 }, Component::Head { layer: 1, head: 1 }]);
}
#[test]
fn copy_llama_gpu() {
    recovers(gpu(), "Llama copy", llama_planted(), copy_prompts(12, &mut Lcg(5)), [Component::Head { layer: 0, head: 2 }, Component::Head { layer: 1, head: 1 }]);
}

/// node-prune on the same planted models: with zero ablation, gates on heads and MLP blocks, it
/// keeps exactly the planted heads and no MLP, and the circuit's KL on the prompts is ~0.
fn node_prune_recovers<B: Backend>(be: &B, what: &str, (cfg, w): (ModelConfig, ModelWeights<HostTensor>), data: Vec<(Vec<u32>, u32)>,
    planted: [Component; 2]) {
    use carve_core::extract::node_prune::{node_prune, Granularity, NodePruneData, NodePruneOptions};
    let model = Model::upload(be, cfg.clone(), &w).unwrap();
    let prompts: Vec<Vec<u32>> = data.iter().map(|d| d.0.clone()).collect();
    let d = NodePruneData { pairs: vec![None; prompts.len()], discovery: prompts, ..NodePruneData::default() };
    let o = NodePruneOptions {
        granularity: Granularity { attn: true, mlps: true, heads: true, neurons: false },
        ablation: AblationKind::Zero,
        steps: 150,
        warmup: 10,
        batch: 8,
        ..NodePruneOptions::weighted()
    };
    let r = pollster::block_on(node_prune(&model, be, &d, &o, None, &mut ())).unwrap();
    let kept_heads: Vec<Component> = r.kept.iter().copied().filter(|c| matches!(c, Component::Head { .. })).collect();
    assert_eq!(kept_heads, planted, "{what}: kept {:?}", r.kept);
    assert_eq!(r.kept.len(), 2, "{what}: MLPs kept {:?}", r.kept);
    assert!(r.discovery_kl < 1e-6, "{what}: the circuit's KL {} should be ~0", r.discovery_kl);
}

#[test]
fn node_prune_induction_gpt2_cpu() {
    node_prune_recovers(&cpu(), "GPT-2 induction", gpt2_planted(), induction_prompts(12, &mut Lcg(3)), [Component::Head { layer: 0, head: 0 }, Component::Head { layer: 1, head: 0 }]);
}
#[test]
fn node_prune_copy_llama_cpu() {
    node_prune_recovers(&cpu(), "Llama copy", llama_planted(), copy_prompts(12, &mut Lcg(5)), [Component::Head { layer: 0, head: 2 }, Component::Head { layer: 1, head: 1 }]);
}
#[test]
fn node_prune_induction_gpt2_gpu() {
    node_prune_recovers(gpu(), "GPT-2 induction", gpt2_planted(), induction_prompts(12, &mut Lcg(3)), [Component::Head { layer: 0, head: 0 }, Component::Head { layer: 1, head: 0 }]);
}

// ---------- Llama: an MLP in which only K neurons matter ----------
const NV: usize = 8; // vocabulary; the answer to a prompt ending in t is t + 1 (mod NV)
const ND: usize = 2 * NV + 2; // token features, output features, two constant features
const NFF: usize = 24;
const NBIAS: usize = 2 * NV;

/// One layer: heads with W_O = 0 (irrelevant), an MLP whose neurons 0..NV map token t to the output
/// feature of t + 1 (gate on the constant feature: SiLU in its linear range; up reads token t), and
/// whose other neurons have W_down = 0 (irrelevant whatever they compute).
fn neurons_planted() -> (ModelConfig, ModelWeights<HostTensor>) {
    let mut g = Lcg(17);
    let hd = 2;
    let mut w_gate = g.matrix(NFF, ND);
    let mut w_up = g.matrix(NFF, ND);
    let mut w_down = zeros(ND, NFF);
    for j in 0..NV {
        w_gate.data[j * ND..(j + 1) * ND].fill(0.0);
        w_up.data[j * ND..(j + 1) * ND].fill(0.0);
        set(&mut w_gate, j, NBIAS, 3.0);
        set(&mut w_up, j, j, 1.0);
        set(&mut w_down, NV + (j + 1) % NV, j, 1.0);
    }
    let layer = LayerWeights {
        n_heads: 2, n_kv_heads: 1,
        ln1_w: ones(ND), ln1_b: None,
        wq: g.matrix(2 * hd, ND), bq: None, wk: g.matrix(hd, ND), bk: None, wv: g.matrix(hd, ND), bv: None,
        wo: zeros(ND, 2 * hd), bo: None,
        ln2_w: ones(ND), ln2_b: None,
        w_gate: Some(w_gate), w_up, b_up: None, w_down, b_down: None,
    };
    let mut wte = zeros(NV, ND);
    for t in 0..NV {
        set(&mut wte, t, t, 1.0);
        set(&mut wte, t, NBIAS, 1.0);
        set(&mut wte, t, NBIAS + 1, 1.0);
    }
    let mut lm_head = zeros(NV, ND);
    (0..NV).for_each(|t| set(&mut lm_head, t, NV + t, 4.0));
    let cfg = ModelConfig {
        arch: Arch::Llama, n_layers: 1, n_heads: 2, n_kv_heads: 1, head_dim: hd, d_model: ND, d_ff: NFF, vocab: NV,
        n_ctx: 32, norm_eps: 1e-5, rope_theta: 10000.0, tied_embeddings: false, bos_token_id: None, eos_token_id: None,
    };
    (cfg, ModelWeights { wte, wpe: None, layers: vec![layer], ln_f_w: ones(ND), ln_f_b: None, lm_head: Some(lm_head) })
}

/// node-prune with gates on heads and neurons keeps exactly neurons 0..NV of the MLP and no head.
/// Each planted neuron serves only the prompts that end in its token (an eighth of them), so its
/// faithfulness signal is weak against the sparsity term: at λs 0.1 (the whole batch each step) all
/// are kept; at λs 0.2 a gate can close early and never reopen (a closed hard-concrete gate samples
/// 0 and gets no gradient).
#[test]
fn node_prune_recovers_the_planted_neurons() {
    use carve_core::extract::node_prune::{node_prune, Granularity, NodePruneData, NodePruneOptions};
    let (cfg, w) = neurons_planted();
    let be = cpu();
    let model = Model::upload(&be, cfg.clone(), &w).unwrap();
    let mut g = Lcg(23);
    // Every token ends some prompt, so every planted neuron is needed.
    let data: Vec<(Vec<u32>, u32)> = (0..24)
        .map(|i| {
            let mut p: Vec<u32> = (0..1 + g.below(4)).map(|_| g.below(NV) as u32).collect();
            *p.last_mut().unwrap() = (i % NV) as u32;
            let answer = ((i % NV + 1) % NV) as u32;
            (p, answer)
        })
        .collect();
    answers_all(&be, "the neurons model", &model, &data);
    let prompts: Vec<Vec<u32>> = data.iter().map(|d| d.0.clone()).collect();
    let d = NodePruneData { pairs: vec![None; prompts.len()], discovery: prompts, ..NodePruneData::default() };
    let o = NodePruneOptions {
        granularity: Granularity { attn: false, mlps: false, heads: true, neurons: true },
        ablation: AblationKind::Zero,
        sparsity_weight: 0.1,
        steps: 300,
        warmup: 10,
        batch: 24,
        lr: 0.1,
        ..NodePruneOptions::weighted()
    };
    let r = pollster::block_on(node_prune(&model, &be, &d, &o, None, &mut ())).unwrap();
    println!("log α: {:?}", r.state.log_alpha.iter().map(|a| format!("{a:.2}")).collect::<Vec<_>>());
    let neurons: Vec<usize> = r.kept.iter().filter_map(|c| match c { Component::Neuron { neuron, .. } => Some(*neuron), _ => None }).collect();
    assert_eq!(neurons, (0..NV).collect::<Vec<_>>(), "kept {:?}", r.kept);
    assert!(!r.kept.iter().any(|c| matches!(c, Component::Head { .. })), "heads kept: {:?}", r.kept);
    assert!(r.discovery_kl < 1e-6, "the circuit's KL {} should be ~0", r.discovery_kl);
}

// ---------- edge-prune ----------

use carve_core::extract::edge_prune::{edge_list, edge_prune, EdgePruneData, EdgePruneOptions, EdgePruneRun};
use carve_core::mask::{Edge, EdgeLayout};
use carve_core::model::edges::EdgeWeights;

fn edges(v: &[&str]) -> Vec<Edge> {
    v.iter().map(|s| Edge::parse(s).unwrap()).collect()
}

/// edge-prune on a planted model with mean ablation over `patching`, 300 steps of 8 (the defaults
/// otherwise), asked to keep `keep` edges; checks that every kept edge reaches the logits.
fn train_edges<B: Backend>(be: &B, model: &Model<B>, ew: &EdgeWeights<B::Tensor>, data: &[(Vec<u32>, u32)], patching: Vec<Vec<u32>>,
    keep: usize) -> EdgePruneRun {
    let d = EdgePruneData { discovery: data.iter().map(|d| d.0.clone()).collect(), patching, ..EdgePruneData::default() };
    let o = EdgePruneOptions {
        target_sparsity: 1.0 - keep as f64 / ew.layout.n_edges() as f64,
        warmup: 10,
        batch: 8,
        ablation: AblationKind::Mean,
        ..EdgePruneOptions::defaults()
    };
    let r = pollster::block_on(edge_prune(model, be, ew, &d, &o, None, &mut ())).unwrap();
    assert_eq!(r.effective, r.kept, "every kept edge reaches the logits");
    r
}

/// The `top` edges by log α, one a line: what a failed check shows.
fn ranking(lay: &EdgeLayout, log_alpha: &[f64], top: usize) -> String {
    let mut ranked: Vec<(f64, String)> = (0..log_alpha.len()).map(|i| (log_alpha[i], lay.edge(i).unwrap().to_string())).collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked.iter().take(top).map(|(a, e)| format!("{e}: log α {a:.3}")).collect::<Vec<_>>().join("\n")
}

/// Asserts that the circuit of `r`'s effective edges, with its mean values, answers every prompt of
/// `data` as the full model does.
fn circuit_answers<B: Backend>(be: &B, model: &Model<B>, ew: &EdgeWeights<B::Tensor>, r: &EdgePruneRun, data: &[(Vec<u32>, u32)]) {
    let prompts: Vec<Vec<u32>> = data.iter().map(|d| d.0.clone()).collect();
    let batch = Batch::new(&prompts, &model.config).unwrap();
    let gates: Vec<f32> = r.effective.iter().map(|&k| k as u8 as f32).collect();
    let means: Vec<B::Tensor> = r.values.as_ref().unwrap().iter().map(|t| be.upload(t).unwrap()).collect();
    let out = model.edge_forward(be, ew, &batch, &gates, Some(&means), &batch.last_rows(), false).unwrap();
    let logits = pollster::block_on(be.read(&out.logits)).unwrap();
    for (i, (_, answer)) in data.iter().enumerate() {
        assert_eq!(argmax(logits.row(i)) as u32, *answer, "the circuit gets prompt {i} wrong; ranking:\n{}", ranking(&ew.layout, &r.state.log_alpha, 16));
    }
}

/// edge-prune on the planted Llama copy model, mean ablation (zero ablation would hide the layer-0
/// readers, which read only the embedding: RMSNorm(z·x) does not depend on z > 0, so their gates get
/// no gradient): every writer but the embedding, the
/// mover L0H2 and the reader L1H1 outputs exactly 0 (W_O = 0, V = 0, W_down = 0), and every reader
/// but those of the two planted heads and the logits feeds such a writer, so the edges among them
/// are the only ones with a faithfulness gradient. Asked to keep exactly that many edges, edge-prune
/// keeps only those 12: the planted path (emb → L0H2.q, L0KV1.k, L0KV1.v; L0H2 → L1KV0.v; emb →
/// L1H1.q, L1KV0.k; L1H1 → logits), every one of it, and of the edges the norms couple in (emb and
/// L0H2 into the other layer-1 readers and the logits) those the training left open; the rest of the
/// 12 are reported as closed. Every kept edge is effective, and the circuit keeps the answers.
fn edge_prune_recovers<B: Backend>(be: &B) {
    let (cfg, w) = llama_planted();
    let model = Model::upload(be, cfg, &w).unwrap();
    let ew = EdgeWeights::new(be, &model, &w).unwrap();
    let data = copy_prompts(16, &mut Lcg(5));
    let patching: Vec<Vec<u32>> = copy_prompts(32, &mut Lcg(9)).into_iter().map(|d| d.0).collect();
    let want = edges(&[
        "emb -> L0H2.q", "emb -> L0KV1.k", "emb -> L0KV1.v",
        "emb -> L1H1.q", "L0H2 -> L1H1.q", "emb -> L1KV0.k", "L0H2 -> L1KV0.k", "emb -> L1KV0.v", "L0H2 -> L1KV0.v",
        "emb -> logits", "L0H2 -> logits", "L1H1 -> logits",
    ]);
    let r = train_edges(be, &model, &ew, &data, patching, want.len());
    let mut kept = edge_list(&ew.layout, &r.kept);
    kept.sort();
    let show = || format!("kept {:?}, {} closed; ranking:\n{}", kept.iter().map(|e| e.to_string()).collect::<Vec<_>>(), r.closed,
        ranking(&ew.layout, &r.state.log_alpha, 16));
    let path = edges(&["emb -> L0H2.q", "emb -> L0KV1.k", "emb -> L0KV1.v", "L0H2 -> L1KV0.v", "emb -> L1H1.q", "emb -> L1KV0.k", "L1H1 -> logits"]);
    for e in &path {
        assert!(kept.contains(e), "the path's {e} was not kept: {}", show());
    }
    for e in &kept {
        assert!(want.contains(e), "{e} was kept but is not among the 12: {}", show());
    }
    assert_eq!(kept.len() + r.closed, want.len(), "{}", show());
    circuit_answers(be, &model, &ew, &r, &data);
}

/// edge-prune on the planted GPT-2 induction model, mean ablation: the previous-token head L0H0
/// writes only into the induction head's key path (L1H0's W_K reads its previous-token features;
/// nothing else reads them). Every other writer but the embeddings and the two planted heads
/// outputs 0 or a constant (its W_O or W_down set to 0 where the model writes along ones), so the only edges
/// with any effect are the 19 among emb, pos, L0H0 and L1H0 into the planted heads' readers and the
/// logits: the 7 of the path (pos → L0H0.q, L0KV0.k; emb → L0KV0.v; L0H0 → L1KV0.k; emb → L1H0.q,
/// L1KV0.v; L1H0 → logits) and 12 that the LayerNorms couple in (a reader's scale depends on all it
/// reads), some of them too weak for the KL to rank reliably (emb → L0KV0.k changes the previous-
/// token head's key by its scale only). Asked to keep 16 of the 137 edges, edge-prune keeps every
/// edge of the path, the key path's among them, and no edge without an effect (of the 16, those
/// the training closed are left out and counted); the circuit keeps the answers.
fn edge_prune_recovers_key_path<B: Backend>(be: &B) {
    let (cfg, mut w) = gpt2_planted();
    // The writers along the all-ones direction write exactly 0 here: in f32 a LayerNorm removes
    // them only up to rounding, and Adam would turn those tiny gradients into full steps.
    for (l, h) in [(0, 2), (1, 1)] {
        (0..GD).for_each(|r| (h * GHD..(h + 1) * GHD).for_each(|k| set(&mut w.layers[l].wo, r, k, 0.0)));
    }
    w.layers[0].w_down.data.fill(0.0);
    let model = Model::upload(be, cfg, &w).unwrap();
    let ew = EdgeWeights::new(be, &model, &w).unwrap();
    let data = induction_prompts(16, &mut Lcg(3));
    let patching: Vec<Vec<u32>> = induction_prompts(32, &mut Lcg(13)).into_iter().map(|d| d.0).collect();
    let path = edges(&["pos -> L0H0.q", "pos -> L0KV0.k", "emb -> L0KV0.v", "L0H0 -> L1KV0.k", "emb -> L1H0.q", "emb -> L1KV0.v", "L1H0 -> logits"]);
    let mut effect = path.clone();
    effect.extend(edges(&[
        "emb -> L0H0.q", "emb -> L0KV0.k", "pos -> L0KV0.v",
        "pos -> L1H0.q", "L0H0 -> L1H0.q", "emb -> L1KV0.k", "pos -> L1KV0.k", "pos -> L1KV0.v", "L0H0 -> L1KV0.v",
        "emb -> logits", "pos -> logits", "L0H0 -> logits",
    ]));
    assert_eq!((ew.layout.n_edges(), effect.len()), (137, 19));
    let keep = 16;
    let r = train_edges(be, &model, &ew, &data, patching, keep);
    let kept = edge_list(&ew.layout, &r.kept);
    let show = || ranking(&ew.layout, &r.state.log_alpha, 24);
    assert_eq!(kept.len() + r.closed, keep);
    for e in &path {
        assert!(kept.contains(e), "the path's {e} was not kept; ranking:\n{}", show());
    }
    for e in &kept {
        assert!(effect.contains(e), "{e} has no effect but was kept; ranking:\n{}", show());
    }
    circuit_answers(be, &model, &ew, &r, &data);
}

#[test]
fn edge_prune_key_path_gpt2_cpu() {
    edge_prune_recovers_key_path(&cpu());
}
#[test]
fn edge_prune_key_path_gpt2_gpu() {
    edge_prune_recovers_key_path(gpu());
}

#[test]
fn edge_prune_copy_llama_cpu() {
    edge_prune_recovers(&cpu());
}
#[test]
fn edge_prune_copy_llama_gpu() {
    edge_prune_recovers(gpu());
}

/// edge-prune on the hand-compiled frac_prevs, mean ablation. Only the embeddings, MLP0 and L1H0
/// write anything, and L1H0's query and key are 0, so the edges with an effect are the 3 of the
/// program (emb → L0MLP: the token into the is-x map; L0MLP → L1KV0.v: is-x into the average;
/// L1H0 → logits: the fraction out) and 6 that the LayerNorms couple in (pos → L0MLP; emb, pos →
/// L1KV0.v; emb, pos, L0MLP → logits), which change a reader's scale by about 1% or less. Asked
/// for 3 of the 137 edges, edge-prune keeps exactly the program's 3, none closed, and the circuit
/// answers as the full model does.
fn edge_prune_recovers_frac_prevs<B: Backend>(be: &B) {
    let (cfg, w) = frac_prevs_planted();
    let model = Model::upload(be, cfg, &w).unwrap();
    let ew = EdgeWeights::new(be, &model, &w).unwrap();
    assert_eq!(ew.layout.n_edges(), 137);
    let data = frac_prevs_prompts(16, &mut Lcg(31));
    answers_all(be, "frac_prevs", &model, &data);
    let patching: Vec<Vec<u32>> = frac_prevs_prompts(32, &mut Lcg(37)).into_iter().map(|d| d.0).collect();
    let mut path = edges(&["emb -> L0MLP", "L0MLP -> L1KV0.v", "L1H0 -> logits"]);
    path.sort();
    let r = train_edges(be, &model, &ew, &data, patching, path.len());
    let mut kept = edge_list(&ew.layout, &r.kept);
    kept.sort();
    assert_eq!((&kept, r.closed), (&path, 0), "ranking:\n{}", ranking(&ew.layout, &r.state.log_alpha, 12));
    circuit_answers(be, &model, &ew, &r, &data);
}

/// On the CPU only: the GPU backend runs the same training on the other planted models, and on
/// llvmpipe its 300 steps take minutes.
#[test]
fn edge_prune_frac_prevs_gpt2_cpu() {
    edge_prune_recovers_frac_prevs(&cpu());
}
