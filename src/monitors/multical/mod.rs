//! Kamstrup MULTICAL® heat meters over KMP, through an optical (IR) head on a
//! serial port. Every configured register is asked for in as few GetRegister
//! frames as the protocol allows (8 registers a frame): each exchange costs the
//! meter's battery, and some models stop answering after minutes of optical
//! traffic. See docs/devices/multical.md.

mod link;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio_serial::{DataBits, FlowControl, Parity, SerialPortBuilderExt, SerialStream, StopBits};

use self::link::{AttemptError, Rejected};
use super::{DeviceType, Monitor, MonitorContext, MonitorError};
use crate::config::common::CommonConfig;
use crate::protocols::kmp::{self, CanonicalUnit, Quantity, RegisterValue};
use crate::reading::{DeviceId, MetricSpec, Reading, Unit};

/// `type: multical`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct MulticalConfig {
    /// Serial device of the optical head, e.g. `/dev/ttyUSB0`; a
    /// `/dev/serial/by-id/…` path keeps naming the same head after re-plugging.
    pub port: String,
    /// Line speed. MULTICAL meters talk 1200 baud on the optical eye, some 2400.
    /// The frame format is fixed by the protocol: 8 data bits, no parity, 2 stop bits.
    #[serde(default = "default_baud_rate")]
    pub baud_rate: u32,
    /// How long to wait for the meter's answer to one request, from sending it to
    /// the answer's stop byte. A request that fails is sent once more.
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
    /// Close the serial port after every poll and open it again for the next one,
    /// so other tools can use the head in between. Off by default: heads powered
    /// from the port's control lines need a moment after opening, and would miss
    /// the first request.
    #[serde(default)]
    pub close_between_polls: bool,
    /// The registers to read, by name (see docs/devices/multical.md).
    #[serde(default = "default_registers")]
    pub registers: Vec<Register>,
}

pub fn default_baud_rate() -> u32 {
    1200
}
pub fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
/// Eight registers: one GetRegister frame per poll.
pub fn default_registers() -> Vec<Register> {
    vec![
        Register::Energy,
        Register::Volume,
        Register::Power,
        Register::Flow,
        Register::TempFlow,
        Register::TempReturn,
        Register::TempDiff,
        Register::InfoCode,
    ]
}

/// Below this poll interval a warning is logged: see [`poll_interval_warning`].
pub const BATTERY_FRIENDLY_POLL: Duration = Duration::from_secs(5 * 60);

impl DeviceType for MulticalConfig {
    /// Heat meters change slowly and every read costs battery: 15 minutes.
    fn default_poll_interval() -> Duration {
        Duration::from_secs(15 * 60)
    }

    fn validate(&self, _common: &CommonConfig) -> Result<(), (String, String)> {
        if self.port.trim().is_empty() {
            return Err(("port".into(), "name the serial device, e.g. /dev/ttyUSB0".into()));
        }
        if !(300..=115_200).contains(&self.baud_rate) {
            return Err((
                "baud_rate".into(),
                format!(
                    "{} is not a rate an optical head talks; MULTICAL meters use 1200 or 2400",
                    self.baud_rate
                ),
            ));
        }
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(30) {
            return Err(("timeout".into(), "must be between 100ms and 30s".into()));
        }
        if self.registers.is_empty() {
            return Err(("registers".into(), "list at least one register".into()));
        }
        let mut seen = HashSet::new();
        if let Some(twice) = self.registers.iter().find(|r| !seen.insert(**r)) {
            return Err(("registers".into(), format!("`{}` is listed twice", twice.name())));
        }
        Ok(())
    }

    fn metrics() -> Vec<MetricSpec> {
        all_metrics()
    }

    fn build(&self, ctx: MonitorContext) -> Result<Box<dyn Monitor>, MonitorError> {
        Ok(Box::new(MulticalMonitor::new(self, ctx.poll_interval, ctx)?))
    }
}

