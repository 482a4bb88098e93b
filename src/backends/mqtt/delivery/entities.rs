//! The Home Assistant entities of the delivery task: discovery configs sent once per
//! entity, re-sent states, and the clearing of entities whose metric went away (a
//! device's configuration no longer gives it, or it stopped coming for
//! `discovery_expire_after`).

use rumqttc::AsyncClient;
use tokio::time::Instant;

use super::{status_topic, Delivery, EXPIRY_CHECK, STATES_AFTER_BIRTH};
use crate::backends::mqtt::discovery::{self, Entity};
use crate::backends::mqtt::ha::published::Gone;
use crate::backends::outbox::OutboxRow;
use crate::energy::cleaner::LIFETIME_SUFFIX;
use crate::reading::Value;

impl Delivery {
    /// Queues the clearing of entities the record gave up (their config, and their
    /// retained state when values are retained); the record is written at once.
    pub(super) fn clear(&mut self, gone: Vec<Gone>) {
        for g in gone {
            let key = (g.device.clone(), g.entry.metric.clone());
            self.announced.remove(&key);
            self.latest.remove(&key);
            self.push_retraction(g.config);
            if self.config.retain {
                if let Some(state) = g.entry.state {
                    self.push_retraction(state);
                }
            }
        }
        if let Some(published) = &mut self.published {
            published.save();
        }
    }

    pub(super) fn push_retraction(&mut self, topic: String) {
        if !self.retractions.contains(&topic) {
            self.retractions.push(topic);
        }
    }

    /// Clears the entities of metrics a device whose readings decide its metrics
    /// has sent none of for `discovery_expire_after` while sending others.
    pub(super) fn expire(&mut self, client: &AsyncClient) {
        let now = Instant::now();
        if now < self.next_expiry_check {
            return;
        }
        self.next_expiry_check = now + EXPIRY_CHECK;
        let (Some(published), Some(after)) = (&mut self.published, self.config.homeassistant.discovery_expire_after)
        else {
            return;
        };
        let sets = &self.metric_sets;
        let gone = published.expired(|d| matches!(sets.get(d), Some(None)), after.as_secs() as i64);
        if gone.is_empty() {
            return;
        }
        for g in &gone {
            tracing::info!(backend = "mqtt", device = %g.device, metric = %g.entry.metric, after = %humantime::format_duration(after), "clearing the Home Assistant entity of a metric the device stopped sending");
        }
        self.clear(gone);
        self.retract(client);
    }

    /// Whether `metric` is one `device`'s configuration no longer gives (a reading
    /// of it still in the outbox from before): its entity is not made again.
    pub(super) fn undeclared(&self, device: &str, metric: &str) -> bool {
        let Some(Some(metrics)) = self.metric_sets.get(device) else {
            return false;
        };
        let base = metric.strip_suffix(LIFETIME_SUFFIX).unwrap_or(metric);
        !metrics.contains(metric) && !metrics.contains(base)
    }

    /// Every entity's latest state again (Home Assistant restarted: its MQTT
    /// sensors start `unknown` until a state arrives).
    pub(super) fn resend_states(&mut self, client: &AsyncClient) {
        if !self.connected {
            return;
        }
        let states: Vec<(String, Vec<u8>)> = self.latest.values().cloned().collect();
        for (topic, payload) in states {
            if !self.issue(client, topic, self.config.retain, payload, Vec::new()) {
                break;
            }
        }
    }

    pub(super) fn retract(&mut self, client: &AsyncClient) {
        if !self.connected {
            return;
        }
        for topic in std::mem::take(&mut self.retractions) {
            // An empty retained config removes the entity in Home Assistant.
            if !self.issue(client, topic.clone(), true, Vec::new(), Vec::new()) {
                self.retractions.push(topic);
            }
        }
    }

    pub(super) fn announce(&mut self, client: &AsyncClient, entity: &Entity) {
        let ha = &self.config.homeassistant;
        let topic = discovery::config_topic(&ha.discovery_prefix, &ha.node_id, &entity.device, &entity.metric);
        // A device back before its retraction went out: the new config wins.
        self.retractions.retain(|t| *t != topic);
        let state = discovery::state_topic(
            &self.config.topic_prefix,
            &entity.device_type,
            &entity.device,
            &entity.metric,
        );
        if let Some(published) = &mut self.published {
            published.record(&entity.device, &entity.metric, &topic, &state);
        }
        let payload = discovery::config_payload(
            entity,
            &self.config.topic_prefix,
            &ha.node_id,
            &status_topic(&self.config),
            env!("CARGO_PKG_VERSION"),
        );
        self.issue(client, topic, true, payload.to_string().into_bytes(), Vec::new());
    }

    pub(super) fn announce_all(&mut self, client: &AsyncClient) {
        let entities: Vec<Entity> = self.announced.values().cloned().collect();
        for entity in &entities {
            self.announce(client, entity);
        }
    }

    pub(super) fn ensure_announced(&mut self, client: &AsyncClient, row: &OutboxRow, lifetime_beside: bool) {
        // A lifetime series whose raw counter was announced alone (the two fell in
        // two fetches): the raw one leaves the statistics to it from now on.
        if let Some(raw) = row.metric.strip_suffix(LIFETIME_SUFFIX) {
            let raw_key = (row.device.clone(), raw.to_owned());
            if let Some(raw) = self.announced.get_mut(&raw_key).filter(|e| !e.lifetime_beside) {
                raw.lifetime_beside = true;
                let raw = raw.clone();
                if self.config.homeassistant.enabled {
                    self.announce(client, &raw);
                }
            }
        }
        let key = (row.device.clone(), row.metric.clone());
        if self.announced.contains_key(&key) || self.undeclared(&row.device, &row.metric) {
            return;
        }
        let entity = Entity {
            device: row.device.clone(),
            device_type: row.device_type.clone(),
            metric: row.metric.clone(),
            unit: row.unit.clone(),
            kind: row.kind,
            text: matches!(row.value, Value::Text(_)),
            lifetime_beside,
        };
        if self.config.homeassistant.enabled {
            self.announce(client, &entity);
            // Home Assistant subscribes to a new entity's state topic only once it
            // has set the entity up: the state published beside the config would be
            // lost, and the entity `unknown` until the next poll (an hour, for gas).
            self.resend_states_at.get_or_insert(Instant::now() + STATES_AFTER_BIRTH);
        }
        self.announced.insert(key, entity);
    }
}
