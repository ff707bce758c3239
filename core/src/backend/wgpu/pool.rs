//! Buffer pool by size class. A forward allocates hundreds of same-sized activations; creating
//! and destroying a GPU buffer for each costs far more than the op. Buffers return to the pool
//! when the last tensor handle drops.
//!
//! Why reuse inside one pending encoder is safe: compute passes run in record order and wgpu
//! inserts the barriers, so a buffer freed after op A read it and handed to op B as output is
//! written after A read it. What is NOT safe is `queue.write_buffer` into a recycled buffer: that
//! write lands at the next submit, before every recorded command. So pooled buffers are only
//! ever written by GPU commands (a small upload is one: the `upload` kernel copies the staged
//! values) or, for large uploads, freshly created `mapped_at_creation`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);
pub(crate) const STAGING_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::MAP_READ.union(wgpu::BufferUsages::COPY_DST);

/// Size classes: 4 per power of two above 256 bytes, so at most 25% is wasted.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(256);
    if b <= 1024 {
        return b.next_power_of_two();
    }
    let e = 63 - (b - 1).leading_zeros(); // 2^e < b <= 2^(e+1)
    let step = 1u64 << (e - 2); // a quarter of 2^e
    b.div_ceil(step) * step
}

/// Free buffers by (size, usage). Each class is a set, and `take` hands out its least buffer (in
/// wgpu's fixed order of buffers), not the one freed last: which buffer an op gets then depends
/// only on which are free, not on the order they were dropped in, so a loop settles into binding
/// the same buffers every round and finds its bind groups in the recorder's cache.
#[derive(Default)]
struct Free {
    lists: HashMap<(u64, u32), BTreeSet<wgpu::Buffer>>,
    bytes: u64,
}

/// Shared by the backend and every live buffer (which returns itself on drop).
pub(crate) struct Pool {
    device: wgpu::Device,
    max_buffer: u64,
    free: Mutex<Free>,
    /// Buffers created so far (taken fresh or uploaded): what the pool did not have.
    created: AtomicU64,
}

impl Pool {
    // In the browser wgpu handles are not Send/Sync, and nothing is shared across threads there.
    #[cfg_attr(target_arch = "wasm32", allow(clippy::arc_with_non_send_sync))]
    pub fn new(device: wgpu::Device, max_buffer: u64) -> Arc<Pool> {
        Arc::new(Pool { device, max_buffer, free: Mutex::new(Free::default()), created: AtomicU64::new(0) })
    }

    /// The size actually allocated for `bytes`: its class, unless that is over the device's buffer
    /// size limit (a near-limit weight gets exactly its size).
    fn alloc_size(&self, bytes: u64) -> u64 {
        let c = size_class(bytes);
        if c > self.max_buffer {
            bytes.max(4).next_multiple_of(4)
        } else {
            c
        }
    }

    /// A buffer of at least `bytes`, reused when one of its class is free. Its contents are
    /// whatever the last user left: callers must write it with GPU commands before reading.
    pub fn take(self: &Arc<Self>, bytes: u64, usage: wgpu::BufferUsages) -> PooledBuffer {
        let size = self.alloc_size(bytes);
        let reused = self.free.lock().ok().and_then(|mut f| {
            let b = f.lists.get_mut(&(size, usage.bits()))?.pop_first()?;
            f.bytes -= size;
            Some(b)
        });
        let buf = reused.unwrap_or_else(|| {
            self.created.fetch_add(1, Ordering::Relaxed);
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("carve pooled"),
                size,
                usage,
                mapped_at_creation: false,
            })
        });
        PooledBuffer { buf, bytes, pool: self.clone() }
    }

    /// A new buffer holding `data`, written while mapped at creation (never `write_buffer`:
    /// see the module doc). It joins the pool when dropped.
    pub fn upload(self: &Arc<Self>, data: &[u8]) -> crate::Result<PooledBuffer> {
        let bytes = data.len() as u64;
        let size = self.alloc_size(bytes);
        self.created.fetch_add(1, Ordering::Relaxed);
        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("carve upload"),
            size,
            usage: STORAGE_USAGE,
            mapped_at_creation: true,
        });
        {
            let mut view = buf
                .get_mapped_range_mut(..)
                .map_err(|e| crate::Error::Backend(format!("wgpu upload of {bytes} bytes: {e}")))?;
            view.slice(..data.len()).copy_from_slice(data);
        }
        buf.unmap();
        Ok(PooledBuffer { buf, bytes, pool: self.clone() })
    }

    /// Buffers created since the pool began (for diagnostics: a steady loop should create none).
    pub fn created(&self) -> u64 {
        self.created.load(Ordering::Relaxed)
    }

    /// Bytes held by free buffers (for diagnostics).
    pub fn free_bytes(&self) -> u64 {
        self.free.lock().map(|f| f.bytes).unwrap_or(0)
    }

    /// Drop every free buffer, e.g. between models.
    pub fn trim(&self) {
        if let Ok(mut f) = self.free.lock() {
            *f = Free::default();
        }
    }
}

/// A pooled buffer plus the logical size in use. Returns to the pool on drop.
pub(crate) struct PooledBuffer {
    pub buf: wgpu::Buffer,
    /// Bytes of data (the buffer may be larger: its size class).
    pub bytes: u64,
    pool: Arc<Pool>,
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let size = self.buf.size();
        let key = (size, self.buf.usage().bits());
        if let Ok(mut f) = self.pool.free.lock() {
            f.bytes += size;
            f.lists.entry(key).or_default().insert(self.buf.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn classes_cover_and_waste_little() {
        for b in [1u64, 255, 256, 257, 1000, 1024, 1025, 1500, 4096, 5000, 1 << 20, (1 << 20) + 1, 154_000_000] {
            let c = size_class(b);
            assert!(c >= b, "{b} -> {c}");
            assert!(b < 256 || (c as f64) <= b as f64 * 1.25 + 256.0, "{b} -> {c}");
            assert_eq!(c % 4, 0);
        }
    }
}
