//! calicoctl's v1 configuration file (`/etc/calico/calicoctl.cfg`, calicoctl 1.x /
//! Calico v2.6):
//!
//! ```yaml
//! apiVersion: v1
//! kind: calicoApiConfig
//! metadata:
//! spec:
//!   datastoreType: "etcdv2"
//!   etcdEndpoints: "http://192.168.56.101:2379,http://192.168.56.102:2379"
//!   etcdCACertFile: …   etcdCertFile: …   etcdKeyFile: …   etcdUsername: …   etcdPassword: …
//! ```
//!
//! Only that flat `key: value` shape is read (it is all calicoctl writes); anything
//! else is an error that names the line.

use super::endpoint::normalise_endpoint;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiConfig {
    pub endpoints: Vec<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

fn unquote(v: &str) -> &str {
    let v = v.trim();
    for q in ['"', '\''] {
        if let Some(inner) = v.strip_prefix(q).and_then(|r| r.strip_suffix(q)) {
            return inner;
        }
    }
    v
}

/// `Ok(None)`: a valid file whose datastore is not etcd v2 (e.g. `kubernetes`).
pub fn parse(text: &str) -> Result<Option<ApiConfig>, String> {
    let mut section = String::new();
    let (mut api_version, mut kind, mut datastore) = (None, None, None);
    let mut out = ApiConfig::default();
    for (n, line) in text.lines().enumerate() {
        let content = line.split(" #").next().unwrap_or_default();
        if content.trim().is_empty() || content.trim_start().starts_with('#') {
            continue;
        }
        let indented = content.starts_with([' ', '\t']);
        let Some((key, value)) = content.trim().split_once(':') else {
            return Err(format!("line {}: expected `key: value`", n + 1));
        };
        let (key, value) = (key.trim(), unquote(value));
        if !indented {
            section = key.to_string();
            match key {
                "apiVersion" => api_version = Some(value.to_string()),
                "kind" => kind = Some(value.to_string()),
                _ => {}
            }
            continue;
        }
        if section != "spec" {
            continue;
        }
        let set = |v: &str| (!v.is_empty()).then(|| v.to_string());
        match key {
            "datastoreType" => datastore = Some(value.to_string()),
            "etcdEndpoints" => {
                out.endpoints = value
                    .split(',')
                    .filter(|e| !e.trim().is_empty())
                    .map(normalise_endpoint)
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("line {}: etcdEndpoints: {e}", n + 1))?;
            }
            "etcdCACertFile" => out.ca_file = set(value),
            "etcdCertFile" => out.cert_file = set(value),
            "etcdKeyFile" => out.key_file = set(value),
            "etcdUsername" => out.username = set(value),
            "etcdPassword" => out.password = set(value),
            _ => {}
        }
    }
    if kind.as_deref() != Some("calicoApiConfig") || api_version.as_deref() != Some("v1") {
        return Err(format!(
            "not a calicoctl v1 config (want apiVersion: v1, kind: calicoApiConfig; found {}, {})",
            api_version.as_deref().unwrap_or("no apiVersion"),
            kind.as_deref().unwrap_or("no kind")
        ));
    }
    // calicoctl 1.x defaults to etcdv2.
    if !matches!(datastore.as_deref(), None | Some("etcdv2")) {
        return Ok(None);
    }
    if out.endpoints.is_empty() {
        // calicoctl's own default.
        out.endpoints.push("http://127.0.0.1:2379".into());
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file of the user's write-up, as written there.
    #[test]
    fn the_write_ups_file_parses() {
        let text = "apiVersion: v1\nkind: calicoApiConfig\nmetadata:\nspec:\n  datastoreType: \"etcdv2\"\n  etcdEndpoints: \"http://192.168.56.101:2379,http://192.168.56.102:2379,192.168.56.103:2379\"\n";
        let c = parse(text).unwrap().unwrap();
        assert_eq!(
            c.endpoints,
            vec!["http://192.168.56.101:2379", "http://192.168.56.102:2379", "http://192.168.56.103:2379"]
        );
        assert_eq!(c.ca_file, None);
    }

    #[test]
    fn tls_fields_other_datastores_and_garbage() {
        let text = "apiVersion: v1\nkind: calicoApiConfig\nspec:\n  etcdEndpoints: https://e:2379 # prod\n  etcdCACertFile: '/ca.pem'\n  etcdCertFile: /c.pem\n  etcdKeyFile: /k.pem\n";
        let c = parse(text).unwrap().unwrap();
        assert_eq!(c.endpoints, vec!["https://e:2379"]);
        assert_eq!(
            (c.ca_file.as_deref(), c.cert_file.as_deref(), c.key_file.as_deref()),
            (Some("/ca.pem"), Some("/c.pem"), Some("/k.pem"))
        );
        let k8s = "apiVersion: v1\nkind: calicoApiConfig\nspec:\n  datastoreType: kubernetes\n";
        assert_eq!(parse(k8s).unwrap(), None);
        assert!(parse("apiVersion: projectcalico.org/v3\nkind: CalicoAPIConfig\n").unwrap_err().contains("v1"));
        assert!(parse("apiVersion: v1\nkind: calicoApiConfig\nspec:\n  etcdEndpoints: ftp://x\n")
            .unwrap_err()
            .contains("line 4"));
        assert!(parse("just words\n").unwrap_err().contains("line 1"));
    }
}
