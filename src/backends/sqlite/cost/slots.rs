//! The arithmetic of costs, without I/O: local time under the EU summer-time
//! rule, the slot grid from stored day-ahead prices, a counter's energy per slot
//! (spread over a gap in proportion to time), and the all-in prices of a tariff.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};

use crate::config::tariff::{parse_hhmm, parse_offset, ReturnPrice, SummerTime, TariffConfig};

/// Local time of a tariff: a standard offset and the summer-time rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LocalTime {
    /// Seconds east of UTC in winter.
    pub(crate) standard: i32,
    pub(crate) summer: SummerTime,
}

/// 01:00 UTC on the last Sunday of `month` of `year`: where the EU rule switches.
fn last_sunday_0100(year: i32, month: u32) -> i64 {
    let first_next = if month == 12 {
        NaiveDate::from_ymd_opt(year + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(year, month + 1, 1)
    };
    let Some(last) = first_next.and_then(|d| d.pred_opt()) else {
        return i64::MIN;
    };
    let back = i64::from(last.weekday().num_days_from_sunday());
    let sunday = last - chrono::Duration::days(back);
    sunday
        .and_hms_opt(1, 0, 0)
        .map_or(i64::MIN, |t| Utc.from_utc_datetime(&t).timestamp())
}

impl LocalTime {
    pub(crate) fn of(tariff: &TariffConfig) -> LocalTime {
        LocalTime {
            standard: parse_offset(&tariff.utc_offset).unwrap_or(3600),
            summer: tariff.summer_time,
        }
    }

    /// Seconds east of UTC at instant `ts`.
    pub(crate) fn offset_at(self, ts: i64) -> i32 {
        let summer = match self.summer {
            SummerTime::None => false,
            SummerTime::Eu => {
                let year = DateTime::<Utc>::from_timestamp(ts, 0).map_or(1970, |t| t.year());
                (last_sunday_0100(year, 3)..last_sunday_0100(year, 10)).contains(&ts)
            }
        };
        self.standard + if summer { 3600 } else { 0 }
    }

    /// The local wall-clock time of `ts`, as a naive date-time.
    pub(crate) fn local(self, ts: i64) -> chrono::NaiveDateTime {
        let shifted = ts + i64::from(self.offset_at(ts));
        DateTime::<Utc>::from_timestamp(shifted, 0)
            .unwrap_or_default()
            .naive_utc()
    }

    /// The UTC instant of local midnight starting `date`. The EU switches happen at
    /// 02:00/03:00 local, never at midnight, so the offset an hour before midnight
    /// is the one at midnight.
    pub(crate) fn midnight(self, date: NaiveDate) -> i64 {
        let naive = date
            .and_hms_opt(0, 0, 0)
            .map_or(0, |t| Utc.from_utc_datetime(&t).timestamp());
        naive - i64::from(self.offset_at(naive - i64::from(self.standard)))
    }

    /// The local day of `ts` and its bounds in UTC: `(date, start, end)`; a day is
    /// 23 or 25 hours long on the switch days.
    pub(crate) fn day(self, ts: i64) -> (NaiveDate, i64, i64) {
        let date = self.local(ts).date();
        let next = date.succ_opt().unwrap_or(date);
        (date, self.midnight(date), self.midnight(next))
    }
}

/// One price slot: `[start, start + len)`, and its day-ahead price when known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Slot {
    pub(crate) start: i64,
    pub(crate) len: i64,
    /// EUR/kWh from the prices device; `None`: no price stored for this slot.
    pub(crate) spot: Option<f64>,
}

impl Slot {
    pub(crate) fn end(&self) -> i64 {
        self.start + self.len
    }
}

/// The slots covering `[from, to)`: each stored price row `(start → (price, length))`
/// is a slot; time no row covers is cut into `fallback` slots aligned to multiples of
/// `fallback` (UTC), so a missing day of quarter-hour prices becomes hours.
pub(crate) fn grid(from: i64, to: i64, prices: &BTreeMap<i64, (f64, i64)>, fallback: i64) -> Vec<Slot> {
    let fallback = fallback.max(60);
    let mut slots = Vec::new();
    // A price slot that began before `from` and is still running covers `from`.
    let mut t = match prices.range(..=from).next_back() {
        Some((&start, &(_, len))) if start + len > from => start,
        _ => from.div_euclid(fallback) * fallback,
    };
    while t < to {
        if let Some(&(price, len)) = prices.get(&t) {
            let len = len.max(60);
            slots.push(Slot {
                start: t,
                len,
                spot: Some(price),
            });
            t += len;
            continue;
        }
        let aligned = (t.div_euclid(fallback) + 1) * fallback;
        let next_price = prices.range(t + 1..).next().map_or(i64::MAX, |(&s, _)| s);
        let end = aligned.min(next_price);
        slots.push(Slot {
            start: t,
            len: end - t,
            spot: None,
        });
        t = end;
    }
    slots
}

