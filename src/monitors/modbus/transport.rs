//! The link to a Modbus device: a TCP connection of its own, or a turn on a
//! shared RTU bus. tokio-modbus keeps "the link failed" (`Err`) apart from "the
//! device answered with an exception" (`Ok(Err(code))`); so does [`ReadError`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

use super::config::{ModbusConfig, Parity};
use crate::monitors::{Cause, MonitorError};
use crate::protocols::modbus::plan::Block;
use crate::protocols::modbus::point::RegisterKind;

/// Why one read request failed.
#[derive(Debug)]
pub enum ReadError {
    /// The device answered with an exception: the link is fine.
    Exception(ExceptionCode),
    /// No answer, a broken connection, a garbled frame: reconnect.
    Link(String, Option<Cause>),
    /// The port cannot be opened as configured (permissions, bad settings).
    Config(String, Option<Cause>),
}

impl ReadError {
    fn link(message: impl Into<String>) -> Self {
        ReadError::Link(message.into(), None)
    }

    /// The failure of the request `what` (a device and the registers asked for),
    /// as the monitor reports it.
    pub fn for_request(self, what: &str) -> MonitorError {
        let (error, cause) = match self {
            ReadError::Exception(code) => {
                return MonitorError::refused(format!("{what}: exception {code:?}")).caused_by(code)
            }
            ReadError::Link(message, cause) => (MonitorError::link(format!("{what}: {message}")), cause),
            ReadError::Config(message, cause) => (MonitorError::config(message), cause),
        };
        match cause {
            Some(cause) => error.caused_by(cause),
            None => error,
        }
    }
}

/// One request: a read of a block, or a write of holding registers (function 6
/// for one word, 16 for more), which answers no words.
#[derive(Debug, Clone)]
pub enum Op {
    Read(Block),
    Write { address: u16, words: Vec<u16> },
}

/// Runs one request on a client context with a deadline; the values as words
/// (bits as 0/1).
async fn call(ctx: &mut Context, op: Op, timeout: Duration) -> Result<Vec<u16>, ReadError> {
    let block = match op {
        Op::Read(block) => block,
        Op::Write { address, words } => return call_write(ctx, address, &words, timeout).await,
    };
    let (address, count) = (block.address, block.count);
    let request = async {
        match block.register {
            RegisterKind::Holding => ctx.read_holding_registers(address, count).await,
            RegisterKind::Input => ctx.read_input_registers(address, count).await,
            RegisterKind::Coil => ctx
                .read_coils(address, count)
                .await
                .map(|r| r.map(|bits| bits.into_iter().map(u16::from).collect())),
            RegisterKind::Discrete => ctx
                .read_discrete_inputs(address, count)
                .await
                .map(|r| r.map(|bits| bits.into_iter().map(u16::from).collect())),
        }
    };
    match sort_answer(tokio::time::timeout(timeout, request).await, timeout)? {
        words if words.len() == usize::from(count) => Ok(words),
        words => Err(ReadError::link(format!(
            "asked for {count} values, got {}",
            words.len()
        ))),
    }
}

/// Writes holding registers; the device's echo is checked by tokio-modbus.
async fn call_write(ctx: &mut Context, address: u16, words: &[u16], timeout: Duration) -> Result<Vec<u16>, ReadError> {
    let request = async {
        match words {
            [word] => ctx.write_single_register(address, *word).await,
            _ => ctx.write_multiple_registers(address, words).await,
        }
    };
    sort_answer(tokio::time::timeout(timeout, request).await, timeout).map(|()| Vec::new())
}

/// A request's outcome sorted into the link failing and the device refusing.
fn sort_answer<T>(
    answer: Result<Result<Result<T, ExceptionCode>, tokio_modbus::Error>, tokio::time::error::Elapsed>,
    timeout: Duration,
) -> Result<T, ReadError> {
    match answer {
        Err(_) => Err(ReadError::link(format!(
            "no answer within {}",
            humantime::format_duration(timeout)
        ))),
        Ok(Err(tokio_modbus::Error::Transport(e))) => Err(ReadError::Link(
            crate::monitors::describe_link_io(&e),
            Some(Cause::Io(e)),
        )),
        Ok(Err(e)) => Err(ReadError::Link(e.to_string(), Some(Cause::Modbus(e)))),
        // A gateway (Modbus TCP to RTU) answering 0x0A/0x0B could not reach the
        // device behind it: that is the link failing further on, not the device
        // refusing the request, so it is retried and counted as a link error.
        Ok(Ok(Err(code @ (ExceptionCode::GatewayPathUnavailable | ExceptionCode::GatewayTargetDevice)))) => {
            Err(ReadError::Link(
                format!("the gateway could not reach the device (exception {code:?})"),
                Some(Cause::ModbusException(code)),
            ))
        }
        Ok(Ok(Err(code))) => Err(ReadError::Exception(code)),
        Ok(Ok(Ok(value))) => Ok(value),
    }
}

