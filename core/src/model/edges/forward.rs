//! The edge forward, keeping what its backward reads (see the module doc for the formula). Per
//! layer: `x_att → h → q, k, v → p → z → o` for the heads (each reader of the layer normalises its
//! own rows of `x_att`), then `x_mlp → h2 → up (gate) → act → out` for the MLP.
//!
//! Where the backend packs rows (`model::pack`), the residual stream's parts (the writers' outputs,
//! their stacks, the readers' inputs) hold a padded batch's real rows only, so the mixing and the
//! products skip the padding; q, k and v are scattered to the padded layout for rope and attention,
//! and z gathered back.

use super::EdgeWeights;
use crate::backend::{AttnShape, Backend, BlockProduct, Blocks, Gates, RowMap};
use crate::mask::{EdgeLayout, Reader};
use crate::model::batch::Batch;
use crate::model::forward::Model;
use crate::model::pack::Pack;
use crate::model::Arch;
use crate::{Error, HostTensor, Result};

/// A group of consecutive writers: `stack [n, rows·d]` of h_w − a_w, and with values their
/// Σ a_w (in the values' shape: `[1, d]` or `[rows, d]`), which every reader of the group adds.
pub(super) struct Group<T> {
    pub first: usize,
    pub n: usize,
    pub stack: T,
    sum: Option<T>,
}

impl<T> Group<T> {
    fn span(&self) -> Span {
        Span { first: self.first, n: self.n }
    }
}

/// A group's writers `first..first + n`, as a gate table lays it out before the group exists.
#[derive(Clone, Copy, PartialEq, Debug)]
struct Span {
    first: usize,
    n: usize,
}

/// The gates of readers `r0..r0 + n` on groups `0..cols.len() − 1`, uploaded once for the forward
/// and its backward: `table [n, width]`, row i reader r0 + i's, group g's writers' gates from
/// column `cols[g]` (0 where the reader does not read the group), and `cols`' last entry the width.
pub(super) struct GateTable<T> {
    pub r0: usize,
    pub cols: Vec<usize>,
    pub table: T,
}

impl<T> GateTable<T> {
    /// The groups it holds gates on.
    pub fn n_groups(&self) -> usize {
        self.cols.len() - 1
    }

    /// Rows `i0..i0 + rows`' gates on groups from `g0` on (whose stacks go with it).
    pub fn view(&self, i0: usize, rows: usize, g0: usize) -> Gates<'_, T> {
        let width = *self.cols.last().expect("a table's width");
        Gates { table: &self.table, offset: i0 * width + self.cols[g0], stride: width, rows }
    }
}

/// A layer's attention readers and heads: readers `r0..r0 + nq + 2·nkv` (q per head, then k and v
/// per KV head), their inputs `x [n·rows, d]`, and the heads' q, k, v (roped, in the padded
/// layout, a head's columns side by side) and probabilities p, of attention shape `s`. `fused`:
/// the layer's MLP reader (`r0 + n`) took its share of the groups before the heads' in the same
/// mix.
pub(super) struct AttnTape<T> {
    pub r0: usize,
    pub fused: bool,
    /// The readers' gates (and the fused MLP reader's, as a last row, on the heads' group too).
    pub gates: GateTable<T>,
    pub x: T,
    pub q: T,
    pub k: T,
    pub v: T,
    pub p: T,
    pub s: AttnShape,
    pub group: usize,
}

/// A layer's MLP reader `r` and its writer's group.
pub(super) struct MlpTape<T> {
    pub r: usize,
    /// Its gates, unless it was fused with the heads' readers (then they are in theirs).
    pub gates: Option<GateTable<T>>,
    pub x: T,
    pub up: T,
    pub gate: Option<T>,
    pub group: usize,
}

/// An edge forward kept for its backward: the logits at the rows asked for, with `capture` every
/// writer's output `[rows, d]` in writer order (for measuring means; zero on padding rows where
/// the backend packs rows), and the tape.
pub struct EdgeTape<T> {
    pub logits: T,
    pub writers: Vec<T>,
    pub(super) pack: Pack,
    /// The rows asked for in the packed layout, and where some were padding rows (which packing
    /// leaves out; their logits are zero), the places of the others among the rows asked for.
    pub(super) at: Vec<u32>,
    pub(super) asked: Option<Vec<u32>>,
    pub(super) groups: Vec<Group<T>>,
    pub(super) attn: Vec<Option<AttnTape<T>>>,
    pub(super) mlp: Vec<Option<MlpTape<T>>>,
    /// The logits reader's gates, and its input at the rows asked for.
    pub(super) logits_gates: GateTable<T>,
    pub(super) last: T,
}

