//! The text side of the configuration: durations, MACs and probe targets from TOML,
//! bounds checks that name their key, and error lines that name key and line.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::probe::ProbeTarget;
use crate::workload::MacAddr;

/// A duration key within [min, max].
pub fn within(key: &str, value: Duration, min: Duration, max: Duration) -> Result<(), String> {
    if value < min || value > max {
        return Err(format!("{key}: {value:?} is out of range (must be between {min:?} and {max:?})"));
    }
    Ok(())
}

/// A count key within [min, max].
pub fn count(key: &str, value: u64, min: u64, max: u64) -> Result<(), String> {
    if value < min || value > max {
        return Err(format!("{key}: {value} is out of range (must be between {min} and {max})"));
    }
    Ok(())
}

/// `key: reason` → `line N: key `key`: reason` when the key is written in `text`
/// (a key left at its default has no line).
pub(crate) fn with_line(err: &str, text: &str) -> String {
    let Some((key, reason)) = err.split_once(": ") else { return err.to_string() };
    let (table, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = String::new();
    for (n, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            current = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        } else if current == table && t.split('=').next().map(str::trim) == Some(name) && t.contains('=') {
            return format!("line {}: key `{key}`: {reason}", n + 1);
        }
    }
    format!("key `{key}`: {reason}")
}

/// One line naming the offending key (with its table) and the line number.
pub(crate) fn one_line(e: &toml::de::Error, text: &str) -> String {
    let msg = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else { return msg };
    let offset = span.start.min(text.len());
    let line_no = text[..offset].matches('\n').count() + 1;
    let mut table = String::new();
    for line in text[..offset].lines() {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
    }
    let line = text.lines().nth(line_no - 1).unwrap_or_default();
    let key = line.split('=').next().unwrap_or_default().trim();
    let key = match (table.is_empty(), key.is_empty() || key.starts_with('[')) {
        (_, true) => return format!("line {line_no}: {msg}"),
        (true, false) => key.to_string(),
        (false, false) => format!("{table}.{key}"),
    };
    format!("line {line_no}: key `{key}`: {msg}")
}

/// Parses `250ms`, `30s`, `5m`, `1h` (a bare number means seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let value: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (use e.g. 500ms, 30s, 5m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{s:?} is not a valid duration"));
    }
    // Never `from_secs_f64`: it panics on values a Duration cannot hold.
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is too long a duration"))
}

pub(crate) fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Secs(i64),
        Float(f64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        Raw::Secs(n) if n >= 0 => Ok(Duration::from_secs(n as u64)),
        Raw::Secs(n) => Err(serde::de::Error::custom(format!("{n} is a negative duration"))),
        Raw::Float(f) if f.is_finite() && f >= 0.0 => Duration::try_from_secs_f64(f)
            .map_err(|_| serde::de::Error::custom(format!("{f:e} seconds is too long a duration"))),
        Raw::Float(f) => Err(serde::de::Error::custom(format!("{f} is not a valid duration"))),
    }
}

pub(crate) fn de_targets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ProbeTarget>, D::Error> {
    Vec::<String>::deserialize(d)?.iter().map(|s| s.parse().map_err(serde::de::Error::custom)).collect()
}

pub(crate) fn de_opt_mac<'de, D: Deserializer<'de>>(d: D) -> Result<Option<MacAddr>, D::Error> {
    let s = String::deserialize(d)?;
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(serde::de::Error::custom)
}