/// A counter's use in one slot.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(crate) struct Use {
    pub(crate) amount: f64,
    /// Part of it was spread across a gap rather than measured.
    pub(crate) estimated: bool,
}

/// The rise of a counter in each slot. `samples` are `(ts, value)` sorted by time;
/// the rise between two samples is spread over the time between them in proportion
/// to the overlap with each slot (exact for close samples, and across a gap longer
/// than `max_gap` the "spread and mark estimated" rule). A drop (a counter reset the
/// lifetime series did not absorb) counts as zero. `None` for a slot the samples do
/// not cover from start to end: not closed yet, or before the first sample.
pub(crate) fn spread(samples: &[(i64, f64)], slots: &[Slot], max_gap: i64) -> Vec<Option<Use>> {
    let mut out: Vec<Option<Use>> = vec![None; slots.len()];
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return out;
    };
    let mut uses = vec![Use::default(); slots.len()];
    let mut k = 0;
    for pair in samples.windows(2) {
        let [(t0, v0), (t1, v1)] = [pair[0], pair[1]];
        if t1 <= t0 {
            continue;
        }
        let rise = (v1 - v0).max(0.0);
        let rate = rise / (t1 - t0) as f64;
        let gap = t1 - t0 > max_gap;
        while k < slots.len() && slots[k].end() <= t0 {
            k += 1;
        }
        let mut j = k;
        while j < slots.len() && slots[j].start < t1 {
            let overlap = slots[j].end().min(t1) - slots[j].start.max(t0);
            if overlap > 0 {
                uses[j].amount += rate * overlap as f64;
                uses[j].estimated |= gap;
            }
            j += 1;
        }
    }
    for (i, slot) in slots.iter().enumerate() {
        if slot.start >= first.0 && slot.end() <= last.0 {
            out[i] = Some(uses[i]);
        }
    }
    out
}

/// The prices of a tariff in one slot, EUR/kWh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SlotPrice {
    /// What a kWh drawn costs, all in (energy, markup, tax, grid fee, VAT).
    pub(crate) delivered: f64,
    /// What a kWh returned is credited.
    pub(crate) returned: f64,
    /// The day-ahead price was missing and `fixed_price` stood in.
    pub(crate) fallback: bool,
}

/// The all-in prices of `slot`; `None` when neither a day-ahead price nor
/// `fixed_price` is known.
pub(crate) fn slot_price(tariff: &TariffConfig, local: LocalTime, slot: &Slot) -> Option<SlotPrice> {
    let (energy, fallback) = match (slot.spot, tariff.fixed_price) {
        (Some(p), _) => (p, false),
        (None, Some(p)) => (p, tariff.prices.is_some()),
        (None, None) => return None,
    };
    let vat = 1.0 + tariff.vat_percent / 100.0;
    let fee = grid_fee(tariff, local, slot.start);
    let delivered = (energy + tariff.markup + tariff.energy_tax + fee) * vat;
    let rule = &tariff.returned;
    let rule_vat = if rule.vat { vat } else { 1.0 };
    let returned = match rule.price {
        ReturnPrice::Same => delivered,
        ReturnPrice::Spot => match slot.spot.or(rule.fixed_price).or(tariff.fixed_price) {
            Some(p) => (p + rule.markup) * rule_vat,
            None => return None,
        },
        ReturnPrice::Fixed => rule.fixed_price.unwrap_or(0.0) * rule_vat,
    };
    Some(SlotPrice {
        delivered,
        returned,
        fallback,
    })
}

/// The grid fee per kWh (before VAT) at `ts`: the first window that holds its
/// local weekday and time.
pub(crate) fn grid_fee(tariff: &TariffConfig, local: LocalTime, ts: i64) -> f64 {
    use chrono::Timelike;
    let at = local.local(ts);
    let weekday = at.weekday().num_days_from_monday();
    let minute = at.hour() * 60 + at.minute();
    tariff
        .grid_fees
        .iter()
        .find(|w| {
            w.days.iter().any(|d| d.index() == weekday)
                && parse_hhmm(&w.from).is_some_and(|f| f <= minute)
                && parse_hhmm(&w.to).is_some_and(|t| minute < t)
        })
        .map_or(0.0, |w| w.per_kwh)
}

/// All-in gas price per m³.
pub(crate) fn gas_price(tariff: &TariffConfig) -> Option<f64> {
    let gas = tariff.gas.as_ref()?;
    Some((gas.price_per_m3 + gas.energy_tax_per_m3) * (1.0 + tariff.vat_percent / 100.0))
}

/// Fixed costs of one local day, VAT included.
pub(crate) fn daily_fixed(tariff: &TariffConfig) -> f64 {
    let gas = tariff.gas.as_ref().map_or(0.0, |g| g.daily_fixed);
    (tariff.daily_fixed + gas) * (1.0 + tariff.vat_percent / 100.0)
}
