//! The table route of each object, remembered from the telegram before.

use super::super::obis::{self, Obis, TariffRegister};

/// Where a code leads in the metric tables: what [`super::interpret`] does with an
/// object that is not taken apart, told by the code alone.
#[derive(Debug, Clone, Copy)]
pub(super) enum TableRoute {
    Tariff(TariffRegister),
    /// The metric's index in the table (below 64), and its definition.
    Metric(u8, &'static obis::MetricDef),
    Unknown,
}

impl TableRoute {
    fn of(o: &Obis) -> Self {
        if let Some(register) = TariffRegister::of(o) {
            return TableRoute::Tariff(register);
        }
        match obis::lookup_index(o).and_then(|(index, def)| Some((u8::try_from(index).ok()?, def))) {
            Some((index, def)) => TableRoute::Metric(index, def),
            None => TableRoute::Unknown,
        }
    }
}

/// The previous telegram's [`TableRoute`]s, by object: a meter sends the same
/// objects in the same order, so object k's code is nearly always the one object
/// k had, and one comparison of the code replaces the two table lookups. Each
/// slot holds a code with its own route (an unused slot, 0-0:0.0.0 with its
/// route), so a stale slot can only miss, never mislead.
#[derive(Debug, Default)]
pub(super) struct Routes {
    /// Off for a one-telegram decode, which would only fill it.
    pub(super) on: bool,
    known: Vec<(Obis, TableRoute)>,
}

/// Objects remembered a telegram, as for the identifiers.
const MAX_ROUTES: usize = 128;

impl Routes {
    #[inline(always)]
    pub(super) fn get(&mut self, k: usize, o: &Obis) -> TableRoute {
        if let Some((known, route)) = self.known.get(k) {
            if known == o {
                return *route;
            }
        }
        let route = TableRoute::of(o);
        if self.on && k < MAX_ROUTES {
            if self.known.len() <= k {
                let unused = Obis::default();
                self.known.resize(k + 1, (unused, TableRoute::of(&unused)));
            }
            if let Some(slot) = self.known.get_mut(k) {
                *slot = (*o, route);
            }
        }
        route
    }
}
