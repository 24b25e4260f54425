//! Admin writes. Each runs in one transaction that takes the next store revision, writes the
//! record (with that revision, so other nodes pick it up), the audit entry and, when the
//! request carried one, its `Idempotency-Key` — all or nothing.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};
use sqlx::{Any, Row, Transaction};

use super::{
    CHANNEL, ConsumerRecord, ConsumerSpec, KeyRecord, KeySpec, Store, StoreError, StoreKind, now_ms,
};
use crate::auth::keys::KeyDigest;

/// A key to create.
#[derive(Debug, Clone, Default)]
pub struct NewKey {
    pub name: Option<String>,
    pub spec: KeySpec,
    pub expires_at: Option<i64>,
}

/// A key just made or rotated: the secret is in this answer only.
#[derive(Debug)]
pub struct KeyCreated {
    pub record: KeyRecord,
    pub secret: String,
}

/// An `Idempotency-Key` and the fingerprint of the request it came with.
pub struct Idempotency<'a> {
    pub key: &'a str,
    pub fingerprint: &'a str,
}

impl Store {
    pub async fn create_consumer(
        &self,
        actor: &str,
        name: &str,
        spec: &ConsumerSpec,
        idempotency: Option<Idempotency<'_>>,
    ) -> Result<ConsumerRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let revision = self.next_revision(&mut tx).await?;
        let now = now_ms();
        // A deleted consumer's name can be used again.
        let written = sqlx::query(
            "INSERT INTO tollgate_consumers (name, spec, created_at, updated_at, revision) \
             VALUES ($1, $2, $3, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, \
               created_at = excluded.created_at, updated_at = excluded.updated_at, \
               revision = excluded.revision, deleted_at = NULL \
             WHERE tollgate_consumers.deleted_at IS NOT NULL",
        )
        .bind(name)
        .bind(to_json(spec))
        .bind(now)
        .bind(revision)
        .execute(&mut *tx)
        .await?;
        if written.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "consumer {name:?} already exists"
            )));
        }
        let record = ConsumerRecord {
            name: name.to_owned(),
            spec: spec.clone(),
            created_at: now,
            updated_at: now,
        };
        self.finish(
            tx,
            revision,
            actor,
            "consumer.create",
            name,
            json!({"spec": spec}),
            idempotency.map(|i| (i, json!(record))),
        )
        .await?;
        Ok(record)
    }

    pub async fn update_consumer(
        &self,
        actor: &str,
        name: &str,
        spec: &ConsumerSpec,
    ) -> Result<ConsumerRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let revision = self.next_revision(&mut tx).await?;
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE tollgate_consumers SET spec = $1, updated_at = $2, revision = $3 \
             WHERE name = $4 AND deleted_at IS NULL RETURNING created_at",
        )
        .bind(to_json(spec))
        .bind(now)
        .bind(revision)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("consumer {name:?}")))?;
        let record = ConsumerRecord {
            name: name.to_owned(),
            spec: spec.clone(),
            created_at: row.try_get("created_at")?,
            updated_at: now,
        };
        self.finish(
            tx,
            revision,
            actor,
            "consumer.update",
            name,
            json!({"spec": spec}),
            None,
        )
        .await?;
        Ok(record)
    }

    /// Deletes a consumer and its keys.
    pub async fn delete_consumer(&self, actor: &str, name: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let revision = self.next_revision(&mut tx).await?;
        let now = now_ms();
        let deleted = sqlx::query(
            "UPDATE tollgate_consumers SET deleted_at = $1, revision = $2 \
             WHERE name = $3 AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(revision)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("consumer {name:?}")));
        }
        let keys = sqlx::query(
            "UPDATE tollgate_keys SET deleted_at = $1, revision = $2 \
             WHERE consumer = $3 AND deleted_at IS NULL",
        )
        .bind(now)
        .bind(revision)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        self.finish(
            tx,
            revision,
            actor,
            "consumer.delete",
            name,
            json!({"keys_deleted": keys.rows_affected()}),
            None,
        )
        .await
    }

    pub async fn create_key(
        &self,
        actor: &str,
        consumer: &str,
        key: &NewKey,
        idempotency: Option<Idempotency<'_>>,
    ) -> Result<KeyCreated, StoreError> {
        let mut tx = self.pool.begin().await?;
        let revision = self.next_revision(&mut tx).await?;
        let exists = sqlx::query(
            "SELECT name FROM tollgate_consumers WHERE name = $1 AND deleted_at IS NULL",
        )
        .bind(consumer)
        .fetch_optional(&mut *tx)
        .await?;
        if exists.is_none() {
            return Err(StoreError::NotFound(format!("consumer {consumer:?}")));
        }
        let secret = new_secret()?;
        let record = KeyRecord {
            id: new_key_id()?,
            consumer: consumer.to_owned(),
            name: key.name.clone(),
            prefix: secret[..PREFIX_LEN].to_owned(),
            digest: digest_hex(&secret),
            previous_digest: None,
            previous_until: None,
            spec: key.spec.clone(),
            created_at: now_ms(),
            rotated_at: None,
            expires_at: key.expires_at,
            revoked_at: None,
            last_used_at: None,
        };
        sqlx::query(
            "INSERT INTO tollgate_keys (id, consumer, name, prefix, digest, spec, created_at, \
             expires_at, revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(record.id.as_str())
        .bind(consumer)
        .bind(record.name.clone())
        .bind(record.prefix.as_str())
        .bind(record.digest.as_str())
        .bind(to_json(&record.spec))
        .bind(record.created_at)
        .bind(record.expires_at)
        .bind(revision)
        .execute(&mut *tx)
        .await?;
        self.finish(
            tx,
            revision,
            actor,
            "key.create",
            &record.id,
            json!({"consumer": consumer, "prefix": record.prefix, "expires_at": record.expires_at, "spec": record.spec}),
            idempotency.map(|i| (i, json!(record))),
        )
        .await?;
        Ok(KeyCreated { record, secret })
    }

    /// A new secret under the same id; the old one keeps working for `grace`.
    pub async fn rotate_key(
        &self,
        actor: &str,
        id: &str,
        grace: Duration,
        idempotency: Option<Idempotency<'_>>,
    ) -> Result<KeyCreated, StoreError> {
        let mut tx = self.pool.begin().await?;
        let revision = self.next_revision(&mut tx).await?;
        let mut record = key_in(&mut tx, id).await?;
        if record.revoked_at.is_some() {
            return Err(StoreError::Conflict(format!(
                "key {id:?} is revoked: create a new one"
            )));
        }
        let secret = new_secret()?;
        let now = now_ms();
        record.previous_digest = Some(std::mem::replace(&mut record.digest, digest_hex(&secret)));
        record.previous_until = Some(now + i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
        record.prefix = secret[..PREFIX_LEN].to_owned();
        record.rotated_at = Some(now);
        sqlx::query(
            "UPDATE tollgate_keys SET digest = $1, previous_digest = $2, previous_until = $3, \
             prefix = $4, rotated_at = $5, revision = $6 WHERE id = $7",
        )
        .bind(record.digest.as_str())
        .bind(record.previous_digest.clone())
        .bind(record.previous_until)
        .bind(record.prefix.as_str())
        .bind(now)
        .bind(revision)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        self.finish(
            tx,
            revision,
            actor,
            "key.rotate",
            id,
            json!({"consumer": record.consumer, "prefix": record.prefix, "grace_ms": grace.as_millis() as u64}),
            idempotency.map(|i| (i, json!(record))),
        )
        .await?;
        Ok(KeyCreated { record, secret })
    }

    /// Revokes a key at once (its old secret too, if in a rotation's grace). Revoking a
    /// revoked key changes nothing.
    pub async fn revoke_key(&self, actor: &str, id: &str) -> Result<KeyRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let revision = self.next_revision(&mut tx).await?;
        let mut record = key_in(&mut tx, id).await?;
        if record.revoked_at.is_some() {
            return Ok(record);
        }
        let now = now_ms();
        record.revoked_at = Some(now);
        sqlx::query("UPDATE tollgate_keys SET revoked_at = $1, revision = $2 WHERE id = $3")
            .bind(now)
            .bind(revision)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.finish(
            tx,
            revision,
            actor,
            "key.revoke",
            id,
            json!({"consumer": record.consumer, "prefix": record.prefix}),
            None,
        )
        .await?;
        Ok(record)
    }

    /// Changes a key's name, settings or expiry.
    pub async fn update_key(
        &self,
        actor: &str,
        id: &str,
        change: impl FnOnce(&mut KeyRecord),
    ) -> Result<KeyRecord, StoreError> {
        let mut tx = self.pool.begin().await?;
        let revision = self.next_revision(&mut tx).await?;
        let mut record = key_in(&mut tx, id).await?;
        change(&mut record);
        sqlx::query(
            "UPDATE tollgate_keys SET name = $1, spec = $2, expires_at = $3, revision = $4 \
             WHERE id = $5",
        )
        .bind(record.name.clone())
        .bind(to_json(&record.spec))
        .bind(record.expires_at)
        .bind(revision)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        self.finish(
            tx,
            revision,
            actor,
            "key.update",
            id,
            json!({"consumer": record.consumer, "name": record.name, "expires_at": record.expires_at, "spec": record.spec}),
            None,
        )
        .await?;
        Ok(record)
    }

    /// Takes the next revision; the row stays locked to the end of the transaction, so
    /// revisions commit in order (a node reading "above n" never skips one).
    async fn next_revision(&self, tx: &mut Transaction<'_, Any>) -> Result<i64, StoreError> {
        Ok(sqlx::query(
            "UPDATE tollgate_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
        )
        .fetch_one(&mut **tx)
        .await?
        .try_get::<i64, _>(0)?)
    }

    /// Audit entry, idempotency record and notification, then commit.
    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        mut tx: Transaction<'_, Any>,
        revision: i64,
        actor: &str,
        action: &str,
        target: &str,
        detail: Value,
        idempotency: Option<(Idempotency<'_>, Value)>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO tollgate_audit (at, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(now)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail.to_string())
        .execute(&mut *tx)
        .await?;
        if let Some((idem, answer)) = idempotency {
            sqlx::query(
                "INSERT INTO tollgate_idempotency (key, fingerprint, status, response, created_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(idem.key)
            .bind(idem.fingerprint)
            .bind(200i64)
            .bind(answer.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if self.kind == StoreKind::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(revision.to_string())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        tracing::info!(target: "tollgate::audit", actor, action, target, %detail, "admin write");
        Ok(())
    }
}

async fn key_in(tx: &mut Transaction<'_, Any>, id: &str) -> Result<KeyRecord, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {} FROM tollgate_keys WHERE id = $1 AND deleted_at IS NULL",
        super::KEY_COLUMNS
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("key {id:?}")))?;
    super::key_of(&row)
}

/// How much of a secret is shown as its prefix: `tg_` and 7 characters.
const PREFIX_LEN: usize = 10;

/// `tg_` and 32 random bytes in URL-safe base64 (256 bits: unguessable, fine for SHA-256).
fn new_secret() -> Result<String, StoreError> {
    let bytes = random::<32>()?;
    Ok(format!(
        "tg_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

fn new_key_id() -> Result<String, StoreError> {
    Ok(format!("key_{}", hex::encode(random::<8>()?)))
}

fn random<const N: usize>() -> Result<[u8; N], StoreError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| StoreError::Unavailable(format!("no randomness from the system: {e}")))?;
    Ok(bytes)
}

pub(super) fn digest_hex(secret: &str) -> String {
    KeyDigest::of(secret).to_hex()
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}
