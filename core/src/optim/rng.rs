//! SplitMix64: a small, fast random source whose whole state is one `u64`, so a training run's
//! state file can save it and a resumed run draws the same numbers.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMix64 {
    pub state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `k` distinct indices below `n` (all of them when `k ≥ n`), in draw order, by a partial
    /// Fisher–Yates shuffle: a training step's minibatch.
    pub fn choose(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..n).collect();
        let k = k.min(n);
        for i in 0..k {
            let j = i + (self.next_u64() % (n - i) as u64) as usize;
            idx.swap(i, j);
        }
        idx.truncate(k);
        idx
    }

    /// Uniform in the open interval (0, 1): the top 53 bits, offset by half a step, so neither 0
    /// nor 1 is drawn (the hard-concrete sample takes ln u and ln(1 − u)).
    pub fn open01(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_open_and_replayable() {
        let mut a = SplitMix64::new(42);
        let first: Vec<f64> = (0..1000).map(|_| a.open01()).collect();
        assert!(first.iter().all(|&u| u > 0.0 && u < 1.0));
        let mut b = SplitMix64::new(42);
        assert_eq!(first, (0..1000).map(|_| b.open01()).collect::<Vec<_>>());
        let saved = a;
        let mut c = saved;
        assert_eq!(a.next_u64(), c.next_u64(), "a saved state draws on alike");
    }
}
