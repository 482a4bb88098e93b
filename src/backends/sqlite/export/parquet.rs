//! The export as Apache Parquet, through the `parquet` crate's low-level column
//! writer (no Arrow): the same wide layout as the CSV, written a row group at a
//! time as SQLite yields the rows, so memory stays bounded by one row group
//! whatever the window. Parquet's footer comes last and the writer never seeks, so
//! the bytes go straight to any `Write` (a file, stdout, the API's response).
//!
//! Schema (docs/export.md): `ts` INT64 (unix seconds), `time` TIMESTAMP(MILLIS)
//! (adjusted to UTC for `time=utc`; for `local` the host's wall time, not adjusted),
//! then one optional column per exported column, named as in the table (the CSV
//! header without its unit): DOUBLE for numbers, BYTE_ARRAY UTF8 for text metrics,
//! INT64 for `samples`. Units and the export's settings are in the file's key/value
//! metadata: `mesura.units` (a JSON object column → unit), `mesura.device`,
//! `mesura.resolution`, `mesura.time`.

use std::io::Write;
use std::sync::Arc;

use parquet::basic::{Compression, LogicalType, Repetition, TimeUnit, Type as PhysicalType};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::{Type, TypePtr};
use rusqlite::types::ValueRef;

use super::{ColumnType, Export, ExportError, ExportSpec, TimeZone};

/// At most this many rows in a row group...
const MAX_ROWS: usize = 65_536;
/// ...and at most this many cells (rows × value columns), so a device with many
/// metrics keeps about 10 MiB of values in memory, not 64k rows of each.
const MAX_CELLS: usize = 1 << 20;
/// Even a very wide device gets row groups of at least this many rows.
const MIN_ROWS: usize = 4_096;

/// The rows of a row group for one exported column, as Parquet takes them: the
/// values present, and a definition level per row (1: a value, 0: null).
enum Values {
    Integer(Vec<i64>),
    Real(Vec<f64>),
    Text(Vec<ByteArray>),
}

struct Buffer {
    values: Values,
    levels: Vec<i16>,
}

impl Buffer {
    fn new(ty: ColumnType) -> Buffer {
        Buffer {
            values: match ty {
                ColumnType::Integer => Values::Integer(Vec::new()),
                ColumnType::Real => Values::Real(Vec::new()),
                ColumnType::Text => Values::Text(Vec::new()),
            },
            levels: Vec::new(),
        }
    }

    /// Adds one row's cell. SQLite's columns are loosely typed: a number in a
    /// text column is written as the CSV writes it, text that is not a number in a
    /// number column is null (it has no DOUBLE).
    fn push(&mut self, cell: ValueRef<'_>) {
        let present = match (&mut self.values, cell) {
            (_, ValueRef::Null | ValueRef::Blob(_)) => false,
            (Values::Integer(v), ValueRef::Integer(n)) => push(v, n),
            (Values::Integer(v), ValueRef::Real(f)) => push(v, f as i64),
            (Values::Integer(v), ValueRef::Text(t)) => parse(t).is_some_and(|f| push(v, f as i64)),
            (Values::Real(v), ValueRef::Real(f)) => push(v, f),
            (Values::Real(v), ValueRef::Integer(n)) => push(v, n as f64),
            (Values::Real(v), ValueRef::Text(t)) => parse(t).is_some_and(|f| push(v, f)),
            (Values::Text(v), ValueRef::Text(t)) => push(v, ByteArray::from(t.to_vec())),
            (Values::Text(v), ValueRef::Integer(n)) => push(v, ByteArray::from(n.to_string().into_bytes())),
            (Values::Text(v), ValueRef::Real(f)) => push(v, ByteArray::from(f.to_string().into_bytes())),
        };
        self.levels.push(i16::from(present));
    }

    fn clear(&mut self) {
        match &mut self.values {
            Values::Integer(v) => v.clear(),
            Values::Real(v) => v.clear(),
            Values::Text(v) => v.clear(),
        }
        self.levels.clear();
    }
}

fn push<T>(values: &mut Vec<T>, value: T) -> bool {
    values.push(value);
    true
}

fn parse(text: &[u8]) -> Option<f64> {
    std::str::from_utf8(text).ok()?.trim().parse().ok()
}

/// The file's schema: `ts`, `time`, then the export's columns.
fn schema(export: &Export, time: TimeZone) -> Result<TypePtr, ExportError> {
    let mut fields = vec![
        Arc::new(
            Type::primitive_type_builder("ts", PhysicalType::INT64)
                .with_repetition(Repetition::REQUIRED)
                .build()?,
        ),
        Arc::new(
            Type::primitive_type_builder("time", PhysicalType::INT64)
                .with_repetition(Repetition::REQUIRED)
                .with_logical_type(Some(LogicalType::timestamp(time == TimeZone::Utc, TimeUnit::MILLIS)))
                .build()?,
        ),
    ];
    for column in &export.columns {
        let (physical, logical) = match column.ty {
            ColumnType::Integer => (PhysicalType::INT64, None),
            ColumnType::Real => (PhysicalType::DOUBLE, None),
            ColumnType::Text => (PhysicalType::BYTE_ARRAY, Some(LogicalType::String)),
        };
        fields.push(Arc::new(
            Type::primitive_type_builder(&column.name, physical)
                .with_repetition(Repetition::OPTIONAL)
                .with_logical_type(logical)
                .build()?,
        ));
    }
    Ok(Arc::new(
        Type::group_type_builder("mesura_export").with_fields(fields).build()?,
    ))
}

