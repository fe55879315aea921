//! Marathon's REST API (1.4–1.10), only what escalation needs:
//! `GET /v2/apps/{appId}/tasks` and `GET /v2/apps/{appId}` — Marathon's own view of
//! a task, which must confirm it before any kill (`confirm`; answers read up to
//! `[limits] marathon_answer_bytes`); `DELETE /v2/apps/{appId}/tasks/{taskId}?scale=false` — kill one
//! task and let Marathon start a replacement (the app is never scaled down, `force`
//! never set).
//! Several URLs (an HA Marathon): the next one is tried when one cannot answer
//! (connection error, timeout, 5xx such as 503 "no leader"); an answer (2xx, 404,
//! 401/403, 409) ends the round. Credentials (basic auth, or a DC/OS token sent as
//! `Authorization: token=…`) are read from files and never logged.

use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

use super::confirm::{confirm, AppAnswer, AppTasks, NotConfirmed, ThisHost};
use crate::config::MarathonConfig;
use crate::error::MedicError;

/// How one kill request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillResult {
    /// 2xx: Marathon is killing the task (and will start a replacement).
    Killed { url: String },
    /// 404: the task (or app) is already gone: nothing left to kill.
    AlreadyGone { url: String },
    /// Not killed; why (no secrets in it). Retried later with backoff.
    Failed { why: String },
}

enum Auth {
    None,
    Basic { user: String, password: String },
    Token(HeaderValue),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("none"),
            Auth::Basic { user, .. } => write!(f, "basic (user {user:?}, password redacted)"),
            Auth::Token(_) => f.write_str("token (redacted)"),
        }
    }
}

#[derive(Debug)]
pub struct MarathonClient {
    http: reqwest::Client,
    urls: Vec<String>,
    auth: Auth,
    timeout: Duration,
    /// The ceiling of one answer read from Marathon (an app's task list), in bytes.
    max_answer_bytes: u64,
}

fn read_secret(key: &str, path: &str) -> Result<String, MedicError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| MedicError::ConfigIo { context: format!("marathon.{key}: reading {path}"), source: e })?;
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        return Err(MedicError::Config(format!("marathon.{key}: {path} is empty")));
    }
    Ok(secret)
}

