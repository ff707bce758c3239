//! Host ↔ device transfers: `upload` (split into row-chunks above the binding limit) and `read`
//! (the one submit: copy to MAP_READ staging, map, copy out).

use super::pipelines::Kernel;
use super::pool::STAGING_USAGE;
use super::recorder::{lock_err, oneshot};
use super::tensor::{rows_cols, rows_per_chunk, Chunk, GpuTensor};
use super::WgpuBackend;
use crate::{Error, HostTensor, Result};

/// The largest upload staged through the arena (bytes); larger ones get a buffer of their own.
pub(super) const SMALL_UPLOAD: usize = 64 * 1024;

impl WgpuBackend {
    /// A large upload (weights) gets a new buffer written while mapped; a small one (masks,
    /// ablation values, a step's gates: at most `SMALL_UPLOAD` bytes) is staged in the recorder's
    /// arena and copied by the `upload` kernel into a pooled buffer, so a training step or an
    /// ablate sweep creates no buffers once the pool holds what it needs.
    pub(super) fn upload_host(&self, t: &HostTensor) -> Result<GpuTensor> {
        let n: usize = t.shape.iter().product();
        if n != t.data.len() {
            return Err(Error::Backend(format!("upload: shape {:?} vs {} values", t.shape, t.data.len())));
        }
        if n > 0 && n * 4 <= SMALL_UPLOAD && n as u64 * 4 <= self.limit() {
            let out = self.output("upload", t.shape.clone())?;
            let ob = out.single("upload", "out", self.limit())?;
            self.run(Kernel::Upload, ob, &[], Some(bytemuck::cast_slice(&t.data)), &[n as u32, 0, 0, 0], self.groups_for(n)?)?;
            return Ok(out);
        }
        let (rows, cols) = rows_cols(&t.shape);
        let bytes = n as u64 * 4;
        let per = if bytes <= self.limit() { rows.max(1) } else { rows_per_chunk("upload", &t.shape, self.limit())? };
        let mut chunks = Vec::new();
        let mut row0 = 0;
        loop {
            let nr = per.min(rows - row0);
            let data = &t.data[row0 * cols..(row0 + nr) * cols];
            chunks.push(Chunk { row0, rows: nr, buf: self.pool.upload(bytemuck::cast_slice(data))? });
            row0 += nr;
            if row0 >= rows {
                break;
            }
        }
        Ok(GpuTensor::new(t.shape.clone(), chunks))
    }

    pub(super) async fn read_tensor(&self, t: &GpuTensor) -> Result<HostTensor> {
        let mut v = self.read_tensors(&[t]).await?;
        Ok(v.pop().expect("one tensor read"))
    }

    /// Reads several tensors with one submit: every chunk of every tensor is copied to its own
    /// staging buffer, then all are mapped together.
    pub(super) async fn read_tensors(&self, ts: &[&GpuTensor]) -> Result<Vec<HostTensor>> {
        let ctx = &self.ctx;
        ctx.check_health()?;
        let chunks: Vec<&Chunk> = ts.iter().filter(|t| t.numel() > 0).flat_map(|t| t.chunks().iter()).collect();
        if chunks.is_empty() {
            return Ok(ts.iter().map(|t| HostTensor::new(t.shape().to_vec(), Vec::new())).collect());
        }
        // One staging buffer per chunk: a split weight can be bigger than one buffer may be.
        let stagings: Vec<_> = chunks.iter().map(|c| self.pool.take(c.buf.bytes, STAGING_USAGE)).collect();
        let _index = {
            let mut rec = self.rec.lock().map_err(lock_err)?;
            for (c, s) in chunks.iter().zip(&stagings) {
                rec.copy(&ctx.device, &c.buf.buf, &s.buf, 0, c.buf.bytes);
            }
            rec.reads += 1;
            rec.submit(&ctx.device, &ctx.queue)
        };
        let mut receivers = Vec::new();
        for s in &stagings {
            let (tx, rx) = oneshot::channel();
            s.buf.slice(0..s.bytes).map_async(wgpu::MapMode::Read, move |r| tx.send(r));
            receivers.push(rx);
        }
        let mut results = Vec::new();
        #[cfg(not(target_arch = "wasm32"))]
        {
            // Another thread's `poll` may be the one that runs our map callback, and its poll can
            // make ours return before that callback has run: wait for our submission, then give
            // the callback a moment (bounded) to land.
            let wait = wgpu::PollType::Wait { submission_index: _index, timeout: None };
            for attempt in 0..10_000 {
                ctx.device
                    .poll(wait.clone())
                    .map_err(|e| Error::Backend(format!("wgpu read: waiting for the device: {e}")))?;
                if receivers.iter().all(|r| r.is_ready()) || ctx.lost.load(std::sync::atomic::Ordering::SeqCst) {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_micros(if attempt < 100 { 10 } else { 1000 }));
            }
            for rx in &receivers {
                results.push(rx.try_take());
            }
        }
        #[cfg(target_arch = "wasm32")]
        for rx in receivers {
            results.push(rx.await);
        }
        ctx.check_health()?;
        let mut data = Vec::with_capacity(chunks.iter().map(|c| c.buf.bytes as usize / 4).sum());
        for (s, r) in stagings.iter().zip(results) {
            match r {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(Error::Backend(format!("wgpu read: mapping failed: {e}"))),
                None => return Err(Error::Backend("wgpu read: the device never completed the mapping".into())),
            }
            let got = s.buf.slice(0..s.bytes).get_mapped_range().map(|view| {
                // The mapping may not be 4-aligned for f32 on every platform: decode bytewise.
                data.extend(view.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])));
            });
            s.buf.unmap(); // also on error: the buffer goes back to the pool
            got.map_err(|e| Error::Backend(format!("wgpu read: {e}")))?;
        }
        // Back into tensors, in order; a chunk's buffer may be longer than its rows (pooled sizes).
        let mut out = Vec::with_capacity(ts.len());
        let mut it = stagings.iter().zip(&chunks);
        let mut flat = data.into_iter();
        for t in ts {
            let mut v = Vec::with_capacity(t.numel());
            if t.numel() > 0 {
                for _ in t.chunks() {
                    let (s, c) = it.next().expect("a staging buffer per chunk");
                    let n = s.bytes as usize / 4;
                    let want = c.rows * rows_cols(t.shape()).1;
                    let part: Vec<f32> = flat.by_ref().take(n).collect();
                    v.extend_from_slice(&part[..want.min(part.len())]);
                }
            }
            v.truncate(t.numel());
            out.push(HostTensor::new(t.shape().to_vec(), v));
        }
        Ok(out)
    }
}