/// The warning for a poll interval that drains the meter's battery, if it does.
pub fn poll_interval_warning(poll: Duration) -> Option<String> {
    (poll < BATTERY_FRIENDLY_POLL).then(|| {
        format!(
            "poll_interval {} is below 5 minutes: every read drains the meter's battery, and some \
             MULTICAL models stop answering the optical eye after a few minutes of traffic",
            humantime::format_duration(poll)
        )
    })
}

/// A register mesura reads, by its config name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Register {
    Energy,
    Volume,
    Power,
    Flow,
    TempFlow,
    TempReturn,
    TempDiff,
    HourCounter,
    InfoCode,
}

/// Indexed by `Register as usize`.
const METRICS: [MetricSpec; 9] = [
    MetricSpec::counter("heat_energy", Unit::KiloWattHour, "heat energy delivered (E1)"),
    MetricSpec::counter("volume", Unit::CubicMetre, "water volume through the meter (V1)"),
    MetricSpec::gauge("power", Unit::Watt, "thermal power"),
    MetricSpec::gauge("flow", Unit::LitrePerHour, "water flow"),
    MetricSpec::gauge("temp_flow", Unit::Celsius, "flow (supply) temperature T1"),
    MetricSpec::gauge("temp_return", Unit::Celsius, "return temperature T2"),
    MetricSpec::gauge("temp_diff", Unit::Celsius, "temperature difference T1 − T2"),
    MetricSpec::counter("hour_counter", Unit::Hour, "operating hours"),
    MetricSpec::gauge("info_code", Unit::None, "info code: alarm bits, 0 when all is well"),
];

pub fn all_metrics() -> Vec<MetricSpec> {
    METRICS.to_vec()
}

impl Register {
    pub fn name(self) -> &'static str {
        match self {
            Register::Energy => "energy",
            Register::Volume => "volume",
            Register::Power => "power",
            Register::Flow => "flow",
            Register::TempFlow => "temp_flow",
            Register::TempReturn => "temp_return",
            Register::TempDiff => "temp_diff",
            Register::HourCounter => "hour_counter",
            Register::InfoCode => "info_code",
        }
    }

    /// The KMP register id.
    pub fn id(self) -> u16 {
        use kmp::registers as r;
        match self {
            Register::Energy => r::ENERGY,
            Register::Volume => r::VOLUME,
            Register::Power => r::POWER,
            Register::Flow => r::FLOW,
            Register::TempFlow => r::TEMP_FLOW,
            Register::TempReturn => r::TEMP_RETURN,
            Register::TempDiff => r::TEMP_DIFF,
            Register::HourCounter => r::HOUR_COUNTER,
            Register::InfoCode => r::INFO_CODE,
        }
    }

    pub fn metric(self) -> &'static MetricSpec {
        &METRICS[self as usize]
    }

    /// The register's value in its metric's unit. The meter says which unit it
    /// sends (MWh, GJ, kWh… for energy, depending on its configuration); a unit
    /// that is not one of the metric's quantity is refused, never guessed at.
    pub fn convert(self, value: &RegisterValue) -> Result<f64, String> {
        use CanonicalUnit as C;
        let accepted: &[C] = match self {
            Register::Energy => &[C::KilowattHour],
            Register::Volume => &[C::CubicMetre],
            Register::Power => &[C::Watt],
            Register::Flow => &[C::LitrePerHour],
            Register::TempFlow | Register::TempReturn => &[C::DegreeCelsius],
            // A difference is the same number in K and °C; stored as °C like the
            // temperatures it is the difference of.
            Register::TempDiff => &[C::Kelvin, C::DegreeCelsius],
            Register::HourCounter => &[C::Hour],
            Register::InfoCode => &[],
        };
        let converted = if self == Register::InfoCode {
            // A bit field: any unit-less number, kept as is.
            (value.unit().quantity() == Quantity::Number).then(|| value.value())
        } else {
            value
                .normalized()
                .filter(|m| accepted.contains(&m.unit))
                .map(|m| m.value)
        };
        let Some(v) = converted else {
            return Err(format!(
                "register `{}` ({:#06x}) came in unit `{}` (code {:#04x}), which is not a unit of {}; \
                 remove it from `registers:` if this meter uses it for something else",
                self.name(),
                self.id(),
                value.unit(),
                value.unit().code(),
                self.metric().unit
            ));
        };
        if !v.is_finite() {
            return Err(format!("register `{}` is out of range: {v}", self.name()));
        }
        if self.metric().kind == crate::reading::Kind::Counter && v < 0.0 {
            return Err(format!("register `{}` is a counter but reads {v}", self.name()));
        }
        Ok(v)
    }
}

