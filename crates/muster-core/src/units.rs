//! Human-friendly quantities in specs: memory sizes (`2GiB`, `2 G`) and
//! durations (`90s`, `2m`, or a bare number of seconds). Parsing follows Dask's
//! own `parse_bytes` so a size means the same to muster as to `dask worker`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A memory size in bytes.
///
/// Decimal units (`k`, `M`, `G`, `T`, `P`, with or without a trailing `B`) are
/// powers of 1000, binary units (`Ki`, `Mi`, `Gi`, ... with or without `B`) are
/// powers of 1024, case-insensitively, exactly as Dask reads them. A space
/// between the number and the unit is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Memory(pub u64);

/// Why a memory size could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    /// Nothing was given.
    #[error("empty memory size")]
    Empty,
    /// The number part is not a non-negative finite number.
    #[error("{0:?} is not a number (expected e.g. 2GiB, 512MB, 2 G)")]
    BadNumber(String),
    /// The unit is not one Dask knows.
    #[error("unknown unit {0:?} (expected B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)")]
    BadUnit(String),
    /// The size does not fit in 64 bits.
    #[error("memory size is too large")]
    TooLarge,
}

impl Memory {
    /// One gibibyte.
    pub const GIB: u64 = 1 << 30;

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

fn unit_factor(unit: &str) -> Option<u64> {
    let unit = unit.to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    Some(match unit {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        "t" => 1_000_000_000_000,
        "p" => 1_000_000_000_000_000,
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        "ti" => 1 << 40,
        "pi" => 1 << 50,
        _ => return None,
    })
}

impl FromStr for Memory {
    type Err = MemoryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(MemoryError::Empty);
        }
        // The number: digits, a decimal point, and an exponent (`4e9`, as
        // Dask's parse_bytes reads it).
        let b = s.as_bytes();
        let mut split = b
            .iter()
            .position(|c| !(c.is_ascii_digit() || *c == b'.'))
            .unwrap_or(b.len());
        if split > 0 && split < b.len() && b[split].eq_ignore_ascii_case(&b'e') {
            let mut end = split + 1;
            if end < b.len() && (b[end] == b'+' || b[end] == b'-') {
                end += 1;
            }
            let digits = b[end..].iter().take_while(|c| c.is_ascii_digit()).count();
            if digits > 0 {
                split = end + digits;
            }
        }
        let (number, unit) = s.split_at(split);
        let unit = unit.trim_start();
        if number.is_empty() {
            return Err(MemoryError::BadNumber(s.to_string()));
        }
        let factor = unit_factor(unit).ok_or_else(|| MemoryError::BadUnit(unit.to_string()))?;
        if let Ok(whole) = number.parse::<u64>() {
            return whole
                .checked_mul(factor)
                .map(Memory)
                .ok_or(MemoryError::TooLarge);
        }
        let value: f64 = number
            .parse()
            .map_err(|_| MemoryError::BadNumber(number.to_string()))?;
        let bytes = value * factor as f64;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(MemoryError::TooLarge);
        }
        Ok(Memory(bytes as u64))
    }
}

