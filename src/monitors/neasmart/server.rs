//! The Modbus slave the Nea Smart base station talks to: a register bank per
//! slave id, filled by the base's writes (functions 6 and 16) and read back by
//! its reads (3 and 4). Served over RTU (the base's RS485 SYSBUS) or TCP (an
//! RS485-to-TCP bridge in front of it).

use std::collections::{BTreeMap, HashMap};
use std::future::{ready, Ready};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response, SlaveRequest};

/// The registers written so far, per slave id. Never-written registers are
/// absent, so a reading is only made of values the base actually sent.
#[derive(Debug, Default)]
pub struct Bank {
    slaves: HashMap<u8, BTreeMap<u16, u16>>,
    /// Requests served, for status and tests.
    pub writes: u64,
}

impl Bank {
    pub fn get(&self, slave: u8, address: u16) -> Option<u16> {
        self.slaves.get(&slave).and_then(|r| r.get(&address)).copied()
    }

    pub fn set(&mut self, slave: u8, address: u16, value: u16) {
        self.slaves.entry(slave).or_default().insert(address, value);
    }
}

pub type SharedBank = Arc<Mutex<Bank>>;

pub fn lock(bank: &SharedBank) -> MutexGuard<'_, Bank> {
    // A panic while holding the lock leaves plain register values behind,
    // still valid: carry on with them.
    bank.lock().unwrap_or_else(|e| e.into_inner())
}

/// The slave's request handler.
#[derive(Debug, Clone)]
pub struct Gateway {
    pub bank: SharedBank,
    /// The slave ids answered (240, 241).
    pub ids: Vec<u8>,
    /// On a shared RS485 bus, requests to other slaves must go unanswered;
    /// over TCP a wrong unit id gets an exception instead of a timeout.
    pub silent_for_others: bool,
}

impl Gateway {
    fn handle(&self, slave: u8, request: Request<'_>) -> Result<Option<Response>, ExceptionCode> {
        // Unit 0 is a broadcast: every slave applies the write, none answers.
        let broadcast = slave == 0;
        if !broadcast && !self.ids.contains(&slave) {
            return if self.silent_for_others {
                Ok(None)
            } else {
                Err(ExceptionCode::GatewayTargetDevice)
            };
        }
        let targets: Vec<u8> = if broadcast { self.ids.clone() } else { vec![slave] };
        let mut bank = lock(&self.bank);
        let response = match request {
            Request::WriteSingleRegister(address, value) => {
                for t in &targets {
                    bank.set(*t, address, value);
                }
                bank.writes += 1;
                Response::WriteSingleRegister(address, value)
            }
            Request::WriteMultipleRegisters(address, values) => {
                let count = u16::try_from(values.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
                if u32::from(address) + u32::from(count) > 65536 {
                    return Err(ExceptionCode::IllegalDataAddress);
                }
                for t in &targets {
                    for (a, v) in (address..=u16::MAX).zip(values.iter()) {
                        bank.set(*t, a, *v);
                    }
                }
                bank.writes += 1;
                Response::WriteMultipleRegisters(address, count)
            }
            Request::ReadHoldingRegisters(address, count) | Request::ReadInputRegisters(address, count)
                if !broadcast =>
            {
                let words = (0..count)
                    .map(|i| address.checked_add(i).and_then(|a| bank.get(slave, a)))
                    .collect::<Option<Vec<u16>>>()
                    // A register the base never wrote: the slave does not have it.
                    .ok_or(ExceptionCode::IllegalDataAddress)?;
                if matches!(request, Request::ReadInputRegisters(..)) {
                    Response::ReadInputRegisters(words)
                } else {
                    Response::ReadHoldingRegisters(words)
                }
            }
            _ if broadcast => return Ok(None),
            _ => return Err(ExceptionCode::IllegalFunction),
        };
        Ok((!broadcast).then_some(response))
    }
}

impl Service for Gateway {
    type Request = SlaveRequest<'static>;
    type Response = Option<Response>;
    type Exception = ExceptionCode;
    type Future = Ready<Result<Self::Response, Self::Exception>>;

    fn call(&self, req: Self::Request) -> Self::Future {
        ready(self.handle(req.slave, req.request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn gateway(silent: bool) -> Gateway {
        Gateway {
            bank: SharedBank::default(),
            ids: vec![240, 241],
            silent_for_others: silent,
        }
    }

    #[test]
    fn writes_land_per_slave_and_read_back() {
        let g = gateway(true);
        assert_eq!(
            g.handle(240, Request::WriteSingleRegister(102, 0x0C33)),
            Ok(Some(Response::WriteSingleRegister(102, 0x0C33)))
        );
        assert_eq!(
            g.handle(241, Request::WriteMultipleRegisters(7, Cow::Owned(vec![1, 2]))),
            Ok(Some(Response::WriteMultipleRegisters(7, 2)))
        );
        assert_eq!(lock(&g.bank).get(240, 102), Some(0x0C33));
        assert_eq!(lock(&g.bank).get(241, 8), Some(2));
        assert_eq!(lock(&g.bank).get(240, 8), None);
        assert_eq!(
            g.handle(241, Request::ReadHoldingRegisters(7, 2)),
            Ok(Some(Response::ReadHoldingRegisters(vec![1, 2])))
        );
        assert_eq!(
            g.handle(240, Request::ReadHoldingRegisters(101, 2)),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }

    #[test]
    fn broadcasts_apply_silently_and_strangers_are_ignored() {
        let g = gateway(true);
        assert_eq!(g.handle(0, Request::WriteSingleRegister(7, 5)), Ok(None));
        assert_eq!(lock(&g.bank).get(240, 7), Some(5));
        assert_eq!(lock(&g.bank).get(241, 7), Some(5));
        assert_eq!(g.handle(0, Request::ReadHoldingRegisters(7, 1)), Ok(None));
        assert_eq!(g.handle(17, Request::WriteSingleRegister(7, 9)), Ok(None));
        assert_eq!(lock(&g.bank).get(240, 7), Some(5));
        assert_eq!(
            gateway(false).handle(17, Request::ReadHoldingRegisters(7, 1)),
            Err(ExceptionCode::GatewayTargetDevice)
        );
        assert_eq!(
            g.handle(240, Request::ReadCoils(0, 1)),
            Err(ExceptionCode::IllegalFunction)
        );
    }
}
