//! Telegram decoder: one framed telegram → [`Telegram`].

use std::borrow::Cow;

use super::capacity::parse_peak_history;
use super::lines::{fast_line, parse_line, KnownIds, Line};
use super::obis::{self, Obis, TimeGroup};
use super::text::{trim_text, utf8};
use super::timestamp::{date_and_time, is_time_group, parse_timestamp};
use super::units::{canonical_unit, conversion, parse_scaled, plain_number, scale, split_unit};
use super::{crc, CrcStatus, DecodeError, DsmrNumberOrText, DsmrValue, Telegram};
use mbus::{finish_mbus, mbus_object, Channel};
use routes::{Routes, TableRoute};

/// One COSEM object: identifier plus its `( … )` groups, continuation lines merged.
/// The groups live in one vector per telegram; an object borrows its slice of it.
#[derive(Clone, Copy)]
struct Object<'a> {
    id: &'a str,
    groups: &'a [&'a str],
}

impl Object<'_> {
    /// Appends `(g1)(g2)…` to `out`.
    fn push_raw(&self, out: &mut String) {
        for g in self.groups {
            out.push('(');
            out.push_str(g);
            out.push(')');
        }
    }

    fn raw_len(&self) -> usize {
        self.groups.iter().map(|g| g.len() + 2).sum()
    }

    fn raw(&self, texts: &mut Texts) -> String {
        let mut out = texts.empty(self.raw_len());
        self.push_raw(&mut out);
        out
    }

    fn line(&self, texts: &mut Texts) -> String {
        let mut out = texts.empty(self.id.len() + self.raw_len());
        out.push_str(self.id);
        self.push_raw(&mut out);
        out
    }
}

/// The strings of the previous telegram, emptied, for this one's texts: a
/// [`super::Decoder`] decodes telegram after telegram with the same few strings
/// instead of allocating and freeing each of them every time.
#[derive(Debug, Default)]
pub(super) struct Texts {
    free: Vec<String>,
    /// Hex texts already decoded (raw, decoded), when `remember_hex`: a meter
    /// sends the same equipment ids in every telegram.
    hex: Vec<(String, String)>,
    remember_hex: bool,
}

/// Hex texts remembered: the equipment ids of a meter and its M-Bus devices.
const MAX_HEX_TEXTS: usize = 4;

impl Texts {
    /// An empty string with room for `len` bytes.
    fn empty(&mut self, len: usize) -> String {
        match self.free.pop() {
            Some(mut s) => {
                s.clear();
                s.reserve(len);
                s
            }
            None => String::with_capacity(len),
        }
    }

    /// `text` as an owned string.
    fn copy(&mut self, text: &str) -> String {
        let mut s = self.empty(text.len());
        s.push_str(text);
        s
    }

    /// Keeps `s` for a later text.
    fn keep(&mut self, s: String) {
        self.free.push(s);
    }

    /// What `raw` decoded to before, when it is remembered.
    fn known_hex(&mut self, raw: &str) -> Option<String> {
        let at = self.hex.iter().position(|(known, _)| known == raw)?;
        let mut out = self.empty(self.hex.get(at)?.1.len());
        out.push_str(&self.hex.get(at)?.1);
        Some(out)
    }

    /// Remembers that `raw` decodes to `decoded`, while there is room.
    fn remember_hex(&mut self, raw: &str, decoded: &str) {
        if self.remember_hex && self.hex.len() < MAX_HEX_TEXTS {
            self.hex.push((raw.to_string(), decoded.to_string()));
        }
    }
}

/// Buffers that decoding fills and empties: kept by a [`super::Decoder`] between
/// telegrams, so that once the first telegram has sized them, decoding one
/// allocates nothing (the two internal vectors alone were 3 KB a telegram, above
/// glibc's per-thread cache).
#[derive(Debug, Default)]
pub(super) struct Scratch {
    groups: Vec<&'static str>,
    spans: Vec<Span<'static>>,
    texts: Texts,
    known_ids: KnownIds,
    routes: Routes,
}

impl Scratch {
    /// Buffers for telegram after telegram, remembering each line's identifier
    /// (see [`KnownIds`]) and the hex texts for the next telegram; `Default` is
    /// for one telegram.
    pub(super) fn for_a_stream() -> Self {
        let mut scratch = Scratch::default();
        scratch.known_ids.on = true;
        scratch.routes.on = true;
        scratch.texts.remember_hex = true;
        scratch
    }
}

