//! `[marathon]` as the escalation core sees it: its checks (this section validates
//! itself here, not in `config`) and the escalation `Settings` it yields.

use std::time::Duration;

use super::escalate::Settings;
use crate::config::{count, within, Config, MarathonConfig};

impl MarathonConfig {
    /// The escalation core's settings; `dry_run` adds the daemon's own dry run.
    /// (A method of the config's plain data, defined here so that `config` does
    /// not import `marathon`.)
    pub fn settings(&self, dry_run: bool) -> Settings {
        Settings {
            escalate_after: self.escalate_after,
            unreachable_after: self.unreachable_after,
            max_kills_per_hour: self.max_kills_per_hour,
            min_task_age: self.min_task_age,
            dry_run: self.dry_run || dry_run,
            host_breaker_share: self.host_breaker_share,
            host_breaker_min: self.host_breaker_min as usize,
            agent_error_breaker: self.agent_error_breaker as usize,
        }
    }
}

/// An absolute http(s) URL with a host, without credentials, query or fragment
/// (credentials in a URL would end up in logs).
fn check_marathon_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.contains('@') {
        return Err("credentials in a URL are not allowed (use user/password_file or token_file)".into());
    }
    if authority.is_empty() || url.contains(['?', '#']) || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{url:?} is not a base URL (scheme://host[:port][/path], no query)"));
    }
    Ok(())
}

/// Checks `[marathon]` (a `config::SectionCheck` through `check_section`): bounds,
/// URLs without credentials, and credentials given one way only. Errors start
/// with the key.
pub fn validate(c: &MarathonConfig) -> Result<(), String> {
    count("marathon.escalate_after", u64::from(c.escalate_after), 1, 1000)?;
    count("marathon.max_kills_per_hour", u64::from(c.max_kills_per_hour), 0, 1000)?;
    count("marathon.host_breaker_min", u64::from(c.host_breaker_min), 1, 100_000)?;
    count("marathon.agent_error_breaker", u64::from(c.agent_error_breaker), 1, 100_000)?;
    if !c.state_file.starts_with('/') {
        return Err(format!("marathon.state_file: {:?} must be an absolute path", c.state_file));
    }
    let s = Duration::from_secs;
    within("marathon.unreachable_after", c.unreachable_after, s(1), s(86_400))?;
    within("marathon.min_task_age", c.min_task_age, Duration::ZERO, s(7 * 86_400))?;
    within("marathon.request_timeout", c.request_timeout, Duration::from_millis(100), s(60))?;
    if !(c.host_breaker_share > 0.0 && c.host_breaker_share <= 1.0) {
        return Err(format!(
            "marathon.host_breaker_share: {} is out of range (must be > 0 and <= 1)",
            c.host_breaker_share
        ));
    }
    for url in &c.urls {
        check_marathon_url(url).map_err(|why| format!("marathon.urls: {why}"))?;
    }
    if c.enabled && c.urls.is_empty() {
        return Err("marathon.enabled: escalation needs at least one URL in marathon.urls".into());
    }
    if c.user.is_empty() != c.password_file.is_empty() {
        return Err("marathon.password_file: basic auth needs both user and password_file".into());
    }
    if !c.user.is_empty() && !c.token_file.is_empty() {
        return Err("marathon.token_file: use either user/password_file or token_file, not both".into());
    }
    Ok(())
}

/// `validate` over the whole configuration: the `config::SectionCheck` of `[marathon]`.
pub fn check_section(config: &Config) -> Result<(), String> {
    validate(&config.marathon)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    #[test]
    fn marathon_section_is_checked() {
        let c = Config::from_toml_checked(
            "[marathon]\nenabled = true\nurls = [\"http://m1:8080\", \"https://master/marathon/\"]\nuser = \"ops\"\npassword_file = \"/etc/pw\"\nmin_task_age = \"0s\"\ndefault_policy = \"escalate\"\n",
            "t",
            &[check_section],
        )
        .unwrap();
        assert_eq!(c.marathon.urls.len(), 2);
        assert_eq!(c.marathon.default_policy, Policy::Escalate);
        for (text, key) in [
            ("[marathon]\nenabled = true\n", "marathon.enabled"),
            ("[marathon]\nurls = [\"http://ops:hunter2@m1:8080\"]\n", "marathon.urls"),
            ("[marathon]\nurls = [\"m1:8080\"]\n", "marathon.urls"),
            ("[marathon]\nurls = [\"http://m1/?x=1\"]\n", "marathon.urls"),
            ("[marathon]\nuser = \"ops\"\n", "marathon.password_file"),
            ("[marathon]\nuser = \"o\"\npassword_file = \"p\"\ntoken_file = \"t\"\n", "marathon.token_file"),
            ("[marathon]\nhost_breaker_share = 0.0\n", "marathon.host_breaker_share"),
            ("[marathon]\nhost_breaker_share = 1.5\n", "marathon.host_breaker_share"),
            ("[marathon]\nescalate_after = 0\n", "marathon.escalate_after"),
            ("[marathon]\nrequest_timeout = \"10m\"\n", "marathon.request_timeout"),
            ("[marathon]\ndefault_policy = \"kill\"\n", "marathon.default_policy"),
        ] {
            let e = Config::from_toml_checked(text, "cfg.toml", &[check_section]).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} → {e}");
            assert!(!e.contains("hunter2"), "no credentials in errors: {e}");
        }
    }
}
