//! `[ipam]` checks itself here (a `config::SectionCheck`), not in `config`.

use std::time::Duration;

use crate::config::{within, Config};

/// Bounds of `[ipam]`; errors start with the key.
pub fn check_section(config: &Config) -> Result<(), String> {
    let c = &config.ipam;
    let s = Duration::from_secs;
    within("ipam.interval", c.interval, s(1), s(86_400))?;
    within("ipam.min_gap", c.min_gap, s(1), s(7 * 86_400))?;
    if c.release_limit == 0 || c.release_limit > 10_000 {
        return Err(format!("ipam.release_limit: {} is not within 1..=10000", c.release_limit));
    }
    if c.report_dir.as_os_str().is_empty() {
        return Err("ipam.report_dir: must name a directory".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipam_section_is_checked() {
        for (text, key) in [
            ("[ipam]\ninterval = \"0s\"\n", "line 2: key `ipam.interval`"),
            ("[ipam]\nrelease_limit = 0\n", "line 2: key `ipam.release_limit`"),
            ("[ipam]\nmin_gap = \"30d\"\n", "line 2: key `ipam.min_gap`"),
        ] {
            let e = Config::from_toml_checked(text, "cfg.toml", &[check_section]).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} → {e}");
        }
        let c = Config::from_toml_checked("[ipam]\nrelease = true\nmin_gap = \"1s\"\n", "t", &[check_section]).unwrap();
        assert!(c.ipam.release);
        assert_eq!(c.ipam.min_gap, Duration::from_secs(1));
    }
}
