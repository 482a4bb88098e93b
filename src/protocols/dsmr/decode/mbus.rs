//! The M-Bus channels of a telegram (`0-n:…`, n = 1–4): the devices a meter relays
//! (gas, water, heat, cooling), their ids, types and readings, named per kind.

use std::borrow::Cow;

use super::{decode_hex_text, push_unknown, Object, Texts};
use crate::protocols::dsmr::obis::{self, MbusKind, Obis};
use crate::protocols::dsmr::timestamp::parse_timestamp;
use crate::protocols::dsmr::units::{canonical_unit, conversion, parse_scaled, plain_number, scale, split_unit, Conv};
use crate::protocols::dsmr::{DsmrNumberOrText, DsmrValue, MbusDevice, Telegram};

pub(super) struct MbusReading<'a> {
    obj: Object<'a>,
    obis: Obis,
    ts: Option<&'a str>,
    value: &'a str,
    unit: &'a str,
}

impl<'a> Channel<'a> {
    fn push(&mut self, reading: MbusReading<'a>) {
        match self.first {
            None => self.first = Some(reading),
            Some(_) => self.more.push(reading),
        }
    }
}

#[derive(Default)]
pub(super) struct Channel<'a> {
    device_type: Option<u16>,
    equipment_id: Option<String>,
    /// The first reading, apart: a channel almost always has one, and a vector
    /// would cost an allocation per telegram for it.
    first: Option<MbusReading<'a>>,
    more: Vec<MbusReading<'a>>,
}

/// Objects of M-Bus channel `o.b` (1–4).
pub(super) fn mbus_object<'a>(t: &mut Telegram, texts: &mut Texts, ch: &mut Channel<'a>, o: Obis, obj: Object<'a>) {
    let g = |i: usize| obj.groups.get(i).copied();
    if o.cde(24, 1, 0) {
        ch.device_type = g(0).and_then(obis::parse_device_type);
    } else if o.cde(96, 1, 0) || o.cde(96, 1, 1) {
        if ch.equipment_id.is_none() {
            ch.equipment_id = g(0).and_then(|id| decode_hex_text(id, texts));
        } else {
            push_unknown(t, texts, &obj);
        }
    } else if (o.c == 24 && o.d == 2) || o.cde(24, 3, 0) {
        // DSMR 4/5: 0-n:24.2.1 (NL) / 0-n:24.2.3 (BE): (capture time)(value*unit).
        // DSMR 2.2/3.0: 0-n:24.3.0 (ts)(00)(60)(1)(0-n:24.2.1)(m3) + "(value)"
        // continuation line, the unit in the value if it has one.
        let read = match obj.groups {
            [ts, v] if o.d == 2 => Some((*ts, split_unit(v))),
            _ if o.d == 3 => match (g(0), g(5), g(6)) {
                (Some(ts), unit, Some(v)) => {
                    let (value, own_unit) = split_unit(v);
                    let unit = if own_unit.is_empty() {
                        unit.unwrap_or("").trim()
                    } else {
                        own_unit
                    };
                    Some((ts, (value, unit)))
                }
                _ => None,
            },
            _ => None,
        };
        match read {
            Some((ts, (value, unit))) => ch.push(MbusReading {
                obj,
                obis: o,
                ts: Some(ts),
                value,
                unit,
            }),
            None => t.malformed.push(obj.line(texts)),
        }
    } else {
        push_unknown(t, texts, &obj);
    }
}

pub(super) fn finish_mbus(t: &mut Telegram, texts: &mut Texts, channels: [Channel<'_>; 4]) {
    // Active devices so far per kind (gas, water, heat, cooling).
    let mut counts = [0usize; 4];
    for (channel, ch) in (1u8..).zip(channels) {
        let mut named: Option<Cow<'static, str>> = None;
        for r in ch.first.iter().chain(&ch.more) {
            let kind = match ch.device_type {
                Some(dt) => MbusKind::from_device_type(dt),
                None => MbusKind::from_unit(&r.unit.to_ascii_lowercase()),
            };
            let ts = r.ts.and_then(parse_timestamp);
            let conv = kind.and_then(|k| conversion(k.quantity(), r.unit));
            // The usual `digits.digits` read in one pass, as in `meter_value`.
            let plain = plain_number(r.value);
            let value = conv.and_then(|c| match plain.and_then(|(m, frac, _)| scale(m, frac, c)) {
                Some(v) => Some(v),
                None => parse_scaled(r.value, c),
            });
            // Inactive / unconfigured channel: zero without unit, or zero with an
            // invalid capture time (e.g. `(632525252525W)(00000.000)`).
            let zero = match plain {
                Some((mantissa, _, _)) => mantissa == 0,
                None => parse_scaled(r.value, Conv::Shift(0)) == Some(0.0),
            };
            if zero && (r.unit.is_empty() || ts.is_none()) {
                continue;
            }
            let (Some(kind), Some(value)) = (kind, value) else {
                push_unknown(t, texts, &r.obj);
                continue;
            };
            let metric = match &named {
                Some(_) => None, // a second reading on the same channel
                None => {
                    let slot = match kind {
                        MbusKind::Gas => 0,
                        MbusKind::Water => 1,
                        MbusKind::Heat => 2,
                        MbusKind::Cooling => 3,
                    };
                    let Some(n) = counts.get_mut(slot) else {
                        continue;
                    };
                    *n += 1;
                    let name = if *n == 1 {
                        Cow::Borrowed(kind.base_name())
                    } else {
                        Cow::Owned(format!("{}_{}", kind.base_name(), n))
                    };
                    named = Some(name.clone());
                    Some(name)
                }
            };
            let Some(metric) = metric else {
                push_unknown(t, texts, &r.obj);
                continue;
            };
            if let (None, Some(raw)) = (ts, r.ts) {
                t.unreadable_times.push((r.obis, texts.copy(raw)));
            }
            t.values.push(DsmrValue {
                metric,
                obis: r.obis,
                value: DsmrNumberOrText::Number(value),
                unit: canonical_unit(kind.quantity()),
                counter: true,
                timestamp: ts,
            });
        }
        if ch.device_type.is_none() && ch.equipment_id.is_none() && named.is_none() && ch.first.is_none() {
            continue;
        }
        t.mbus_devices.push(MbusDevice {
            channel,
            device_type: ch.device_type,
            equipment_id: ch.equipment_id,
            metric: named,
        });
    }
}