/// Constants made once per forward: `[1, d]` of 0 and of −1, as masks and values for `mix`, and a
/// row of 1s as wide as the largest group, the gates that sum a group's values in one `gated_sum`.
struct Consts<T> {
    zero: T,
    minus: T,
    ones: T,
}

impl<B: Backend> Model<B> {
    /// The edge forward of `batch` with one gate per edge (`gates[i]` for edge i of
    /// `ew.layout`), ablation values per writer (`[1, d]`, `[seq, d]` per position or `[rows, d]`;
    /// None: zero), logits at `rows` of the batch (a padding row's hold no prompt's output).
    #[allow(clippy::too_many_arguments)]
    pub fn edge_forward(&self, be: &B, ew: &EdgeWeights<B::Tensor>, batch: &Batch, gates: &[f32], values: Option<&[B::Tensor]>,
        rows: &[u32], capture: bool) -> Result<EdgeTape<B::Tensor>> {
        self.edge_forward_with(be, ew, ew.reader_bias.as_ref(), batch, gates, values, rows, capture)
    }

    /// `edge_forward` with `bias` (`[readers, d]`) added to the readers' inputs in place of the
    /// weights' own reader biases.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn edge_forward_with(&self, be: &B, ew: &EdgeWeights<B::Tensor>, bias: Option<&B::Tensor>, batch: &Batch, gates: &[f32],
        values: Option<&[B::Tensor]>, rows: &[u32], capture: bool) -> Result<EdgeTape<B::Tensor>> {
        let lay = &ew.layout;
        let c = &self.config;
        let w = &self.weights;
        if gates.len() != lay.n_edges() {
            return Err(Error::Input(format!("{} edge gates for a model of {} edges", gates.len(), lay.n_edges())));
        }
        if ew.bo.len() != w.layers.len() {
            return Err(Error::Input(format!("edge weights of {} layers for a model of {}", ew.bo.len(), w.layers.len())));
        }
        if let Some(v) = values {
            if v.len() != lay.writers.len() {
                return Err(Error::Input(format!("{} ablation values for {} writers", v.len(), lay.writers.len())));
            }
        }
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= batch.rows()) {
            return Err(Error::Input(format!("row {r} is past the batch's {} rows", batch.rows())));
        }
        let d = be.shape(&w.wte)[1];
        let pack = Pack::new(be, batch);
        // Rows of the residual stream's parts: the real rows where they are packed.
        let n_rows = pack.len();
        // The largest group: a layer's heads, or the embeddings.
        let widest = w.layers.iter().map(|l| l.n_heads).max().unwrap_or(0).max(2);
        let k = Consts {
            zero: be.upload(&HostTensor::zeros(vec![1, d]))?,
            minus: be.upload(&HostTensor::new(vec![1, d], vec![-1.0; d]))?,
            ones: be.upload(&HostTensor::new(vec![1, widest], vec![1.0; widest]))?,
        };
        let values = values.map(|v| v.iter().map(|a| pack.gather_cyclic(be, a)).collect::<Result<Vec<_>>>()).transpose()?;
        let value = |i: usize| values.as_ref().map(|v| &v[i]);
        let mut groups: Vec<Group<B::Tensor>> = Vec::new();
        // Σ a_w over the writers of groups 0..=g: what a reader of those groups adds.
        let mut sums: Vec<Option<B::Tensor>> = Vec::new();
        let mut captured = Vec::new();
        let (mut attn_tapes, mut mlp_tapes) = (Vec::new(), Vec::new());

        // The embeddings: one group of emb (and pos).
        let mut emb = vec![be.gather_rows(&w.wte, &pack.select(&batch.ids))?];
        if let Some(wpe) = &w.wpe {
            emb.push(be.gather_rows(wpe, &pack.select(&batch.positions()))?);
        }
        push_group(be, &mut groups, &mut sums, group(be, &k, 0, Writers::Each(&emb), value, n_rows, d)?)?;
        if capture {
            for h in emb {
                captured.push(pack.scatter(be, &h)?);
            }
        }

        let mut reader = 0;
        // The MLP reader's input from the groups before its layer's heads (see `fused` below).
        let mut mlp_part: Option<B::Tensor> = None;
        for (l, lw) in w.layers.iter().enumerate() {
            let (nq, nkv) = (lw.n_heads, lw.n_kv_heads);
            attn_tapes.push(None);
            mlp_tapes.push(None);
            if nq > 0 {
                // The layer's q, k and v readers: each normalises its own input.
                let n = nq + 2 * nkv;
                // The layer's MLP reader reads the same groups and then the heads': its share of
                // the groups read here comes from the same pass over their stacks.
                let fused = lay.readers.get(reader + n) == Some(&Reader::Mlp { layer: l });
                // The heads' group to come, whose gates only the fused MLP reader's row holds.
                let heads_span = Span { first: groups.last().map_or(0, |g| g.first + g.n), n: nq };
                let (read, table) = gate_table(be, lay, &groups, fused.then_some(heads_span), gates, reader, n + fused as usize)?;
                let xs = reader_inputs(be, bias, &k, &groups[..read], sums[read - 1].as_ref(), table.view(0, n + fused as usize, 0), reader,
                    n_rows, d)?;
                let x = if fused {
                    mlp_part = Some(be.gather_rows(&xs, &block(n, n_rows))?);
                    be.gather_rows(&xs, &(0..(n * n_rows) as u32).collect::<Vec<_>>())?
                } else {
                    xs
                };
                let h = self.norm_fwd(be, &x, &lw.ln1_w, lw.ln1_b.as_ref())?;
                let hd = c.head_dim;
                let s = AttnShape { batch: batch.size(), seq: batch.seq, n_heads: nq, n_kv_heads: nkv, head_dim: hd, scale: 1.0 / (hd as f32).sqrt() };
                // The heads' projections in one product each, every head from its own reader's
                // block of h (blocks: q per head, then k and v per KV head) to its own columns.
                let project = |first: usize, heads: usize, wt: &B::Tensor, bt: Option<&B::Tensor>| {
                    let p = BlockProduct { n: heads, m: n_rows, k: d, cols: hd, x: Blocks::Rows, x_first: first, w: Blocks::Rows, w_kn: false,
                        out: Blocks::Cols };
                    be.matmul_blocks(&h, wt, bt, &p)
                };
                // q or k in the padded layout, roped.
                let rope = |t: B::Tensor, heads: usize| -> Result<B::Tensor> {
                    let t = pack.scatter(be, &t)?;
                    match c.arch {
                        Arch::Llama => be.rope(&t, batch.seq, heads, hd, c.rope_theta),
                        Arch::Gpt2 => Ok(t),
                    }
                };
                let q = rope(project(0, nq, &lw.wq, lw.bq.as_ref())?, nq)?;
                let kt = rope(project(nq, nkv, &lw.wk, lw.bk.as_ref())?, nkv)?;
                let v = pack.scatter(be, &project(nq + nkv, nkv, &lw.wv, lw.bv.as_ref())?)?;
                let p = be.attn_scores(&q, &kt, s)?;
                let z = pack.gather(be, &be.attn_apply(&p, &v, s)?)?;
                // Each head's output from its own columns of z and of W_O: the heads' outputs
                // stacked as rows, `[nq·rows, d]`.
                let o = BlockProduct { n: nq, m: n_rows, k: hd, cols: d, x: Blocks::Cols, x_first: 0, w: Blocks::Cols, w_kn: false, out: Blocks::Rows };
                let outs = be.matmul_blocks(&z, &lw.wo, ew.bo[l].as_ref(), &o)?;
                if capture {
                    for hq in 0..nq {
                        captured.push(pack.scatter(be, &be.gather_rows(&outs, &block(hq, n_rows))?)?);
                    }
                }
                push_group(be, &mut groups, &mut sums, group(be, &k, heads_span.first, Writers::Stacked(outs, nq), value, n_rows, d)?)?;
                if groups.last().map(Group::span) != Some(heads_span) {
                    return Err(Error::Backend(format!("edge forward: layer {l}'s heads' group is not the one its gates were laid out for")));
                }
                attn_tapes[l] = Some(AttnTape { r0: reader, fused, gates: table, x, q, k: kt, v, p, s, group: groups.len() - 1 });
                reader += n;
            }
            if lay.readers.get(reader) == Some(&Reader::Mlp { layer: l }) {
                let (x, own) = match mlp_part.take() {
                    // What the heads' group adds to the share mixed with the heads' readers: the
                    // last row of their table, on its last group.
                    Some(part) => {
                        let (heads, t) = (groups.len() - 1, attn_tapes[l].as_ref().expect("the heads' tape"));
                        let g = &groups[heads];
                        let add = be.gated_sum(t.gates.view(nq + 2 * nkv, 1, heads), &[&g.stack], g.sum.as_ref())?;
                        (be.add(&part, &be.reshape(add, vec![n_rows, d])?)?, None)
                    }
                    None => {
                        let (read, table) = gate_table(be, lay, &groups, None, gates, reader, 1)?;
                        (reader_inputs(be, bias, &k, &groups[..read], sums[read - 1].as_ref(), table.view(0, 1, 0), reader, n_rows, d)?, Some(table))
                    }
                };
                let h2 = self.norm_fwd(be, &x, &lw.ln2_w, lw.ln2_b.as_ref())?;
                let up = be.matmul(&h2, &lw.w_up, lw.b_up.as_ref())?;
                let (act, gate) = match &lw.w_gate {
                    Some(g) => {
                        let gate = be.matmul(&h2, g, None)?;
                        (be.silu_mul(&gate, &up)?, Some(gate))
                    }
                    None => (be.gelu_new(&up)?, None),
                };
                let out = be.matmul(&act, &lw.w_down, lw.b_down.as_ref())?;
                let first = groups.last().map_or(0, |g| g.first + g.n);
                if capture {
                    captured.push(pack.scatter(be, &out)?);
                }
                push_group(be, &mut groups, &mut sums, group(be, &k, first, Writers::Stacked(out, 1), value, n_rows, d)?)?;
                mlp_tapes[l] = Some(MlpTape { r: reader, gates: own, x, up, gate, group: groups.len() - 1 });
                reader += 1;
            }
        }
        if lay.readers.get(reader) != Some(&Reader::Logits) {
            return Err(Error::Input("the edge layout does not match the model's layers".into()));
        }
        let (read, logits_gates) = gate_table(be, lay, &groups, None, gates, reader, 1)?;
        let x = reader_inputs(be, bias, &k, &groups[..read], sums[read - 1].as_ref(), logits_gates.view(0, 1, 0), reader, n_rows, d)?;
        let (at, asked) = locate(&pack, rows);
        let last = be.gather_rows(&x, &at)?;
        let hf = self.norm_fwd(be, &last, &w.ln_f_w, w.ln_f_b.as_ref())?;
        let logits = be.matmul(&hf, w.lm_head.as_ref().unwrap_or(&w.wte), None)?;
        let logits = match &asked {
            Some(places) => be.scatter_rows(&logits, places, rows.len())?,
            None => logits,
        };
        Ok(EdgeTape {
            logits,
            writers: captured,
            pack,
            at,
            asked,
            groups,
            attn: attn_tapes,
            mlp: mlp_tapes,
            logits_gates,
            last,
        })
    }
}

