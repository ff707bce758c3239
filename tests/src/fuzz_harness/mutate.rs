//! Random mutations of corpus inputs for the short run: what a coverage-guided fuzzer tries first
//! (bit flips, inserted and deleted bytes, cuts, splices), plus numbers swapped for edge values
//! both as text (JSON) and as little-endian integers (binary headers).

/// xorshift64*: a seeded stream, so that a failing case is replayed from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Numbers that break readers: zero, one, negative, boundaries of the integer types, huge floats.
const TEXT_NUMBERS: [&str; 16] = [
    "0", "1", "-1", "2", "255", "65536", "4294967296", "9223372036854775808", "18446744073709551615",
    "18446744073709551616", "1e12", "-1e-5", "1e308", "1e400", "0.0", "-0",
];
const INT_VALUES: [u64; 10] = [0, 1, 2, 0x7f, 0xff, 0xffff, 0x8000_0000, 0xffff_ffff, 1 << 62, u64::MAX];

/// `input` after one to four mutations; `other` is another corpus input to splice from.
pub fn mutate(input: &[u8], other: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        one(&mut v, other, rng);
    }
    v
}

fn one(v: &mut Vec<u8>, other: &[u8], rng: &mut Rng) {
    let len = v.len();
    let at = |rng: &mut Rng| if len == 0 { 0 } else { rng.below(len) };
    match rng.below(9) {
        0 if len > 0 => {
            let i = at(rng);
            v[i] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let i = at(rng);
            v[i] = [0, 0xff, 0x7f, 0x80, b'"', b'\\', b'{', b'.', b'9'][rng.below(9)];
        }
        2 => {
            let i = if len == 0 { 0 } else { rng.below(len + 1) };
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            v.splice(i..i, bytes);
        }
        3 if len > 0 => {
            let i = at(rng);
            let n = 1 + rng.below((len - i).min(64));
            v.drain(i..i + n);
        }
        4 => v.truncate(if len == 0 { 0 } else { rng.below(len) }),
        5 if len > 0 => {
            // A range copied elsewhere in the same input (repeated keys, entries, tensors).
            let i = at(rng);
            let n = 1 + rng.below((len - i).min(256));
            let piece = v[i..i + n].to_vec();
            let j = rng.below(v.len() + 1);
            v.splice(j..j, piece);
        }
        6 if !other.is_empty() => {
            // The head of this input with the tail of another.
            let i = if len == 0 { 0 } else { rng.below(len + 1) };
            let j = rng.below(other.len());
            v.truncate(i);
            v.extend_from_slice(&other[j..]);
        }
        7 => text_number(v, rng),
        _ if len >= 8 => {
            let i = rng.below(len - 3);
            let x = INT_VALUES[rng.below(INT_VALUES.len())];
            let width = if i + 8 <= len && rng.below(2) == 0 { 8 } else { 4 };
            v[i..i + width].copy_from_slice(&x.to_le_bytes()[..width]);
        }
        _ => v.push(rng.next() as u8),
    }
}

/// A run of digits (a JSON number, an index in a name) replaced by an edge value.
fn text_number(v: &mut Vec<u8>, rng: &mut Rng) {
    let starts: Vec<usize> =
        (0..v.len()).filter(|&i| v[i].is_ascii_digit() && (i == 0 || !v[i - 1].is_ascii_digit())).collect();
    if starts.is_empty() {
        return;
    }
    let s = starts[rng.below(starts.len())];
    let mut e = s;
    while e < v.len() && (v[e].is_ascii_digit() || v[e] == b'.' || v[e] == b'e' || v[e] == b'-') {
        e += 1;
    }
    v.splice(s..e, TEXT_NUMBERS[rng.below(TEXT_NUMBERS.len())].bytes());
}