/// A line's object before it is interpreted: identifier, OBIS code, and where its
/// groups begin and end in the group vector.
type Span<'a> = (&'a str, Option<Obis>, usize, usize);

/// `v` emptied, as a vector of `U`: for a `U` of `T`'s size and alignment (the
/// same reference with another lifetime) the standard library collects a vector's
/// own iterator into its allocation, so the capacity outlives the borrow.
fn emptied<T, U>(mut v: Vec<T>) -> Vec<U> {
    v.clear();
    v.into_iter().filter_map(|_| None).collect()
}

/// Empties `t` for the next telegram, its strings to `texts`.
fn reset(t: &mut Telegram, texts: &mut Texts) {
    t.header.clear();
    for s in [t.version.take(), t.equipment_id.take(), t.text_message.take()]
        .into_iter()
        .flatten()
    {
        texts.keep(s);
    }
    t.crc = CrcStatus::Absent;
    t.terminated = false;
    t.meter_time = None;
    t.values.clear();
    for device in t.mbus_devices.drain(..) {
        if let Some(id) = device.equipment_id {
            texts.keep(id);
        }
    }
    t.monthly_peaks = None;
    for (id, raw) in t.unknown.drain(..) {
        texts.keep(id);
        texts.keep(raw);
    }
    for line in t.malformed.drain(..) {
        texts.keep(line);
    }
    for (_, raw) in t.unreadable_times.drain(..) {
        texts.keep(raw);
    }
}

/// Hex-encoded printable ASCII (`4B384547…` → `K8EG…`), else the raw text.
/// Empty → `None`. A text decoded in an earlier telegram of a stream is copied
/// from then (two comparisons and a copy instead of a table load per digit).
fn decode_hex_text(raw: &str, texts: &mut Texts) -> Option<String> {
    let raw = trim_text(raw);
    if raw.is_empty() {
        return None;
    }
    if let Some(known) = texts.known_hex(raw) {
        return Some(known);
    }
    let out = decode_new_hex_text(raw, texts);
    texts.remember_hex(raw, &out);
    Some(out)
}

/// [`decode_hex_text`] of a trimmed, non-empty text not seen before.
fn decode_new_hex_text(raw: &str, texts: &mut Texts) -> String {
    let bytes = raw.as_bytes();
    let printable = |h: u8, l: u8| -> Option<char> {
        let v = (crc::HEX_DIGIT[usize::from(h)] << 4) | crc::HEX_DIGIT[usize::from(l)];
        let v = u8::try_from(v).ok()?;
        (0x20..=0x7E).contains(&v).then_some(char::from(v))
    };
    // An odd length is not hex text. Decoded in one pass, given up at the first
    // pair that is not a printable character.
    if bytes.len() % 2 != 0 {
        return texts.copy(raw);
    }
    let mut out = texts.empty(bytes.len() / 2);
    for pair in bytes.chunks_exact(2) {
        match pair {
            [h, l] => match printable(*h, *l) {
                Some(c) => out.push(c),
                None => {
                    out.clear();
                    out.push_str(raw);
                    return out;
                }
            },
            _ => {
                out.clear();
                out.push_str(raw);
                return out;
            }
        }
    }
    out
}

/// Rank of an equipment-identifier object (lower wins), for A-B = 0-0 / 1-0.
fn equipment_rank(o: &Obis) -> Option<u8> {
    match (o.a, o.b, o.c, o.d, o.e) {
        (0, 0, 96, 1, 1) => Some(0),
        (0, 0, 42, 0, 0) => Some(1),
        (0, 0, 96, 1, 0) => Some(2),
        (0, 0, 96, 1, 255) => Some(3),
        (0 | 1, 0, 0, 0, 0) => Some(4),
        _ => None,
    }
}

// The decoder keeps the meter-level metrics it has seen in a u64 (a u128 took
// twice the instructions to test and set, for every value).
const _: () = assert!(obis::METRIC_COUNT <= 64);

/// See [`super::decode`].
pub(super) fn decode(telegram: &[u8]) -> Result<Telegram, DecodeError> {
    decode_with_crc(telegram, None, None)
}

/// [`decode`], with the CRC verdict already known (`Some`) for a telegram the
/// framer cut, which checked it over the same bytes: the daemon's path, where
/// computing it again was a second pass over the whole telegram. `located` is
/// `(start, bang)` as [`crc::locate`] would give them, when the framer knows them.
pub(super) fn decode_with_crc(
    telegram: &[u8],
    known_crc: Option<CrcStatus>,
    located: Option<(usize, Option<usize>)>,
) -> Result<Telegram, DecodeError> {
    let mut t = Telegram::empty();
    decode_into(&mut t, &mut Scratch::default(), telegram, known_crc, located)?;
    Ok(t)
}

