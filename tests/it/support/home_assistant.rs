//! A real Home Assistant core (scripts/ha-venv.sh installs 2024.3.3 into
//! target/ha-venv) on a free loopback port, with `mqtt` on the suite's Mosquitto and
//! `recorder` on a sqlite file in the test's dir; the owner user and a long-lived
//! token made through the onboarding API, as a user's browser would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mesura::backends::mqtt::ha::ws::HaSocket;
use serde_json::{json, Value as Json};

use super::broker::free_port;

/// How long Home Assistant may take to start (about 5 s here once installed).
const START_LIMIT: Duration = Duration::from_secs(120);

/// The venv's python: `HA_VENV_PYTHON`, or target/ha-venv. A missing Home
/// Assistant fails the test with what to run, like every other peer: the suite
/// never passes without having talked to it.
pub fn python(test: &str) -> PathBuf {
    let python = std::env::var_os("HA_VENV_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ha-venv/bin/python"));
    let works = Command::new(&python)
        .args(["-c", "import homeassistant"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        works,
        "{test}: Home Assistant is not installed at {} (run scripts/ha-venv.sh, as scripts/test.sh does)",
        python.display()
    );
    python
}

pub struct HomeAssistant {
    pub port: u16,
    pub dir: PathBuf,
    pub token: String,
    python: PathBuf,
    child: Option<Child>,
}

impl HomeAssistant {
    /// Starts Home Assistant in `dir` (created) with MQTT on `broker_port`, onboards
    /// the owner and makes a long-lived token.
    pub async fn start(python: &Path, dir: &Path, broker_port: u16) -> HomeAssistant {
        std::fs::create_dir_all(dir.join(".storage")).expect("ha dir");
        let port = free_port();
        std::fs::write(
            dir.join("configuration.yaml"),
            format!(
                "homeassistant:\n  name: mesura test\n  unit_system: metric\n  time_zone: UTC\n  latitude: 52.0\n  longitude: 5.0\n  elevation: 0\n  currency: EUR\n\
                 http:\n  server_host: 127.0.0.1\n  server_port: {port}\n\
                 recorder:\n  db_url: sqlite:///{}\n  commit_interval: 0\n\
                 history:\n\
                 logger:\n  default: warning\n",
                dir.join("home-assistant.db").display()
            ),
        )
        .expect("configuration.yaml");
        // MQTT is set up as a config entry in 2024.3 (not from YAML).
        let entries = json!({
            "version": 1, "minor_version": 2, "key": "core.config_entries",
            "data": {"entries": [{
                "entry_id": "01hmesuratestmqtt000000000", "version": 1, "minor_version": 1,
                "domain": "mqtt", "title": "mosquitto", "source": "user", "unique_id": null,
                "data": {"broker": "127.0.0.1", "port": broker_port, "discovery": true},
                "options": {}, "pref_disable_new_entities": false, "pref_disable_polling": false,
                "disabled_by": null
            }]}
        });
        std::fs::write(dir.join(".storage/core.config_entries"), entries.to_string()).expect("config entries");
        let mut ha = HomeAssistant {
            port,
            dir: dir.to_path_buf(),
            token: String::new(),
            python: python.to_path_buf(),
            child: None,
        };
        ha.launch().await;
        ha.token = ha.onboard().await;
        ha
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("hass.log"))
            .expect("hass.log");
        let child = Command::new(&self.python)
            .args(["-m", "homeassistant", "--skip-pip", "-c"])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start Home Assistant");
        self.child = Some(child);
        let http = reqwest::Client::new();
        let start = tokio::time::Instant::now();
        // Ready once the API answers (onboarding's view needs no login).
        loop {
            let ready = http
                .get(format!("{}/api/onboarding", self.url()))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("Home Assistant exited ({status}): {}", self.log_tail());
            }
            assert!(
                start.elapsed() < START_LIMIT,
                "Home Assistant did not start: {}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("hass.log")).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        log[log.len().saturating_sub(3000)..].to_owned()
    }

    /// The onboarding API's owner user, its token, and a long-lived token.
    async fn onboard(&self) -> String {
        let http = reqwest::Client::new();
        let client_id = format!("{}/", self.url());
        let created: Json = http
            .post(format!("{}/api/onboarding/users", self.url()))
            .json(&json!({"client_id": client_id, "name": "mesura", "username": "mesura", "password": "mesura-test-password", "language": "en"}))
            .send()
            .await
            .expect("onboarding")
            .json()
            .await
            .expect("onboarding JSON");
        let code = created["auth_code"].as_str().expect("auth_code");
        let token: Json = http
            .post(format!("{}/auth/token", self.url()))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("client_id", &client_id),
            ])
            .send()
            .await
            .expect("auth/token")
            .json()
            .await
            .expect("token JSON");
        let access = token["access_token"].as_str().expect("access_token");
        let mut socket = HaSocket::connect(&self.url(), access).await.expect("websocket");
        let long_lived = socket
            .call(json!({"type": "auth/long_lived_access_token", "client_name": "mesura test", "lifespan": 30}))
            .await
            .expect("long-lived token");
        long_lived.as_str().expect("token string").to_owned()
    }

    /// SIGTERM and wait: Home Assistant stops cleanly (its MQTT birth topic says `offline`).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) {
        self.stop();
        self.launch().await;
    }

    pub async fn socket(&self) -> HaSocket {
        HaSocket::connect(&self.url(), &self.token).await.expect("websocket")
    }

    /// An entity's state object, or `None` when Home Assistant has no such entity.
    pub async fn state(&self, entity_id: &str) -> Option<Json> {
        let response = reqwest::Client::new()
            .get(format!("{}/api/states/{entity_id}", self.url()))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("GET state");
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        Some(response.json().await.expect("state JSON"))
    }
}

impl Drop for HomeAssistant {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
