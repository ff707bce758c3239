//! The pending command encoder that every op records into, and the arena that holds the small
//! per-dispatch data (uniform params, gather index lists) until the next submit.
//!
//! Everything up to a `read` becomes one command buffer and one submit, unless `submit_every` is
//! set: then the work is also submitted every that many dispatches, so that the device can start
//! on a step while the host records the rest. A submit does not wait for the device: the queue
//! keeps submits in order, so a pooled buffer reused across a submit is still written after its
//! earlier readers. Dispatches share one open compute pass: WebGPU orders dispatches within a pass
//! (each is its own usage scope), so a pass only has to end for the copies a `read` records.

use std::collections::HashMap;

use super::pipelines::Kernel;
use super::profile::Profiler;
use crate::Error;

/// The bytes bound for a kernel's uniform params, whatever its own params' size (the largest, the
/// GEMMs', is 80): they are bound at a dynamic offset into an arena chunk, and such a binding has
/// one size for every offset. Checked by `WgpuBackend::run`.
pub(crate) const PARAMS_BYTES: u64 = 128;

/// Bind groups kept before the cache starts over (a training step binds about 2,000 ranges).
const MAX_BIND_GROUPS: usize = 16_384;

/// A buffer range bound to a kernel.
#[derive(Clone, Copy)]
pub(crate) struct Binding<'a> {
    pub buf: &'a wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
}

impl<'a> Binding<'a> {
    pub fn whole(buf: &'a wgpu::Buffer, size: u64) -> Self {
        Binding { buf, offset: 0, size: size.max(4) }
    }
}

fn entry(binding: u32, b: Binding<'_>) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: b.buf,
            offset: b.offset,
            size: wgpu::BufferSize::new(b.size),
        }),
    }
}

/// What a bind group binds: its layout and each entry's (buffer, offset, size) in binding order,
/// the params entry being (arena chunk, 0, `PARAMS_BYTES`).
#[derive(PartialEq, Eq, Hash)]
struct BindKey {
    layout: wgpu::BindGroupLayout,
    entries: Vec<(wgpu::Buffer, u64, u64)>,
}

/// Bind groups by what they bind. A forward, a training step or an ablate sweep binds the same
/// pooled buffers and arena offsets in the same order each time, so after the first round no bind
/// group is created, and none is validated again. A cached bind group keeps its buffers alive:
/// they are pooled ones, which live as long as the pool anyway, and `clear` goes with the pool's
/// trim.
#[derive(Default)]
pub(crate) struct BindGroups {
    map: HashMap<BindKey, wgpu::BindGroup>,
    /// Bind groups created so far (for diagnostics: a steady loop should create none).
    pub created: u64,
}

impl BindGroups {
    fn get(&mut self, device: &wgpu::Device, key: BindKey) -> wgpu::BindGroup {
        if let Some(bg) = self.map.get(&key) {
            return bg.clone();
        }
        let bg = {
            let entries: Vec<wgpu::BindGroupEntry<'_>> = key
                .entries
                .iter()
                .enumerate()
                .map(|(i, (buf, offset, size))| entry(i as u32, Binding { buf, offset: *offset, size: *size }))
                .collect();
            device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &key.layout, entries: &entries })
        };
        self.created += 1;
        if self.map.len() >= MAX_BIND_GROUPS {
            self.map.clear(); // a loop that never repeats its bindings: start over, never grow without bound
        }
        self.map.insert(key, bg.clone());
        bg
    }

    pub fn clear(&mut self) {
        self.map.clear();
    }
}

const ARENA_CHUNK: u64 = 64 * 1024;

struct ArenaChunk {
    buf: wgpu::Buffer,
    /// Host copy of what the pending commands need; written with one `write_buffer` per chunk
    /// just before the submit. A chunk is never written twice for one submit, and `write_buffer`
    /// is ordered after earlier submits on the queue, so reusing chunks across submits is safe.
    mirror: Vec<u8>,
}

/// Bump allocator over uniform+storage chunks, reset at each submit.
struct Arena {
    chunks: Vec<ArenaChunk>,
    cur: usize,
    align: u64,
}

