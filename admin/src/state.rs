//! The admin API's edits, kept across restarts.
//!
//! Origins and subprotocols changed through the API would otherwise be lost when the hub
//! restarts and rebuilds its policy from the config file. Only those two lists are kept: an
//! endpoint's path and mode belong to the config, and a state file that could move an endpoint
//! would leave the config file lying about what the hub serves.
//!
//! The file is replaced atomically (written beside itself, flushed, renamed over), so a crash or
//! a full disk during a save leaves the previous state, never half of one.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::origin::OriginRule;
use crate::policy::{Mode, Policy, PolicyStore, Subprotocol};

/// The name of the state file inside its directory.
pub const STATE_FILE_NAME: &str = "policy-state.json";

/// The only format version written and read.
pub const STATE_VERSION: u32 = 1;

/// Where the admin API keeps its edits.
///
/// Clones share one lock, so saves from every HTTP worker are serialized and the file always
/// ends up holding the policy of the last save.
#[derive(Clone, Debug)]
pub struct StateFile {
    path: PathBuf,
    lock: Arc<Mutex<()>>,
}

/// Why the state file could not be read or written. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read policy state file {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("policy state file {} is not valid: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("cannot write policy state file {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

#[derive(Debug, Serialize, Deserialize)]
struct StateDocument {
    version: u32,
    endpoints: BTreeMap<String, EndpointState>,
}

#[derive(Debug, Serialize, Deserialize)]
struct EndpointState {
    origins: Vec<String>,
    subprotocols: Vec<SubprotocolState>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SubprotocolState {
    name: String,
    mode: Mode,
}

/// Makes temporary names unique within the process; the process id makes them unique across
/// processes sharing the directory.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl StateFile {
    /// The state file `policy-state.json` in `dir`. Nothing is read or created yet.
    pub fn in_dir(dir: impl Into<PathBuf>) -> StateFile {
        StateFile {
            path: dir.into().join(STATE_FILE_NAME),
            lock: Arc::new(Mutex::new(())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `base` with the saved origins and subprotocols of each endpoint it has, and a warning
    /// for each endpoint the file names that `base` lacks (removed from the config since the
    /// save: its edits are dropped rather than resurrecting the endpoint).
    ///
    /// A missing file is a hub that was never edited: `base` comes back unchanged. Anything
    /// else wrong with the file is an error rather than a silent fallback, since starting
    /// without the saved edits could reopen an endpoint to origins an operator had removed.
    pub fn load(&self, base: Policy) -> Result<(Policy, Vec<String>), StateError> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok((base, Vec::new())),
            Err(source) => {
                return Err(StateError::Read {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        apply(base, &bytes, &self.path.display().to_string()).map_err(|reason| self.corrupt(reason))
    }

    /// Writes the origins and subprotocols of every endpoint of `policy`, replacing the file
    /// atomically and creating its directory if needed.
    pub fn save(&self, policy: &Policy) -> Result<(), StateError> {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.write(policy)
    }

    /// Saves the policy `store` holds when the save starts, after any save already under way.
    ///
    /// Taking the snapshot under the lock is what makes concurrent edits safe: whichever save
    /// runs last reads the newest policy, so an older snapshot can never overwrite a newer one.
    pub fn save_current(&self, store: &PolicyStore) -> Result<(), StateError> {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.write(&store.snapshot())
    }

    fn write(&self, policy: &Policy) -> Result<(), StateError> {
        let document = document_of(policy);
        let mut text = serde_json::to_vec_pretty(&document).map_err(|error| StateError::Write {
            path: self.path.clone(),
            source: io::Error::other(error),
        })?;
        text.push(b'\n');
        self.replace_with(&text)
            .map_err(|source| StateError::Write {
                path: self.path.clone(),
                source,
            })
    }

    fn replace_with(&self, contents: &[u8]) -> io::Result<()> {
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir)?;
        let temp = dir.join(format!(
            ".{STATE_FILE_NAME}.{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let written = write_synced(&temp, contents).and_then(|()| fs::rename(&temp, &self.path));
        if let Err(error) = written {
            // Best effort: the error that matters is the one already in hand.
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        sync_dir(&dir)
    }

    fn corrupt(&self, reason: String) -> StateError {
        StateError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }
}

fn write_synced(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Makes the rename itself durable: until the directory entry reaches the disk, a crash can
/// bring back the old file even though the new one was flushed.
#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Directories cannot be opened as files here; the rename is as durable as the platform makes
/// it.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    Ok(())
}
/// The state document of `policy`: the origins and subprotocols of every endpoint, as the
/// state file holds them (and, in cluster mode, the cluster's shared copy).
fn document_of(policy: &Policy) -> StateDocument {
    StateDocument {
        version: STATE_VERSION,
        endpoints: policy
            .endpoints()
            .iter()
            .map(|e| {
                let state = EndpointState {
                    origins: e.origins.iter().map(ToString::to_string).collect(),
                    subprotocols: e
                        .subprotocols
                        .iter()
                        .map(|p| SubprotocolState {
                            name: p.name.clone(),
                            mode: p.mode,
                        })
                        .collect(),
                };
                (e.name.clone(), state)
            })
            .collect(),
    }
}

/// `policy`'s origins and subprotocols as a state document (JSON), for a store other than the
/// state file.
pub fn encode(policy: &Policy) -> String {
    serde_json::to_string(&document_of(policy)).unwrap_or_default()
}

/// `base` with the origins and subprotocols of a state document (`bytes`), and a warning for
/// each endpoint the document names that `base` lacks; `source` names the document in those.
pub fn apply(base: Policy, bytes: &[u8], source: &str) -> Result<(Policy, Vec<String>), String> {
    let document: StateDocument =
        serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
    if document.version != STATE_VERSION {
        return Err(format!(
            "unsupported version {} (expected {STATE_VERSION})",
            document.version
        ));
    }

    let mut policy = base;
    let mut warnings = Vec::new();
    for (name, saved) in document.endpoints {
        let Some(endpoint) = policy.endpoint(&name) else {
            warnings.push(format!(
                "{source}: endpoint {name:?} is not configured; its saved origins and \
                     subprotocols are ignored"
            ));
            continue;
        };
        let mut endpoint = endpoint.clone();
        endpoint.origins = saved
            .origins
            .iter()
            .map(|text| text.parse::<OriginRule>())
            .collect::<Result<_, _>>()
            .map_err(|error| format!("endpoint {name:?}: {error}"))?;
        endpoint.subprotocols = saved
            .subprotocols
            .into_iter()
            .map(|p| Subprotocol {
                name: p.name,
                mode: p.mode,
            })
            .collect();
        policy = policy
            .with_endpoint_replaced(endpoint)
            .map_err(|error| error.to_string())?;
    }
    Ok((policy, warnings))
}
