//! `/proc/PID/maps`: which file (and which offset of it) backs each address range, and how to
//! open that very file even from another mount namespace or after it was deleted.

use std::{
    fs::File,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

/// Suffix the kernel appends to the path of a deleted file.
const DELETED_SUFFIX: &str = " (deleted)";

/// One line of `/proc/PID/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsEntry {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `r`, `w`, `x` permissions.
    pub readable: bool,
    pub writable: bool,
    pub executable: bool,
    /// File offset of `start`.
    pub offset: u64,
    /// Device (`major:minor`, as printed).
    pub device: String,
    /// Inode of the file (0 for anonymous memory).
    pub inode: u64,
    /// Path or pseudo name (`[vdso]`, `[heap]`), without the ` (deleted)` suffix.
    pub path: Option<String>,
    /// The file was deleted (or replaced) after being mapped.
    pub deleted: bool,
}

impl MapsEntry {
    /// Backed by a regular file (not anonymous memory nor a `[pseudo]` region).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.as_deref().is_some_and(|p| p.starts_with('/'))
    }

    /// The vdso mapping.
    pub fn is_vdso(&self) -> bool {
        self.path.as_deref() == Some("[vdso]")
    }
}

/// A line of the maps file that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed maps line: {line:?}")]
pub struct MapsParseError {
    /// The line.
    pub line: String,
}

/// Parses the text of a maps file.
pub fn parse_maps(text: &str) -> Result<Vec<MapsEntry>, MapsParseError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| parse_line(l).ok_or_else(|| MapsParseError { line: l.to_owned() }))
        .collect()
}

fn parse_line(line: &str) -> Option<MapsEntry> {
    // address perms offset dev inode [path...] ; the path may contain spaces.
    let mut rest = line;
    let mut field = || -> Option<&str> {
        let trimmed = rest.trim_start();
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (f, r) = trimmed.split_at(end);
        rest = r;
        (!f.is_empty()).then_some(f)
    };
    let range = field()?;
    let perms = field()?.as_bytes().to_vec();
    let offset = u64::from_str_radix(field()?, 16).ok()?;
    let device = field()?.to_owned();
    let inode = field()?.parse().ok()?;
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if perms.len() < 3 || end < start {
        return None;
    }
    let raw_path = rest.trim_start();
    let (path, deleted) = match raw_path {
        "" => (None, false),
        p => match p.strip_suffix(DELETED_SUFFIX) {
            Some(p) => (Some(p.to_owned()), true),
            None => (Some(p.to_owned()), false),
        },
    };
    Some(MapsEntry {
        start,
        end,
        readable: perms[0] == b'r',
        writable: perms[1] == b'w',
        executable: perms[2] == b'x',
        offset,
        device,
        inode,
        path,
        deleted,
    })
}

/// Identity of an opened file, for caching: device, inode, size and modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
    pub mtime_sec: i64,
    pub mtime_nsec: i64,
}

impl FileKey {
    /// The identity of an open file.
    pub fn of(file: &File) -> std::io::Result<Self> {
        let m = file.metadata()?;
        Ok(Self {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime_sec: m.mtime(),
            mtime_nsec: m.mtime_nsec(),
        })
    }
}

/// Opens the file behind a mapping of `pid`, in the target's own view of the file system:
/// `/proc/PID/map_files/START-END` (works for deleted files and other mount namespaces), then
/// `/proc/PID/root/PATH`. A candidate whose inode differs from the mapping's is rejected.
pub fn open_mapped_file(pid: u32, entry: &MapsEntry) -> std::io::Result<(File, FileKey, PathBuf)> {
    let path = entry.path.as_deref().unwrap_or("");
    let candidates = [
        PathBuf::from(format!(
            "/proc/{pid}/map_files/{:x}-{:x}",
            entry.start, entry.end
        )),
        Path::new(&format!("/proc/{pid}/root")).join(path.trim_start_matches('/')),
    ];
    let mut last_err = std::io::Error::from(std::io::ErrorKind::NotFound);
    for candidate in candidates {
        match File::open(&candidate).and_then(|f| FileKey::of(&f).map(|k| (f, k))) {
            Ok((file, key)) if entry.inode == 0 || key.ino == entry.inode => {
                return Ok((file, key, candidate));
            }
            Ok(_) => {
                last_err = std::io::Error::other(format!(
                    "{} is not the mapped file (inode differs)",
                    candidate.display()
                ));
            }
            Err(e) => last_err = e,
        }
    }
    Err(last_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        let text = "\
00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/my prog\n\
7f1e2a000000-7f1e2a021000 rw-p 00000000 00:00 0 \n\
7ffd5b7fe000-7ffd5b800000 r-xp 00000000 00:00 0                          [vdso]\n\
55d0c0000000-55d0c0001000 r--p 00001000 fd:01 99 /tmp/x (deleted)\n";
        let maps = parse_maps(text).expect("parse");
        assert_eq!(maps.len(), 4);
        assert_eq!(maps[0].path.as_deref(), Some("/usr/bin/my prog"));
        assert!(maps[0].executable && maps[0].is_file());
        assert_eq!(maps[1].path, None);
        assert!(maps[2].is_vdso());
        assert!(maps[3].deleted);
        assert_eq!(maps[3].offset, 0x1000);
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_maps("zzzz r-xp\n").is_err());
        assert!(parse_maps("10-5 r-xp 0 00:00 0\n").is_err());
    }

    #[test]
    fn opens_own_executable() {
        let maps =
            parse_maps(&std::fs::read_to_string("/proc/self/maps").expect("maps")).expect("parse");
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let entry = maps
            .iter()
            .find(|e| e.is_file() && e.path.as_deref() == exe.to_str())
            .expect("own mapping");
        let (_, key, _) = open_mapped_file(std::process::id(), entry).expect("open");
        assert_eq!(key.ino, entry.inode);
    }
}
