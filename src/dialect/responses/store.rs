//! Where the gateway keeps responses it produced on translated paths, so that a request with
//! `previous_response_id` can continue the conversation and `GET`/`DELETE
//! /v1/responses/{id}` work; and which native target produced a response, so that a chain
//! stays on it. In process (`memory`, one node) or in Redis (shared by every node), with a
//! time to live and a size bound, scoped to the consumer that made the response.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::OnceCell;

use crate::config::{ResponseStoreBackend, ResponseStoreConfig};

/// One stored response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredResponse {
    /// The consumer that made it: no one else can read or continue it.
    pub consumer: String,
    /// The response object as the client received it (none for a native target's pin).
    #[serde(default)]
    pub response: Option<Value>,
    /// The conversation up to and including this answer, as canonical (chat) messages.
    #[serde(default)]
    pub messages: Vec<Value>,
    /// For a response a native target produced: that target's provider (the chain stays there).
    #[serde(default)]
    pub provider: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("the response store is unavailable: {0}")]
pub struct StoreError(pub String);

#[derive(Debug)]
pub struct ResponseStore {
    config: ResponseStoreConfig,
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    Memory(Mutex<Memory>),
    Redis {
        client: redis::Client,
        connection: OnceCell<ConnectionManager>,
    },
}

/// Entries by id with their expiry; the oldest go first when the bound is reached.
#[derive(Debug, Default)]
struct Memory {
    entries: HashMap<String, (Instant, usize, StoredResponse)>,
    order: VecDeque<String>,
    bytes: usize,
}

impl ResponseStore {
    pub fn new(config: &ResponseStoreConfig) -> Result<Self, String> {
        let backend = match config.backend {
            ResponseStoreBackend::Memory => Backend::Memory(Mutex::new(Memory::default())),
            ResponseStoreBackend::Redis => Backend::Redis {
                client: redis::Client::open(config.redis.url.as_str())
                    .map_err(|e| format!("bad Redis URL: {e}"))?,
                connection: OnceCell::new(),
            },
        };
        Ok(Self {
            config: config.clone(),
            backend,
        })
    }

    /// Whether this store serves `config` (then it is kept across a reload, with its entries).
    pub fn serves(&self, config: &ResponseStoreConfig) -> bool {
        &self.config == config
    }

    fn key(&self, id: &str) -> String {
        format!("{}:response:{id}", self.config.redis.prefix)
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let Backend::Redis { client, connection } = &self.backend else {
            return Err(StoreError("not a Redis store".into()));
        };
        let timeout = self.config.redis.timeout;
        connection
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout));
                ConnectionManager::new_with_config(client.clone(), config).await
            })
            .await
            .cloned()
            .map_err(|e| StoreError(e.to_string()))
    }

    async fn bounded<T>(
        &self,
        work: impl Future<Output = Result<T, redis::RedisError>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.config.redis.timeout, work)
            .await
            .map_err(|_| StoreError("Redis timed out".into()))?
            .map_err(|e| StoreError(e.to_string()))
    }

    /// Keeps `entry` under `id` for the configured time. An entry over the size bound is not
    /// kept (the answer still goes out; continuing it gets a clear error).
    pub async fn put(&self, id: &str, entry: &StoredResponse) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(entry).map_err(|e| StoreError(e.to_string()))?;
        if bytes.len() as u64 > self.config.max_entry_bytes.as_u64() {
            tracing::warn!(id, bytes = bytes.len(), "response too large to store");
            return Ok(());
        }
        match &self.backend {
            Backend::Memory(memory) => {
                let mut m = memory.lock().map_err(|_| StoreError("poisoned".into()))?;
                m.insert(
                    id.to_owned(),
                    entry.clone(),
                    bytes.len(),
                    self.config.ttl,
                    self.config.max_entries,
                    self.config.max_bytes.as_u64() as usize,
                );
                Ok(())
            }
            Backend::Redis { .. } => {
                let mut conn = self.connection().await?;
                let key = self.key(id);
                let ttl = self.config.ttl.as_millis().max(1) as u64;
                self.bounded(async move {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(bytes)
                        .arg("PX")
                        .arg(ttl)
                        .query_async::<()>(&mut conn)
                        .await
                })
                .await
            }
        }
    }

    /// The entry under `id`, if it is there, not expired, and `consumer`'s.
    pub async fn get(
        &self,
        id: &str,
        consumer: &str,
    ) -> Result<Option<StoredResponse>, StoreError> {
        let entry = match &self.backend {
            Backend::Memory(memory) => {
                let mut m = memory.lock().map_err(|_| StoreError("poisoned".into()))?;
                m.get(id)
            }
            Backend::Redis { .. } => {
                let mut conn = self.connection().await?;
                let key = self.key(id);
                let raw: Option<Vec<u8>> =
                    self.bounded(async move { conn.get(&key).await }).await?;
                raw.and_then(|r| serde_json::from_slice(&r).ok())
            }
        };
        Ok(entry.filter(|e| e.consumer == consumer))
    }

    /// Deletes `consumer`'s entry under `id`; whether there was one.
    pub async fn delete(&self, id: &str, consumer: &str) -> Result<bool, StoreError> {
        if self.get(id, consumer).await?.is_none() {
            return Ok(false);
        }
        match &self.backend {
            Backend::Memory(memory) => {
                let mut m = memory.lock().map_err(|_| StoreError("poisoned".into()))?;
                Ok(m.remove(id))
            }
            Backend::Redis { .. } => {
                let mut conn = self.connection().await?;
                let key = self.key(id);
                let n: u64 = self.bounded(async move { conn.del(&key).await }).await?;
                Ok(n > 0)
            }
        }
    }
}

