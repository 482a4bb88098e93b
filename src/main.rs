//! The `mesura` command line: parses arguments, sets up logging, handles signals,
//! and hands everything else to the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use mesura::commands;
use mesura::config::{Config, LogFormat};
use mesura::daemon::app::Daemon;

#[derive(Parser)]
#[command(
    name = "mesura",
    version,
    about = "Reads home energy and climate devices and keeps every reading"
)]
struct Cli {
    /// The base config file; device files live in its `devices_dir` (default `config.d/` beside it).
    #[arg(long, short, default_value = "config.yaml", env = "MESURA_CONFIG")]
    config: PathBuf,
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// `--config` of the subcommands that read the config files; given before the
/// subcommand (`mesura --config x run`, as the systemd unit does) it works as well.
/// Only these subcommands list it, so `mesura devices --help` does not offer an
/// option `devices` would ignore.
#[derive(Args)]
struct ConfigArg {
    /// The base config file [default: config.yaml, or $MESURA_CONFIG]; device files
    /// live in its `devices_dir` (default `config.d/` beside it).
    #[arg(long = "config", short = 'c', value_name = "CONFIG")]
    config: Option<PathBuf>,
}

/// The logging options of the subcommands that log.
#[derive(Args)]
struct LogArgs {
    /// Log level or filter (overrides `logging.level`; `RUST_LOG` overrides both).
    #[arg(long)]
    log_level: Option<String>,
    /// Log format (overrides `logging.format`).
    #[arg(long, value_enum)]
    log_format: Option<CliLogFormat>,
}

#[derive(Clone, Copy, ValueEnum)]
enum CliLogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        log: LogArgs,
    },
    /// Load and validate every file; print devices and backends; exit 1 on any error.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// List the device types with their config keys and metrics.
    Devices,
    /// Read one device once and print the values (no backend is touched).
    Read {
        /// The device id (its file stem in config.d/).
        device: String,
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        log: LogArgs,
    },
    /// A device's readings from the SQLite file as CSV (units in the header) or Parquet.
    Export {
        /// The device id.
        #[arg(long)]
        device: String,
        /// Only these metrics (repeat the option); default: all.
        #[arg(long = "metric", value_name = "METRIC")]
        metrics: Vec<String>,
        /// From this instant: a date (2026-11-24, local midnight), RFC 3339 or unix
        /// seconds [default: 24 hours ago].
        #[arg(long)]
        from: Option<String>,
        /// Up to this instant, excluded [default: now].
        #[arg(long)]
        to: Option<String>,
        /// `raw` (every reading) or `5m` (the 5-minute aggregates).
        #[arg(long, default_value = "raw")]
        resolution: String,
        /// The `time` column in `utc` or in the host's zone (`local`).
        #[arg(long, default_value = "utc")]
        time: String,
        /// `csv` or `parquet` (units in the file's metadata; docs/export.md).
        #[arg(long, default_value = "csv")]
        format: String,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        out: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Decode a saved message and print what mesura reads from it, as JSON.
    Decode {
        #[command(subcommand)]
        what: DecodeCommand,
    },
    /// List and correct the counters' epochs (meter swaps, resets; docs/counters.md).
    Epochs {
        #[command(subcommand)]
        what: EpochsCommand,
    },
    /// Home Assistant: its long-term statistics (docs/backends/mqtt.md).
    Ha {
        #[command(subcommand)]
        what: HaCommand,
    },
}

