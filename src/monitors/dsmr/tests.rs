use super::*;

fn config(yaml: &str) -> DsmrConfig {
    serde_yaml_ng::from_str(yaml).unwrap()
}

#[test]
fn serial_defaults_and_dsmr22_line() {
    let t = config("port: /dev/ttyUSB0\n").target().unwrap();
    assert_eq!(
        t,
        Target::Serial {
            path: "/dev/ttyUSB0".into(),
            baud_rate: 115_200,
            data_bits: tokio_serial::DataBits::Eight,
            parity: tokio_serial::Parity::None,
            stop_bits: tokio_serial::StopBits::One,
        }
    );
    let t = config("port: /dev/ttyUSB0\nbaud_rate: 9600\ndata_bits: 7\nparity: even\n")
        .target()
        .unwrap();
    assert!(matches!(
        t,
        Target::Serial {
            baud_rate: 9600,
            data_bits: tokio_serial::DataBits::Seven,
            parity: tokio_serial::Parity::Even,
            ..
        }
    ));
}

#[test]
fn tcp_and_the_mistakes_people_make() {
    assert_eq!(
        config("host: 192.168.1.20\nport: 2001\n").target().unwrap(),
        Target::Tcp {
            host: "192.168.1.20".into(),
            port: 2001
        }
    );
    let key = |yaml: &str| config(yaml).target().unwrap_err().0;
    assert_eq!(key("host: p1.local\n"), "port");
    assert_eq!(key("port: 2001\n"), "port");
    assert_eq!(key("{}"), "port");
    assert_eq!(key("host: p1.local\nport: /dev/ttyUSB0\n"), "port");
    assert_eq!(key("host: http://p1.local\nport: 23\n"), "host");
    assert_eq!(key("host: p1.local\nport: 23\nbaud_rate: 9600\n"), "baud_rate");
    assert_eq!(key("port: /dev/ttyUSB0\ndata_bits: 6\n"), "data_bits");
    assert!(serde_yaml_ng::from_str::<DsmrConfig>("port: 70000\n").is_err());
}

#[test]
fn decryption_keys_are_checked_without_being_shown() {
    let key = "0123456789abcdef0123456789ABCDEF";
    assert!(config("port: /dev/ttyUSB0\n").keys().unwrap().is_none());
    let c = config(&format!("port: /dev/ttyUSB0\ndecryption_key: {key}\n"));
    assert!(c.keys().unwrap().is_some());
    assert!(!format!("{c:?}").contains(key), "the key never shows");
    assert!(!serde_json::to_string(&c).unwrap().contains(key));
    let fail = |yaml: &str| config(&format!("port: /dev/ttyUSB0\n{yaml}")).keys().unwrap_err();
    let (k, msg) = fail("decryption_key: 0123\n");
    assert_eq!(k, "decryption_key");
    assert!(
        msg.contains("is 4 hex digits long; an AES-128 key is 32 hex digits"),
        "{msg}"
    );
    let (k, msg) = fail("decryption_key: 0123456789abcdef0123456789abcdeX\n");
    assert_eq!(k, "decryption_key");
    assert!(msg.contains("not a hex digit"), "{msg}");
    assert!(
        !msg.contains("0123456789abcdef"),
        "the message never holds the key: {msg}"
    );
    assert_eq!(
        fail(&format!("decryption_key: {key}\nauthentication_key: zz\n")).0,
        "authentication_key"
    );
    assert_eq!(fail(&format!("authentication_key: {key}\n")).0, "authentication_key");
    assert_eq!(
        fail("decryption_key_file: /nonexistent/p1.key\n").0,
        "decryption_key_file"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p1.key");
    std::fs::write(&file, format!("{key}\n")).unwrap();
    let c = config(&format!(
        "port: /dev/ttyUSB0\ndecryption_key_file: {}\n",
        file.display()
    ));
    assert!(c.keys().unwrap().is_some());
    std::fs::write(&file, "not a key\n").unwrap();
    assert_eq!(c.keys().unwrap_err().0, "decryption_key_file");
    let both = format!("decryption_key: {key}\ndecryption_key_file: {}\n", file.display());
    assert!(fail(&both).1.contains("not both"));
}

#[test]
fn max_clock_skew_is_a_duration_of_at_least_a_second() {
    assert_eq!(
        config("port: /dev/ttyUSB0\n").max_clock_skew,
        Duration::from_secs(86_400)
    );
    assert_eq!(
        config("port: /dev/ttyUSB0\nmax_clock_skew: 2h\n").max_clock_skew,
        Duration::from_secs(7200)
    );
    let file = std::path::Path::new("config.d/p1.yaml");
    for (yaml, line) in [
        ("type: dsmr\nport: /dev/ttyUSB0\nmax_clock_skew: 0s\n", "line 3"),
        (
            "type: dsmr\nport: /dev/ttyUSB0\npoll_interval: 1s\nmax_clock_skew: soon\n",
            "line 4",
        ),
    ] {
        let e = crate::config::parse_device(file, yaml, &[])
            .expect_err(yaml)
            .to_string();
        for part in ["config.d/p1.yaml", line, "max_clock_skew"] {
            assert!(e.contains(part), "{part} not in: {e}");
        }
    }
}