/// One GetRegister frame and the registers it asks for.
#[derive(Debug)]
struct Request {
    registers: Vec<Register>,
    ids: Vec<u16>,
    frame: Vec<u8>,
}

/// Each request is sent at most this often per poll: once, and once more if the
/// meter stays silent or its answer does not check out.
const ATTEMPTS: u32 = 2;

#[derive(Debug)]
pub struct MulticalMonitor {
    config: MulticalConfig,
    ctx: MonitorContext,
    requests: Vec<Request>,
    metrics: Vec<MetricSpec>,
    port: Option<SerialStream>,
    /// Registers the meter left out of an answer, warned about once each.
    warned_missing: HashSet<Register>,
    /// Frames turned down since the monitor started, by [`Rejected::kind`]; a
    /// retry often saves the poll, so only these totals show that it happened.
    rejected_frames: HashMap<&'static str, u64>,
    /// The meter's serial number (GetSerialNo) and when it was last asked for: a
    /// new serial behind the same head is another meter (src/energy/ starts new
    /// epochs for its counters).
    serial: Option<u32>,
    serial_asked: Option<tokio::time::Instant>,
}

/// How often the serial number is asked for again while the port stays open: a
/// meter swap moves the optical head without closing a USB head's port.
const SERIAL_EVERY: Duration = Duration::from_secs(3600);

/// The `kind`s of [`Rejected`], all shown in /metrics from the start.
const REJECTED_KINDS: [&str; 3] = ["crc", "register_mismatch", "invalid_frame"];

/// How long the line must stay silent before a request is sent (see
/// [`link::drain`]): a few characters' time, at least long enough for a pty or a
/// USB head to pass on bytes already on their way.
fn quiet_before_request(baud_rate: u32) -> Duration {
    // 11 bits a character (8N2 plus the start bit).
    let character = Duration::from_micros(11_000_000 / u64::from(baud_rate.max(1)));
    (character * 4).max(Duration::from_millis(50))
}

