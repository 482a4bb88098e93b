use std::sync::{Arc, Mutex};

use super::*;
use crate::reading::{MetricSpec, Reading};

/// A device that fails every read while `down` holds, and records when reads
/// succeeded (on tokio's clock, paused in the tests).
struct Flaky {
    down: std::ops::Range<Instant>,
    ok_at: Arc<Mutex<Vec<Instant>>>,
}

#[async_trait::async_trait]
impl Monitor for Flaky {
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError> {
        let now = Instant::now();
        if self.down.contains(&now) {
            return Err(MonitorError::link("connection lost"));
        }
        self.ok_at.lock().unwrap().push(now);
        Ok(Vec::new())
    }
    fn metrics(&self) -> &[MetricSpec] {
        &[]
    }
}

/// Runs a device of config `src` against a peer that is gone from 10 s to
/// 10 s + `outage`; returns the good reads' times (from the start), the
/// device's status and the log.
async fn outage(src: &str, outage: Duration) -> (Vec<Duration>, crate::daemon::live::DeviceStatus, String) {
    let log = Arc::new(Mutex::new(Vec::<u8>::new()));
    let writer = {
        let log = log.clone();
        move || LogWriter(log.clone())
    };
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish(),
    );
    let config = crate::config::parse_device(std::path::Path::new("config.d/meter.yaml"), src, &[]).unwrap();
    let status = SharedStatus::default();
    status.device_started(&config.id, config.kind.type_name(), config.poll_interval());
    let token = CancellationToken::new();
    let task = DeviceTask {
        config: Arc::new(config.clone()),
        shared: Shared {
            router: Router::default(),
            status: status.clone(),
            clock: crate::host::clock::system(),
            data_dir: std::path::PathBuf::new(),
            counters: crate::energy::counters::CounterSettings {
                enabled: false,
                ..Default::default()
            },
            epochs: None,
        },
        token: token.clone(),
        commands: None,
    };
    let t0 = Instant::now();
    let ok_at = Arc::new(Mutex::new(Vec::new()));
    let monitor = Flaky {
        down: t0 + Duration::from_secs(10)..t0 + Duration::from_secs(10) + outage,
        ok_at: ok_at.clone(),
    };
    let running = tokio::spawn(task.drive(Box::new(monitor)));
    tokio::time::sleep(Duration::from_secs(600)).await;
    token.cancel();
    running.await.unwrap();
    let times = ok_at.lock().unwrap().iter().map(|t| *t - t0).collect();
    let device = status.devices()[&config.id].clone();
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    (times, device, text)
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The largest gap between two good reads.
fn largest_gap(times: &[Duration]) -> Duration {
    times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
}

/// A 2 s local device gone for 30 s: its breaker opens, but it keeps being probed
/// on its backoff (capped at 30 s), so the gap is at most outage + cap + one poll,
/// not the 5-minute cool-down; one INFO line says it is back.
#[tokio::test(start_paused = true)]
async fn a_local_device_back_from_a_30s_outage_is_read_within_the_backoff_cap() {
    let outage_len = Duration::from_secs(30);
    let (times, device, log) = outage(
        "type: modbus\nhost: 192.0.2.1\nsunspec: true\npoll_interval: 2s\n",
        outage_len,
    )
    .await;
    let back = Duration::from_secs(40);
    let first_after = times
        .iter()
        .copied()
        .find(|t| *t >= back)
        .expect("read again after the outage");
    let cap = Duration::from_secs(30);
    assert!(
        first_after <= back + cap,
        "first good read {first_after:?} after the peer came back at {back:?}"
    );
    let gap = largest_gap(&times);
    assert!(gap <= outage_len + cap + Duration::from_secs(2), "gap {gap:?}");
    assert!(device.polls_failed >= 5, "the breaker opened: {device:?}");
    // Back to polling every 2 s after the recovery.
    let later: Vec<Duration> = times.iter().copied().filter(|t| *t > first_after).collect();
    assert!(largest_gap(&later) <= Duration::from_secs(2), "{later:?}");
    let recovered: Vec<&str> = log.lines().filter(|l| l.contains("device answers again")).collect();
    assert_eq!(recovered.len(), 1, "{log}");
    assert!(
        recovered[0].contains(&format!("after {} failed reads", device.polls_failed)) && recovered[0].contains("INFO"),
        "{log}"
    );
}

/// Local links probe on their backoff; cloud APIs keep the 5-minute cool-down;
/// either may be set in the file.
#[test]
fn cloud_services_keep_the_cooldown_local_devices_do_not() {
    let parse = |src: &str| crate::config::parse_device(std::path::Path::new("config.d/x.yaml"), src, &[]).unwrap();
    let local = parse("type: modbus\nhost: 192.0.2.1\nsunspec: true\n");
    assert_eq!(
        (local.breaker_cooldown(), local.max_backoff()),
        (None, Duration::from_secs(30))
    );
    let p1 = parse("type: dsmr\nhost: 192.0.2.1\nport: 23\n");
    assert_eq!(
        (p1.breaker_cooldown(), p1.max_backoff()),
        (None, Duration::from_secs(30))
    );
    let hw = parse("type: homewizard\nhost: 192.0.2.1\n");
    assert_eq!(hw.breaker_cooldown(), None, "a HomeWizard is on the local network");
    let cloud = parse("type: openweathermap\nappid: k\nlatitude: 52.1\nlongitude: 5.1\n");
    let five = Duration::from_secs(300);
    assert_eq!((cloud.breaker_cooldown(), cloud.max_backoff()), (Some(five), five));
    let set = parse("type: modbus\nhost: 192.0.2.1\nsunspec: true\nbreaker_cooldown: 1h\nmax_backoff: 2m\n");
    assert_eq!(
        (set.breaker_cooldown(), set.max_backoff()),
        (Some(Duration::from_secs(3600)), Duration::from_secs(120))
    );
    // With no cool-down an open breaker waits the backoff, never 5 minutes.
    let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(30)).with_seed(3);
    let link = MonitorError::link("connection lost");
    for _ in 0..20 {
        assert!(wait_after_failure(&link, BreakerState::Open, None, &mut backoff) <= Duration::from_secs(30));
    }
}

#[test]
fn a_rate_limit_is_waited_out_whatever_the_backoff_says() {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300)).with_seed(7);
    let limited = MonitorError::RateLimited {
        message: "429".into(),
        retry_after: Duration::from_secs(900),
    };
    let link = MonitorError::link("refused");
    let cooldown = Duration::from_secs(300);
    assert_eq!(
        wait_after_failure(&limited, BreakerState::Closed, Some(cooldown), &mut backoff),
        Duration::from_secs(900)
    );
    assert_eq!(
        wait_after_failure(&limited, BreakerState::Open, Some(cooldown), &mut backoff),
        Duration::from_secs(900)
    );
    // A short Retry-After does not shorten a longer backoff or cool-down.
    let brief = MonitorError::RateLimited {
        message: "429".into(),
        retry_after: Duration::from_secs(2),
    };
    assert_eq!(
        wait_after_failure(&brief, BreakerState::Open, Some(cooldown), &mut backoff),
        cooldown
    );
    let plain = wait_after_failure(&link, BreakerState::Closed, Some(cooldown), &mut backoff);
    assert!(plain <= Duration::from_secs(8), "{plain:?}");
    assert_eq!(
        wait_after_failure(&link, BreakerState::Open, Some(cooldown), &mut backoff),
        cooldown
    );
}
