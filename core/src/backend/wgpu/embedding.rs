//! gather_rows, including from a table stored as row-chunks: ids are grouped on the host by the
//! chunk that holds them, and each chunk gets one launch over its (out_row, row_in_chunk) pairs.

use super::pipelines::Kernel;
use super::tensor::{shape_err, u32p, GpuTensor};
use super::recorder::Binding;
use super::WgpuBackend;
use crate::Result;

impl WgpuBackend {
    pub(super) fn op_gather_rows(&self, table: &GpuTensor, ids: &[u32]) -> Result<GpuTensor> {
        const OP: &str = "gather_rows";
        if table.shape().len() != 2 {
            return Err(shape_err(OP, format!("table must be [rows, cols], got {:?}", table.shape())));
        }
        let (rows, cols) = table.rows_cols();
        if let Some(&bad) = ids.iter().find(|&&i| i as usize >= rows) {
            return Err(shape_err(OP, format!("id {bad} out of range for table {:?}", table.shape())));
        }
        let out = self.output(OP, vec![ids.len(), cols])?;
        let limit = self.limit();
        let ob = out.single(OP, "out", limit)?;
        for c in table.chunks() {
            let pairs: Vec<u32> = ids
                .iter()
                .enumerate()
                .filter(|(_, &id)| (c.row0..c.row0 + c.rows).contains(&(id as usize)))
                .flat_map(|(i, &id)| [i as u32, id - c.row0 as u32])
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let n = pairs.len() / 2 * cols;
            let params = [u32p(OP, n)?, u32p(OP, cols)?, 0, 0];
            let tb = Binding::whole(&c.buf.buf, c.buf.bytes);
            self.run(Kernel::Gather, ob, &[tb], Some(bytemuck::cast_slice(&pairs)), &params, self.groups_for(n)?)?;
        }
        Ok(out)
    }
}
