//! The docs read as written: no table cut in two by a blank line (markdown renders
//! the rest as text), no config key listed twice, and every command the
//! getting-started guide runs is either mesura's, part of the base system, or
//! installed by a line of the guide itself.

use std::path::{Path, PathBuf};

fn docs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("docs dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The lines outside ``` fences, numbered from 1 (fenced lines come back empty).
fn prose(text: &str) -> Vec<String> {
    let mut fenced = false;
    text.lines()
        .map(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return String::new();
            }
            if fenced {
                String::new()
            } else {
                line.to_owned()
            }
        })
        .collect()
}

fn is_row(line: &str) -> bool {
    line.trim_start().starts_with('|')
}

fn is_separator(line: &str) -> bool {
    is_row(line) && line.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '))
}

/// Blank-line splits and repeated keys, as `file:line: what`.
fn table_problems(file: &Path, text: &str) -> Vec<String> {
    let lines = prose(text);
    let mut problems = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        // A row after blank lines that follow a row, without a header of its own.
        if is_row(line) && i > 0 && lines[i - 1].trim().is_empty() {
            let before = lines[..i].iter().rev().find(|l| !l.trim().is_empty());
            let starts_table = lines.get(i + 1).is_some_and(|next| is_separator(next));
            if before.is_some_and(|b| is_row(b)) && !starts_table {
                problems.push(format!("{}:{}: a blank line splits this table", file.display(), i + 1));
            }
        }
    }
    // Tables of config keys: every key once.
    let mut i = 0;
    while i < lines.len() {
        let header = &lines[i];
        if is_row(header) && lines.get(i + 1).is_some_and(|l| is_separator(l)) {
            let first_cell = |row: &str| {
                row.trim()
                    .trim_matches('|')
                    .split('|')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned()
            };
            let keyed = matches!(first_cell(header).as_str(), "key" | "variable");
            let mut seen = std::collections::HashSet::new();
            let mut j = i + 2;
            // A table runs to its last row, across blank lines that wrongly split it.
            while j < lines.len()
                && (is_row(&lines[j])
                    || (lines[j].trim().is_empty()
                        && lines
                            .get(j + 1)
                            .is_some_and(|n| is_row(n) && !lines.get(j + 2).is_some_and(|s| is_separator(s)))))
            {
                if keyed && is_row(&lines[j]) && !seen.insert(first_cell(&lines[j])) {
                    problems.push(format!(
                        "{}:{}: {} is listed twice in this table",
                        file.display(),
                        j + 1,
                        first_cell(&lines[j])
                    ));
                }
                j += 1;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    problems
}

#[test]
fn no_table_is_split_and_no_key_is_listed_twice() {
    let mut problems = Vec::new();
    for file in docs() {
        let text = std::fs::read_to_string(&file).expect("read");
        problems.extend(table_problems(&file, &text));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_split_table_and_a_repeated_key_are_caught() {
    let text = "| key | default |\n|---|---|\n| `a` | 1 |\n| `b` | 2 |\n\n| `c` | 3 |\n| `a` | 4 |\n\n| other | table |\n|---|---|\n| `a` | 5 |\n";
    let problems = table_problems(Path::new("t.md"), text);
    assert_eq!(
        problems,
        [
            "t.md:6: a blank line splits this table",
            "t.md:7: `a` is listed twice in this table"
        ]
    );
}

/// Shell builtins, coreutils, and what every Raspberry Pi OS and Debian system has
/// (sudo, apt, systemd, the user tools, scp on the build machine).
const BASE_SYSTEM: &[&str] = &[
    ".",
    "cd",
    "echo",
    "export",
    "source",
    "test",
    "[",
    "sh",
    "bash",
    "cat",
    "chmod",
    "chown",
    "cp",
    "install",
    "ln",
    "ls",
    "mkdir",
    "mv",
    "rm",
    "tee",
    "touch",
    "head",
    "tail",
    "sort",
    "date",
    "df",
    "du",
    "id",
    "true",
    "false",
    "sudo",
    "apt",
    "apt-get",
    "dpkg",
    "systemctl",
    "journalctl",
    "getent",
    "adduser",
    "groupadd",
    "usermod",
    "scp",
    "ssh",
    "grep",
    "sed",
];

/// Commands whose package has another name.
const PACKAGE_OF: &[(&str, &str)] = &[("grafana-cli", "grafana"), ("cargo", "rustup")];

/// The commands of a shell line: the first word of every pipeline stage, past
/// `sudo` and its options and `VAR=value` assignments.
fn commands_of(line: &str) -> Vec<String> {
    let code = line.split(" #").next().unwrap_or("");
    if code.trim_start().starts_with('#') {
        return Vec::new();
    }
    let mut commands = Vec::new();
    for stage in code.split(['|', ';', '&']) {
        let mut words = stage.split_whitespace().peekable();
        while let Some(word) = words.next() {
            if word.contains('=') && !word.starts_with('-') {
                continue;
            }
            if word == "sudo" {
                while let Some(option) = words.peek() {
                    if *option == "-u" {
                        words.next();
                        words.next();
                    } else if option.starts_with('-') {
                        words.next();
                    } else {
                        break;
                    }
                }
                continue;
            }
            commands.push(word.to_owned());
            break;
        }
    }
    commands
}

#[test]
fn every_command_of_getting_started_is_known_or_installed_there() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/getting-started.md");
    let text = std::fs::read_to_string(&path).expect("getting-started.md");
    let mut shell = Vec::new();
    let mut fence: Option<bool> = None;
    let mut continued = String::new();
    for line in text.lines() {
        if let Some(info) = line.trim_start().strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(matches!(info.trim(), "sh" | "bash" | "shell" | "console")),
            };
            continue;
        }
        if fence == Some(true) {
            continued.push_str(line.trim_end_matches('\\'));
            if !line.ends_with('\\') {
                shell.push(std::mem::take(&mut continued));
            }
        }
    }
    // `apt install a b c` lines, and rustup's installer for cargo.
    let mut installed: Vec<String> = shell
        .iter()
        .filter_map(|l| {
            l.split_once("apt install ")
                .or_else(|| l.split_once("apt-get install "))
        })
        .flat_map(|(_, packages)| {
            packages
                .split(" #")
                .next()
                .unwrap_or("")
                .split_whitespace()
                .take_while(|w| !w.contains("&&"))
                .filter(|w| !w.starts_with('-') && !w.starts_with("./"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    if text.contains("sh.rustup.rs") {
        installed.push("rustup".into());
    }
    let mut unknown = Vec::new();
    for line in &shell {
        for command in commands_of(line) {
            let package = PACKAGE_OF
                .iter()
                .find(|(c, _)| *c == command)
                .map_or(command.as_str(), |(_, p)| p);
            let known = command == "mesura"
                || BASE_SYSTEM.contains(&command.as_str())
                || installed.iter().any(|p| p == package);
            if !known {
                unknown.push(format!("`{command}` in `{}`", line.trim()));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "docs/getting-started.md runs commands it does not say how to install (add an `sudo apt install …` line):\n{}",
        unknown.join("\n")
    );
}