impl Arena {
    fn push(&mut self, device: &wgpu::Device, data: &[u8]) -> (wgpu::Buffer, u64, u64) {
        let size = (data.len() as u64).max(16).next_multiple_of(16);
        loop {
            if self.cur == self.chunks.len() {
                let cap = size.next_multiple_of(ARENA_CHUNK);
                let buf = device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("carve arena"),
                    size: cap,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                self.chunks.push(ArenaChunk { buf, mirror: Vec::new() });
            }
            let c = &mut self.chunks[self.cur];
            let off = (c.mirror.len() as u64).next_multiple_of(self.align);
            if off + size <= c.buf.size() {
                c.mirror.resize(off as usize, 0);
                c.mirror.extend_from_slice(data);
                c.mirror.resize((off + size) as usize, 0);
                return (c.buf.clone(), off, size);
            }
            self.cur += 1;
        }
    }

    fn flush(&mut self, queue: &wgpu::Queue) {
        for c in &mut self.chunks {
            if !c.mirror.is_empty() {
                queue.write_buffer(&c.buf, 0, &c.mirror);
                c.mirror.clear();
            }
        }
        self.cur = 0;
    }
}

/// The `submit_every` that benchmarks put beside the default (0: a submit per read): a forward of
/// SmolLM2 is about 450 dispatches, a node-prune step about 2,000.
pub const OVERLAP_DISPATCHES: usize = 256;

pub(crate) struct Recorder {
    encoder: Option<wgpu::CommandEncoder>,
    pass: Option<wgpu::ComputePass<'static>>,
    arena: Arena,
    pub bind_groups: BindGroups,
    /// Dispatches recorded since the last submit.
    pub dispatches: usize,
    /// Submit once this many dispatches are recorded (0: only at reads).
    pub submit_every: usize,
    /// Command buffers submitted so far.
    pub submits: u64,
    /// Reads so far (each submits what was recorded before it).
    pub reads: u64,
    /// Timestamps around every dispatch, when profiling.
    pub profiler: Option<Profiler>,
}

impl Recorder {
    pub fn new(limits: &wgpu::Limits, profile: bool, submit_every: usize) -> Recorder {
        let align = limits.min_uniform_buffer_offset_alignment.max(limits.min_storage_buffer_offset_alignment).max(16);
        Recorder {
            encoder: None,
            pass: None,
            arena: Arena { chunks: Vec::new(), cur: 0, align: align as u64 },
            bind_groups: BindGroups::default(),
            dispatches: 0,
            submit_every,
            submits: 0,
            reads: 0,
            profiler: profile.then(Profiler::new),
        }
    }

    /// Copies `data` into the arena for the coming submit; returns (buffer, offset, size).
    pub fn stage(&mut self, device: &wgpu::Device, data: &[u8]) -> (wgpu::Buffer, u64, u64) {
        self.arena.push(device, data)
    }

