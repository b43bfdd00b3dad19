//! Sizes (`1GiB`, `500MB`, `4096`) and durations (`26h`, `1h30m`, `7d`).

use std::time::Duration;

/// Parses a size: a number (decimals allowed) and an optional unit. Binary units: `K`, `KiB`,
/// `M`, `MiB`, `G`, `GiB`, `T`, `TiB`; decimal units: `KB`, `MB`, `GB`, `TB`; `B` or none: bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let unit = unit.trim();
    let bad = || format!("{text:?} is not a size (e.g. \"512MiB\", \"1GiB\", \"20GB\")");
    if number.is_empty() || number.starts_with('.') || number.matches('.').count() > 1 {
        return Err(bad());
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    let value = match number.split_once('.') {
        None => number
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(multiplier)),
        Some((whole, frac)) => {
            let whole: u64 = whole.parse().map_err(|_| bad())?;
            let digits = frac.len().min(9) as u32;
            let frac: u64 = if frac.is_empty() {
                0
            } else {
                frac[..digits as usize].parse().map_err(|_| bad())?
            };
            let scale = 10u64.pow(digits);
            whole.checked_mul(multiplier).and_then(|w| {
                let part = u128::from(frac) * u128::from(multiplier) / u128::from(scale);
                w.checked_add(u64::try_from(part).ok()?)
            })
        }
    };
    value.ok_or_else(|| format!("{text:?} is too large"))
}

/// The longest duration a config may give: 100 years (36525 days). Longer ones are surely
/// typos, and time arithmetic on them would overflow.
pub const MAX_DURATION_SECS: u64 = 36_525 * 86_400;

/// Parses a duration: one or more `NUMBER UNIT` parts, units `s`, `m`/`min`, `h`, `d`, `w`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration (e.g. \"26h\", \"1h30m\", \"7d\")");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = rest[digits..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "s" => 1,
            "m" | "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            "w" => 604_800,
            _ => return Err(bad()),
        };
        rest = rest[unit_len..].trim_start();
        total = n
            .checked_mul(seconds)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if total == 0 {
        return Err(format!("{text:?}: a duration must be longer than zero"));
    }
    if total > MAX_DURATION_SECS {
        return Err(format!("{text:?} is longer than 100 years"));
    }
    Ok(Duration::from_secs(total))
}

/// The compact form of a duration, e.g. `1d2h`, `26h` stays `1d2h`.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("w", 604_800),
        ("d", 86_400),
        ("h", 3600),
        ("m", 60),
        ("s", 1),
    ] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let good = [
            ("0", 0),
            ("4096", 4096),
            ("1B", 1),
            ("1K", 1024),
            ("1k", 1024),
            ("1KiB", 1024),
            ("1MiB", 1 << 20),
            ("1 GiB", 1 << 30),
            ("1.5GiB", 3 << 29),
            ("2TiB", 2 << 40),
            ("1KB", 1000),
            ("20GB", 20_000_000_000),
        ];
        for (text, want) in good {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
        for bad in [
            "",
            "GiB",
            "-1GiB",
            "1XB",
            "1.2.3G",
            ".5G",
            "99999999999999999999",
            "20000000TiB",
        ] {
            assert!(parse_size(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn durations() {
        let good = [
            ("26h", 26 * 3600),
            ("90m", 5400),
            ("1h30m", 5400),
            ("7d", 604_800),
            ("2w", 1_209_600),
            ("45s", 45),
            ("1d 12h", 129_600),
            ("5min", 300),
        ];
        for (text, want) in good {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(want)),
                "{text}"
            );
        }
        assert_eq!(
            parse_duration("36525d"),
            Ok(Duration::from_secs(MAX_DURATION_SECS))
        );
        for bad in [
            "",
            "h",
            "0h",
            "26",
            "26x",
            "1h-",
            "-1h",
            "36526d",
            "999999999d",
            "9223372036854775808s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should fail");
        }
        assert_eq!(format_duration(Duration::from_secs(26 * 3600)), "1d2h");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }
}
