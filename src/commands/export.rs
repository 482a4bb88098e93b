//! `mesura export`: a device's readings from the SQLite file as CSV or Parquet.

use std::io::Write;
use std::path::Path;

use crate::backends::sqlite::export::{parse_instant, write, ExportSpec, Format, Resolution, TimeZone};
use crate::config::Config;

/// The options of `mesura export`, as given.
#[derive(Debug, Clone, Default)]
pub struct ExportRequest {
    pub device: String,
    pub metrics: Vec<String>,
    /// Default: 24 hours ago.
    pub from: Option<String>,
    /// Default: now.
    pub to: Option<String>,
    /// `raw` (default) or `5m`.
    pub resolution: Option<String>,
    /// `utc` (default) or `local`.
    pub time: Option<String>,
}

/// `mesura export` as the command line runs it: `format` (`csv` or `parquet`) to
/// the file `out`, or to stdout; what to tell on stderr, or what is wrong.
pub fn run(
    config: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
    request: &ExportRequest,
    format: &str,
    out: Option<&Path>,
) -> Result<String, String> {
    let format = Format::parse(format).map_err(|e| format!("--{e}"))?;
    match out {
        Some(path) => {
            let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let rows = export(config, lookup, request, format, std::io::BufWriter::new(file))?;
            Ok(format!("{rows} rows written to {}\n", path.display()))
        }
        // Not `stdout().lock()`: the writer must be `Send` (Parquet's is).
        None => export(
            config,
            lookup,
            request,
            format,
            std::io::BufWriter::new(std::io::stdout()),
        )
        .map(|_| String::new()),
    }
}

/// Writes the export to `out`; the number of rows, or what is wrong.
pub fn export(
    config: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
    request: &ExportRequest,
    format: Format,
    out: impl Write + Send,
) -> Result<u64, String> {
    let config = Config::load(config, lookup).map_err(|e| e.to_string())?;
    let sqlite = config
        .base
        .backends
        .sqlite
        .as_ref()
        .ok_or("the sqlite backend is not configured: there is nothing to export")?;
    let db = config.base.data_dir.join(&sqlite.path);
    if !db.exists() {
        return Err(format!("{} does not exist yet", db.display()));
    }
    let now = chrono::Utc::now().timestamp();
    let instant = |text: Option<&String>, default: i64, what: &str| {
        text.map(|t| parse_instant(t).map_err(|e| format!("--{what}: {e}")))
            .unwrap_or(Ok(default))
    };
    let spec = ExportSpec {
        device: request.device.clone(),
        metrics: request.metrics.clone(),
        from: instant(request.from.as_ref(), now - 86_400, "from")?,
        to: instant(request.to.as_ref(), now + 1, "to")?,
        resolution: Resolution::parse(request.resolution.as_deref().unwrap_or("raw"))?,
        time: TimeZone::parse(request.time.as_deref().unwrap_or("utc"))?,
        format,
    };
    if spec.to < spec.from {
        return Err("--to is before --from".into());
    }
    write(&db, &spec, out).map_err(|e| e.to_string())
}