impl MarathonClient {
    /// The client for `[marathon]`, reading answers up to `max_answer_bytes`
    /// (`[limits] marathon_answer_bytes`); `None` when escalation is off. Reads the
    /// credential and CA files now, so a bad file fails start/reload, not a kill.
    pub fn from_config(c: &MarathonConfig, max_answer_bytes: u64) -> Result<Option<MarathonClient>, MedicError> {
        if !c.enabled {
            return Ok(None);
        }
        // One TLS stack for the process (rustls with ring); installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let auth = if !c.token_file.is_empty() {
            let mut value = HeaderValue::from_str(&format!("token={}", read_secret("token_file", &c.token_file)?))
                .map_err(|_| MedicError::Config("marathon.token_file: the token is not a valid header value".into()))?;
            value.set_sensitive(true);
            Auth::Token(value)
        } else if !c.user.is_empty() {
            Auth::Basic { user: c.user.clone(), password: read_secret("password_file", &c.password_file)? }
        } else {
            Auth::None
        };
        let mut builder = reqwest::Client::builder()
            .timeout(c.request_timeout)
            .connect_timeout(c.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("calico-medic/", env!("CARGO_PKG_VERSION")));
        if !c.ca_file.is_empty() {
            let pem = std::fs::read(&c.ca_file).map_err(|e| MedicError::ConfigIo {
                context: format!("marathon.ca_file: reading {}", c.ca_file),
                source: e,
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| MedicError::ConfigTls {
                context: format!("marathon.ca_file: {}", c.ca_file),
                source: e,
            })?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder
            .build()
            .map_err(|e| MedicError::ConfigTls { context: "marathon: building the HTTP client".into(), source: e })?;
        let urls = c.urls.iter().map(|u| u.trim_end_matches('/').to_string()).collect();
        Ok(Some(MarathonClient { http, urls, auth, timeout: c.request_timeout, max_answer_bytes }))
    }

    fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Auth::None => req,
            Auth::Basic { user, password } => req.basic_auth(user, Some(password)),
            Auth::Token(value) => req.header(AUTHORIZATION, value.clone()),
        }
    }

    /// Marathon's view of `task` of `app` allows a kill (see `confirm::confirm`);
    /// otherwise which check failed. The app's definition is asked for only when
    /// `require_unhealthy` needs to know whether it has health checks.
    pub async fn confirm(
        &self,
        app: &str,
        task: &str,
        host: &ThisHost,
        endpoint_ips: &[Ipv4Addr],
        require_unhealthy: bool,
    ) -> Result<(), NotConfirmed> {
        let listed: AppTasks =
            self.get_json(&format!("/v2/apps{app}/tasks")).await.map_err(NotConfirmed::Unanswered)?;
        confirm(&listed.tasks, task, host, endpoint_ips, Some(false), require_unhealthy)?;
        if require_unhealthy {
            let def: AppAnswer = self.get_json(&format!("/v2/apps{app}")).await.map_err(NotConfirmed::Unanswered)?;
            let checked = !def.app.health_checks.is_empty();
            confirm(&listed.tasks, task, host, endpoint_ips, Some(checked), require_unhealthy)?;
        }
        Ok(())
    }

    /// GET `path` from the first URL that answers; its JSON body, read up to
    /// `max_answer_bytes`.
    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, String> {
        let mut why = String::from("no Marathon URL configured");
        for base in &self.urls {
            let req = self.authorized(self.http.get(format!("{base}{path}")).header(ACCEPT, "application/json"));
            let mut resp = match req.send().await {
                Ok(resp) => resp,
                Err(e) => {
                    why = format!("{base}: {}", describe(e, self.timeout));
                    continue;
                }
            };
            let status = resp.status();
            if status.is_server_error() {
                why = format!("{base}: {status}");
                continue;
            }
            if !status.is_success() {
                return Err(format!("{base}: {status}"));
            }
            let (mut body, max) = (Vec::new(), self.max_answer_bytes);
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) if (body.len() + chunk.len()) as u64 <= max => body.extend_from_slice(&chunk),
                    Ok(Some(_)) => return Err(format!("{base}: answer larger than {max} bytes")),
                    Ok(None) => break,
                    Err(e) => return Err(format!("{base}: {}", describe(e, self.timeout))),
                }
            }
            return serde_json::from_slice(&body).map_err(|e| format!("{base}: not Marathon's answer: {e}"));
        }
        Err(why)
    }

    /// Asks Marathon to kill `task` of `app` (ids already checked by
    /// `escalate::marathon_ids_valid`: URL-safe characters only).
    pub async fn kill(&self, app: &str, task: &str) -> KillResult {
        let mut why = String::from("no Marathon URL configured");
        for base in &self.urls {
            let url = kill_url(base, app, task);
            let req = self.authorized(self.http.delete(&url));
            let status = match req.send().await {
                Ok(resp) => resp.status(),
                Err(e) => {
                    why = format!("{base}: {}", describe(e, self.timeout));
                    continue; // cannot answer: try the next URL
                }
            };
            match status {
                s if s.is_success() => return KillResult::Killed { url: base.clone() },
                StatusCode::NOT_FOUND => return KillResult::AlreadyGone { url: base.clone() },
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return KillResult::Failed { why: format!("{base}: not authorized ({status})") }
                }
                StatusCode::CONFLICT => {
                    return KillResult::Failed { why: format!("{base}: app locked by a deployment ({status})") }
                }
                s if s.is_server_error() => why = format!("{base}: {status}"),
                s => return KillResult::Failed { why: format!("{base}: unexpected answer {s}") },
            }
        }
        KillResult::Failed { why }
    }
}

/// `{base}/v2/apps{app}/tasks/{task}?scale=false`: the app id keeps its group path.
pub fn kill_url(base: &str, app: &str, task: &str) -> String {
    format!("{}/v2/apps{app}/tasks/{task}?scale=false", base.trim_end_matches('/'))
}

/// A request error in a few words (reqwest's own text repeats the full URL).
fn describe(e: reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        format!("no answer within {timeout:?}")
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        format!("request failed: {}", e.without_url())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_url_keeps_the_group_path_and_never_scales() {
        assert_eq!(
            kill_url("http://m:8080/", "/shop/cart", "shop_cart.1f0e"),
            "http://m:8080/v2/apps/shop/cart/tasks/shop_cart.1f0e?scale=false"
        );
        assert_eq!(
            kill_url("https://master/marathon", "/web", "web.1"),
            "https://master/marathon/v2/apps/web/tasks/web.1?scale=false"
        );
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let a = Auth::Basic { user: "ops".into(), password: "hunter2".into() };
        assert!(!format!("{a:?}").contains("hunter2"));
        let mut v = HeaderValue::from_static("token=s3cr3t");
        v.set_sensitive(true);
        assert!(!format!("{:?}", Auth::Token(v)).contains("s3cr3t"));
    }
}