/// `rows` of the batch in the packed layout: the positions of those that are in it, and where some
/// are not (padding rows that packing left out), the places of the others among `rows`.
fn locate(pack: &Pack, rows: &[u32]) -> (Vec<u32>, Option<Vec<u32>>) {
    let mut at = Vec::with_capacity(rows.len());
    let mut places = Vec::with_capacity(rows.len());
    for (i, &r) in rows.iter().enumerate() {
        if let Some(p) = pack.position(r) {
            at.push(p);
            places.push(i as u32);
        }
    }
    let all = places.len() == rows.len();
    (at, (!all).then_some(places))
}

/// Rows `i·n .. (i + 1)·n`: reader i's block of a stacked `[readers·rows, d]`.
fn block(i: usize, n: usize) -> Vec<u32> {
    (i * n..(i + 1) * n).map(|r| r as u32).collect()
}

/// A group's writers' outputs: one tensor `[rows, d]` each, or stacked as rows `[n·rows, d]`.
enum Writers<'a, T> {
    Each(&'a [T]),
    Stacked(T, usize),
}

/// The group of writers `first..`: their h_w − a_w stacked as rows, and with values their Σ a_w.
fn group<'a, B: Backend>(be: &B, k: &Consts<B::Tensor>, first: usize, outs: Writers<'_, B::Tensor>,
    value: impl Fn(usize) -> Option<&'a B::Tensor>, n_rows: usize, d: usize) -> Result<Group<B::Tensor>>
