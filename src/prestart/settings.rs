//! `[prestart]` validates itself here, not in `config` (where its type is plain data).

use std::time::Duration;

use crate::config::{within, Config, PrestartConfig};

/// Checks `[prestart]` (a `config::SectionCheck` through `check_section`): the
/// follow window's bounds and absolute sandbox directories. Errors start with the key.
pub fn validate(c: &PrestartConfig) -> Result<(), String> {
    within("prestart.follow", c.follow, Duration::from_millis(10), Duration::from_secs(60))?;
    within("prestart.hook_deadline", c.hook_deadline, Duration::from_millis(50), Duration::from_secs(5))?;
    if !c.hook_socket.is_absolute() {
        return Err("prestart.hook_socket: must be an absolute path".into());
    }
    if c.sandbox_dirs.iter().any(|d| !d.is_absolute()) {
        return Err("prestart.sandbox_dirs: every directory must be an absolute path".into());
    }
    Ok(())
}

/// `validate` over the whole configuration: the `config::SectionCheck` of `[prestart]`.
pub fn check_section(config: &Config) -> Result<(), String> {
    validate(&config.prestart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prestart_section_is_checked() {
        for (text, key) in [
            ("[prestart]\nfollow = \"1ms\"\n", "line 2: key `prestart.follow`"),
            ("[prestart]\nfollow = \"2m\"\n", "line 2: key `prestart.follow`"),
            ("[prestart]\nsandbox_dirs = [\"run/netns\"]\n", "line 2: key `prestart.sandbox_dirs`"),
            ("[prestart]\nhook_deadline = \"10s\"\n", "line 2: key `prestart.hook_deadline`"),
            ("[prestart]\nhook_socket = \"hook.sock\"\n", "line 2: key `prestart.hook_socket`"),
        ] {
            let e = Config::from_toml_checked(text, "cfg.toml", &[check_section]).unwrap_err().to_string();
            assert!(e.contains(key), "{text:?} → {e}");
        }
        assert!(Config::from_toml_checked("[prestart]\nfollow = \"10ms\"\n", "t", &[check_section]).is_ok());
    }
}
