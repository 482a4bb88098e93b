//! Writing a mapped holding register (docs/control.md): the point must say
//! `writable: true` with `min`/`max`; the user gives the engineering value, and
//! the register(s) are encoded through the point's type, word order, scale and
//! offset. The old value is read first, the new one read back after, all on the
//! device's own link so the write is serialised with its polls.

use super::transport::ReadError;
use super::{decode_point, ModbusMonitor};
use crate::monitors::control::{check_range, WriteError, Written};
use crate::protocols::modbus::plan::{Block, Image};
use crate::protocols::modbus::point::{self as codec, Decoded};

impl ModbusMonitor {
    /// Sets point `name` to `value` (its unit) and reads it back.
    pub(super) async fn write_point(&mut self, name: &str, value: f64) -> Result<Written, WriteError> {
        let Some(index) = self
            .points
            .iter()
            .position(|p| p.config.name == name && p.config.writable)
        else {
            let writable: Vec<String> = self
                .points
                .iter()
                .filter(|p| p.config.writable)
                .map(|p| format!("`{}`", p.config.name))
                .collect();
            return Err(WriteError::UnknownPoint {
                point: name.to_owned(),
                writable: if writable.is_empty() {
                    "none (mark points `writable: true` with `min` and `max` in the map)".into()
                } else {
                    writable.join(", ")
                },
            });
        };
        let c = &self.points[index].config;
        let (min, max) = (c.min.unwrap_or(f64::NAN), c.max.unwrap_or(f64::NAN));
        check_range(name, value, min, max)?;
        let words = codec::encode_value(c.data_type, c.word_order, c.scale, c.offset, value).map_err(|e| {
            WriteError::Invalid {
                point: name.to_owned(),
                reason: e.to_string(),
            }
        })?;
        let block = self.points[index].span;
        let unit = c.unit.symbol();
        let old = self.read_value(index, block).await?;
        self.transport
            .write(block.address, words)
            .await
            .map_err(|e| self.write_error(e, index, "write"))?;
        let new = self
            .read_value(index, block)
            .await?
            .ok_or_else(|| WriteError::Invalid {
                point: name.to_owned(),
                reason: "the device reads back a value marked invalid".into(),
            })?;
        Ok(Written {
            point: name.to_owned(),
            old,
            new,
            unit,
        })
    }

    /// The point's current value, scaled; `None` when it holds an `invalid` value.
    async fn read_value(&mut self, index: usize, block: Block) -> Result<Option<f64>, WriteError> {
        let words = self
            .transport
            .read(block)
            .await
            .map_err(|e| self.write_error(e, index, "read"))?;
        let mut image = Image::default();
        image.insert(block.register, block.address, &words);
        let point = &self.points[index];
        match decode_point(point, &image).map_err(WriteError::from_monitor)? {
            Some(Decoded::Number(raw)) => Ok(Some(codec::scale(raw, point.config.scale, point.config.offset))),
            _ => Ok(None),
        }
    }

    fn write_error(&self, e: ReadError, index: usize, what: &str) -> WriteError {
        let point = &self.points[index];
        WriteError::from_monitor(e.for_request(&format!(
            "{} {what} of holding register 0x{:04X} (`{}`)",
            self.transport.describe(),
            point.span.address,
            point.config.name
        )))
    }
}
