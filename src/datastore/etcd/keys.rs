//! Keys with their `modifiedIndex`, and the compare-and-swap on it (`prevIndex`):
//! what the cluster IPAM job reads and writes (`crate::ipam::store`); and the create
//! that never overwrites (`prevExist=false`): a missing profile written back.

use reqwest::{Method, StatusCode};

use super::{describe_code, EtcdClient, RawNode, COMPARE_FAILED, KEY_NOT_FOUND, NODE_EXISTS};
use crate::error::MedicError;

/// One key with its value and `modifiedIndex` (a compare-and-swap's `prevIndex`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    pub key: String,
    pub value: String,
    pub modified_index: u64,
}

/// What a compare-and-swap came back with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swapped {
    /// Written; the key's new `modifiedIndex`.
    Done(u64),
    /// The key changed (or went) since `prevIndex`: nothing written.
    Changed,
}

/// Leaves with their values and indexes (directories and value-less keys left out).
fn leaves(node: RawNode, out: &mut Vec<Leaf>) {
    if node.dir {
        for child in node.nodes {
            leaves(child, out);
        }
    } else if let Some(value) = node.value {
        out.push(Leaf { key: node.key, value, modified_index: node.modified_index });
    }
}

/// `application/x-www-form-urlencoded` encoding of one value.
fn form_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl EtcdClient {
    /// Every key under `dir` (recursive) with its `modifiedIndex`, and etcd's index at
    /// the read. A missing directory is empty.
    pub async fn get_leaves(&self, dir: &str) -> Result<(Vec<Leaf>, u64), MedicError> {
        let path = format!("/v2/keys{dir}?recursive=true&quorum=true");
        let (status, header_index, answer) = self.request(Method::GET, &path, None).await?;
        let index = header_index.or(answer.index).unwrap_or(0);
        match (status, answer.error_code) {
            (StatusCode::OK, None) => {
                let mut out = Vec::new();
                if let Some(n) = answer.node {
                    leaves(n, &mut out);
                }
                Ok((out, index))
            }
            (_, Some(KEY_NOT_FOUND)) => Ok((Vec::new(), index)),
            (status, code) => Err(MedicError::Datastore(format!(
                "reading {dir} from {}: {status} {}",
                self.current(),
                describe_code(code, answer.message.as_deref())
            ))),
        }
    }

    /// Writes `value` at `key` only if the key's `modifiedIndex` is still `prev_index`.
    pub async fn compare_and_swap(&self, key: &str, value: &str, prev_index: u64) -> Result<Swapped, MedicError> {
        let path = format!("/v2/keys{key}?prevIndex={prev_index}");
        let form = format!("value={}", form_value(value));
        let (status, _, answer) = self.request(Method::PUT, &path, Some(form)).await?;
        match (status, answer.error_code) {
            (StatusCode::OK | StatusCode::CREATED, None) => {
                Ok(Swapped::Done(answer.node.map(|n| n.modified_index).unwrap_or(0)))
            }
            (_, Some(COMPARE_FAILED | KEY_NOT_FOUND)) => Ok(Swapped::Changed),
            (status, code) => Err(MedicError::Datastore(format!(
                "writing {key} on {}: {status} {}",
                self.current(),
                describe_code(code, answer.message.as_deref())
            ))),
        }
    }

    /// Writes `value` at `key` only where no key is (`prevExist=false`): true when this
    /// request wrote it, false when a key was there (it is never overwritten).
    pub async fn create(&self, key: &str, value: &str) -> Result<bool, MedicError> {
        let path = format!("/v2/keys{key}?prevExist=false");
        let (status, _, answer) =
            self.request(Method::PUT, &path, Some(format!("value={}", form_value(value)))).await?;
        match (status, answer.error_code) {
            (StatusCode::CREATED | StatusCode::OK, None) => Ok(true),
            (_, Some(NODE_EXISTS)) => Ok(false),
            (status, code) => Err(MedicError::Datastore(format!(
                "creating {key} on {}: {status} {}",
                self.current(),
                describe_code(code, answer.message.as_deref())
            ))),
        }
    }
}
