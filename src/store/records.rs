//! What the store holds: consumers and keys managed at run time, as the admin API shows them
//! and the snapshot compiles them. A key's secret is never held: only its SHA-256 digest.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::{ConsumerConfig, LimitConfig, ModelList};

/// A consumer's settings, as the admin API takes them (every field optional).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_id: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Models on top of its groups' (a list, or `"*"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<ModelList>,
    /// End-user emails a trusted front end may assert as this consumer.
    #[serde(default)]
    pub emails: Vec<String>,
    /// Limits of this consumer alone (e.g. 5 USD per 30d), counted by the limit engine.
    #[serde(default)]
    pub budgets: Vec<LimitConfig>,
    /// Free-form labels for the operator (team, cost centre...); never interpreted.
    #[serde(default)]
    pub metadata: Map<String, Value>,
}

impl ConsumerSpec {
    /// The same consumer as a file consumer (without keys: stored keys are compiled apart).
    pub fn to_config(&self) -> ConsumerConfig {
        ConsumerConfig {
            custom_id: self.custom_id.clone(),
            keys: Vec::new(),
            client_certs: Vec::new(),
            groups: self.groups.clone(),
            models: self.models.clone(),
            emails: self.emails.clone(),
            trust_user_header: None,
            budgets: self.budgets.clone(),
        }
    }
}

/// What a key adds to (or takes from) its consumer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// Narrows the consumer's models to these (never widens them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Narrows the consumer's groups to these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    /// Limits of this key alone, on top of its consumer's.
    #[serde(default)]
    pub budgets: Vec<LimitConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumerRecord {
    pub name: String,
    #[serde(flatten)]
    pub spec: ConsumerSpec,
    #[serde(serialize_with = "times::one")]
    pub created_at: i64,
    #[serde(serialize_with = "times::one")]
    pub updated_at: i64,
}

/// A stored key. Its id stays the same across rotations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyRecord {
    pub id: String,
    pub consumer: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The first characters of the secret, to recognise it.
    pub prefix: String,
    /// SHA-256 of the secret, hex.
    #[serde(skip)]
    pub digest: String,
    /// The secret before the last rotation, valid until `previous_until`.
    #[serde(skip)]
    pub previous_digest: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "times::opt")]
    pub previous_until: Option<i64>,
    #[serde(flatten)]
    pub spec: KeySpec,
    #[serde(serialize_with = "times::one")]
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "times::opt")]
    pub rotated_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "times::opt")]
    pub expires_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "times::opt")]
    pub revoked_at: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "times::opt")]
    pub last_used_at: Option<i64>,
}

/// Everything the store holds, as of `revision`: what each node compiles into its snapshot.
#[derive(Debug, Clone, Default)]
pub struct StoreContents {
    pub revision: i64,
    /// By name, in name order (problems are reported in a stable order).
    pub consumers: BTreeMap<String, ConsumerRecord>,
    /// By id.
    pub keys: HashMap<String, KeyRecord>,
}

/// The rows written since a revision; deleted rows come as their names or ids.
#[derive(Debug, Default)]
pub struct Changes {
    /// The store's revision when they were read.
    pub head: i64,
    pub consumers: Vec<ConsumerRecord>,
    pub deleted_consumers: Vec<String>,
    pub keys: Vec<KeyRecord>,
    pub deleted_keys: Vec<String>,
}

/// The records a set of changes touches: consumers by name, keys by id.
#[derive(Debug, Default)]
pub struct Touched {
    pub consumers: HashSet<String>,
    pub keys: HashSet<String>,
}

impl Touched {
    pub fn len(&self) -> usize {
        self.consumers.len() + self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Changes {
    pub fn touched(&self) -> Touched {
        Touched {
            consumers: self
                .consumers
                .iter()
                .map(|c| c.name.clone())
                .chain(self.deleted_consumers.iter().cloned())
                .collect(),
            keys: self
                .keys
                .iter()
                .map(|k| k.id.clone())
                .chain(self.deleted_keys.iter().cloned())
                .collect(),
        }
    }
}

impl StoreContents {
    /// The records `touched` names, and the keys of the consumers it names, as they are now
    /// (what a snapshot must forget before it takes their new versions).
    pub fn subset(&self, touched: &Touched) -> StoreContents {
        StoreContents {
            revision: self.revision,
            consumers: touched
                .consumers
                .iter()
                .filter_map(|name| self.consumers.get_key_value(name))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            keys: self
                .keys
                .iter()
                .filter(|(id, k)| {
                    touched.keys.contains(*id) || touched.consumers.contains(&k.consumer)
                })
                .map(|(id, k)| (id.clone(), k.clone()))
                .collect(),
        }
    }

    /// Applies changes read from the store.
    pub fn apply(&mut self, changes: Changes) {
        for c in changes.consumers {
            self.consumers.insert(c.name.clone(), c);
        }
        for name in changes.deleted_consumers {
            self.consumers.remove(&name);
        }
        for k in changes.keys {
            self.keys.insert(k.id.clone(), k);
        }
        for id in changes.deleted_keys {
            self.keys.remove(&id);
        }
        self.revision = self.revision.max(changes.head);
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    crate::policy::limits::now_ms() as i64
}

/// Times are kept as Unix ms and shown as RFC 3339.
mod times {
    use crate::telemetry::clock::rfc3339_of_unix_ms as text;

    pub fn one<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&text(*ms))
    }

    pub fn opt<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&text(*ms)),
            None => s.serialize_none(),
        }
    }
}
