//! One poll of the point map: the planned requests, and what happens when the
//! device refuses one. A refusal (exception 01, 02 or 03: "I will not answer
//! this request") is about the request, not the link, so one point the device
//! lacks must not cost every other point: the refused request is asked for
//! again point by point, the point(s) the device refuses on their own are left
//! out of the poll for `refused_point_retry`, and the rest are stored. A link
//! failure (no answer, a broken connection) still fails the whole poll.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use tokio_modbus::ExceptionCode;

use super::transport::ReadError;
use super::ModbusMonitor;
use crate::monitors::MonitorError;
use crate::protocols::modbus::plan::{self, Block, Image, Limits, Span};

/// A point the device refused on its own, left out of the poll until `until`.
#[derive(Debug, Clone)]
struct Refusal {
    code: ExceptionCode,
    until: Instant,
}

/// One planned request and the points (indices into the map) it serves.
#[derive(Debug, Clone)]
struct Planned {
    block: Block,
    points: Vec<usize>,
}

/// What the poll remembers between polls.
#[derive(Debug)]
pub(super) struct PollState {
    /// Start from the configured limits; lowered when the device refuses a
    /// request every point of which it answers alone.
    limits: Limits,
    retry: Duration,
    refused: BTreeMap<usize, Refusal>,
    /// `None` after the refused points or the limits changed.
    plan: Option<Vec<Planned>>,
    points_refused: u64,
    limits_lowered: u64,
}

impl PollState {
    pub(super) fn new(limits: Limits, retry: Duration) -> Self {
        PollState {
            limits,
            retry,
            refused: BTreeMap::new(),
            plan: None,
            points_refused: 0,
            limits_lowered: 0,
        }
    }

    /// Totals for `/metrics` (`mesura_protocol_errors_total{kind}`).
    pub(super) fn counters(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("modbus_point_refused", self.points_refused),
            ("modbus_request_limit_lowered", self.limits_lowered),
        ]
    }
}

/// Exceptions by which the device refuses the request itself (function, address,
/// quantity), as opposed to being busy or failing: asking for less may work.
fn refuses_request(code: ExceptionCode) -> bool {
    matches!(
        code,
        ExceptionCode::IllegalFunction | ExceptionCode::IllegalDataAddress | ExceptionCode::IllegalDataValue
    )
}

/// The requests for the points not refused, each with the points it serves.
fn make_plan(spans: &[Span], refused: &BTreeMap<usize, Refusal>, limits: Limits) -> Vec<Planned> {
    let active: Vec<usize> = (0..spans.len()).filter(|i| !refused.contains_key(i)).collect();
    let wanted: Vec<Span> = active.iter().map(|&i| spans[i]).collect();
    let avoid: Vec<Span> = refused.keys().filter_map(|&i| spans.get(i).copied()).collect();
    plan::plan_avoiding(&wanted, &avoid, limits)
        .into_iter()
        .map(|block| Planned {
            block,
            points: active
                .iter()
                .copied()
                .filter(|&i| {
                    let s = spans[i];
                    s.register == block.register
                        && u32::from(s.address) < block.end()
                        && s.end() > u32::from(block.address)
                })
                .collect(),
        })
        .collect()
}

impl ModbusMonitor {
    fn point_name(&self, i: usize) -> &str {
        self.points.get(i).map_or("?", |p| p.config.name.as_str())
    }

    /// A request as people read it: the table, hex addresses and the points in it.
    fn describe(&self, block: &Block, points: &[usize]) -> String {
        const SHOWN: usize = 6;
        let mut names: Vec<String> = points
            .iter()
            .take(SHOWN)
            .map(|&i| format!("`{}`", self.point_name(i)))
            .collect();
        if points.len() > SHOWN {
            names.push(format!("and {} more", points.len() - SHOWN));
        }
        let last = block.end().saturating_sub(1);
        let range = if last > u32::from(block.address) {
            format!("0x{:04X}-0x{last:04X}", block.address)
        } else {
            format!("0x{:04X}", block.address)
        };
        format!(
            "{} {} {range} ({})",
            self.transport.describe(),
            block.register.as_str(),
            names.join(", ")
        )
    }

    fn request_error(&self, e: ReadError, block: &Block, points: &[usize]) -> MonitorError {
        e.for_request(&self.describe(block, points))
    }

    /// The poll's failure when nothing could be read because the device refuses
    /// every point asked for.
    fn all_refused(&self) -> MonitorError {
        let now = Instant::now();
        let list: Vec<String> = self
            .poll
            .refused
            .iter()
            .map(|(&i, r)| {
                let again =
                    humantime::format_duration(Duration::from_secs(r.until.saturating_duration_since(now).as_secs()));
                format!("`{}` ({:?}, asked for again in {again})", self.point_name(i), r.code)
            })
            .collect();
        MonitorError::refused(format!(
            "{}: the device refuses every point of the map: {}",
            self.transport.describe(),
            list.join(", ")
        ))
    }

    /// Reads every request of the plan into one image. Points the device refuses
    /// are left out; the poll fails only on a link failure, another exception,
    /// or when nothing at all could be read.
    pub(super) async fn read_image(&mut self) -> Result<Image, MonitorError> {
        self.retry_refused_points();
        let plan = match &self.poll.plan {
            Some(plan) => plan.clone(),
            None => {
                let spans: Vec<Span> = self.points.iter().map(|p| p.span).collect();
                let plan = make_plan(&spans, &self.poll.refused, self.poll.limits);
                self.poll.plan = Some(plan.clone());
                plan
            }
        };
        let mut image = Image::default();
        let mut answered = false;
        for planned in &plan {
            match self.transport.read(planned.block).await {
                Ok(words) => {
                    image.insert(planned.block.register, planned.block.address, &words);
                    answered = true;
                }
                Err(ReadError::Exception(code)) if refuses_request(code) => {
                    answered |= self.isolate(planned, code, &mut image).await?;
                }
                Err(e) => return Err(self.request_error(e, &planned.block, &planned.points)),
            }
        }
        if !answered && !self.poll.refused.is_empty() {
            return Err(self.all_refused());
        }
        Ok(image)
    }