/// The key/value metadata: units and the export's settings.
fn metadata(export: &Export, spec: &ExportSpec) -> Vec<KeyValue> {
    let units: serde_json::Map<String, serde_json::Value> = export
        .columns
        .iter()
        .map(|c| (c.name.clone(), serde_json::Value::String(c.unit.clone())))
        .collect();
    vec![
        KeyValue::new("mesura.units".to_owned(), serde_json::Value::Object(units).to_string()),
        KeyValue::new("mesura.device".to_owned(), spec.device.clone()),
        KeyValue::new("mesura.resolution".to_owned(), spec.resolution.name().to_owned()),
        KeyValue::new("mesura.time".to_owned(), spec.time.name().to_owned()),
    ]
}

/// Writes the export as Parquet to `out`; the number of rows written.
pub(super) fn write_parquet(export: &Export, spec: &ExportSpec, out: impl Write + Send) -> Result<u64, ExportError> {
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!("mesura {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata(Some(metadata(export, spec)))
        .build();
    let mut writer = SerializedFileWriter::new(out, schema(export, spec.time)?, Arc::new(properties))?;
    let group_rows = (MAX_CELLS / export.columns.len().max(1)).clamp(MIN_ROWS, MAX_ROWS);
    let mut ts: Vec<i64> = Vec::new();
    let mut time: Vec<i64> = Vec::new();
    let mut buffers: Vec<Buffer> = export.columns.iter().map(|c| Buffer::new(c.ty)).collect();
    let rows = export.rows(spec, |at, row| {
        ts.push(at);
        time.push(spec.time.wall_millis(at));
        for (i, buffer) in buffers.iter_mut().enumerate() {
            buffer.push(row.get_ref(i + 1)?);
        }
        if ts.len() >= group_rows {
            row_group(&mut writer, &mut ts, &mut time, &mut buffers)?;
        }
        Ok(())
    })?;
    if !ts.is_empty() {
        row_group(&mut writer, &mut ts, &mut time, &mut buffers)?;
    }
    let mut out = writer.into_inner()?;
    out.flush().map_err(ExportError::Io)?;
    Ok(rows)
}

/// Writes the buffered rows as one row group, column after column, and empties the
/// buffers.
fn row_group<W: Write + Send>(
    writer: &mut SerializedFileWriter<W>,
    ts: &mut Vec<i64>,
    time: &mut Vec<i64>,
    buffers: &mut [Buffer],
) -> Result<(), ExportError> {
    let mut group = writer.next_row_group()?;
    for values in [&*ts, &*time] {
        let mut column = group
            .next_column()?
            .ok_or_else(|| ::parquet::errors::ParquetError::General("schema has fewer columns".into()))?;
        column.typed::<Int64Type>().write_batch(values, None, None)?;
        column.close()?;
    }
    for buffer in buffers.iter() {
        let mut column = group
            .next_column()?
            .ok_or_else(|| ::parquet::errors::ParquetError::General("schema has fewer columns".into()))?;
        let levels = Some(buffer.levels.as_slice());
        match &buffer.values {
            Values::Integer(v) => column.typed::<Int64Type>().write_batch(v, levels, None)?,
            Values::Real(v) => column.typed::<DoubleType>().write_batch(v, levels, None)?,
            Values::Text(v) => column.typed::<ByteArrayType>().write_batch(v, levels, None)?,
        };
        column.close()?;
    }
    group.close()?;
    ts.clear();
    time.clear();
    buffers.iter_mut().for_each(Buffer::clear);
    Ok(())
}

#[cfg(test)]
mod tests {
    use parquet::file::reader::{FileReader, SerializedFileReader};

    use super::super::tests::{db, spec};
    use super::super::{write, Format, Resolution};

    #[test]
    fn schema_metadata_and_row_count_as_a_parquet_reader_sees_them() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("p1.parquet");
        let mut s = spec(&[], Resolution::Raw);
        s.format = Format::Parquet;
        let file = std::fs::File::create(&path).expect("file");
        assert_eq!(write(&db(dir.path()), &s, file).expect("export"), 2);
        let reader = SerializedFileReader::new(std::fs::File::open(&path).expect("open")).expect("parquet");
        let meta = reader.metadata().file_metadata();
        assert_eq!(meta.num_rows(), 2);
        let names: Vec<&str> = meta.schema_descr().columns().iter().map(|c| c.name()).collect();
        assert_eq!(names, ["ts", "time", "energy", "power", "tariff"]);
        let kv = meta.key_value_metadata().expect("metadata");
        let units = kv
            .iter()
            .find(|k| k.key == "mesura.units")
            .and_then(|k| k.value.clone());
        assert_eq!(units.as_deref(), Some(r#"{"energy":"kWh","power":"W","tariff":""}"#));
    }

    #[test]
    fn an_empty_window_is_a_valid_file_without_row_groups() {
        let dir = tempfile::tempdir().expect("dir");
        let mut s = spec(&["power"], Resolution::FiveMinutes);
        s.format = Format::Parquet;
        s.to = s.from;
        let mut out = Vec::new();
        assert_eq!(write(&db(dir.path()), &s, &mut out).expect("export"), 0);
        assert_eq!(&out[..4], b"PAR1");
        assert_eq!(&out[out.len() - 4..], b"PAR1");
    }
}
