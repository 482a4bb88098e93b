//! CRC status of every fixture must match `INDEX.tsv` (crc_present / crc_valid),
//! through `check_crc`, `decode` and the `Framer`.

use crate::support::dsmr::{fixture_dir, load};
use mesura::protocols::dsmr::{check_crc, decode, CrcStatus, Framer};

fn index() -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(fixture_dir().join("INDEX.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            (cols[0].to_string(), cols[2].to_string(), cols[3].to_string())
        })
        .collect()
}

fn expected_kind(present: &str, valid: &str) -> &'static str {
    match (present, valid) {
        ("no", _) => "absent",
        ("yes", "yes") => "valid",
        ("yes", "no") => "invalid",
        other => panic!("bad INDEX row {other:?}"),
    }
}

fn kind(s: CrcStatus) -> &'static str {
    match s {
        CrcStatus::Valid => "valid",
        CrcStatus::Absent => "absent",
        CrcStatus::Invalid { .. } => "invalid",
    }
}

#[test]
fn index_covers_all_fixture_files() {
    let rows = index();
    assert_eq!(rows.len(), 44);
    let mut files: Vec<String> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    files.sort();
    let mut listed: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    listed.sort();
    assert_eq!(files, listed);
}

#[test]
fn crc_status_matches_index() {
    let mut invalid = 0;
    for (file, present, valid) in index() {
        let bytes = load(&file);
        let want = expected_kind(&present, &valid);
        assert_eq!(kind(check_crc(&bytes)), want, "check_crc {file}");
        let t = decode(&bytes).unwrap();
        assert_eq!(kind(t.crc), want, "decode {file}");
        if let CrcStatus::Invalid { given, computed } = t.crc {
            assert_ne!(given, computed);
            invalid += 1;
        }
    }
    assert_eq!(invalid, 18);
}

#[test]
fn every_terminated_fixture_frames_to_itself() {
    for (file, present, valid) in index() {
        let bytes = load(&file);
        let mut f = Framer::default();
        f.push(&bytes);
        let out: Vec<_> = std::iter::from_fn(|| f.next_frame()).collect();
        if file.contains("no_terminator") {
            assert!(out.is_empty(), "{file}");
            assert!(f.pending_len() > 0);
            continue;
        }
        assert_eq!(out.len(), 1, "{file}: {out:?}");
        let frame = out[0].as_ref().unwrap();
        assert_eq!(kind(frame.crc), expected_kind(&present, &valid), "{file}");
        if file.starts_with("q3d") {
            // gateway junk after "!\r\n" is not part of the frame
            assert!(frame.bytes.ends_with(b"!\r\n"));
            assert!(bytes.len() > frame.bytes.len());
        } else {
            assert_eq!(frame.bytes, bytes, "{file}");
        }
        assert_eq!(decode(&frame.bytes).unwrap(), decode(&bytes).unwrap());
    }
}

#[test]
fn crc_given_values_from_index_file() {
    // spot checks of the CRC digits themselves
    assert_eq!(
        check_crc(&load("dsmr42_kaifa_bad_crc_abcd.txt")),
        CrcStatus::Invalid {
            given: 0xABCD,
            computed: 0x4BC6
        }
    );
    assert_eq!(
        check_crc(&load("dsmr40_iskra_mt382_spec_like.txt")),
        CrcStatus::Invalid {
            given: 0x522B,
            computed: 0x8FC7
        }
    );
    assert_eq!(
        check_crc(&load("dsmr50_est_wh_units.txt")),
        CrcStatus::Invalid {
            given: 0xFFFF,
            computed: 0x17FF
        }
    );
    assert_eq!(
        check_crc(&load("dsmr50_nwa_warmtelink_thermal_gj_crc3digits.txt")),
        CrcStatus::Valid
    );
}