/// A device's link, opened on first use and dropped after a link error so the
/// next request reconnects.
#[derive(Debug)]
pub enum Transport {
    Tcp(TcpLink),
    Rtu(RtuLink),
}

impl Transport {
    pub fn new(config: &ModbusConfig) -> Transport {
        match &config.serial_port {
            Some(port) => Transport::Rtu(RtuLink {
                settings: SerialSettings {
                    path: port.clone(),
                    baud_rate: config.baud_rate,
                    parity: config.parity,
                    stop_bits: config.stop_bits,
                },
                unit: config.unit_id,
                timeout: config.timeout,
                bus: None,
            }),
            None => Transport::Tcp(TcpLink {
                address: format!("{}:{}", config.host.as_deref().unwrap_or_default(), config.port),
                unit: config.unit_id,
                timeout: config.timeout,
                ctx: None,
            }),
        }
    }

    pub async fn read(&mut self, block: Block) -> Result<Vec<u16>, ReadError> {
        self.run(Op::Read(block)).await
    }

    /// Writes holding registers from `address` on, on the same link as the polls.
    pub async fn write(&mut self, address: u16, words: Vec<u16>) -> Result<(), ReadError> {
        self.run(Op::Write { address, words }).await.map(|_| ())
    }

    async fn run(&mut self, op: Op) -> Result<Vec<u16>, ReadError> {
        match self {
            Transport::Tcp(link) => link.run(op).await,
            Transport::Rtu(link) => link.run(op).await,
        }
    }

    /// Where the device is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Transport::Tcp(link) => format!("{} unit {}", link.address, link.unit),
            Transport::Rtu(link) => format!("{} unit {}", link.settings.path, link.unit),
        }
    }
}

pub struct TcpLink {
    address: String,
    unit: u8,
    timeout: Duration,
    ctx: Option<Context>,
}

impl std::fmt::Debug for TcpLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpLink")
            .field("address", &self.address)
            .field("unit", &self.unit)
            .field("timeout", &self.timeout)
            .field("connected", &self.ctx.is_some())
            .finish()
    }
}

impl TcpLink {
    async fn run(&mut self, op: Op) -> Result<Vec<u16>, ReadError> {
        if self.ctx.is_none() {
            self.ctx = Some(connect(&self.address, self.unit, self.timeout).await?);
        }
        let Some(ctx) = self.ctx.as_mut() else {
            return Err(ReadError::link("not connected"));
        };
        let result = call(ctx, op, self.timeout).await;
        if matches!(result, Err(ReadError::Link(..))) {
            // A late answer would be taken for the next request's: start afresh.
            self.ctx = None;
        }
        result
    }
}

/// A free function rather than a method: a `&TcpLink` (holding a non-`Sync`
/// client context) must not live across the await.
async fn connect(address: &str, unit: u8, timeout: Duration) -> Result<Context, ReadError> {
    let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| ReadError::link(format!("cannot connect to {address}: timed out")))?
        .map_err(|e| {
            ReadError::Link(
                format!("cannot connect to {address}: {}", crate::monitors::describe_link_io(&e)),
                Some(Cause::Io(e)),
            )
        })?;
    // Requests are small and latency matters more than packing.
    let _ = stream.set_nodelay(true);
    Ok(tokio_modbus::client::tcp::attach_slave(stream, Slave(unit)))
}

/// How an RTU bus's serial port is opened. The first device on a port decides.
#[derive(Debug, Clone, PartialEq)]
pub struct SerialSettings {
    pub path: String,
    pub baud_rate: u32,
    pub parity: Parity,
    pub stop_bits: u8,
}

#[derive(Debug)]
pub struct RtuLink {
    settings: SerialSettings,
    unit: u8,
    timeout: Duration,
    bus: Option<Arc<Bus>>,
}

impl RtuLink {
    async fn run(&mut self, op: Op) -> Result<Vec<u16>, ReadError> {
        let bus = match &self.bus {
            Some(bus) => bus.clone(),
            None => {
                let bus = Bus::shared(&self.settings);
                self.bus = Some(bus.clone());
                bus
            }
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            unit: self.unit,
            op,
            timeout: self.timeout,
            reply,
        };
        bus.jobs
            .send(job)
            .await
            .map_err(|_| ReadError::link(format!("the bus task of {} has ended", self.settings.path)))?;
        answer
            .await
            .map_err(|_| ReadError::link(format!("the bus task of {} has ended", self.settings.path)))?
    }
}