impl MulticalMonitor {
    pub fn new(config: &MulticalConfig, poll_interval: Duration, ctx: MonitorContext) -> Result<Self, MonitorError> {
        if let Some(warning) = poll_interval_warning(poll_interval) {
            tracing::warn!(device = %ctx.id, "{warning}");
        }
        let requests = config
            .registers
            .chunks(kmp::MAX_REGISTERS_PER_REQUEST)
            .map(|chunk| {
                let ids: Vec<u16> = chunk.iter().map(|r| r.id()).collect();
                kmp::encode_get_register_request(kmp::ADDRESS_HEAT_METER, &ids)
                    .map(|frame| Request {
                        registers: chunk.to_vec(),
                        ids,
                        frame,
                    })
                    .map_err(|e| MonitorError::config(e.to_string()).caused_by(e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MulticalMonitor {
            metrics: config.registers.iter().map(|r| *r.metric()).collect(),
            config: config.clone(),
            ctx,
            requests,
            port: None,
            warned_missing: HashSet::new(),
            rejected_frames: HashMap::new(),
            serial: None,
            serial_asked: None,
        })
    }

    fn open(&self) -> Result<SerialStream, MonitorError> {
        tokio_serial::new(self.config.port.as_str(), self.config.baud_rate)
            .data_bits(DataBits::Eight)
            .parity(Parity::None)
            .stop_bits(StopBits::Two)
            .flow_control(FlowControl::None)
            .open_native_async()
            .map_err(|e| {
                let message = format!("cannot open {}: {e}", self.config.port);
                match e.kind {
                    // Settings the port refuses, or a port we may not use: waiting
                    // will not help until someone changes something.
                    tokio_serial::ErrorKind::InvalidInput
                    | tokio_serial::ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => {
                        MonitorError::config(message).caused_by(e)
                    }
                    // Missing (unplugged head), busy, anything else: may come back.
                    _ => MonitorError::link(message).caused_by(e),
                }
            })
    }

    /// One request with its retry. The port is opened when needed and dropped
    /// after an I/O error, so an unplugged and re-plugged head is found again.
    async fn request(&mut self, index: usize) -> Result<Vec<RegisterValue>, MonitorError> {
        let timeout = self.config.timeout;
        let mut errors = Vec::new();
        for attempt in 1..=ATTEMPTS {
            if self.port.is_none() {
                self.port = Some(self.open()?);
                // Reopened after a failure (an unplugged head): maybe another meter.
                if !self.config.close_between_polls {
                    self.serial_asked = None;
                }
            }
            let (Some(port), Some(request)) = (self.port.as_mut(), self.requests.get(index)) else {
                return Err(MonitorError::link("the serial port is not open"));
            };
            let quiet = quiet_before_request(self.config.baud_rate);
            match link::drain(port, quiet, timeout).await {
                Ok(0) => {}
                Ok(bytes) => {
                    tracing::debug!(device = %self.ctx.id, bytes, "discarded what was on the line before the request (a late answer?)");
                }
                Err(e) => {
                    tracing::debug!(device = %self.ctx.id, attempt, error = %e, "serial port failed before the request");
                    self.port = None;
                    errors.push(AttemptError::Io(e));
                    continue;
                }
            }
            let mut rejected = Vec::new();
            let result = link::exchange(port, &request.frame, &request.ids, timeout, &mut rejected).await;
            for frame in &rejected {
                *self.rejected_frames.entry(frame.kind()).or_insert(0) += 1;
                note_rejected(&self.ctx.id, attempt, frame);
            }
            match result {
                Ok(values) => return Ok(values),
                Err(e) => {
                    tracing::debug!(device = %self.ctx.id, attempt, error = ?e, "KMP request failed");
                    if matches!(e, AttemptError::Io(_)) {
                        self.port = None;
                    }
                    errors.push(e);
                }
            }
        }
        let tries = format!("{ATTEMPTS} attempts");
        Err(match errors.pop() {
            Some(AttemptError::Invalid(message)) => MonitorError::invalid_data(format!("{message} ({tries})")),
            Some(AttemptError::Io(e)) => MonitorError::link(format!(
                "serial I/O on {}: {} ({tries})",
                self.config.port,
                super::describe_link_io(&e)
            ))
            .caused_by(e),
            Some(AttemptError::Silent) | None => MonitorError::link(format!(
                "no answer from the meter within {} ({tries}); is the head on the optical eye?",
                humantime::format_duration(timeout)
            )),
        })
    }

    /// Asks for the serial number when the port was just opened, or
    /// [`SERIAL_EVERY`] after the last time. A meter that does not answer it
    /// still has its registers read: the serial only tells swaps apart.
    async fn refresh_serial(&mut self) {
        let due = self.serial_asked.is_none_or(|at| at.elapsed() >= SERIAL_EVERY);
        if !due {
            return;
        }
        let Some(port) = self.port.as_mut() else { return };
        self.serial_asked = Some(tokio::time::Instant::now());
        let quiet = quiet_before_request(self.config.baud_rate);
        if link::drain(port, quiet, self.config.timeout).await.is_err() {
            return;
        }
        let mut rejected = Vec::new();
        match link::serial_number(port, self.config.timeout, &mut rejected).await {
            Ok(serial) => {
                if self.serial.is_some_and(|old| old != serial) {
                    tracing::warn!(device = %self.ctx.id, old = ?self.serial, new = serial, "another meter behind the optical head: its serial number changed");
                }
                self.serial = Some(serial);
            }
            Err(e) => {
                tracing::debug!(device = %self.ctx.id, error = ?e, "no serial number from the meter");
            }
        }
        for frame in &rejected {
            *self.rejected_frames.entry(frame.kind()).or_insert(0) += 1;
        }
    }

    /// Every request of a poll; all of them must succeed, so a poll is stored
    /// whole or not at all.
    async fn poll(&mut self) -> Result<Vec<Reading>, MonitorError> {
        if self.port.is_none() {
            // A port opened anew (after an error: an unplugged head) may face
            // another meter; a port closed after every poll on purpose is not news.
            if !self.config.close_between_polls {
                self.serial_asked = None;
            }
            self.port = Some(self.open()?);
        }
        self.refresh_serial().await;
        let mut values: HashMap<u16, RegisterValue> = HashMap::new();
        for index in 0..self.requests.len() {
            for value in self.request(index).await? {
                // A meter repeating a register: the first one counts.
                values.entry(value.register()).or_insert(value);
            }
        }
        if self.serial_asked.is_none() {
            // The port was reopened during the poll: the serial of the meter that
            // answered it, so the readings go with the right meter.
            self.refresh_serial().await;
        }
        let now = self.ctx.clock.now();
        let mut readings = Vec::with_capacity(self.config.registers.len());
        let mut missing = Vec::new();
        for register in self.requests.iter().flat_map(|r| r.registers.iter().copied()) {
            let Some(value) = values.get(&register.id()) else {
                missing.push(register);
                continue;
            };
            let v = register.convert(value).map_err(MonitorError::invalid_data)?;
            readings.push(register.metric().reading(&self.ctx.id, v, now));
        }
        if readings.is_empty() {
            return Err(MonitorError::refused(format!(
                "the meter answered but knows none of the registers asked for ({})",
                names(&missing)
            )));
        }
        // An answer to another request never gets this far (the link turns it
        // down), so a register left out is one the meter does not have: the
        // others are still good.
        let new: Vec<Register> = missing.into_iter().filter(|r| self.warned_missing.insert(*r)).collect();
        if !new.is_empty() {
            tracing::warn!(device = %self.ctx.id, registers = %names(&new), "the meter answers without these registers, so it does not have them; storing the others");
        }
        Ok(readings)
    }
}

fn names(registers: &[Register]) -> String {
    registers.iter().map(|r| r.name()).collect::<Vec<_>>().join(", ")
}

/// Logs one frame an attempt turned down. An answer to another request is a
/// WARN every time: taken, it would have left a hole in the row or put one
/// register's value in another's place. Line noise stays at DEBUG: it is counted
/// in /metrics, and the poll's own error tells when the retry did not save it.
fn note_rejected(device: &DeviceId, attempt: u32, frame: &Rejected) {
    match frame {
        Rejected::OtherRequest { requested, returned } => tracing::warn!(
            device = %device,
            attempt,
            requested = %describe_ids(requested),
            returned = %describe_ids(returned),
            "discarded an answer with registers that were not asked for (an answer to another request, e.g. a late one)"
        ),
        Rejected::BadCrc(message) | Rejected::Invalid(message) => {
            tracing::debug!(device = %device, attempt, kind = frame.kind(), "discarded a frame: {message}");
        }
    }
}

/// Register ids with their catalogue names, e.g. `0x003c energy, 0x0044 volume`.
fn describe_ids(ids: &[u16]) -> String {
    if ids.is_empty() {
        return "(none)".into();
    }
    ids.iter()
        .map(|&id| match kmp::register_by_id(id) {
            Some(known) => format!("{id:#06x} {}", known.name),
            None => format!("{id:#06x}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[async_trait]
impl Monitor for MulticalMonitor {
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError> {
        let result = self.poll().await;
        if self.config.close_between_polls {
            self.port = None;
        }
        result
    }

    /// Complete: the registers of its config.
    fn metrics_complete(&self) -> bool {
        true
    }

    fn metrics(&self) -> &[MetricSpec] {
        &self.metrics
    }

    fn protocol_errors(&self) -> Vec<(&'static str, u64)> {
        REJECTED_KINDS
            .iter()
            .map(|kind| (*kind, self.rejected_frames.get(kind).copied().unwrap_or(0)))
            .collect()
    }

    fn identity(&self) -> Option<String> {
        self.serial.map(|s| s.to_string())
    }
}

#[cfg(test)]
mod tests;
