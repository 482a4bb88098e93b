//! Read planning: the points of a map coalesced into as few read requests as the
//! protocol and the device allow. A 40-point meter then costs a few requests a
//! poll, not 40 — on a 9600-baud RS485 bus that is the difference between a poll
//! taking 0.3 s and 4 s.

use super::point::RegisterKind;

/// One span of registers (or bits) a point needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub register: RegisterKind,
    pub address: u16,
    pub count: u16,
}

impl Span {
    /// One past the last address, widened so that a span ending at 65535 cannot overflow.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.count)
    }
}

/// One read request: `count` registers (or bits) from `address`.
pub type Block = Span;

/// Limits of the planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Registers a block may skip between two points: reading a few unused
    /// registers is cheaper than another request. 0 reads only adjacent points
    /// together, for devices that refuse reads touching undefined addresses.
    pub max_gap: u16,
    /// Most registers in one request (the protocol allows 125).
    pub max_registers: u16,
    /// Most bits in one request (the protocol allows 2000).
    pub max_bits: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_gap: 10,
            max_registers: 125,
            max_bits: 2000,
        }
    }
}

impl Limits {
    fn max_for(&self, kind: RegisterKind) -> u32 {
        let limit = if kind.is_bits() {
            self.max_bits
        } else {
            self.max_registers
        };
        u32::from(limit.clamp(1, kind.max_per_request()))
    }
}

/// The read requests covering every span. Spans of one table are merged while the
/// hole between them is at most `max_gap` and the block stays within the request
/// limit; overlapping spans share registers. A span longer than the limit on its
/// own is split (the caller reassembles it from consecutive blocks), so
/// every span is covered whatever the limits.
pub fn plan(spans: &[Span], limits: Limits) -> Vec<Block> {
    plan_avoiding(spans, &[], limits)
}

/// Like [`plan`], but no block reads through a hole that touches an `avoid` span:
/// registers the device refused must not be asked for again as part of a
/// neighbour's request.
pub fn plan_avoiding(spans: &[Span], avoid: &[Span], limits: Limits) -> Vec<Block> {
    let mut sorted: Vec<Span> = spans.iter().copied().filter(|s| s.count > 0).collect();
    sorted.sort_by_key(|s| (s.register, s.address, s.count));
    let mut blocks: Vec<Block> = Vec::new();
    for span in sorted {
        let max = limits.max_for(span.register);
        if let Some(last) = blocks.last_mut() {
            let (last_start, last_end) = (u32::from(last.address), last.end());
            let same_table = last.register == span.register;
            let gap_ok = u32::from(span.address) <= last_end + u32::from(limits.max_gap)
                && !avoid
                    .iter()
                    .any(|a| a.register == span.register && overlaps(a, last_end, u32::from(span.address)));
            let new_end = last_end.max(span.end());
            if same_table && gap_ok && new_end - last_start <= max {
                // At most `max` (≤ 2000) registers: fits a u16.
                last.count = (new_end - last_start) as u16;
                continue;
            }
            // A span starting inside the last block but reaching past its limit:
            // only the part not yet covered needs a new request.
            if same_table && u32::from(span.address) < last_end {
                push_split(&mut blocks, span.register, last_end, span.end(), max);
                continue;
            }
        }
        push_split(&mut blocks, span.register, u32::from(span.address), span.end(), max);
    }
    blocks
}

/// Whether `span` shares a register with the hole `start..end`.
fn overlaps(span: &Span, start: u32, end: u32) -> bool {
    u32::from(span.address) < end && span.end() > start
}

fn push_split(blocks: &mut Vec<Block>, register: RegisterKind, mut start: u32, end: u32, max: u32) {
    while start < end {
        let count = (end - start).min(max);
        blocks.push(Block {
            register,
            // Both fit: start < end ≤ 65536 and count ≤ 2000.
            address: start as u16,
            count: count as u16,
        });
        start += count;
    }
}

/// The values of one table read in blocks, for looking points up by address.
#[derive(Debug, Default, Clone)]
pub struct Image {
    words: std::collections::HashMap<(RegisterKind, u16), u16>,
}

impl Image {
    /// Records a block's answer: `values[i]` is the value at `address + i`.
    pub fn insert(&mut self, register: RegisterKind, address: u16, values: &[u16]) {
        for (i, v) in values.iter().enumerate() {
            if let Some(a) = u16::try_from(i).ok().and_then(|i| address.checked_add(i)) {
                self.words.insert((register, a), *v);
            }
        }
    }

