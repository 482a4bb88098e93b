//! The `evohome` device against a local server replaying recorded Resideo TCC v2
//! answers: the request flow (login once, installation once, status per poll),
//! token caching and renewal, rate limits, failures, and a failing evohome
//! device leaving a simulated one alone in a running daemon.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::http_server::{fixture, Canned, ManualClock, Server};
use mesura::config::{parse_device, DeviceKind};
use mesura::monitors::evohome::EvohomeMonitor;
use mesura::monitors::{Monitor, MonitorContext, MonitorError};
use mesura::reading::{Reading, Value};

const PASSWORD: &str = "pa55-never-shown";

/// What the fake service answers; tests change it between reads.
#[derive(Clone)]
struct Service {
    user: &'static str,
    install: &'static str,
    status: &'static str,
    /// Overrides the status answer.
    status_answer: Option<Canned>,
    /// Overrides answers to token requests of this grant type.
    refuse_grant: Option<&'static str>,
    token_lifetime: u64,
}

impl Service {
    fn new(user: &'static str, install: &'static str, status: &'static str) -> Service {
        Service {
            user,
            install,
            status,
            status_answer: None,
            refuse_grant: None,
            token_lifetime: 1800,
        }
    }
}

async fn start(service: Service) -> (Server, Arc<Mutex<Service>>) {
    let state = Arc::new(Mutex::new(service));
    let shared = state.clone();
    let tokens = Arc::new(Mutex::new(0u32));
    let server = Server::start(move |req| {
        let s = shared.lock().expect("service").clone();
        let path = req.path();
        if path == "/auth" {
            let grant = req.form("grant_type").unwrap_or("");
            if s.refuse_grant == Some(grant) {
                return Canned::status(400, r#"{"error":"invalid_grant"}"#);
            }
            let mut n = tokens.lock().expect("tokens");
            *n += 1;
            return Canned::json(format!(
                r#"{{"access_token":"acc-{n}","token_type":"bearer","expires_in":{},"refresh_token":"ref-{n}","scope":"EMEA-V1-Basic EMEA-V1-Anonymous"}}"#,
                s.token_lifetime
            ));
        }
        let Some(bearer) = req.header("authorization").and_then(|h| h.strip_prefix("bearer ").or(h.strip_prefix("Bearer "))) else {
            return Canned::status(401, r#"[{"code":"Unauthorized","message":"Unauthorized"}]"#);
        };
        assert!(bearer.starts_with("acc-"), "{bearer}");
        if path == "/api/userAccount" {
            Canned::json(fixture(&format!("evohome/{}", s.user)))
        } else if path == "/api/location/installationInfo" {
            Canned::json(fixture(&format!("evohome/{}", s.install)))
        } else if path.ends_with("/status") {
            s.status_answer.unwrap_or_else(|| Canned::json(fixture(&format!("evohome/{}", s.status))))
        } else {
            Canned::status(404, "")
        }
    })
    .await;
    (server, state)
}

fn monitor(url: &str, clock: Arc<ManualClock>, data: &Path, extra: &str) -> EvohomeMonitor {
    let src = format!(
        "type: evohome\nusername: someone@example.com\npassword: {PASSWORD}\nbase_url: {url}/api\nauth_url: {url}/auth\ntimeout: 1s\n{extra}"
    );
    let device = parse_device(Path::new("heating.yaml"), &src, &[]).unwrap_or_else(|e| panic!("{e}"));
    let DeviceKind::Evohome(config) = &device.kind else {
        panic!("not an evohome device")
    };
    let ctx = MonitorContext {
        id: device.id.clone(),
        clock,
        data_dir: data.to_path_buf(),
        poll_interval: std::time::Duration::from_secs(1),
        file: std::path::PathBuf::new(),
    };
    EvohomeMonitor::new(config, ctx).unwrap_or_else(|e| panic!("{e}"))
}

fn get<'a>(readings: &'a [Reading], metric: &str) -> Option<&'a Value> {
    readings.iter().find(|r| &*r.metric == metric).map(|r| &r.value)
}

fn num(v: f64) -> Option<&'static Value> {
    Some(Box::leak(Box::new(Value::Number(v))))
}

fn txt(s: &str) -> Option<&'static Value> {
    Some(Box::leak(Box::new(Value::Text(Arc::from(s)))))
}

/// Metric values a fixture must show (`None`: the metric must be absent).
type Expected<'a> = &'a [(&'a str, Option<&'a Value>)];

fn no_secret(e: &MonitorError) {
    assert!(
        !e.to_string().contains(PASSWORD) && !format!("{e:?}").contains(PASSWORD),
        "{e}"
    );
}