where
    B::Tensor: 'a,
{
    let (stacked, n) = match outs {
        Writers::Each(hs) => (be.concat(&hs.iter().collect::<Vec<_>>(), vec![hs.len() * n_rows, d])?, hs.len()),
        Writers::Stacked(t, n) => (t, n),
    };
    let values: Option<Vec<&B::Tensor>> = (first..first + n).map(&value).collect();
    let Some(values) = values else {
        if (first..first + n).any(|i| value(i).is_some()) {
            return Err(Error::Backend(format!("edge forward: writers {first}..{} have values for some only", first + n)));
        }
        return Ok(Group { first, n, stack: be.reshape(stacked, vec![n, n_rows * d])?, sum: None });
    };
    // Every writer's a_w as rows of one tensor, `[n·r, d]`: r = 1 (one row for all of a writer's
    // rows), or r = rows, or r rows read cyclically (per position), spread to rows below.
    let r = be.shape(values[0])[0];
    if let Some(a) = values.iter().find(|a| be.shape(a)[0] != r) {
        return Err(Error::Backend(format!("edge forward: a group's values of {:?} and {:?} rows", be.shape(values[0]), be.shape(a))));
    }
    // Σ a_w, and the values as rows: one writer's, or the writers' joined, summed over the writers
    // in one product with gates of 1.
    let (sum, all) = match values.as_slice() {
        [a] => ((*a).clone(), (*a).clone()),
        _ => {
            let width = be.shape(&k.ones)[1];
            if n > width {
                return Err(Error::Backend(format!("edge forward: a group of {n} writers, wider than the {width} counted")));
            }
            let joined = be.concat(&values, vec![n, r * d])?;
            let ones = Gates { table: &k.ones, offset: 0, stride: width, rows: 1 };
            let sum = be.reshape(be.gated_sum(ones, &[&joined], None)?, vec![r, d])?;
            (sum, be.reshape(joined, vec![n * r, d])?)
        }
    };
    let (all, div) = match r {
        1 => (all, n_rows),
        r if r == n_rows => (all, 1),
        r => {
            let ids: Vec<u32> = (0..n * n_rows).map(|i| ((i / n_rows) * r + (i % n_rows) % r) as u32).collect();
            (be.gather_rows(&all, &ids)?, 1)
        }
    };
    // −a_w on each writer's rows: stack row i reads row i / rows of `[n, d]`, or row i.
    let minus_a = be.mix(&all, &k.minus, RowMap::SHARED, &k.zero, RowMap::SHARED)?;
    let spread = be.mix(&stacked, &k.zero, RowMap::SHARED, &minus_a, RowMap { div })?;
    let stack = be.reshape(be.add(&stacked, &spread)?, vec![n, n_rows * d])?;
    Ok(Group { first, n, stack, sum: Some(sum) })
}