/// [`decode_with_crc`] into `t`, which is emptied first (its strings and vectors
/// reused), with the internal buffers of `scratch`.
pub(super) fn decode_into(
    t: &mut Telegram,
    scratch: &mut Scratch,
    telegram: &[u8],
    known_crc: Option<CrcStatus>,
    located: Option<(usize, Option<usize>)>,
) -> Result<(), DecodeError> {
    // `locate` is `None` only without a `/` or without a line end after it.
    let Some((start, bang)) = located.or_else(|| crc::locate(telegram)) else {
        return Err(match crc::find_start(telegram) {
            None => DecodeError::MissingHeader,
            Some(_) => DecodeError::UnterminatedHeader,
        });
    };
    let from_start = telegram.get(start..).ok_or(DecodeError::MissingHeader)?;
    let header_len = memchr::memchr(b'\n', from_start).ok_or(DecodeError::UnterminatedHeader)?;
    let texts = &mut scratch.texts;
    reset(t, texts);
    let header_bytes = from_start.get(1..header_len).unwrap_or_default();
    match utf8(header_bytes) {
        Some(text) => t.header.push_str(trim_text(text)),
        None => t.header.push_str(String::from_utf8_lossy(header_bytes).trim()),
    }
    let body_start = start + header_len + 1;
    let body_end = bang.unwrap_or(telegram.len());
    let body = telegram.get(body_start..body_end).unwrap_or_default();
    t.crc = match (known_crc, bang) {
        (Some(known), _) => known,
        (None, Some(bang)) => match (telegram.get(start..=bang), telegram.get(bang + 1..)) {
            (Some(covered), Some(after)) => crc::status(covered, after),
            _ => CrcStatus::Absent,
        },
        (None, None) => CrcStatus::Absent,
    };
    t.terminated = bang.is_some();
    // Valid UTF-8 (always, from a meter) is borrowed; only a damaged body is copied.
    let body = match utf8(body) {
        Some(text) => Cow::Borrowed(text),
        None => String::from_utf8_lossy(body),
    };

    // Pass 1: lines → objects (continuation lines appended to the previous object).
    // (identifier, OBIS code, first group, end of groups) into one shared group vector.
    let mut all_groups: Vec<&str> = std::mem::take(&mut scratch.groups);
    let mut spans: Vec<Span<'_>> = std::mem::take(&mut scratch.spans);
    let bytes = body.as_bytes();
    let mut at = 0;
    while let Some(&first) = bytes.get(at) {
        // Leading whitespace and blank lines, as `str::trim_ascii` would drop them.
        if first.is_ascii_whitespace() {
            at += 1;
            continue;
        }
        let start = all_groups.len();
        if first.is_ascii_digit() {
            let line = spans.len();
            if let Some((id, o, next)) = fast_line(&body, at, &mut all_groups, &mut scratch.known_ids, line) {
                spans.push((id, Some(o), start, all_groups.len()));
                at = next;
                continue;
            }
        }
        // Anything else: this line up to its LF, through the general path. `at` is
        // on a character boundary: only ASCII bytes and whole lines were skipped.
        let rest = bytes.get(at..).unwrap_or_default();
        let end = memchr::memchr(b'\n', rest).map_or(bytes.len(), |lf| at + lf);
        let Some(line) = body.get(at..end).map(str::trim_ascii) else {
            break;
        };
        at = end + 1;
        match parse_line(line, &mut all_groups) {
            Line::Object(id) => spans.push((id, obis::parse_obis(id), start, all_groups.len())),
            // The previous object's groups end where these begin, so it just grows.
            Line::Continuation => match spans.last_mut() {
                Some(prev) => prev.3 = all_groups.len(),
                None => {
                    all_groups.truncate(start);
                    t.malformed.push(texts.copy(line));
                }
            },
            Line::Malformed => t.malformed.push(texts.copy(line)),
        }
    }
    interpret(t, texts, &mut scratch.routes, &all_groups, &spans);
    scratch.groups = emptied(all_groups);
    scratch.spans = emptied(spans);
    Ok(())
}