#[tokio::test]
async fn every_recorded_installation_reads_as_its_json_says() {
    let cases: &[(&str, &str, usize, Expected)] = &[
        (
            "installation_info_nl_2727366.json",
            "location_status_nl_2727366.json",
            7,
            &[
                ("thermostat_2_setpoint", num(20.0)),
                ("thermostat_mode", txt("FollowSchedule")),
                ("system_mode", txt("Auto")),
            ],
        ),
        (
            "installation_info_uk_3184115_12zones_dhw.json",
            "location_status_uk_3184115_12zones_dhw.json",
            40,
            &[
                ("living_room_temperature", num(22.5)),
                ("living_room_setpoint", num(21.0)),
                ("living_room_mode", txt("TemporaryOverride")),
                ("dhw_temperature", num(44.0)),
                ("dhw_state", txt("On")),
            ],
        ),
        (
            "installation_info_au_1111111_focusprowifi.json",
            "location_status_au_1111111_focusprowifi_off.json",
            4,
            &[("thermostat_temperature", num(23.0)), ("system_mode", txt("Off"))],
        ),
        (
            "installation_info_be_4655156.json",
            "location_status_be_4655156.json",
            16,
            &[("living_temperature", num(23.0)), ("zone_6248903_setpoint", None)],
        ),
        (
            "installation_info_ar_3886561.json",
            "location_status_ar_3886561_away.json",
            25,
            &[("bano_princ_temperature", num(25.0)), ("system_mode", txt("Away"))],
        ),
        (
            "installation_info_uk_2738909_9zones.json",
            "location_status_uk_2738909_away_faults.json",
            25,
            &[
                ("kitchen_temperature", None),
                ("kitchen_setpoint", num(5.0)),
                ("main_room_temperature", num(21.5)),
            ],
        ),
        (
            "installation_info_uk_111111_visionprowifi.json",
            "location_status_uk_111111_visionprowifi.json",
            4,
            &[("system_mode", txt("Heat"))],
        ),
    ];
    for (install, status, count, expected) in cases {
        let data = tempfile::tempdir().expect("tempdir");
        let (server, _) = start(Service::new("user_account_nl_2276512.json", install, status)).await;
        let mut m = monitor(&server.url, ManualClock::new(), data.path(), "");
        let readings = m.read().await.unwrap_or_else(|e| panic!("{status}: {e}"));
        assert_eq!(readings.len(), *count, "{status}: {readings:?}");
        for (metric, value) in *expected {
            assert_eq!(get(&readings, metric), *value, "{status}: {metric}");
        }
        let installation = server
            .requests()
            .into_iter()
            .find(|r| r.path().ends_with("installationInfo"));
        let target = installation.map(|r| r.target).unwrap_or_default();
        assert!(
            target.contains("userId=2276512") && target.contains("includeTemperatureControlSystems=True"),
            "{target}"
        );
    }
}

#[tokio::test]
async fn one_login_one_installation_then_one_status_per_poll_and_the_token_survives_a_restart() {
    let data = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let (server, _) = start(Service::new(
        "user_account_nl_2276512.json",
        "installation_info_nl_2727366.json",
        "location_status_nl_2727366.json",
    ))
    .await;
    let mut m = monitor(&server.url, clock.clone(), data.path(), "");
    for _ in 0..3 {
        m.read().await.unwrap_or_else(|e| panic!("{e}"));
        clock.advance(Duration::from_secs(300));
    }
    assert_eq!(server.grants("password"), 1);
    assert_eq!(server.count("/userAccount"), 1);
    assert_eq!(server.count("/installationInfo"), 1);
    assert_eq!(server.count("/location/2727366/status"), 3);
    // The login sent the client's Basic credentials as the official apps do, and
    // the active fault was noticed.
    let login = server
        .requests()
        .into_iter()
        .find(|r| r.path() == "/auth")
        .expect("a login");
    assert!(login
        .header("authorization")
        .is_some_and(|h| h.starts_with("Basic NGEyMzEwODkt")));
    assert_eq!(m.active_faults().len(), 1);

    let cache = data.path().join("evohome-heating.token.json");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache).expect("token cache").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let text = std::fs::read_to_string(&cache).expect("token cache");
    assert!(!text.contains(PASSWORD) && !text.contains("someone@example.com"));

    // A restart (a new monitor) uses the cached token: no new login.
    drop(m);
    let mut again = monitor(&server.url, clock.clone(), data.path(), "");
    again.read().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(server.grants("password"), 1);
    assert_eq!(
        server.grants("refresh_token"),
        0,
        "the cached token had 15 of its 30 minutes left"
    );
    assert_eq!(server.count("/status"), 4);
}