/// Appends `g` to the groups, and to `sums` the Σ a_w of every group so far.
fn push_group<B: Backend>(be: &B, groups: &mut Vec<Group<B::Tensor>>, sums: &mut Vec<Option<B::Tensor>>, g: Group<B::Tensor>)
    -> Result<()> {
    let so_far = match (sums.last().cloned().flatten(), &g.sum) {
        (Some(a), Some(b)) => Some(be.add(&a, b)?),
        (a, b) => a.or_else(|| b.clone()),
    };
    sums.push(so_far);
    groups.push(g);
    Ok(())
}

/// How many groups reader `r` reads: the groups up to its last writer (readers read prefixes that
/// end at a group's end), at least one.
pub(super) fn n_read<T>(lay: &EdgeLayout, groups: &[Group<T>], r: usize) -> Result<usize> {
    let read = groups.iter().take_while(|g| g.first + g.n <= lay.reads[r]).count();
    if read == 0 {
        return Err(Error::Input(format!("reader {} reads no writer", lay.readers[r])));
    }
    Ok(read)
}

/// Readers `r0..r0 + n`'s gates on the groups reader r0 reads (and `then`, a group still to come)
/// as a `GateTable`, uploaded: one upload for a call's every group. Returns the groups read too.
fn gate_table<B: Backend>(be: &B, lay: &EdgeLayout, groups: &[Group<B::Tensor>], then: Option<Span>, gates: &[f32], r0: usize,
    n: usize) -> Result<(usize, GateTable<B::Tensor>)> {
    let read = n_read(lay, groups, r0)?;
    let spans: Vec<Span> = groups[..read].iter().map(Group::span).chain(then).collect();
    let mut cols = Vec::with_capacity(spans.len() + 1);
    let mut width = 0;
    for s in &spans {
        cols.push(width);
        width += s.n;
    }
    cols.push(width);
    let mut z = vec![0.0f32; n * width];
    for i in 0..n {
        let r = r0 + i;
        for (s, &c0) in spans.iter().zip(&cols) {
            if s.first + s.n > lay.reads[r] {
                continue; // a group the reader does not read (the fused MLP reader's heads' group)
            }
            let at = lay.first[r] + s.first;
            z[i * width + c0..i * width + c0 + s.n].copy_from_slice(&gates[at..at + s.n]);
        }
    }
    let table = upload_staged(be, &HostTensor::new(vec![n, width], z), be.staged_upload_bytes())?;
    Ok((read, GateTable { r0, cols, table }))
}