/// Pass 2: the objects' meaning, into `t`.
fn interpret<'a>(
    t: &mut Telegram,
    texts: &mut Texts,
    routes: &mut Routes,
    all_groups: &'a [&'a str],
    spans: &[Span<'a>],
) {
    t.values.reserve(spans.len());

    let mut equipment: Option<(u8, String, Object<'_>)> = None; // (rank, value, object)
                                                                // M-Bus channels 1–4, by index 0–3 (a fixed array: no map per telegram).
    let mut channels: [Channel<'_>; 4] = Default::default();
    let mut seen: u64 = 0; // meter-level metrics already taken, by table index
    let mut tariffs_seen = [0u64; 4]; // tariff registers taken, by direction and tariff
                                      // `1-0:0.9.2` date and `1-0:0.9.1` time: the clock of meters without `0-0:1.0.0`.
    let mut clock_parts: (Option<Object<'_>>, Option<Object<'_>>) = (None, None);
    let mut clock_sent = false;
    'objects: for (k, &(id, o, from, to)) in spans.iter().enumerate() {
        let obj = Object {
            id,
            groups: all_groups.get(from..to).unwrap_or_default(),
        };
        let obj = &obj;
        let Some(o) = o else {
            push_unknown(t, texts, obj);
            continue;
        };
        let first = obj.groups.first().copied().unwrap_or("");
        // Every object taken apart from the tables is `0-n:…` or has C = 0: nearly
        // every line, an electricity register `1-0:C.D.E` with C ≠ 0, goes straight
        // to the tables on one test instead of through each of these.
        'apart: {
            if o.a == 1 && o.c != 0 {
                break 'apart;
            }
            if o.cde(0, 2, 8) {
                let version = trim_text(first);
                t.version = (!version.is_empty()).then(|| texts.copy(version));
            } else if o.a == 0 && o.b == 0 && o.cde(1, 0, 0) {
                clock_sent = true;
                t.meter_time = parse_timestamp(first);
                if t.meter_time.is_none() {
                    t.unreadable_times.push((o, texts.copy(first)));
                }
            } else if o.a <= 1 && o.b == 0 && o.c == 0 && o.d == 9 && matches!(o.e, 1 | 2) {
                let part = if o.e == 2 {
                    &mut clock_parts.0
                } else {
                    &mut clock_parts.1
                };
                match part {
                    None => *part = Some(*obj),
                    Some(_) => push_unknown(t, texts, obj),
                }
            } else if o.a == 0 && o.b == 0 && o.cde(98, 1, 0) {
                match (&t.monthly_peaks, parse_peak_history(obj.groups)) {
                    (None, Ok(history)) => t.monthly_peaks = Some(history),
                    _ => push_unknown(t, texts, obj),
                }
            } else if o.a == 0 && o.b == 0 && o.cde(96, 13, 0) {
                t.text_message = decode_hex_text(first, texts);
            } else if let Some(rank) = equipment_rank(&o) {
                match (decode_hex_text(first, texts), &equipment) {
                    (Some(id), Some((best, _, _))) if rank < *best => {
                        if let Some((_, _, displaced)) = equipment.replace((rank, id, *obj)) {
                            push_unknown(t, texts, &displaced);
                        }
                    }
                    (Some(id), None) => equipment = Some((rank, id, *obj)),
                    _ => push_unknown(t, texts, obj),
                }
            } else if let (0, Some(ch)) = (o.a, channels.get_mut(usize::from(o.b).wrapping_sub(1))) {
                mbus_object(t, texts, ch, o, *obj);
            } else {
                break 'apart;
            }
            continue 'objects;
        }
        match routes.get(k, &o) {
            TableRoute::Tariff(register) => {
                let (row, bit) = register.bit();
                let def = obis::MetricDef {
                    name: register.base_name(),
                    quantity: register.quantity(),
                    counter: true,
                    time: TimeGroup::No,
                };
                match tariffs_seen.get_mut(row) {
                    Some(taken) if *taken & bit == 0 => {
                        if meter_value(t, texts, &def, register.metric_name(), o, obj) {
                            *taken |= bit;
                        }
                    }
                    _ => push_unknown(t, texts, obj),
                }
            }
            TableRoute::Metric(index, def) => {
                let bit = 1u64 << index;
                if seen & bit != 0 {
                    // A second object for the same metric: the first one wins.
                    push_unknown(t, texts, obj);
                } else if meter_value(t, texts, def, Cow::Borrowed(def.name), o, obj) {
                    seen |= bit;
                }
            }
            TableRoute::Unknown => push_unknown(t, texts, obj),
        }
    }
    t.equipment_id = equipment.map(|(_, id, _)| id);
    meter_clock_in_parts(t, texts, clock_parts, clock_sent);
    finish_mbus(t, texts, channels);
}