#[tokio::test]
async fn an_expiring_token_is_refreshed_and_a_refused_refresh_logs_in_again() {
    let data = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let (server, state) = start(Service::new(
        "user_account_nl_2276512.json",
        "installation_info_nl_2727366.json",
        "location_status_nl_2727366.json",
    ))
    .await;
    let mut m = monitor(&server.url, clock.clone(), data.path(), "");
    m.read().await.unwrap_or_else(|e| panic!("{e}"));
    clock.advance(Duration::from_secs(29 * 60));
    m.read().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((server.grants("password"), server.grants("refresh_token")), (1, 1));
    let refresh = server
        .requests()
        .into_iter()
        .find(|r| r.form("grant_type") == Some("refresh_token"));
    assert_eq!(
        refresh
            .and_then(|r| r.form("refresh_token").map(str::to_owned))
            .as_deref(),
        Some("ref-1")
    );

    state.lock().expect("service").refuse_grant = Some("refresh_token");
    clock.advance(Duration::from_secs(29 * 60));
    m.read().await.unwrap_or_else(|e| panic!("{e}"));
    // One refresh tried and refused, then one new login.
    assert_eq!((server.grants("password"), server.grants("refresh_token")), (2, 2));
    assert_eq!(server.count("/status"), 3);

    // A token the API refuses mid-life is renewed and the request sent again.
    state.lock().expect("service").refuse_grant = None;
    state.lock().expect("service").status_answer = Some(Canned::status(401, ""));
    let e = m.read().await.err().unwrap_or_else(|| panic!("a 401 twice must fail"));
    assert!(matches!(e, MonitorError::Config { .. }), "{e:?}");
    assert_eq!(server.count("/status"), 5);
    assert_eq!((server.grants("password"), server.grants("refresh_token")), (2, 3));
}

#[tokio::test]
async fn wrong_credentials_are_a_configuration_error_without_the_password() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut service = Service::new(
        "user_account_nl_2276512.json",
        "installation_info_nl_2727366.json",
        "location_status_nl_2727366.json",
    );
    service.refuse_grant = Some("password");
    let (server, _) = start(service).await;
    let mut m = monitor(&server.url, ManualClock::new(), data.path(), "");
    let e = m.read().await.err().unwrap_or_else(|| panic!("must fail"));
    assert!(
        matches!(&e, MonitorError::Config { message: t, .. } if t.contains("username or password")),
        "{e:?}"
    );
    no_secret(&e);
    assert_eq!(server.count("/status"), 0);
}

#[tokio::test]
async fn rate_limits_pause_every_request_for_as_long_as_asked() {
    let data = tempfile::tempdir().expect("tempdir");
    let clock = ManualClock::new();
    let mut service = Service::new(
        "user_account_nl_2276512.json",
        "installation_info_nl_2727366.json",
        "location_status_nl_2727366.json",
    );
    service.status_answer = Some(Canned::status(429, "").header("Retry-After", "300"));
    let (server, state) = start(service).await;
    let mut m = monitor(&server.url, clock.clone(), data.path(), "");
    let e = m.read().await.err().unwrap_or_else(|| panic!("429 must fail"));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(300)), "{e}");
    let sent = server.requests().len();
    clock.advance(Duration::from_secs(299));
    assert!(m.read().await.is_err());
    assert_eq!(server.requests().len(), sent, "nothing is sent while paused");
    assert!(m.is_suspended());

    // The API's own rate-limit body, without Retry-After: 15 minutes.
    clock.advance(Duration::from_secs(1));
    state.lock().expect("service").status_answer = Some(Canned::status(
        400,
        r#"[{"code":"TooManyRequests","message":"Request count limitation exceeded, please try again later."}]"#,
    ));
    let e = m.read().await.err().unwrap_or_else(|| panic!("must fail"));
    assert_eq!(e.retry_after(), Some(Duration::from_secs(15 * 60)), "{e}");
    assert_eq!(server.count("/status"), 2);
    clock.advance(Duration::from_secs(14 * 60));
    assert!(m.read().await.is_err());
    assert_eq!(server.count("/status"), 2);
    clock.advance(Duration::from_secs(60));
    state.lock().expect("service").status_answer = None;
    m.read().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(server.count("/status"), 3);
    assert_eq!(server.grants("password"), 1);
}

#[tokio::test]
async fn server_errors_garbage_and_silence_are_clear_errors() {
    let data = tempfile::tempdir().expect("tempdir");
    let mut service = Service::new(
        "user_account_nl_2276512.json",
        "installation_info_nl_2727366.json",
        "location_status_nl_2727366.json",
    );
    service.status_answer = Some(Canned::status(500, "oops"));
    let (server, state) = start(service).await;
    let mut m = monitor(&server.url, ManualClock::new(), data.path(), "");
    let e = m.read().await.err().unwrap_or_else(|| panic!("must fail"));
    assert!(
        matches!(&e, MonitorError::Refused { message: t, .. } if t.contains("500")),
        "{e:?}"
    );
    state.lock().expect("service").status_answer = Some(Canned::json("{\"gateways\": [".as_bytes()));
    let e = m.read().await.err().unwrap_or_else(|| panic!("must fail"));
    assert!(matches!(&e, MonitorError::InvalidData { .. }), "{e:?}");
    state.lock().expect("service").status_answer = Some(Canned::json("{}").delayed(Duration::from_secs(4)));
    let e = m.read().await.err().unwrap_or_else(|| panic!("must fail"));
    assert!(
        matches!(&e, MonitorError::Link { message: t, .. } if t.contains("no answer within 1s")),
        "{e:?}"
    );
    state.lock().expect("service").status_answer = None;
    m.read().await.unwrap_or_else(|e| panic!("recovers: {e}"));
    assert_eq!(server.grants("password"), 1);
}

