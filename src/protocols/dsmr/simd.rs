//! The scan for the end of a group, which runs over every line of every
//! telegram, sixteen bytes at a time with SSE2 (every x86_64 CPU has it).
//! Compiled only where the whole build has SSE2; elsewhere (the Raspberry Pi's
//! ARM) the caller keeps its portable loop.

use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8};

/// Offset of the first `(`, `)` or LF among the sixteen bytes of `chunk`.
#[inline(always)]
pub(super) fn first_delimiter(chunk: &[u8; 16]) -> Option<usize> {
    // SAFETY: the module is compiled only where SSE2 is enabled for the whole
    // build (the x86_64 baseline).
    unsafe { first_delimiter_sse2(chunk) }
}

#[target_feature(enable = "sse2")]
fn first_delimiter_sse2(chunk: &[u8; 16]) -> Option<usize> {
    // SAFETY: `chunk` is sixteen readable bytes, and `loadu` takes any alignment.
    let v = unsafe { _mm_loadu_si128(chunk.as_ptr().cast::<__m128i>()) };
    let is = |b: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(b as i8));
    let hits = _mm_or_si128(_mm_or_si128(is(b'('), is(b')')), is(b'\n'));
    // One bit per byte, the first byte lowest.
    let mask = _mm_movemask_epi8(hits) as u32;
    (mask != 0).then_some(mask.trailing_zeros() as usize)
}
