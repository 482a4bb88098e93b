//! Which subcommand takes which option: `--config` (and the log options) only on
//! the subcommands that use them, and every way the README, the docs and the
//! systemd unit write a command line still works.

use std::process::Command;

use crate::support::Setup;

const BIN: &str = env!("CARGO_BIN_EXE_mesura");

fn help(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).arg("--help").output().expect("run");
    assert!(out.status.success(), "{args:?} --help");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn only_the_subcommands_that_read_the_config_offer_config() {
    for args in [&["devices"][..], &["decode"], &["decode", "dsmr"]] {
        let text = help(args);
        assert!(!text.contains("--config"), "{args:?}:\n{text}");
        assert!(!text.contains("--log-level"), "{args:?}:\n{text}");
    }
    for args in [&["run"][..], &["check"], &["read"], &[]] {
        assert!(help(args).contains("--config"), "{args:?}");
    }
    assert!(help(&["run"]).contains("--log-format"));
}

/// Every placement of `--config` the docs use: before or after the subcommand,
/// short or long, from the environment, and none (run is the default).
#[test]
fn config_works_before_and_after_the_subcommand() {
    let setup = Setup::new("");
    setup.device("gas", "type: simulated\nprofile: gas\n");
    let config = setup.config_path();
    let config = config.to_str().expect("utf-8 path");
    let check = |args: &[&str], env: Option<&str>| {
        let mut command = Command::new(BIN);
        command.args(args).env_remove("MESURA_CONFIG").env_remove("RUST_LOG");
        if let Some(path) = env {
            command.env("MESURA_CONFIG", path);
        }
        let out = command.output().expect("run");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(&format!("config: {config}")), "{args:?}: {text}");
    };
    check(&["check", "--config", config], None);
    check(&["--config", config, "check"], None);
    check(&["-c", config, "check"], None);
    check(&["check", "-c", config], None);
    check(&["check"], Some(config));
    // The subcommand's own option wins over the environment and the one before it.
    check(
        &["--config", "/nonexistent/config.yaml", "check", "--config", config],
        None,
    );
    check(&["check", "--config", config], Some("/nonexistent/config.yaml"));

    // `read` and `run` take it in both places too; a config that does not load
    // shows which file they read without starting anything.
    let broken = setup.dir.path().join("broken.yaml");
    std::fs::write(&broken, "retension: {}\n").expect("write");
    let broken = broken.to_str().expect("utf-8 path");
    for args in [
        vec!["run", "--config", broken],
        vec!["--config", broken, "run"],
        vec!["--config", broken],
        vec!["read", "--config", broken, "gas"],
        vec!["--config", broken, "read", "gas"],
        vec!["run", "--config", broken, "--log-format", "json"],
        vec!["--log-level", "debug", "--config", broken, "run"],
    ] {
        let out = Command::new(BIN)
            .args(&args)
            .env_remove("MESURA_CONFIG")
            .env_remove("RUST_LOG")
            .output()
            .expect("run");
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {text}");
        assert!(
            text.contains("broken.yaml") && text.contains("retension"),
            "{args:?}: {text}"
        );
    }
}

/// The command lines of the README, docs/, the systemd unit and the packaging files
/// parse: each `mesura … --config …` line, run with `--help` appended, is accepted
/// by clap (a wrong option would be an error, not help).
#[test]
fn every_documented_command_line_parses() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![
        root.join("README.md"),
        root.join("systemd/mesura.service"),
        root.join("packaging/config.yaml"),
        root.join("packaging/config.d-README"),
    ];
    for dir in [root.join("docs"), root.join("docs/devices"), root.join("docs/backends")] {
        for entry in std::fs::read_dir(&dir).expect("docs dir").flatten() {
            if entry.path().extension().is_some_and(|e| e == "md") {
                files.push(entry.path());
            }
        }
    }
    let mut seen = 0;
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines() {
            // From the program name to the end of the command: a comment, a
            // backtick or a pipe ends it.
            let Some(start) = line
                .find("mesura run")
                .or_else(|| line.find("mesura check"))
                .or_else(|| line.find("mesura read").or_else(|| line.find("mesura --config")))
            else {
                continue;
            };
            let command = line[start + "mesura".len()..]
                .split(['#', '`', '|', ')'])
                .next()
                .unwrap_or_default();
            let args: Vec<&str> = command.split_whitespace().collect();
            if !args.iter().any(|a| *a == "--config" || *a == "-c") {
                continue;
            }
            seen += 1;
            let out = Command::new(BIN).args(&args).arg("--help").output().expect("run");
            assert!(
                out.status.success(),
                "{}: `mesura {}` is refused: {}",
                file.display(),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(seen >= 8, "only {seen} documented command lines found");
}
