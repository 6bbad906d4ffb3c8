//! Units for people, one convention everywhere: sizes in binary units (KiB, MiB, GiB: Go sizes
//! stacks in powers of two, and `--stack-alert 1MB` means 1 MiB), durations in s/min/h.

/// Binary size units, largest first.
const SIZE_UNITS: [(&str, u64); 4] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
];

/// A size for people: `512 B`, `64 KiB`, `1.5 MiB`, `1 GiB` (a whole number of the unit is
/// printed without decimals).
pub fn human_bytes(n: u64) -> String {
    for (name, size) in SIZE_UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {name}", n / size);
        }
        if n >= size {
            return format!("{:.1} {name}", n as f64 / size as f64);
        }
    }
    format!("{n} B")
}

/// Seconds for people: `45 s`, `12 min`, `3.5 h`.
pub fn human_secs(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 2.0 * 3600.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Parses a size: `1048576`, `512K`, `512KB`, `512KiB`, `1M`, `1MB`, `1MiB`, `1G`...
///
/// `KB`/`MB`/`GB` are binary (1024-based), as [`human_bytes`] prints them.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 1MB, 512KiB, 65536)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    let bytes = value * mult as f64;
    if !(bytes >= 1.0 && bytes.is_finite() && bytes < u64::MAX as f64) {
        return Err(format!("size must be positive, got {s:?}"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_print_in_binary_units() {
        assert_eq!(human_secs(30.0), "30 s");
        assert_eq!(human_secs(600.0), "10 min");
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(1 << 20), "1 MiB");
        assert_eq!(human_bytes(1_000_000_000), "953.7 MiB");
        assert_eq!(human_bytes(1 << 30), "1 GiB");
    }

    #[test]
    fn sizes_parse_as_they_print() {
        assert_eq!(parse_size("1MB"), Ok(1 << 20));
        assert_eq!(parse_size("512KiB"), Ok(512 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1.5M"), Ok(3 << 19));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("0").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("MB").is_err());
        for n in [1024, 1 << 20, 3 << 19, 1 << 30] {
            let printed = human_bytes(n).replace(' ', "");
            assert_eq!(parse_size(&printed), Ok(n), "{printed}");
        }
    }
}
