//! The store of consumers and keys managed at run time (`store:`): SQLite for one node,
//! PostgreSQL for many. It is never on the request path: every node keeps the store's
//! contents in its snapshot ([`sync`]) and only the admin API reads and writes the database.
//!
//! Every write takes the next store revision in its transaction, so a node catches up by
//! reading the rows above the revision it has; deletions stay as tombstones for the same
//! reason. On PostgreSQL the commit also notifies the other nodes (`LISTEN/NOTIFY`).

mod records;
pub mod sync;
mod writes;

use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

pub use records::*;
pub use writes::{Idempotency, KeyCreated, NewKey};

/// The NOTIFY channel writes announce themselves on.
const CHANNEL: &str = "tollgate_store";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or failed: writes are refused with 503.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound("record".into()),
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict("a record with this name or key already exists".into())
            }
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// A connection pool to the store.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    kind: StoreKind,
    /// As configured (for the notification listener's own connection).
    url: String,
    /// Without its password, for logs.
    shown: String,
}

/// How long an admin write waits for a connection before answering 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

impl Store {
    /// Connects and brings the schema up to date.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let kind = kind_of(url).ok_or_else(|| {
            StoreError::Unavailable("the store must be sqlite://PATH or postgres://...".into())
        })?;
        let (url, max) = match kind {
            // One writer at a time in SQLite: a small pool, and the file made on first use.
            StoreKind::Sqlite if !url.contains('?') => (format!("{url}?mode=rwc"), 4),
            StoreKind::Sqlite => (url.to_owned(), 4),
            StoreKind::Postgres => (url.to_owned(), 8),
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if kind == StoreKind::Sqlite {
                        // Readers never wait for the writer; a busy writer is waited for.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA busy_timeout = 5000")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        let migrator = match kind {
            StoreKind::Sqlite => sqlx::migrate!("migrations/sqlite"),
            StoreKind::Postgres => sqlx::migrate!("migrations/postgres"),
        };
        migrator
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrating the store: {e}")))?;
        Ok(Store {
            pool,
            kind,
            shown: redact_url(&url),
            url,
        })
    }

    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// The store's URL without its password, for logs.
    pub fn display_url(&self) -> &str {
        &self.shown
    }

    pub(crate) fn url_with_secret(&self) -> &str {
        &self.url
    }

    /// The file of an SQLite store.
    pub(crate) fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        let rest = self.url.strip_prefix("sqlite://")?;
        let file = rest.split('?').next()?;
        (!file.is_empty() && !file.starts_with(':')).then(|| file.into())
    }

    /// The latest revision written.
    pub async fn revision(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query("SELECT revision FROM tollgate_revision WHERE id = 1")
                .fetch_one(&self.pool)
                .await?
                .try_get::<i64, _>(0)?,
        )
    }

    /// Everything written after `revision` (all of it from 0).
    pub async fn changes_since(&self, revision: i64) -> Result<Changes, StoreError> {
        let head = self.revision().await?;
        let mut changes = Changes {
            head,
            ..Changes::default()
        };
        if head <= revision {
            return Ok(changes);
        }
        let rows = sqlx::query(&format!(
            "SELECT {CONSUMER_COLUMNS}, deleted_at FROM tollgate_consumers WHERE revision > $1"
        ))
        .bind(revision)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            if row.try_get::<Option<i64>, _>("deleted_at")?.is_some() {
                changes.deleted_consumers.push(row.try_get("name")?);
            } else {
                changes.consumers.push(consumer_of(&row)?);
            }
        }
        let rows = sqlx::query(&format!(
            "SELECT {KEY_COLUMNS}, deleted_at FROM tollgate_keys WHERE revision > $1"
        ))
        .bind(revision)
        .fetch_all(&self.pool)
        .await?;
        for row in rows {
            if row.try_get::<Option<i64>, _>("deleted_at")?.is_some() {
                changes.deleted_keys.push(row.try_get("id")?);
            } else {
                changes.keys.push(key_of(&row)?);
            }
        }
        Ok(changes)
    }

    /// Consumers in name order after `after`, at most `limit`.
    pub async fn list_consumers(
        &self,
        after: &str,
        limit: i64,
    ) -> Result<Vec<ConsumerRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {CONSUMER_COLUMNS} FROM tollgate_consumers \
             WHERE deleted_at IS NULL AND name > $1 ORDER BY name LIMIT $2"
        ))
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(consumer_of)
        .collect()
    }

    pub async fn consumer(&self, name: &str) -> Result<ConsumerRecord, StoreError> {
        sqlx::query(&format!(
            "SELECT {CONSUMER_COLUMNS} FROM tollgate_consumers WHERE deleted_at IS NULL AND name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(consumer_of)
        .unwrap_or_else(|| Err(StoreError::NotFound(format!("consumer {name:?}"))))
    }

    /// A consumer's keys in id order after `after`, at most `limit`.
    pub async fn list_keys(
        &self,
        consumer: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM tollgate_keys \
             WHERE deleted_at IS NULL AND consumer = $1 AND id > $2 ORDER BY id LIMIT $3"
        ))
        .bind(consumer)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(key_of)
        .collect()
    }

    pub async fn key(&self, id: &str) -> Result<KeyRecord, StoreError> {
        sqlx::query(&format!(
            "SELECT {KEY_COLUMNS} FROM tollgate_keys WHERE deleted_at IS NULL AND id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(key_of)
        .unwrap_or_else(|| Err(StoreError::NotFound(format!("key {id:?}"))))
    }

    /// The latest admin writes, newest first.
    pub async fn audit(&self, before: i64, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, target, detail FROM tollgate_audit \
             WHERE id < $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    target: r.try_get("target")?,
                    detail: serde_json::from_str(&r.try_get::<String, _>("detail")?)
                        .unwrap_or_default(),
                })
            })
            .collect()
    }

    /// A stored answer to an earlier request with this `Idempotency-Key`: its body's
    /// fingerprint, status and answer.
    pub async fn idempotent_answer(
        &self,
        key: &str,
    ) -> Result<Option<(String, u16, serde_json::Value)>, StoreError> {
        let row = sqlx::query(
            "SELECT fingerprint, status, response FROM tollgate_idempotency WHERE key = $1",
        )
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok((
                r.try_get("fingerprint")?,
                u16::try_from(r.try_get::<i64, _>("status")?).unwrap_or(200),
                serde_json::from_str(&r.try_get::<String, _>("response")?).unwrap_or_default(),
            ))
        })
        .transpose()
    }

    /// Writes when keys were last used (not a change of the store: no new revision).
    pub async fn record_last_used(&self, used: &[(String, i64)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (id, at) in used {
            sqlx::query(
                "UPDATE tollgate_keys SET last_used_at = $1 WHERE id = $2 \
                 AND (last_used_at IS NULL OR last_used_at < $1)",
            )
            .bind(*at)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
}

const CONSUMER_COLUMNS: &str = "name, spec, created_at, updated_at";
const KEY_COLUMNS: &str = "id, consumer, name, prefix, digest, previous_digest, previous_until, \
     spec, created_at, rotated_at, expires_at, revoked_at, last_used_at";

fn consumer_of(row: &AnyRow) -> Result<ConsumerRecord, StoreError> {
    let name: String = row.try_get("name")?;
    Ok(ConsumerRecord {
        spec: spec_of(row, &name)?,
        name,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn key_of(row: &AnyRow) -> Result<KeyRecord, StoreError> {
    let id: String = row.try_get("id")?;
    Ok(KeyRecord {
        spec: spec_of(row, &id)?,
        id,
        consumer: row.try_get("consumer")?,
        name: row.try_get("name")?,
        prefix: row.try_get("prefix")?,
        digest: row.try_get("digest")?,
        previous_digest: row.try_get("previous_digest")?,
        previous_until: row.try_get("previous_until")?,
        created_at: row.try_get("created_at")?,
        rotated_at: row.try_get("rotated_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
    })
}

/// A record's JSON settings. Written only by this code, so a row that does not read is a
/// damaged store: reported, not guessed at.
fn spec_of<T: serde::de::DeserializeOwned>(row: &AnyRow, record: &str) -> Result<T, StoreError> {
    let text: String = row.try_get("spec")?;
    serde_json::from_str(&text).map_err(|e| {
        StoreError::Unavailable(format!(
            "the stored settings of {record:?} do not read: {e}"
        ))
    })
}

fn kind_of(url: &str) -> Option<StoreKind> {
    if url.starts_with("sqlite:") {
        Some(StoreKind::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Some(StoreKind::Postgres)
    } else {
        None
    }
}

/// `postgres://user:secret@host/db` without the secret.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
