//! The `.go.buildinfo` blob: the Go version and module information every Go binary since 1.13
//! carries, stripped or not.
//!
//! Layout (as written by the Go linker, see Go's `debug/buildinfo` for the reference reader):
//!
//! | bytes | meaning |
//! |---|---|
//! | 0..14 | magic `"\xff Go buildinf:"`, at a 16-byte aligned address |
//! | 14 | pointer size (4 or 8) |
//! | 15 | flags: bit 0 big endian, bit 1 strings inline (Go 1.18+) |
//! | 16..32 | old format: two pointers to Go string headers (`runtime.buildVersion`, `runtime.modinfo`) |
//! | 32.. | inline format: uvarint length + version bytes, uvarint length + module info bytes |

use serde::Serialize;

/// Magic bytes at the start of the build information blob.
pub const MAGIC: &[u8; 14] = b"\xff Go buildinf:";
/// Alignment of the blob in the binary; the magic is searched only at multiples of it.
pub const ALIGN: usize = 16;
/// Size of the fixed header (magic, pointer size, flags, two pointer slots).
pub const HEADER_SIZE: usize = 32;
/// Offset of the pointer size byte.
const PTR_SIZE_OFFSET: usize = 14;
/// Offset of the flags byte.
const FLAGS_OFFSET: usize = 15;
/// Offset of the first pointer slot in the old (pointer-based) format.
const POINTERS_OFFSET: usize = 16;
/// Flags bit: multi-byte values are big endian (old format only).
const FLAG_BIG_ENDIAN: u8 = 1 << 0;
/// Flags bit: the version and module strings follow the header inline (Go 1.18+).
const FLAG_INLINE: u8 = 1 << 1;
/// Longest string accepted from the blob: a version is a few bytes, module info a few KiB;
/// anything bigger is corrupt data, not something to allocate for.
const MAX_STRING_LEN: u64 = 1 << 20;
/// The module information string is framed by two 16-byte sentinels (`runtime/debug`'s
/// `modinfo` start and end markers); only their length matters here.
const MODINFO_SENTINEL_LEN: usize = 16;

/// What `.go.buildinfo` says about a binary.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct BuildInfo {
    /// The toolchain version string as `runtime.Version()` returns it (`go1.21.13`).
    pub version: String,
    /// The module information text (`path`, `mod`, `dep`, `build` lines), sentinels removed;
    /// empty when the binary was built without module support.
    pub mod_info: String,
}

impl BuildInfo {
    /// The `build` settings (`-buildmode=pie`, `CGO_ENABLED=1`, `GOARCH=amd64`...) from the
    /// module information, as (key, value) pairs.
    pub fn settings(&self) -> impl Iterator<Item = (&str, &str)> {
        self.mod_info.lines().filter_map(|line| {
            let setting = line.strip_prefix("build\t")?;
            Some(setting.split_once('=').unwrap_or((setting, "")))
        })
    }

