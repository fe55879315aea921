//! An etcd endpoint as `[calico]` and calicoctl's file write it, normalised.

/// `host:port` → `http://host:port`; `http(s)://host:port[/]` kept without the slash.
/// Anything with a path, query or another scheme is refused.
pub fn normalise_endpoint(raw: &str) -> Result<String, String> {
    let url = raw.trim();
    if url.is_empty() {
        return Err("an empty endpoint".into());
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) if s == "http" || s == "https" => (s, r),
        Some((s, _)) => return Err(format!("{raw:?}: scheme {s:?} is not http or https")),
        None => ("http", url),
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains(['/', '?', '#', ' ', '@']) {
        return Err(format!("{raw:?} is not an etcd endpoint (want http(s)://host:port)"));
    }
    Ok(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_normalise() {
        assert_eq!(normalise_endpoint("http://10.0.0.1:2379/").unwrap(), "http://10.0.0.1:2379");
        assert_eq!(normalise_endpoint("192.168.56.103:2379").unwrap(), "http://192.168.56.103:2379");
        assert_eq!(normalise_endpoint(" https://etcd:2379 ").unwrap(), "https://etcd:2379");
        assert!(normalise_endpoint("etcd://x:1").is_err());
        assert!(normalise_endpoint("http://x:1/v2/keys").is_err());
        assert!(normalise_endpoint("http://user:pw@x:1").is_err());
        assert!(normalise_endpoint("").is_err());
    }
}