    /// Puts refused points whose time is up back into the plan.
    fn retry_refused_points(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = self
            .poll
            .refused
            .iter()
            .filter(|(_, r)| r.until <= now)
            .map(|(&i, _)| i)
            .collect();
        for i in due {
            self.poll.refused.remove(&i);
            self.poll.plan = None;
            tracing::info!(device = %self.ctx.id, point = %self.point_name(i), "asking for a point the device refused again");
        }
    }

    /// After the device refused `planned` as a whole: asks for each of its points
    /// alone, keeps what is answered, and leaves out what is refused. Whether any
    /// point was answered.
    async fn isolate(
        &mut self,
        planned: &Planned,
        code: ExceptionCode,
        image: &mut Image,
    ) -> Result<bool, MonitorError> {
        let mut refused: Vec<(usize, ExceptionCode)> = Vec::new();
        let mut answered = false;
        if let [only] = planned.points[..] {
            // The request was that point alone: nothing to narrow down.
            refused.push((only, code));
        } else {
            for &i in &planned.points {
                let Some(span) = self.points.get(i).map(|p| p.span) else {
                    continue;
                };
                for block in plan::plan(&[span], self.poll.limits) {
                    match self.transport.read(block).await {
                        Ok(words) => {
                            image.insert(block.register, block.address, &words);
                            answered = true;
                        }
                        Err(ReadError::Exception(c)) if refuses_request(c) => {
                            refused.push((i, c));
                            break;
                        }
                        Err(e) => return Err(self.request_error(e, &block, &[i])),
                    }
                }
            }
        }
        if refused.is_empty() {
            self.lower_limits(planned, code);
        }
        for (i, c) in refused {
            self.refuse(i, c);
        }
        self.poll.plan = None;
        Ok(answered)
    }

    fn refuse(&mut self, i: usize, code: ExceptionCode) {
        let retry = self.poll.retry;
        self.poll.refused.insert(
            i,
            Refusal {
                code,
                until: Instant::now() + retry,
            },
        );
        self.poll.points_refused += 1;
        let where_ = self
            .points
            .get(i)
            .map(|p| format!("{} register 0x{:04X}", p.span.register.as_str(), p.span.address))
            .unwrap_or_default();
        tracing::warn!(
            device = %self.ctx.id,
            "the device refuses point `{}` ({where_}) with exception {code:?}: it is left out of the poll for {} and the other points are stored",
            self.point_name(i),
            humantime::format_duration(retry)
        );
    }

    /// The device refused a request every point of which it answers alone: it
    /// takes fewer registers per request than configured, or no reads through
    /// undefined registers. Reads smaller requests from now on.
    fn lower_limits(&mut self, planned: &Planned, code: ExceptionCode) {
        let block = planned.block;
        let covered = (block.address..=block.address.saturating_add(block.count.saturating_sub(1)))
            .filter(|a| {
                planned.points.iter().any(|&i| {
                    self.points
                        .get(i)
                        .is_some_and(|p| p.span.address <= *a && u32::from(*a) < p.span.end())
                })
            })
            .count();
        let limits = &mut self.poll.limits;
        if covered < usize::from(block.count) && limits.max_gap > 0 {
            limits.max_gap = 0;
        } else if block.register.is_bits() {
            limits.max_bits = limits.max_bits.min(block.count / 2).max(1);
        } else {
            limits.max_registers = limits.max_registers.min(block.count / 2).max(1);
        }
        self.poll.limits_lowered += 1;
        tracing::warn!(
            device = %self.ctx.id,
            "the device refuses {} in one request (exception {code:?}) but answers each point alone: \
             reading smaller requests from now on (max_gap {}, max_registers {}); set these in the device file",
            self.describe(&block, &planned.points),
            self.poll.limits.max_gap,
            self.poll.limits.max_registers
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::modbus::point::RegisterKind::*;

    fn s(address: u16, count: u16) -> Span {
        Span {
            register: Input,
            address,
            count,
        }
    }

    #[test]
    fn a_refused_point_leaves_the_plan_and_is_not_read_through() {
        let spans = [s(0, 2), s(2, 2), s(6, 2)];
        let none = BTreeMap::new();
        let plan = make_plan(&spans, &none, Limits::default());
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].points, [0, 1, 2]);
        let refused: BTreeMap<usize, Refusal> = [(
            1,
            Refusal {
                code: ExceptionCode::IllegalDataAddress,
                until: Instant::now(),
            },
        )]
        .into();
        let plan = make_plan(&spans, &refused, Limits::default());
        let blocks: Vec<(Block, Vec<usize>)> = plan.into_iter().map(|p| (p.block, p.points)).collect();
        assert_eq!(blocks, [(s(0, 2), vec![0]), (s(6, 2), vec![2])]);
    }

    #[test]
    fn only_refusals_of_the_request_are_narrowed_down() {
        assert!(refuses_request(ExceptionCode::IllegalDataAddress));
        assert!(refuses_request(ExceptionCode::IllegalDataValue));
        assert!(!refuses_request(ExceptionCode::ServerDeviceBusy));
        assert!(!refuses_request(ExceptionCode::GatewayTargetDevice));
    }
}