    /// The value of one `build` setting.
    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// Why a build information blob could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildInfoError {
    /// The blob does not start with [`MAGIC`].
    #[error("no Go build information magic")]
    NoMagic,
    /// The blob ends before the field named.
    #[error("Go build information truncated at its {0}")]
    Truncated(&'static str),
    /// The pointer size byte is neither 4 nor 8.
    #[error("Go build information has pointer size {0}, expected 4 or 8")]
    BadPointerSize(u8),
    /// A string length is absurd (corrupt data).
    #[error("Go build information string of {0} bytes is too long")]
    StringTooLong(u64),
    /// Old format: a pointer does not lead into the file's data.
    #[error("Go build information points at unmapped address {0:#x}")]
    BadPointer(u64),
    /// The version string is not UTF-8.
    #[error("Go build information version is not UTF-8")]
    NotUtf8,
}

/// Reads `len` bytes at virtual address `addr` of the binary (old format pointers), or `None`
/// when the range is not backed by file data.
pub trait AddressReader {
    /// The bytes at `addr..addr + len`.
    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>>;
}

impl<F: Fn(u64, usize) -> Option<Vec<u8>>> AddressReader for F {
    fn read(&self, addr: u64, len: usize) -> Option<Vec<u8>> {
        self(addr, len)
    }
}

/// Offset of the first [`MAGIC`] at an [`ALIGN`]-aligned position of `data` (whose first byte
/// is itself aligned), if any.
pub fn find_magic(data: &[u8]) -> Option<usize> {
    (0..data.len())
        .step_by(ALIGN)
        .find(|&off| data[off..].starts_with(MAGIC))
}

/// Parses a build information blob starting with [`MAGIC`].
///
/// The inline format (Go 1.18+) needs nothing but `blob`; the old format follows its pointers
/// through `memory`.
pub fn parse(blob: &[u8], memory: &dyn AddressReader) -> Result<BuildInfo, BuildInfoError> {
    if !blob.starts_with(MAGIC) {
        return Err(BuildInfoError::NoMagic);
    }
    let header = blob
        .get(..HEADER_SIZE)
        .ok_or(BuildInfoError::Truncated("header"))?;
    let ptr_size = header[PTR_SIZE_OFFSET];
    let flags = header[FLAGS_OFFSET];
    let (version, mod_info) = if flags & FLAG_INLINE != 0 {
        let mut rest = &blob[HEADER_SIZE..];
        let version = read_inline_string(&mut rest, "version")?;
        let mod_info = read_inline_string(&mut rest, "module information")?;
        (version.to_vec(), mod_info.to_vec())
    } else {
        if ptr_size != 4 && ptr_size != 8 {
            return Err(BuildInfoError::BadPointerSize(ptr_size));
        }
        let big_endian = flags & FLAG_BIG_ENDIAN != 0;
        let word = |bytes: &[u8]| read_word(bytes, big_endian);
        let ptr_size = usize::from(ptr_size);
        let version_ptr = word(&header[POINTERS_OFFSET..POINTERS_OFFSET + ptr_size]);
        let mod_ptr = word(&header[POINTERS_OFFSET + ptr_size..POINTERS_OFFSET + 2 * ptr_size]);
        let version = read_string_header(memory, version_ptr, ptr_size, big_endian)?;
        // Module information is optional: a binary built without modules has an empty string.
        let mod_info =
            read_string_header(memory, mod_ptr, ptr_size, big_endian).unwrap_or_default();
        (version, mod_info)
    };
    let version = String::from_utf8(version).map_err(|_| BuildInfoError::NotUtf8)?;
    Ok(BuildInfo {
        version,
        mod_info: strip_modinfo_sentinels(&mod_info),
    })
}

/// Reads one uvarint-length-prefixed string and advances `rest` past it.
fn read_inline_string<'a>(
    rest: &mut &'a [u8],
    what: &'static str,
) -> Result<&'a [u8], BuildInfoError> {
    let len = read_uvarint(rest).ok_or(BuildInfoError::Truncated(what))?;
    if len > MAX_STRING_LEN {
        return Err(BuildInfoError::StringTooLong(len));
    }
    let len = usize::try_from(len).map_err(|_| BuildInfoError::StringTooLong(len))?;
    let bytes = rest.get(..len).ok_or(BuildInfoError::Truncated(what))?;
    *rest = &rest[len..];
    Ok(bytes)
}

/// Decodes an unsigned LEB128 value (Go's `binary.Uvarint`) and advances `rest` past it.
fn read_uvarint(rest: &mut &[u8]) -> Option<u64> {
    /// A u64 takes at most 10 groups of 7 bits.
    const MAX_VARINT_LEN: usize = 10;
    let mut value: u64 = 0;
    for (i, &byte) in rest.iter().enumerate().take(MAX_VARINT_LEN) {
        let low = u64::from(byte & 0x7f);
        let shifted = low.checked_shl(7 * i as u32)?;
        if (shifted >> (7 * i as u32)) != low {
            return None; // overflow past 64 bits
        }
        value |= shifted;
        if byte & 0x80 == 0 {
            *rest = &rest[i + 1..];
            return Some(value);
        }
    }
    None
}

/// Reads a 4- or 8-byte unsigned word.
fn read_word(bytes: &[u8], big_endian: bool) -> u64 {
    let mut buf = [0u8; 8];
    match (bytes.len(), big_endian) {
        (4, false) => buf[..4].copy_from_slice(bytes),
        (4, true) => buf[4..].copy_from_slice(bytes),
        (_, _) => buf.copy_from_slice(&bytes[..8]),
    }
    if big_endian {
        u64::from_be_bytes(buf)
    } else {
        u64::from_le_bytes(buf)
    }
}