/// `t [rows, cols]` uploaded whole, or where it is over `limit` bytes, in chunks of rows of at most
/// that (at least a row each) joined on the device: a step's data that a GPU backend stages
/// instead of creating a buffer for it each step.
fn upload_staged<B: Backend>(be: &B, t: &HostTensor, limit: Option<usize>) -> Result<B::Tensor> {
    let (rows, cols) = t.rows_cols();
    let Some(limit) = limit.filter(|&l| t.data.len() * 4 > l && rows > 1) else {
        return be.upload(t);
    };
    let per = (limit / (cols * 4).max(1)).max(1);
    let parts = (0..rows)
        .step_by(per)
        .map(|r0| {
            let r1 = (r0 + per).min(rows);
            be.upload(&HostTensor::new(vec![r1 - r0, cols], t.data[r0 * cols..r1 * cols].to_vec()))
        })
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&B::Tensor> = parts.iter().collect();
    be.concat(&refs, t.shape.clone())
}


/// The inputs of the readers of `gates` (rows of a table, from reader r0 on), `[n·rows, d]`: the
/// products of their gates with the stacks of `groups`, summed, plus `sum` (the groups' Σ a_w)
/// and `bias` (a standalone model's constants).
#[allow(clippy::too_many_arguments)]
fn reader_inputs<B: Backend>(be: &B, bias: Option<&B::Tensor>, k: &Consts<B::Tensor>, groups: &[Group<B::Tensor>],
    sum: Option<&B::Tensor>, gates: Gates<'_, B::Tensor>, r0: usize, n_rows: usize, d: usize) -> Result<B::Tensor> {
    let n = gates.rows;
    let stacks: Vec<&B::Tensor> = groups.iter().map(|g| &g.stack).collect();
    // Σ a_w (`[1, d]` or `[rows, d]`) repeats along each reader's row of `[rows·d]`.
    let x = be.gated_sum(gates, &stacks, sum)?;
    let x = be.reshape(x, vec![n * n_rows, d])?;
    match bias {
        None => Ok(x),
        Some(b) => {
            // Reader r0 + i's constant on its block of rows.
            let rows: Vec<u32> = (r0..r0 + n).map(|r| r as u32).collect();
            let b = be.gather_rows(b, &rows)?;
            let spread = be.mix(&x, &k.zero, RowMap::SHARED, &b, RowMap { div: n_rows })?;
            be.add(&x, &spread)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;

    #[test]
    fn a_large_table_goes_up_in_chunks_of_rows() {
        let be = CpuBackend::new();
        let t = HostTensor::new(vec![7, 5], (0..35).map(|v| v as f32).collect());
        // 2 rows a chunk (40 bytes of 20-byte rows, and 44 rounds down), a row a chunk where the
        // limit is under a row, whole where it fits.
        for limit in [Some(40), Some(44), Some(8), Some(140), None] {
            let got = pollster::block_on(be.read(&upload_staged(&be, &t, limit).unwrap())).unwrap();
            assert_eq!(got.shape, t.shape, "{limit:?}");
            assert_eq!(got.data, t.data, "{limit:?}");
        }
    }
}