/// One request waiting for its turn on a bus.
struct Job {
    unit: u8,
    op: Op,
    timeout: Duration,
    reply: oneshot::Sender<Result<Vec<u16>, ReadError>>,
}

/// One RS485 bus: a task owning the serial port, serving the devices on it one
/// request at a time. The task ends, closing the port, when the last device
/// drops its handle.
#[derive(Debug)]
pub struct Bus {
    jobs: mpsc::Sender<Job>,
}

struct BusEntry {
    bus: Weak<Bus>,
    /// Changes (closes) when the bus task has ended and released the port.
    ended: watch::Receiver<()>,
}

/// Every bus in the process, by port path: a port cannot be opened twice.
fn buses() -> &'static Mutex<HashMap<String, BusEntry>> {
    static BUSES: OnceLock<Mutex<HashMap<String, BusEntry>>> = OnceLock::new();
    BUSES.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Bus {
    /// The bus on `settings.path`, started if no device uses it yet.
    pub fn shared(settings: &SerialSettings) -> Arc<Bus> {
        // A poisoned lock only means another thread panicked mid-insert; the
        // map itself is still usable.
        let mut map = buses().lock().unwrap_or_else(|e| e.into_inner());
        let previous = map.remove(&settings.path);
        if let Some(entry) = &previous {
            if let Some(bus) = entry.bus.upgrade() {
                map.insert(
                    settings.path.clone(),
                    BusEntry {
                        bus: entry.bus.clone(),
                        ended: entry.ended.clone(),
                    },
                );
                return bus;
            }
        }
        let (jobs, queue) = mpsc::channel(16);
        let (ended_tx, ended) = watch::channel(());
        let bus = Arc::new(Bus { jobs });
        map.insert(
            settings.path.clone(),
            BusEntry {
                bus: Arc::downgrade(&bus),
                ended,
            },
        );
        // A bus of the same port that is still closing must release it first.
        let wait_for = previous.map(|e| e.ended);
        tokio::spawn(run_bus(settings.clone(), queue, wait_for, ended_tx));
        bus
    }
}

async fn run_bus(
    settings: SerialSettings,
    mut queue: mpsc::Receiver<Job>,
    previous: Option<watch::Receiver<()>>,
    _ended: watch::Sender<()>,
) {
    if let Some(mut previous) = previous {
        // Returns Err once the previous task dropped its sender, i.e. ended.
        while previous.changed().await.is_ok() {}
    }
    tracing::debug!(port = %settings.path, "Modbus RTU bus started");
    let mut ctx: Option<Context> = None;
    while let Some(job) = queue.recv().await {
        if job.reply.is_closed() {
            continue;
        }
        let result = async {
            if ctx.is_none() {
                ctx = Some(open(&settings)?);
            }
            let Some(c) = ctx.as_mut() else {
                return Err(ReadError::link("the port is not open"));
            };
            c.set_slave(Slave(job.unit));
            let result = call(c, job.op, job.timeout).await;
            if matches!(result, Err(ReadError::Link(..))) {
                // Reopening drops whatever half frame or late answer is left.
                ctx = None;
            }
            result
        }
        .await;
        let _ = job.reply.send(result);
    }
    tracing::debug!(port = %settings.path, "Modbus RTU bus closed");
}

fn open(settings: &SerialSettings) -> Result<Context, ReadError> {
    use tokio_serial::{DataBits, FlowControl, Parity as P, SerialPortBuilderExt, StopBits};
    let parity = match settings.parity {
        Parity::None => P::None,
        Parity::Even => P::Even,
        Parity::Odd => P::Odd,
    };
    let stop_bits = if settings.stop_bits == 2 {
        StopBits::Two
    } else {
        StopBits::One
    };
    let port = tokio_serial::new(settings.path.as_str(), settings.baud_rate)
        .data_bits(DataBits::Eight)
        .parity(parity)
        .stop_bits(stop_bits)
        .flow_control(FlowControl::None)
        .open_native_async()
        .map_err(|e| {
            let message = format!("cannot open {}: {e}", settings.path);
            match e.kind {
                tokio_serial::ErrorKind::InvalidInput
                | tokio_serial::ErrorKind::Io(std::io::ErrorKind::PermissionDenied) => {
                    ReadError::Config(message, Some(Cause::Serial(e)))
                }
                _ => ReadError::Link(message, Some(Cause::Serial(e))),
            }
        })?;
    Ok(tokio_modbus::client::rtu::attach_slave(port, Slave(1)))
}
