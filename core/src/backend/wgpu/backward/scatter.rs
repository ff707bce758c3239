//! `scatter_rows`, the backward of gather_rows: the output is zero-filled, then the source rows
//! are grouped on the host by target row (a plan of (target, first, end) triples into a list of
//! source rows), and one launch sums each target's sources in order, without atomics.

use super::super::pipelines::Kernel;
use super::super::tensor::{shape_err, u32p, GpuTensor};
use super::super::WgpuBackend;
use crate::Result;

impl WgpuBackend {
    /// `out [rows, C]` zero except `out[ids[i], :] += src[i, :]`.
    pub(in crate::backend::wgpu) fn op_scatter_rows(&self, src: &GpuTensor, ids: &[u32], rows: usize) -> Result<GpuTensor> {
        const OP: &str = "scatter_rows";
        if src.shape().is_empty() {
            return Err(shape_err(OP, "src must have at least one dimension"));
        }
        let (lead, cols) = src.shape().split_at(src.shape().len() - 1);
        let (n, cols): (usize, usize) = (lead.iter().product(), cols[0]);
        if n != ids.len() {
            return Err(shape_err(OP, format!("{} ids for {n} rows of {:?}", ids.len(), src.shape())));
        }
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= rows) {
            return Err(shape_err(OP, format!("id {bad} out of range for {rows} rows")));
        }
        let limit = self.limit();
        let srcb = src.single(OP, "src", limit)?;
        let out = self.output(OP, vec![rows, cols])?;
        self.zero_fill(OP, &out)?;
        if ids.is_empty() || cols == 0 {
            return Ok(out);
        }
        u32p(OP, n)?;
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.sort_by_key(|&i| ids[i as usize]);
        let mut plan = Vec::with_capacity(3 * n + n);
        let mut first = 0;
        while first < n {
            let id = ids[order[first] as usize];
            let end = first + order[first..].iter().take_while(|&&i| ids[i as usize] == id).count();
            plan.extend([id, first as u32, end as u32]);
            first = end;
        }
        let targets = plan.len() / 3;
        plan.extend_from_slice(&order);
        let m = targets * cols;
        let params = [u32p(OP, m)?, u32p(OP, cols)?, u32p(OP, 3 * targets)?, 0];
        let ob = out.single(OP, "out", limit)?;
        self.run(Kernel::ScatterRows, ob, &[srcb], Some(bytemuck::cast_slice(&plan)), &params, self.groups_for(m)?)?;
        Ok(out)
    }
}