#[tokio::test]
async fn locations_are_chosen_by_id_or_index_and_an_empty_account_says_so() {
    let data = tempfile::tempdir().expect("tempdir");
    let (server, _) = start(Service::new(
        "user_account_nl_2276512.json",
        "installation_info_schema_4_locations.json",
        "location_status_schema_no_tcs.json",
    ))
    .await;
    let readings = monitor(&server.url, ManualClock::new(), data.path(), "location: 4001003\n")
        .read()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        readings.is_empty(),
        "a location without a controller has nothing to read"
    );
    assert_eq!(server.count("/location/4001003/status"), 1);
    let data2 = tempfile::tempdir().expect("tempdir");
    monitor(&server.url, ManualClock::new(), data2.path(), "location: 1\n")
        .read()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(server.count("/location/4001002/status"), 1);
    let data3 = tempfile::tempdir().expect("tempdir");
    let e = monitor(&server.url, ManualClock::new(), data3.path(), "location: '9'\n")
        .read()
        .await
        .err();
    assert!(
        matches!(&e, Some(MonitorError::Config { message: t, .. }) if t.contains("4001004")),
        "{e:?}"
    );

    let (server, _) = start(Service::new(
        "user_account_empty_install.json",
        "installation_info_empty.json",
        "location_status_schema_no_gateway.json",
    ))
    .await;
    let data4 = tempfile::tempdir().expect("tempdir");
    let e = monitor(&server.url, ManualClock::new(), data4.path(), "")
        .read()
        .await
        .err();
    assert!(
        matches!(&e, Some(MonitorError::Config { message: t, .. }) if t.contains("no locations")),
        "{e:?}"
    );
    assert_eq!(server.count("/status"), 0);
}

#[test]
fn polling_faster_than_a_minute_is_refused_at_load() {
    let src = "type: evohome\nusername: a\npassword: b\npoll_interval: 30s\n";
    let e = parse_device(Path::new("heating.yaml"), src, &[])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("poll_interval") && e.contains("once a minute"), "{e}");
    let ok = parse_device(
        Path::new("heating.yaml"),
        "type: evohome\nusername: a\npassword: b\n",
        &[],
    );
    assert_eq!(ok.map(|d| d.poll_interval()).ok(), Some(Duration::from_secs(300)));
}

/// A running daemon: an evohome device whose service fails, next to a simulated
/// device that must keep every one of its polls. On tokio's paused clock; the
/// failing service's answers may race the paused clock into timeouts, which
/// changes nothing asserted here (the device fails either way).
#[tokio::test(start_paused = true)]
async fn a_failing_evohome_device_leaves_the_others_alone() {
    let mut service = Service::new(
        "user_account_nl_2276512.json",
        "installation_info_nl_2727366.json",
        "location_status_nl_2727366.json",
    );
    service.status_answer = Some(Canned::status(503, "maintenance"));
    let (server, _) = start(service).await;
    let setup = crate::support::Setup::new("backends:\n  sqlite: {}\n");
    setup
        .device("good", "type: simulated\nprofile: climate\npoll_interval: 1s\n")
        .device(
            "heating",
            &format!(
                "type: evohome\nusername: u\npassword: p\nbase_url: {0}/api\nauth_url: {0}/auth\npoll_interval: 60s\nfailure_threshold: 3\nbreaker_cooldown: 60s\nmax_backoff: 8s\n",
                server.url
            ),
        );
    let config = mesura::config::Config::load(&setup.config_path(), &crate::support::no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    let start = crate::support::noon_yesterday();
    let daemon = mesura::daemon::app::Daemon::start(
        config,
        Arc::new(mesura::host::clock::MonotonicClock::starting_at(start)),
    )
    .await
    .expect("start");
    tokio::time::sleep(Duration::from_millis(120_500)).await;
    let heating = daemon.status().devices()["heating"].clone();
    let summary = daemon.shutdown().await;
    assert_eq!(
        summary.polls["good"], 121,
        "the simulated device polls every second throughout"
    );
    assert_eq!(heating.polls_ok, 0);
    assert!(
        (1..=8).contains(&heating.polls_failed),
        "{} failed polls",
        heating.polls_failed
    );
}
