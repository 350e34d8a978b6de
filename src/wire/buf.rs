//! Appending short byte strings without calling libc's `memcpy`.
//!
//! The static release links musl, whose x86_64 `memcpy` copies with byte moves and
//! `rep movsq`: fine for large blocks, slow for the 10–120-byte pieces a metrics page is
//! made of (a name, a label block, a value). Profiled on a page of 450,000 samples, musl's
//! `memcpy` took a quarter of the scrape. [`append`] copies pieces up to [`SHORT`] bytes
//! with fixed-size unaligned loads and stores (no loop, so the compiler cannot turn it back
//! into a `memcpy` call) and leaves longer ones to `extend_from_slice`.

use std::ptr;

/// Longest piece copied here; longer ones go to `extend_from_slice`.
pub(crate) const SHORT: usize = 127;

/// Copies `N` bytes (`N` a power of two up to 64) from `src` to `dst` when `n & N` is set,
/// advancing both.
///
/// # Safety
/// `src` must be readable and `dst` writable for `N` bytes when the bit is set.
#[inline(always)]
unsafe fn step<T: Copy>(n: usize, src: &mut *const u8, dst: &mut *mut u8) {
    let size = std::mem::size_of::<T>();
    if n & size != 0 {
        // SAFETY: the caller guarantees `size` bytes at both pointers; unaligned access
        // is what read/write_unaligned are for, and T is a plain integer or array type.
        unsafe {
            ptr::write_unaligned(dst.cast::<T>(), ptr::read_unaligned(src.cast::<T>()));
            *src = src.add(size);
            *dst = dst.add(size);
        }
    }
}

/// Appends `src` to `out`, exactly like `out.extend_from_slice(src)`.
#[inline(always)]
pub(crate) fn append(out: &mut Vec<u8>, src: &[u8]) {
    let n = src.len();
    if n > SHORT {
        out.extend_from_slice(src);
        return;
    }
    out.reserve(n);
    let len = out.len();
    // SAFETY: `reserve(n)` guarantees capacity for `n` more bytes after `len`; `src` is
    // valid for `n` bytes and cannot overlap `out`'s spare capacity (it is borrowed
    // shared while `out` is borrowed mutably). The steps for the set bits of `n` (64, 32,
    // 16, 8, 4, 2, 1; n ≤ 127) copy exactly `n` bytes, all of them initialized before
    // `set_len` exposes them.
    unsafe {
        let mut s = src.as_ptr();
        let mut d = out.as_mut_ptr().add(len);
        step::<[u128; 4]>(n, &mut s, &mut d);
        step::<[u128; 2]>(n, &mut s, &mut d);
        step::<u128>(n, &mut s, &mut d);
        step::<u64>(n, &mut s, &mut d);
        step::<u32>(n, &mut s, &mut d);
        step::<u16>(n, &mut s, &mut d);
        step::<u8>(n, &mut s, &mut d);
        out.set_len(len + n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_append_is_extend_from_slice_for_every_length() {
        let src: Vec<u8> = (0..=255u8).cycle().take(400).collect();
        for start in 0..3 {
            for n in 0..=300 {
                let piece = &src[start..start + n];
                let mut a = b"head".to_vec();
                let mut b = a.clone();
                append(&mut a, piece);
                b.extend_from_slice(piece);
                assert_eq!(a, b, "length {n} at offset {start}");
            }
        }
        let mut grow = Vec::new();
        for i in 0..1000 {
            append(&mut grow, &src[..i % 100]);
        }
        assert_eq!(grow.len(), (0..1000).map(|i| i % 100).sum::<usize>());
    }
}
