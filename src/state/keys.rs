//! Gateway keys made at run time (`/admin/keys`, SPEC §13). Input: a key's record; output: the
//! records every instance sees, and a version that changes with each write, so that an instance
//! reloads them only when they changed. The in-process store keeps them in the ledger's SQLite
//! (in memory without a ledger, lost at exit); the shared store keeps them in Redis, so a key
//! made or revoked on one instance holds on all of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::StateError;
use crate::accounting::Ledger;
use crate::config::{BudgetConfig, LimitsConfig};

/// A run-time key as it is stored: never its secret, only the secret's SHA-256.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    /// Its id (`key_...`), which the admin endpoints name it by.
    pub id: String,
    /// Its name (`user.name`, and the account its spend is kept under).
    pub name: String,
    /// SHA-256 of the secret, in hex.
    pub sha256: String,
    /// The secret's first characters, to tell keys apart in a list.
    pub prefix: String,
    /// `user.tier`.
    #[serde(default)]
    pub tier: Option<String>,
    /// Spending limit.
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
    /// Rate limits.
    #[serde(default)]
    pub limits: Option<LimitsConfig>,
    /// The only models it may name.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// When it stops working (Unix milliseconds).
    #[serde(default)]
    pub expires_at_ms: Option<i64>,
    /// When it was made (Unix milliseconds).
    pub created_at_ms: i64,
    /// When it was revoked (Unix milliseconds); a revoked key never works again.
    #[serde(default)]
    pub revoked_at_ms: Option<i64>,
}

/// The in-process store's keys: in the ledger, or in memory.
#[derive(Debug, Default)]
pub struct LocalKeys {
    version: AtomicU64,
    memory: Mutex<BTreeMap<String, KeyRecord>>,
    ledger: Option<Ledger>,
    /// Held from the name check to the write, so that two creates cannot both find a name free.
    writing: Box<tokio::sync::Mutex<()>>,
}

impl LocalKeys {
    /// Keys kept in `ledger`, or in memory without one.
    pub fn new(ledger: Option<Ledger>) -> LocalKeys {
        LocalKeys {
            version: AtomicU64::new(1),
            memory: Mutex::default(),
            ledger,
            writing: Box::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Whether the keys outlive the process (they are in the ledger).
    pub fn persistent(&self) -> bool {
        self.ledger.is_some()
    }

    /// Changes with every write (this process is the only writer).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    /// Every record.
    pub async fn all(&self) -> Result<Vec<KeyRecord>, StateError> {
        match &self.ledger {
            None => Ok(self.memory.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()),
            Some(l) => {
                let rows = l.keys().await.map_err(StateError)?;
                Ok(rows.iter().filter_map(|r| serde_json::from_str(r).ok()).collect())
            }
        }
    }

    /// Stores a record (replacing the one with its id), unless another live record has its
    /// name: `Ok(false)` then, and nothing is written. The check and the write are one step.
    pub async fn put(&self, record: &KeyRecord) -> Result<bool, StateError> {
        let _writing = self.writing.lock().await;
        if name_taken(&self.all().await?, record) {
            return Ok(false);
        }
        self.copy(record).await?;
        Ok(true)
    }

    /// Stores a record as it is, with no name check (a copy of what the shared store holds).
    pub async fn copy(&self, record: &KeyRecord) -> Result<(), StateError> {
        match &self.ledger {
            None => {
                self.memory.lock().unwrap_or_else(|p| p.into_inner()).insert(record.id.clone(), record.clone());
            }
            Some(l) => l.put_key(&record.id, json(record)).await.map_err(StateError)?,
        }
        self.version.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }
}

/// Whether a live record other than `record` has its name (a revoked record frees its name).
pub fn name_taken(records: &[KeyRecord], record: &KeyRecord) -> bool {
    record.revoked_at_ms.is_none()
        && records.iter().any(|r| r.id != record.id && r.name == record.name && r.revoked_at_ms.is_none())
}

/// A record as JSON.
pub fn json(record: &KeyRecord) -> String {
    serde_json::to_string(record).unwrap_or_default()
}