fn push_unknown(t: &mut Telegram, texts: &mut Texts, obj: &Object<'_>) {
    let id = texts.copy(obj.id);
    t.unknown.push((id, obj.raw(texts)));
}

/// The meter clock of meters that send date and time apart (`1-0:0.9.2(yymmdd)`,
/// `1-0:0.9.1(hhmmss)`, Iskra IE/ME meters), unless `0-0:1.0.0` was sent. Listed
/// under `0-0:1.0.0` when it is no date, as the meter clock it stands for.
fn meter_clock_in_parts<'a>(
    t: &mut Telegram,
    texts: &mut Texts,
    (date, time): (Option<Object<'a>>, Option<Object<'a>>),
    clock_sent: bool,
) {
    let first = |obj: &Object<'a>| -> &'a str { obj.groups.first().copied().unwrap_or_default() };
    match (date, time) {
        (Some(date), Some(time)) if !clock_sent => {
            let raw = date_and_time(first(&date), first(&time));
            t.meter_time = parse_timestamp(&raw);
            if t.meter_time.is_none() {
                let clock = Obis {
                    a: 0,
                    b: 0,
                    c: 1,
                    d: 0,
                    e: 0,
                };
                t.unreadable_times.push((
                    clock,
                    format!("{}{} {}{}", date.id, date.raw(texts), time.id, time.raw(texts)),
                ));
            }
        }
        (date, time) => {
            for obj in date.iter().chain(time.iter()) {
                push_unknown(t, texts, obj);
            }
        }
    }
}

/// A meter-level (electricity / abstract) value from the table, or a tariff
/// register, stored as `name`; `true` if taken.
// Inlined into the decoder's loop: called for nearly every line, the call's
// prologue and epilogue (a large frame) cost as much as reading the number.
#[inline(always)]
fn meter_value(
    t: &mut Telegram,
    texts: &mut Texts,
    def: &obis::MetricDef,
    name: Cow<'static, str>,
    o: Obis,
    obj: &Object<'_>,
) -> bool {
    // A time beside the value, before it (e-MUCS `1-0:1.6.0(ts)(value)`) or after
    // it (the 2025/26 Belgian firmware, `1-0:1.6.0(08.796*kW)(260102010000)`).
    let with_time = def.time != TimeGroup::No;
    let (ts, group) = match obj.groups {
        [v] => (None, *v),
        [a, b] if with_time && is_time_group(a) && !is_time_group(b) => (Some(*a), *b),
        [a, b] if with_time && is_time_group(b) && !is_time_group(a) => (Some(*b), *a),
        _ => {
            push_unknown(t, texts, obj);
            return false;
        }
    };
    let ts = ts.filter(|_| def.time == TimeGroup::Own);
    // Nearly every value is `digits.digits*unit`: read in one pass when it is.
    let plain = plain_number(group);
    let unit = match plain {
        Some((_, _, unit)) => unit,
        None => split_unit(group).1,
    };
    let Some(conv) = conversion(def.quantity, unit) else {
        push_unknown(t, texts, obj);
        return false;
    };
    let number = match plain.and_then(|(mantissa, frac_len, _)| scale(mantissa, frac_len, conv)) {
        Some(v) => Some(v),
        None => parse_scaled(split_unit(group).0, conv),
    };
    let value = match number {
        Some(v) => DsmrNumberOrText::Number(v),
        // Tariff indicators are octet strings; keep non-numeric ones as text.
        None if def.name == "tariff" && !split_unit(group).0.is_empty() => {
            DsmrNumberOrText::Text(texts.copy(split_unit(group).0))
        }
        None => {
            t.malformed.push(obj.line(texts));
            return false;
        }
    };
    let mut v = DsmrValue {
        metric: name,
        obis: o,
        value,
        unit: canonical_unit(def.quantity),
        counter: def.counter,
        timestamp: None,
    };
    // Set apart, not in the literal: an `Option` from a call merged with a literal
    // `None` went through memory as a 4-byte tag read back 8 bytes at a time, a
    // store-forwarding stall on every value.
    if let Some(ts) = ts {
        v.timestamp = parse_timestamp(ts);
        if v.timestamp.is_none() {
            t.unreadable_times.push((o, texts.copy(ts)));
        }
    }
    t.values.push(v);
    true
}

mod mbus;
mod routes;
#[cfg(test)]
mod tests;
