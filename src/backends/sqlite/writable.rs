//! Whether a database path can be opened for writing, found out without creating
//! the database: `mesura check` and a reload of config.yaml ask before they rely
//! on it. The backend creates missing directories, so a path whose directories do
//! not exist yet is writable when the nearest one that does exist takes new files.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum NotWritable {
    #[error("{0} is a directory, not a database file")]
    Directory(PathBuf),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("cannot open {path} for writing: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("cannot create files in {dir}: {source}")]
    Dir { dir: PathBuf, source: std::io::Error },
}

/// Checks that `path` can be opened (or created) as a database to write: an
/// existing file may be read and written, and its directory takes new files (SQLite's
/// `-wal` and `-shm` live beside it). Creates nothing that stays.
pub fn check(path: &Path) -> Result<(), NotWritable> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(NotWritable::Directory(path.to_owned())),
        Ok(_) => {
            // access(2), not an open: closing any descriptor of the file would drop
            // the POSIX locks a running SQLite connection of this process holds on it.
            nix::unistd::access(path, nix::unistd::AccessFlags::R_OK | nix::unistd::AccessFlags::W_OK).map_err(
                |e| NotWritable::File {
                    path: path.to_owned(),
                    source: e.into(),
                },
            )?;
            probe(directory_of(path))
        }
        Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
            let mut dir = directory_of(path);
            loop {
                match std::fs::metadata(dir) {
                    Ok(meta) if meta.is_dir() => return probe(dir),
                    Ok(_) => return Err(NotWritable::NotADirectory(dir.to_owned())),
                    Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                        match dir.parent() {
                            Some(parent) => dir = non_empty(parent),
                            None => {
                                return Err(NotWritable::Dir {
                                    dir: dir.to_owned(),
                                    source: e,
                                })
                            }
                        }
                    }
                    Err(source) => {
                        return Err(NotWritable::Dir {
                            dir: dir.to_owned(),
                            source,
                        })
                    }
                }
            }
        }
        Err(source) => Err(NotWritable::File {
            path: path.to_owned(),
            source,
        }),
    }
}

fn directory_of(path: &Path) -> &Path {
    non_empty(path.parent().unwrap_or(Path::new(".")))
}

fn non_empty(dir: &Path) -> &Path {
    if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    }
}

/// Creates and removes a file in `dir`: the one test that holds for every user,
/// root included (a read-only mount), and for ACLs the mode bits do not show.
fn probe(dir: &Path) -> Result<(), NotWritable> {
    let probe: PathBuf = dir.join(format!(".mesura-write-check-{}", std::process::id()));
    let fail = |source| NotWritable::Dir {
        dir: dir.to_owned(),
        source,
    };
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(fail)?;
    std::fs::remove_file(&probe).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_directories_and_paths_under_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("mesura.db");
        check(&db).expect("a new file in a writable directory");
        std::fs::write(&db, b"").expect("create");
        check(&db).expect("an existing file");
        let missing = dir.path().join("a/b/mesura.db");
        check(&missing).expect("directories still to be created");
        assert!(!dir.path().join("a").exists(), "the check creates nothing");

        let err = check(dir.path()).expect_err("a directory").to_string();
        assert!(err.contains("is a directory"), "{err}");
        let err = check(&db.join("x.db")).expect_err("under a file").to_string();
        assert_eq!(err, format!("{} is not a directory", db.display()));
        let err = check(&db.join("deeper/x.db")).expect_err("under a file").to_string();
        assert!(err.ends_with("mesura.db is not a directory"), "{err}");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .filter_map(|e| e.ok())
            .collect();
        assert_eq!(names.len(), 1, "no probe file left: {names:?}");
    }
}
