//! Seeding and the few distributions the simulator needs.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// splitmix64: a good 64-bit mixer, used to derive independent seeds.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// An RNG for one stream of one account (its plan, or one of its days). Streams are
/// independent of each other, so changing the number of accounts or days does not change
/// what the other accounts do, and a day can be generated without replaying earlier ones.
pub fn stream(seed: u64, account: u64, stream: u64) -> ChaCha8Rng {
    let s = splitmix(splitmix(seed ^ 0x5EED_0FC0_FFEE) ^ splitmix(account.wrapping_add(1)));
    ChaCha8Rng::seed_from_u64(splitmix(s ^ stream.wrapping_mul(0xA24B_AED4_963E_E407)))
}

/// Uniform in [lo, hi).
pub fn uniform(rng: &mut ChaCha8Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// Standard normal (Box-Muller).
pub fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Exponential with the given mean.
pub fn exponential(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    -(1.0 - rng.random::<f64>()).ln() * mean
}

/// Poisson with mean `lambda` (Knuth's method; a rounded normal for large means).
pub fn poisson(rng: &mut ChaCha8Rng, lambda: f64) -> u32 {
    if lambda <= 0.0 {
        return 0;
    }
    if lambda > 30.0 {
        return (lambda + lambda.sqrt() * normal(rng)).round().max(0.0) as u32;
    }
    let limit = (-lambda).exp();
    let mut k = 0;
    let mut p = rng.random::<f64>();
    while p > limit {
        k += 1;
        p *= rng.random::<f64>();
    }
    k
}

/// A random version-4 style UUID, for message and anonymous ids.
pub fn uuid(rng: &mut ChaCha8Rng) -> String {
    let a: u64 = rng.random();
    let b: u64 = rng.random();
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// A short lowercase alphanumeric id.
pub fn short_id(rng: &mut ChaCha8Rng, len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}