impl fmt::Display for Memory {
    /// The shortest exact rendering: `2GiB`, `1536MiB`, `2GB`, or plain bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 8] = [
            (1 << 40, "TiB"),
            (1_000_000_000_000, "TB"),
            (1 << 30, "GiB"),
            (1_000_000_000, "GB"),
            (1 << 20, "MiB"),
            (1_000_000, "MB"),
            (1 << 10, "KiB"),
            (1_000, "kB"),
        ];
        for (factor, name) in UNITS {
            if self.0 >= factor && self.0.is_multiple_of(factor) {
                return write!(f, "{}{name}", self.0 / factor);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for Memory {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Memory {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Float(f64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a memory size such as 2GiB, 512MB or 4e9")
        })? {
            Raw::Int(n) => Ok(Memory(n)),
            Raw::Float(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                Ok(Memory(f as u64))
            }
            Raw::Float(f) => Err(serde::de::Error::custom(format!(
                "{f} is not a memory size"
            ))),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// A duration written as a bare number of seconds or as `90s`, `2m`, `1h 30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seconds(pub Duration);

impl Seconds {
    /// A duration of `n` seconds.
    pub const fn from_secs(n: u64) -> Self {
        Seconds(Duration::from_secs(n))
    }

    /// The wrapped duration.
    pub fn duration(self) -> Duration {
        self.0
    }
}

impl FromStr for Seconds {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(n) = s.parse::<u64>() {
            return Ok(Seconds::from_secs(n));
        }
        // Fractional seconds, as Dask takes them (`death-timeout: 1.5`).
        if let Ok(f) = s.parse::<f64>()
            && f.is_finite()
            && (0.0..1e12).contains(&f)
        {
            return Ok(Seconds(Duration::from_secs_f64(f)));
        }
        humantime::parse_duration(s)
            .map(Seconds)
            .map_err(|e| format!("{s:?} is not a duration (expected e.g. 60, 90s, 2m): {e}"))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Float(f64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected a duration such as 60, 1.5, 90s or 2m")
        })? {
            Raw::Int(n) => Ok(Seconds::from_secs(n)),
            Raw::Float(f) => f.to_string().parse().map_err(serde::de::Error::custom),
            Raw::Text(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_accepts_the_spellings_users_write() {
        let cases = [
            ("2GiB", 2 << 30),
            ("2GB", 2_000_000_000),
            ("2048MiB", 2 << 30),
            ("2 G", 2_000_000_000),
            ("2gib", 2 << 30),
            ("1.5GiB", 3 << 29),
            ("512", 512),
            ("512B", 512),
            ("4 Ki", 4096),
            ("4e9", 4_000_000_000),
            ("1.5e3MB", 1_500_000_000),
            (" 1 TB ", 1_000_000_000_000),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<Memory>(), Ok(Memory(bytes)), "{text}");
        }
    }

    #[test]
    fn memory_rejects_nonsense() {
        assert_eq!("".parse::<Memory>(), Err(MemoryError::Empty));
        assert!(matches!(
            "2XB".parse::<Memory>(),
            Err(MemoryError::BadUnit(_))
        ));
        assert!(matches!(
            "GiB".parse::<Memory>(),
            Err(MemoryError::BadNumber(_))
        ));
        assert!(matches!(
            "1.2.3G".parse::<Memory>(),
            Err(MemoryError::BadNumber(_))
        ));
        assert!(matches!(
            "-1G".parse::<Memory>(),
            Err(MemoryError::BadNumber(_))
        ));
        assert_eq!(
            "99999999999PiB".parse::<Memory>(),
            Err(MemoryError::TooLarge)
        );
        assert!(matches!(
            "$(rm -rf /)".parse::<Memory>(),
            Err(MemoryError::BadNumber(_))
        ));
    }

    #[test]
    fn memory_displays_exactly_and_round_trips() {
        for text in ["2GiB", "2GB", "1536MiB", "7B", "3TiB"] {
            let m: Memory = text.parse().unwrap();
            assert_eq!(m.to_string(), text);
            assert_eq!(m.to_string().parse::<Memory>().unwrap(), m);
        }
    }

    #[test]
    fn seconds_parse() {
        assert_eq!("60".parse::<Seconds>(), Ok(Seconds::from_secs(60)));
        assert_eq!("2m".parse::<Seconds>(), Ok(Seconds::from_secs(120)));
        assert_eq!("1m 30s".parse::<Seconds>(), Ok(Seconds::from_secs(90)));
        assert_eq!(
            "1.5".parse::<Seconds>(),
            Ok(Seconds(Duration::from_millis(1500)))
        );
        assert!("soon".parse::<Seconds>().is_err());
        assert!("-1".parse::<Seconds>().is_err());
        assert!("NaN".parse::<Seconds>().is_err());
    }
}
