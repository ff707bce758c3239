//! Each kernel's time on the device, from timestamp queries (`WgpuOptions::profile`, used by
//! `carve bench ops --backend gpu`).
//!
//! While profiling, every dispatch runs in a compute pass of its own that writes a timestamp at
//! its start and at its end (the WebGPU way: no timestamps inside a pass needed). A kernel's time
//! is (end − start) × the queue's timestamp period. The queries of one submit are resolved into a
//! buffer at that submit and read back by `take_kernel_times`, which sums them by kernel name.

use super::pipelines::Kernel;
use super::WgpuBackend;
use std::time::Duration;
#[cfg(not(target_arch = "wasm32"))]
use {super::recorder::lock_err, crate::Error, crate::Result, std::collections::BTreeMap};

/// Timestamps per query set (wgpu's maximum): two per dispatch.
const SET_QUERIES: u32 = wgpu::QUERY_SET_MAX_QUERIES;

/// Query sets of the submit being recorded, and the resolved timestamps of earlier submits.
pub(crate) struct Profiler {
    sets: Vec<wgpu::QuerySet>,
    /// The kernel of each dispatch recorded since the last submit, in order.
    kernels: Vec<Kernel>,
    /// Per submit: a MAP_READ buffer of (start, end) u64 pairs, and its dispatches' kernels.
    resolved: Vec<(wgpu::Buffer, Vec<Kernel>)>,
}

impl Profiler {
    pub fn new() -> Profiler {
        Profiler { sets: Vec::new(), kernels: Vec::new(), resolved: Vec::new() }
    }

    /// The query set and start index for the next dispatch (of kernel `k`); end = start + 1.
    pub fn next(&mut self, device: &wgpu::Device, k: Kernel) -> (wgpu::QuerySet, u32) {
        let q = 2 * self.kernels.len() as u32;
        let set = (q / SET_QUERIES) as usize;
        if set == self.sets.len() {
            self.sets.push(device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("carve kernel timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: SET_QUERIES,
            }));
        }
        self.kernels.push(k);
        (self.sets[set].clone(), q % SET_QUERIES)
    }

    /// Records, at the end of `enc`, the resolve of this submit's timestamps into a buffer to map.
    pub fn resolve(&mut self, device: &wgpu::Device, enc: &mut wgpu::CommandEncoder) {
        let n = 2 * self.kernels.len() as u64;
        if n == 0 {
            return;
        }
        let bytes = n * wgpu::QUERY_SIZE as u64;
        let buffer = |usage, label| {
            device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: bytes, usage, mapped_at_creation: false })
        };
        let resolved = buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC, "carve timestamps");
        let host = buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, "carve timestamps, host");
        for (i, set) in self.sets.iter().enumerate() {
            let first = i as u64 * SET_QUERIES as u64;
            if first >= n {
                break;
            }
            let count = (n - first).min(SET_QUERIES as u64) as u32;
            enc.resolve_query_set(set, 0..count, &resolved, first * wgpu::QUERY_SIZE as u64);
        }
        enc.copy_buffer_to_buffer(&resolved, 0, &host, 0, bytes);
        self.resolved.push((host, std::mem::take(&mut self.kernels)));
    }
}

/// One dispatch as the device timed it: its kernel, and its start and end in ns on the device's
/// clock (the timestamps × the queue's period).
#[derive(Clone, Debug, PartialEq)]
pub struct KernelSpan {
    pub kernel: String,
    pub start_ns: f64,
    pub end_ns: f64,
}

/// One kernel's total over the dispatches since the last take: launches and time on the device.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelTime {
    pub calls: u64,
    pub time: Duration,
}

impl WgpuBackend {
    /// Whether kernels are being timed (`WgpuOptions::profile`).
    pub fn profiling(&self) -> bool {
        self.rec.lock().map(|r| r.profiler.is_some()).unwrap_or(false)
    }

    /// Every kernel's launches and device time since the last take, by kernel name (e.g.
    /// `matmul`, `matmul (w [K,N], +=)`, `gated_sum`): `take_kernel_spans` summed.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn take_kernel_times(&self) -> Result<BTreeMap<String, KernelTime>> {
        let mut out: BTreeMap<String, KernelTime> = BTreeMap::new();
        for s in self.take_kernel_spans()? {
            // A pair out of order (a counter reset) counts as zero.
            let ns = (s.end_ns - s.start_ns).max(0.0);
            let e = out.entry(s.kernel).or_insert(KernelTime { calls: 0, time: Duration::ZERO });
            e.calls += 1;
            e.time += Duration::from_nanos(ns.round() as u64);
        }
        Ok(out)
    }

    /// Every dispatch since the last take, in the order recorded. Submits what is still recorded
    /// and waits for the device. An error when the backend was not created with `profile`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn take_kernel_spans(&self) -> Result<Vec<KernelSpan>> {
        let ctx = &self.ctx;
        let resolved = {
            let mut rec = self.rec.lock().map_err(lock_err)?;
            rec.submit(&ctx.device, &ctx.queue);
            let p = rec.profiler.as_mut().ok_or_else(|| {
                Error::Backend("kernel times asked of a wgpu backend made without `profile`".into())
            })?;
            std::mem::take(&mut p.resolved)
        };
        ctx.check_health()?;
        let period = ctx.queue.get_timestamp_period() as f64;
        let mut out = Vec::new();
        for (buf, kernels) in resolved {
            let (tx, rx) = std::sync::mpsc::channel();
            buf.slice(..).map_async(wgpu::MapMode::Read, move |r| {
                let _ = tx.send(r);
            });
            ctx.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Backend(format!("wgpu timestamps: waiting for the device: {e}")))?;
            rx.recv_timeout(Duration::from_secs(60))
                .map_err(|_| Error::Backend("wgpu timestamps: the device never completed the mapping".into()))?
                .map_err(|e| Error::Backend(format!("wgpu timestamps: mapping failed: {e}")))?;
            let ticks = buf.slice(..).get_mapped_range().map(|view| {
                view.chunks_exact(8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes"))).collect::<Vec<u64>>()
            });
            buf.unmap();
            let ticks = ticks.map_err(|e| Error::Backend(format!("wgpu timestamps: {e}")))?;
            for (k, t) in kernels.iter().zip(ticks.chunks_exact(2)) {
                out.push(KernelSpan { kernel: k.name(), start_ns: t[0] as f64 * period, end_ns: t[1] as f64 * period });
            }
        }
        ctx.check_health()?;
        Ok(out)
    }
}