    /// The span's values, if every one of them was read.
    pub fn get(&self, span: &Span) -> Option<Vec<u16>> {
        (0..span.count)
            .map(|i| {
                span.address
                    .checked_add(i)
                    .and_then(|a| self.words.get(&(span.register, a)).copied())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RegisterKind::*;

    fn s(register: RegisterKind, address: u16, count: u16) -> Span {
        Span {
            register,
            address,
            count,
        }
    }

    #[test]
    fn adjacent_and_near_points_share_a_block() {
        // An SDM630-like map: 2-register floats every 2 registers, a gap, more.
        let mut spans: Vec<Span> = (0..40).map(|i| s(Input, i * 2, 2)).collect();
        spans.push(s(Input, 91, 2));
        let blocks = plan(&spans, Limits::default());
        assert_eq!(blocks, [s(Input, 0, 80), s(Input, 91, 2)]);
        // A hole of 10 registers (max_gap) is read through; one of 11 is not.
        let near = [s(Input, 70, 10), s(Input, 90, 2)];
        assert_eq!(plan(&near, Limits::default()), [s(Input, 70, 22)]);
    }

    #[test]
    fn blocks_respect_the_request_limit_and_split_long_spans() {
        let spans: Vec<Span> = (0..100).map(|i| s(Holding, i * 2, 2)).collect();
        let blocks = plan(&spans, Limits::default());
        assert_eq!(blocks, [s(Holding, 0, 124), s(Holding, 124, 76)]);
        let long = plan(&[s(Holding, 0, 300)], Limits::default());
        assert_eq!(long, [s(Holding, 0, 125), s(Holding, 125, 125), s(Holding, 250, 50)]);
        let tight = Limits {
            max_registers: 10,
            ..Limits::default()
        };
        assert_eq!(
            plan(&[s(Holding, 0, 2), s(Holding, 9, 2)], tight),
            [s(Holding, 0, 2), s(Holding, 9, 2)]
        );
    }

    #[test]
    fn tables_and_gaps_stay_apart() {
        let spans = [
            s(Holding, 0, 1),
            s(Input, 1, 1),
            s(Coil, 0, 1),
            s(Coil, 1999, 1),
            s(Holding, 100, 1),
        ];
        let blocks = plan(&spans, Limits::default());
        assert_eq!(
            blocks,
            [
                s(Holding, 0, 1),
                s(Holding, 100, 1),
                s(Input, 1, 1),
                s(Coil, 0, 1),
                s(Coil, 1999, 1)
            ]
        );
        let wide = Limits {
            max_gap: 2000,
            ..Limits::default()
        };
        assert_eq!(plan(&spans[2..4], wide), [s(Coil, 0, 2000)]);
        let none = Limits {
            max_gap: 0,
            ..Limits::default()
        };
        assert_eq!(plan(&[s(Input, 0, 2), s(Input, 3, 1)], none).len(), 2);
        assert_eq!(plan(&[s(Input, 0, 2), s(Input, 2, 1)], none), [s(Input, 0, 3)]);
    }

    #[test]
    fn overlaps_and_the_top_of_the_address_space() {
        assert_eq!(
            plan(&[s(Input, 0, 4), s(Input, 2, 2)], Limits::default()),
            [s(Input, 0, 4)]
        );
        assert_eq!(plan(&[s(Input, 65534, 2)], Limits::default()), [s(Input, 65534, 2)]);
        let limits = Limits {
            max_registers: 4,
            ..Limits::default()
        };
        // Starts inside a full block: only the rest is asked for again.
        assert_eq!(
            plan(&[s(Input, 0, 4), s(Input, 2, 4)], limits),
            [s(Input, 0, 4), s(Input, 4, 2)]
        );
    }

    #[test]
    fn avoided_registers_are_never_read_through() {
        let spans = [s(Input, 0, 2), s(Input, 4, 2), s(Input, 8, 2)];
        assert_eq!(plan(&spans, Limits::default()), [s(Input, 0, 10)]);
        // A refused point at 6..8 splits the block there, and only there.
        assert_eq!(
            plan_avoiding(&spans, &[s(Input, 6, 2)], Limits::default()),
            [s(Input, 0, 6), s(Input, 8, 2)]
        );
        // Another table's refused registers do not matter.
        assert_eq!(
            plan_avoiding(&spans, &[s(Holding, 6, 2)], Limits::default()),
            [s(Input, 0, 10)]
        );
    }

    #[test]
    fn the_image_gives_back_whole_spans_only() {
        let mut image = Image::default();
        image.insert(Holding, 10, &[1, 2, 3]);
        assert_eq!(image.get(&s(Holding, 11, 2)), Some(vec![2, 3]));
        assert_eq!(image.get(&s(Holding, 12, 2)), None);
        assert_eq!(image.get(&s(Input, 10, 1)), None);
        image.insert(Holding, 65535, &[7, 8]);
        assert_eq!(image.get(&s(Holding, 65535, 1)), Some(vec![7]));
    }
}