#[derive(Subcommand)]
enum HaCommand {
    /// Import the hours of the energy, gas and water counters that Home Assistant's
    /// statistics lack or have wrong, computed from the SQLite file (needs
    /// backends.mqtt.homeassistant.statistics).
    Backfill {
        /// From this instant: a date (local midnight), RFC 3339 or unix seconds
        /// [default: the section's lookback ago].
        #[arg(long)]
        from: Option<String>,
        /// Up to this instant, excluded; whole hours only [default: now].
        #[arg(long)]
        to: Option<String>,
        /// Print what would be imported; import nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum EpochsCommand {
    /// Every epoch of every counter (or of one device).
    List {
        /// Only this device.
        #[arg(long)]
        device: Option<String>,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Start a manual epoch: the counter's lifetime is raw + OFFSET from --start on.
    Add {
        /// The device id.
        device: String,
        /// The counter metric (`energy_delivered_tariff1`).
        metric: String,
        /// When it starts, RFC 3339 (`2026-03-01T10:00:00Z`) [default: now].
        #[arg(long)]
        start: Option<String>,
        /// Added to the raw value.
        #[arg(long, allow_negative_numbers = true)]
        offset: f64,
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Remove the counter's newest epoch; the one before runs on in its place.
    Undo {
        /// The device id.
        device: String,
        /// The counter metric.
        metric: String,
        #[command(flatten)]
        config: ConfigArg,
    },
}

impl EpochsCommand {
    fn config(&self) -> &ConfigArg {
        match self {
            EpochsCommand::List { config, .. }
            | EpochsCommand::Add { config, .. }
            | EpochsCommand::Undo { config, .. } => config,
        }
    }

    fn action(&self) -> commands::EpochsAction {
        match self {
            EpochsCommand::List { device, .. } => commands::EpochsAction::List { device: device.clone() },
            EpochsCommand::Add {
                device,
                metric,
                start,
                offset,
                ..
            } => commands::EpochsAction::Add {
                device: device.clone(),
                metric: metric.clone(),
                start: start.clone(),
                offset: *offset,
            },
            EpochsCommand::Undo { device, metric, .. } => commands::EpochsAction::Undo {
                device: device.clone(),
                metric: metric.clone(),
            },
        }
    }
}

/// The options in force: a subcommand's own `--config`, `--log-level` and
/// `--log-format` win over the ones given before it.
struct Options {
    config: PathBuf,
    log_level: Option<String>,
    log_format: Option<CliLogFormat>,
}

impl Cli {
    fn options(&self) -> Options {
        let (config, log) = match &self.command {
            Some(Command::Run { config, log } | Command::Read { config, log, .. }) => {
                (config.config.as_ref(), Some(log))
            }
            Some(Command::Check { config } | Command::Export { config, .. }) => (config.config.as_ref(), None),
            Some(Command::Epochs { what }) => (what.config().config.as_ref(), None),
            Some(Command::Ha {
                what: HaCommand::Backfill { config, .. },
            }) => (config.config.as_ref(), None),
            _ => (None, None),
        };
        Options {
            config: config.unwrap_or(&self.config).clone(),
            log_level: log
                .and_then(|l| l.log_level.clone())
                .or_else(|| self.log.log_level.clone()),
            log_format: log.and_then(|l| l.log_format).or(self.log.log_format),
        }
    }
}

#[derive(Subcommand)]
enum DecodeCommand {
    /// Every DSMR / P1 telegram (from `/` to `!CRC`) in a file, as a JSON array; exits
    /// 1 if any would be dropped (the others are printed all the same).
    Dsmr {
        /// The telegram file: one telegram or a capture of many.
        file: PathBuf,
        /// One JSON object per telegram and line instead of an array.
        #[arg(long)]
        lines: bool,
        /// An encrypted meter's decryption key (32 hex digits): the file holds its
        /// raw frames (or their hex dump).
        #[arg(long, value_name = "HEX")]
        key: Option<String>,
        /// The authentication key, where the grid operator gives one.
        #[arg(long, value_name = "HEX", requires = "key")]
        auth_key: Option<String>,
    },
}

/// Caps glibc's malloc arenas at one, before any other thread exists. glibc gives
/// each thread that allocates an arena of its own, up to 8 per core, and memory
/// freed in one arena is only reused by the threads of that arena: with the
/// backends' writes on the blocking pool's threads and the outbox's readings
/// handed between threads, VmRSS crept from 41 to 47 MiB over a 10-minute soak
/// (reliability suite 5: 200 devices with MQTT and the uplink, debug build) while
/// the live heap stayed at 8 MiB (heaptrack). With two arenas it stayed between 37
/// and 39 MiB; one arena holds another 0.4 MiB less with 50 devices
/// (docs/benchmarks.md, memory), and glibc's per-thread caches keep the shared
/// lock off the hot path. `MALLOC_ARENA_MAX` in the environment still wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt changes a tunable of glibc's allocator and is safe to
        // call at any time; it runs first thing in main, before other threads.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
    if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
        // Buffers of 64 KiB and more (a backend's batch, its copy for the blocking
        // pool, a query's rows) get pages of their own, handed back when freed.
        // glibc's default threshold rises to the largest such buffer freed, after
        // which they land in the heap among long-lived allocations and their pages
        // stay resident (docs/benchmarks.md, memory).
        // SAFETY: as above.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// How long after start-up the daemon hands back what only start-up needed: by
/// then the API listens and every device's first readings are stored (a new
/// device's first batch is written at once), creating its table and columns.
const STARTUP_SETTLED_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// How often, once settled, freed heap is handed back to the kernel.
const HEAP_TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// How long the exit waits for blocking tasks still running after the daemon
/// stopped (see `main`).
const BLOCKING_TASKS_GRACE: std::time::Duration = std::time::Duration::from_millis(100);

/// Hands back what only start-up needed: the heap that parsing the config files
/// and opening the backends freed, and the binary's code pages that only start-up
/// ran (`host::memory`; docs/benchmarks.md, memory).
fn release_startup_memory() {
    trim_heap();
    match mesura::host::memory::drop_startup_code() {
        Ok(bytes) => tracing::debug!(bytes, "start-up code unmapped"),
        Err(e) => tracing::debug!(error = %e, "start-up code stays mapped"),
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim only returns free memory of glibc's heap to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let options = cli.options();
    load_dotenv(&options.config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().min(2)))
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            None | Some(Command::Run { .. }) => run(&options).await,
            Some(Command::Check { .. }) => Ok(print(commands::check(&options.config, &commands::env_lookup))),
            Some(Command::Devices) => {
                print!("{}", commands::devices());
                Ok(ExitCode::SUCCESS)
            }
            Some(Command::Decode {
                what:
                    DecodeCommand::Dsmr {
                        file,
                        lines,
                        key,
                        auth_key,
                    },
            }) => {
                let keys = match key {
                    Some(key) => match mesura::protocols::dlms::Keys::from_hex(key, auth_key.as_deref()) {
                        Ok(keys) => Some(keys),
                        Err(e) => {
                            eprintln!("error: --key / --auth-key: the key {e}");
                            return Ok(ExitCode::FAILURE);
                        }
                    },
                    None => None,
                };
                let decoded = commands::decode_dsmr_with_keys(file, *lines, keys.as_ref());
                print!("{}", decoded.stdout);
                eprint!("{}", decoded.stderr);
                Ok(if decoded.ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            Some(Command::Export {
                device,
                metrics,
                from,
                to,
                resolution,
                time,
                format,
                out,
                ..
            }) => {
                let request = commands::export::ExportRequest {
                    device: device.clone(),
                    metrics: metrics.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    resolution: Some(resolution.clone()),
                    time: Some(time.clone()),
                };
                let result =
                    commands::export::run(&options.config, &commands::env_lookup, &request, format, out.as_deref());
                Ok(match result {
                    Ok(told) => {
                        eprint!("{told}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                })
            }
            Some(Command::Epochs { what, .. }) => Ok(print(commands::epochs(
                &options.config,
                &what.action(),
                &commands::env_lookup,
                chrono::Utc::now(),
            ))),
            Some(Command::Ha {
                what: HaCommand::Backfill { from, to, dry_run, .. },
            }) => {
                init_tracing(&options, "warn", LogFormat::Text);
                let request = commands::ha::BackfillRequest {
                    from: from.clone(),
                    to: to.clone(),
                    dry_run: *dry_run,
                };
                Ok(print(
                    commands::ha::backfill(&options.config, &commands::env_lookup, &request).await,
                ))
            }
            Some(Command::Read { device, .. }) => {
                init_tracing(&options, "warn", LogFormat::Text);
                Ok(print(
                    commands::read(&options.config, device, &commands::env_lookup).await,
                ))
            }
        }
    });
    // Everything is written once `run` returns; what still runs on the blocking
    // pool (an API query waiting on a busy database, a DNS lookup of a device or
    // broker) is of no use any more. Dropping the runtime would wait for each of
    // them — seconds after "shutdown complete" — so they are given a moment only.
    runtime.shutdown_timeout(BLOCKING_TASKS_GRACE);
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print(outcome: commands::Outcome) -> ExitCode {
    if outcome.ok {
        print!("{}", outcome.text);
        ExitCode::SUCCESS
    } else {
        eprint!("{}", outcome.text);
        ExitCode::FAILURE
    }
}

/// `.env` beside the config file, then in the working directory; variables already
/// set in the environment win.
fn load_dotenv(config: &Path) {
    let dir = config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let _ = dotenvy::from_path(dir.join(".env"));
    let _ = dotenvy::dotenv();
}

fn init_tracing(cli: &Options, level: &str, format: LogFormat) {
    let level = cli.log_level.as_deref().unwrap_or(level);
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let format = match cli.log_format {
        Some(CliLogFormat::Json) => LogFormat::Json,
        Some(CliLogFormat::Text) => LogFormat::Text,
        None => format,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn run(cli: &Options) -> anyhow::Result<ExitCode> {
    // Signals are caught from the very start: a SIGTERM while the backends open (a
    // locked database, a slow disk) must stop us cleanly once started, not kill
    // the process by the default action with devices already producing.
    let signals = Signals::register();
    // A broken config.yaml stops us here, before anything is opened.
    let config = Config::load(&cli.config, &commands::env_lookup)
        .with_context(|| format!("cannot load {}", cli.config.display()))?;
    init_tracing(cli, &config.base.logging.level, config.base.logging.format);
    tracing::info!(config = %cli.config.display(), version = env!("CARGO_PKG_VERSION"), "mesura starting");
    let daemon = Daemon::start(config, mesura::host::clock::system()).await?;
    tokio::spawn(async {
        tokio::time::sleep(STARTUP_SETTLED_AFTER).await;
        let _ = tokio::task::spawn_blocking(release_startup_memory).await;
        // From then on, the heap that bursts freed (an API query's reader and its
        // rows, a downsampling or cost run, a batch after an outage) goes back to the
        // kernel too: glibc keeps freed pages below the top of its heap otherwise.
        // 0.4 MiB after a dashboard's requests with 50 devices, for one walk of
        // glibc's free lists (docs/benchmarks.md, memory).
        let mut every = tokio::time::interval(HEAP_TRIM_INTERVAL);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            trim_heap();
        }
    });
    let shutdown = CancellationToken::new();
    let signals = tokio::spawn(handle_signals(signals, shutdown.clone(), daemon.handle()));
    let summary = daemon.run(shutdown).await;
    signals.abort();
    let polls: u64 = summary.polls.values().sum();
    let readings: u64 = summary.readings.values().sum();
    let written: Vec<String> = summary.written.iter().map(|(b, n)| format!("{b}={n}")).collect();
    let dropped: u64 = summary.dropped.values().sum();
    tracing::info!(polls, readings, written = %written.join(" "), dropped, "shutdown complete");
    Ok(ExitCode::SUCCESS)
}

/// The signal streams, registered before anything else starts; a signal that
/// arrives before `handle_signals` runs waits in its stream.
#[cfg(unix)]
struct Signals(Option<[tokio::signal::unix::Signal; 3]>);

#[cfg(unix)]
impl Signals {
    fn register() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(term), Ok(int), Ok(hup)) => Signals(Some([term, int, hup])),
            _ => Signals(None),
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn register() -> Signals {
        Signals
    }
}

/// SIGTERM and SIGINT stop the daemon; SIGHUP reloads the config files.
#[cfg(unix)]
async fn handle_signals(signals: Signals, shutdown: CancellationToken, daemon: mesura::daemon::app::DaemonHandle) {
    let Some([mut term, mut int, mut hup]) = signals.0 else {
        tracing::error!("cannot listen for signals; stopping");
        shutdown.cancel();
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received"); break; }
            _ = int.recv() => { tracing::info!("SIGINT received"); break; }
            _ = hup.recv() => { tracing::info!("SIGHUP received: reloading the config files"); daemon.request_reload(); }
        }
    }
    tracing::info!("stopping: monitors first, then the backends drain and flush");
    shutdown.cancel();
}

#[cfg(not(unix))]
async fn handle_signals(_signals: Signals, shutdown: CancellationToken, _daemon: mesura::daemon::app::DaemonHandle) {
    let _ = tokio::signal::ctrl_c().await;
    shutdown.cancel();
}