impl Memory {
    fn insert(
        &mut self,
        id: String,
        entry: StoredResponse,
        size: usize,
        ttl: Duration,
        max_entries: usize,
        max_bytes: usize,
    ) {
        self.remove(&id);
        while !self.order.is_empty()
            && (self.entries.len() >= max_entries.max(1) || self.bytes + size > max_bytes)
        {
            if let Some(oldest) = self.order.pop_front()
                && let Some((_, s, _)) = self.entries.remove(&oldest)
            {
                self.bytes -= s;
            }
        }
        self.bytes += size;
        self.order.push_back(id.clone());
        self.entries.insert(id, (Instant::now() + ttl, size, entry));
    }

    fn get(&mut self, id: &str) -> Option<StoredResponse> {
        match self.entries.get(id) {
            Some((expires, _, _)) if *expires <= Instant::now() => {
                self.remove(id);
                None
            }
            Some((_, _, entry)) => Some(entry.clone()),
            None => None,
        }
    }

    fn remove(&mut self, id: &str) -> bool {
        match self.entries.remove(id) {
            Some((_, size, _)) => {
                self.bytes -= size;
                self.order.retain(|o| o != id);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(consumer: &str) -> StoredResponse {
        StoredResponse {
            consumer: consumer.into(),
            response: Some(serde_json::json!({"id": "r"})),
            messages: vec![serde_json::json!({"role": "user", "content": "hi"})],
            provider: None,
        }
    }

    #[tokio::test]
    async fn memory_entries_are_scoped_bounded_and_expire() {
        let config = ResponseStoreConfig {
            max_entries: 2,
            ttl: Duration::from_millis(50),
            ..ResponseStoreConfig::default()
        };
        let store = ResponseStore::new(&config).unwrap();
        store.put("a", &entry("u")).await.unwrap();
        assert!(store.get("a", "u").await.unwrap().is_some());
        assert!(store.get("a", "someone-else").await.unwrap().is_none());
        store.put("b", &entry("u")).await.unwrap();
        store.put("c", &entry("u")).await.unwrap();
        assert!(
            store.get("a", "u").await.unwrap().is_none(),
            "the oldest went"
        );
        assert!(store.delete("b", "u").await.unwrap());
        assert!(!store.delete("b", "u").await.unwrap());
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(store.get("c", "u").await.unwrap().is_none(), "expired");
    }
}