/// Follows a pointer to a Go string header (`data`, `len`) and returns the string's bytes.
fn read_string_header(
    memory: &dyn AddressReader,
    addr: u64,
    ptr_size: usize,
    big_endian: bool,
) -> Result<Vec<u8>, BuildInfoError> {
    let header = memory
        .read(addr, 2 * ptr_size)
        .filter(|h| h.len() == 2 * ptr_size)
        .ok_or(BuildInfoError::BadPointer(addr))?;
    let data = read_word(&header[..ptr_size], big_endian);
    let len = read_word(&header[ptr_size..], big_endian);
    if len > MAX_STRING_LEN {
        return Err(BuildInfoError::StringTooLong(len));
    }
    let len = usize::try_from(len).map_err(|_| BuildInfoError::StringTooLong(len))?;
    memory
        .read(data, len)
        .filter(|s| s.len() == len)
        .ok_or(BuildInfoError::BadPointer(data))
}

/// Removes the 16-byte start and end markers around the module information, when present.
///
/// The module text always ends in a newline, so framed data is recognised by a newline just
/// before the end marker.
fn strip_modinfo_sentinels(raw: &[u8]) -> String {
    let framed =
        raw.len() > 2 * MODINFO_SENTINEL_LEN && raw[raw.len() - MODINFO_SENTINEL_LEN - 1] == b'\n';
    let text = if framed {
        &raw[MODINFO_SENTINEL_LEN..raw.len() - MODINFO_SENTINEL_LEN]
    } else {
        raw
    };
    String::from_utf8_lossy(text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No memory behind any address.
    fn no_memory(_: u64, _: usize) -> Option<Vec<u8>> {
        None
    }

    /// A Go 1.18+ inline blob for `version` and `mod_info`.
    fn inline_blob(version: &[u8], mod_info: &[u8]) -> Vec<u8> {
        let mut blob = MAGIC.to_vec();
        blob.push(8);
        blob.push(FLAG_INLINE);
        blob.resize(HEADER_SIZE, 0);
        blob.push(version.len() as u8);
        blob.extend_from_slice(version);
        push_uvarint(&mut blob, mod_info.len() as u64);
        blob.extend_from_slice(mod_info);
        blob
    }

    fn push_uvarint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    /// The sentinel-framed module information, as the Go linker writes it.
    fn framed(text: &str) -> Vec<u8> {
        let start = b"0w\xaf\x0c\x92t\x08\x02A\xe1\xc1\x07\xe6\xd6\x18\xe6";
        let end = b"\xf92C1\x86\x18 r\x00\x82B\x10A\x16\xd8\xf2";
        [&start[..], text.as_bytes(), &end[..]].concat()
    }

    #[test]
    fn parses_inline_format() {
        let mod_text =
            "path\tgoinfo\nmod\tgoinfo\t(devel)\t\nbuild\t-buildmode=pie\nbuild\tCGO_ENABLED=1\n";
        // A module string longer than 127 bytes exercises a two-byte uvarint.
        let long_mod = format!("{mod_text}{}", "dep\tx\tv1\n".repeat(20));
        let blob = inline_blob(b"go1.21.13", &framed(&long_mod));
        let info = parse(&blob, &no_memory).unwrap();
        assert_eq!(info.version, "go1.21.13");
        assert_eq!(info.mod_info, long_mod);
        assert_eq!(info.setting("-buildmode"), Some("pie"));
        assert_eq!(info.setting("CGO_ENABLED"), Some("1"));
        assert_eq!(info.setting("GOARCH"), None);
    }

    #[test]
    fn parses_inline_format_without_modules() {
        let info = parse(&inline_blob(b"go1.19.8", b""), &no_memory).unwrap();
        assert_eq!(info.version, "go1.19.8");
        assert_eq!(info.mod_info, "");
    }

    /// Old (Go 1.13-1.17) format: pointers to string headers, in both byte orders and sizes.
    #[test]
    fn parses_pointer_format() {
        for (ptr_size, big_endian) in [(8usize, false), (4, false), (4, true), (8, true)] {
            let word = |v: u64| -> Vec<u8> {
                match (ptr_size, big_endian) {
                    (8, false) => v.to_le_bytes().to_vec(),
                    (8, true) => v.to_be_bytes().to_vec(),
                    (_, false) => (v as u32).to_le_bytes().to_vec(),
                    (_, true) => (v as u32).to_be_bytes().to_vec(),
                }
            };
            // Memory image at 0x1000: [version header][mod header][version bytes][mod bytes]
            let base = 0x1000u64;
            let version = b"go1.16.15";
            let modinfo = framed("path\tx\n");
            let hdr = 2 * ptr_size as u64;
            let mut image = Vec::new();
            image.extend(word(base + 2 * hdr));
            image.extend(word(version.len() as u64));
            image.extend(word(base + 2 * hdr + version.len() as u64));
            image.extend(word(modinfo.len() as u64));
            image.extend_from_slice(version);
            image.extend_from_slice(&modinfo);
            let memory = move |addr: u64, len: usize| -> Option<Vec<u8>> {
                let start = usize::try_from(addr.checked_sub(base)?).ok()?;
                image
                    .get(start..start.checked_add(len)?)
                    .map(<[u8]>::to_vec)
            };
            let mut blob = MAGIC.to_vec();
            blob.push(ptr_size as u8);
            blob.push(if big_endian { FLAG_BIG_ENDIAN } else { 0 });
            blob.extend(word(base));
            blob.extend(word(base + hdr));
            blob.resize(HEADER_SIZE, 0);
            let info = parse(&blob, &memory).unwrap();
            assert_eq!(info.version, "go1.16.15", "{ptr_size} {big_endian}");
            assert_eq!(info.mod_info, "path\tx\n");
        }
    }

    #[test]
    fn finds_aligned_magic_only() {
        let mut data = vec![0u8; 64];
        data[3..17].copy_from_slice(MAGIC);
        assert_eq!(find_magic(&data), None);
        data[32..46].copy_from_slice(MAGIC);
        assert_eq!(find_magic(&data), Some(32));
        assert_eq!(find_magic(&[]), None);
    }

    #[test]
    fn malformed_blobs_are_errors_not_panics() {
        assert_eq!(parse(b"", &no_memory), Err(BuildInfoError::NoMagic));
        assert_eq!(
            parse(MAGIC, &no_memory),
            Err(BuildInfoError::Truncated("header"))
        );
        // Inline, version length runs past the end.
        let mut blob = inline_blob(b"go1.21.0", b"");
        blob.truncate(HEADER_SIZE + 4);
        assert_eq!(
            parse(&blob, &no_memory),
            Err(BuildInfoError::Truncated("version"))
        );
        // Inline, unterminated varint.
        let mut blob = inline_blob(b"", b"");
        blob.truncate(HEADER_SIZE);
        blob.extend([0xff; 12]);
        assert!(parse(&blob, &no_memory).is_err());
        // Inline, huge length.
        let mut blob = inline_blob(b"", b"");
        blob.truncate(HEADER_SIZE);
        push_uvarint(&mut blob, u64::MAX);
        assert_eq!(
            parse(&blob, &no_memory),
            Err(BuildInfoError::StringTooLong(u64::MAX))
        );
        // Not UTF-8.
        assert_eq!(
            parse(&inline_blob(b"go\xff", b""), &no_memory),
            Err(BuildInfoError::NotUtf8)
        );
        // Old format with a bad pointer size and with dangling pointers.
        let mut blob = MAGIC.to_vec();
        blob.extend([3, 0]);
        blob.resize(HEADER_SIZE, 0);
        assert_eq!(
            parse(&blob, &no_memory),
            Err(BuildInfoError::BadPointerSize(3))
        );
        blob[PTR_SIZE_OFFSET] = 8;
        assert_eq!(parse(&blob, &no_memory), Err(BuildInfoError::BadPointer(0)));
        // Every truncation and every single-byte corruption of a valid blob: no panic.
        let good = inline_blob(b"go1.27.3", &framed("path\tx\n"));
        for len in 0..good.len() {
            let _ = parse(&good[..len], &no_memory);
        }
        for i in 0..good.len() {
            for byte in [0x00, 0x7f, 0x80, 0xff] {
                let mut bad = good.clone();
                bad[i] = byte;
                let _ = parse(&bad, &no_memory);
            }
        }
    }
}