    fn encoder(&mut self, device: &wgpu::Device) -> &mut wgpu::CommandEncoder {
        self.encoder
            .get_or_insert_with(|| device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("carve") }))
    }

    /// The open compute pass, begun if needed.
    fn pass(&mut self, device: &wgpu::Device) -> &mut wgpu::ComputePass<'static> {
        if self.pass.is_none() {
            let pass = self
                .encoder(device)
                .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("carve ops"), timestamp_writes: None })
                .forget_lifetime();
            self.pass = Some(pass);
        }
        self.pass.as_mut().expect("just set")
    }

    /// Records one dispatch of kernel `k`. `params` are the kernel's uniform words (f32s as bits).
    /// Submits what is recorded when this makes `submit_every` dispatches.
    #[allow(clippy::too_many_arguments)]
    pub fn dispatch(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        k: Kernel,
        pipeline: &wgpu::ComputePipeline,
        layout: &wgpu::BindGroupLayout,
        out: Binding<'_>,
        inputs: &[Binding<'_>],
        params: &[u32],
        groups: [u32; 3],
    ) {
        if groups.contains(&0) {
            return;
        }
        // The params, padded to PARAMS_BYTES, at a dynamic offset.
        let mut padded = [0u8; PARAMS_BYTES as usize];
        let bytes: &[u8] = bytemuck::cast_slice(params);
        padded[..bytes.len()].copy_from_slice(bytes);
        let (pbuf, poff, _) = self.stage(device, &padded);
        let poff = [poff as u32];
        let mut entries = Vec::with_capacity(2 + inputs.len());
        entries.push((out.buf.clone(), out.offset, out.size));
        entries.push((pbuf, 0, PARAMS_BYTES));
        entries.extend(inputs.iter().map(|b| (b.buf.clone(), b.offset, b.size)));
        let bg = self.bind_groups.get(device, BindKey { layout: layout.clone(), entries });
        self.dispatches += 1;
        if let Some(p) = &mut self.profiler {
            // A pass of its own, with timestamps at its start and end.
            let (query_set, q) = p.next(device, k);
            self.pass = None;
            let writes = wgpu::ComputePassTimestampWrites {
                query_set: &query_set,
                beginning_of_pass_write_index: Some(q),
                end_of_pass_write_index: Some(q + 1),
            };
            let enc = self.encoder(device);
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("carve op"), timestamp_writes: Some(writes) });
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bg, &poff);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        } else {
            let pass = self.pass(device);
            pass.set_pipeline(pipeline);
            pass.set_bind_group(0, &bg, &poff);
            pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        }
        if self.submit_every > 0 && self.dispatches >= self.submit_every {
            self.submit(device, queue);
        }
    }

    /// Ends the pass and records `src → dst` copies after everything recorded so far.
    pub fn copy(&mut self, device: &wgpu::Device, src: &wgpu::Buffer, dst: &wgpu::Buffer, dst_off: u64, bytes: u64) {
        self.pass = None;
        self.encoder(device).copy_buffer_to_buffer(src, 0, dst, dst_off, bytes);
    }

    /// Writes the arena and submits everything recorded (possibly nothing), with the resolve of
    /// its timestamps when profiling.
    pub fn submit(&mut self, device: &wgpu::Device, queue: &wgpu::Queue) -> Option<wgpu::SubmissionIndex> {
        self.pass = None;
        self.arena.flush(queue);
        self.dispatches = 0;
        let mut enc = self.encoder.take()?;
        if let Some(p) = &mut self.profiler {
            p.resolve(device, &mut enc);
        }
        self.submits += 1;
        Some(queue.submit(Some(enc.finish())))
    }
}

/// Single-value channel resolved by a `map_async` callback: natively `read` polls the device until
/// it is resolved; in the browser the event loop resolves it and wakes the awaiting task.
pub(crate) mod oneshot {
    use std::future::Future;
    use std::pin::Pin;
    use std::sync::{Arc, Mutex};
    use std::task::{Context, Poll, Waker};

    struct Shared<T> {
        value: Option<T>,
        waker: Option<Waker>,
    }

    pub struct Sender<T>(Arc<Mutex<Shared<T>>>);
    pub struct Receiver<T>(Arc<Mutex<Shared<T>>>);

    pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
        let s = Arc::new(Mutex::new(Shared { value: None, waker: None }));
        (Sender(s.clone()), Receiver(s))
    }

    impl<T> Sender<T> {
        pub fn send(self, v: T) {
            let waker = match self.0.lock() {
                Ok(mut g) => {
                    g.value = Some(v);
                    g.waker.take()
                }
                Err(_) => None,
            };
            if let Some(w) = waker {
                w.wake();
            }
        }
    }

    impl<T> Receiver<T> {
        /// Whether the value has arrived.
        #[allow(dead_code)] // used natively only
        pub fn is_ready(&self) -> bool {
            self.0.lock().map(|g| g.value.is_some()).unwrap_or(true)
        }

        /// The value, if it has arrived.
        #[allow(dead_code)] // used natively only
        pub fn try_take(&self) -> Option<T> {
            self.0.lock().ok()?.value.take()
        }
    }

    impl<T> Future for Receiver<T> {
        type Output = Option<T>;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            let Ok(mut g) = self.0.lock() else { return Poll::Ready(None) };
            match g.value.take() {
                Some(v) => Poll::Ready(Some(v)),
                None => {
                    g.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }
    }
}

pub(crate) fn lock_err<T>(_: T) -> Error {
    Error::Backend("wgpu backend state lock poisoned (an earlier op panicked)".into())
}
