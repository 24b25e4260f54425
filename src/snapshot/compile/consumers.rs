//! `consumers:` checked (keys, custom ids, emails, groups, models, trusted headers) and built
//! into the lookups requests use: by key digest, email and custom id. Each key is parsed and
//! hashed once (a million keys make this the longest part of a start).

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderName;

use std::sync::atomic::AtomicI64;

use super::{Problems, check_groups, check_limits, check_model_list};
use crate::auth::consumer::Consumer;
use crate::auth::keys::{KeyDigest, KeyEntry, KeyStanding, ManagedKey};
use crate::auth::signed_user::SignedUserHeader;
use crate::config::{Config, ConsumerConfig, FieldPath, ModelList};
use crate::fast_hash::FastHashMap;
use crate::policy::limits::Budgets;
use crate::policy::model_set::ModelSet;
use crate::snapshot::Snapshot;
use crate::store::{ConsumerRecord, KeyRecord, KeySpec, StoreContents, Touched};

/// The compiled consumers, by each way a request names one.
pub(super) struct Consumers {
    pub keys: FastHashMap<KeyDigest, KeyEntry>,
    /// The store's keys by id.
    pub managed_keys: HashMap<String, Arc<ManagedKey>>,
    pub emails: HashMap<String, Arc<Consumer>>,
    pub custom_ids: HashMap<String, Arc<Consumer>>,
    pub by_name: HashMap<String, Arc<Consumer>>,
    /// What trusted front ends with `list_union` list: the union of their users' models.
    pub listings: HashMap<String, ModelSet>,
}

/// The file's consumers and then the store's, through the same checks; a store record's
/// problems name the record (`store: consumers.<name>...`, `store: keys.<id>...`).
pub(super) fn compile(
    config: &Config,
    store: &StoreContents,
    previous: Option<&Snapshot>,
    at: &FieldPath,
    problems: &mut Problems,
) -> Consumers {
    let mut built = Consumers {
        keys: FastHashMap::default(),
        managed_keys: HashMap::new(),
        emails: HashMap::new(),
        custom_ids: HashMap::new(),
        by_name: HashMap::new(),
        listings: HashMap::new(),
    };
    // Consumers with the same groups and models (most of a large config) share one set.
    let mut model_sets: HashMap<String, Arc<ModelSet>> = HashMap::new();
    for (name, cc) in &config.consumers {
        let at = at.key(name);
        let consumer = add_consumer(
            config,
            name,
            cc,
            &at,
            false,
            &mut model_sets,
            &mut built,
            problems,
        );
        for (i, key) in cc.keys.iter().enumerate() {
            match KeyDigest::from_config(key) {
                Ok(digest) => add_key(&mut built, digest, &consumer, None, KeyStanding::Current)
                    .unwrap_or_else(|message| problems.add(at.key("keys").index(i), message)),
                Err(e) => problems.add(at.key("keys").index(i), e),
            }
        }
    }
    problems.in_store(|problems| {
        let root = FieldPath::root();
        for record in store.consumers.values() {
            add_store_consumer(config, record, &mut model_sets, &mut built, problems);
        }
        for record in store.keys.values() {
            add_stored_key(
                config,
                store,
                record,
                previous,
                &root.key("keys").key(&record.id),
                &mut built,
                problems,
            );
        }
    });
    built.listings = listings(config, &built);
    built
}

/// Takes a store change into `built` (the current snapshot's consumers): forgets what `old`
/// says the touched records were (and every key of a touched consumer), then adds their
/// new versions from `store` through the same checks as a full compile. Work in proportion to
/// the change (and one scan of the keys), not to the store: a change among a million keys
/// reaches requests in well under a second.
pub(super) fn update(
    built: &mut Consumers,
    config: &Config,
    store: &StoreContents,
    old: &StoreContents,
    touched: &Touched,
    previous: &Snapshot,
    problems: &mut Problems,
) {
    let ours = |c: &Arc<Consumer>, name: &str| c.from_store && *c.name == *name;
    for (name, record) in &old.consumers {
        if built.by_name.get(name).is_some_and(|c| ours(c, name)) {
            built.by_name.remove(name);
        }
        for email in &record.spec.emails {
            let email = email.trim().to_ascii_lowercase();
            if built.emails.get(&email).is_some_and(|c| ours(c, name)) {
                built.emails.remove(&email);
            }
        }
        if let Some(id) = &record.spec.custom_id
            && built.custom_ids.get(id).is_some_and(|c| ours(c, name))
        {
            built.custom_ids.remove(id);
        }
    }
    for record in old.keys.values() {
        let digests = [Some(&record.digest), record.previous_digest.as_ref()];
        for digest in digests
            .into_iter()
            .flatten()
            .filter_map(|d| KeyDigest::from_hex(d))
        {
            let this_key = built
                .keys
                .get(&digest)
                .and_then(|e| e.managed.as_ref())
                .is_some_and(|m| m.id == record.id);
            if this_key {
                built.keys.remove(&digest);
            }
        }
        built.managed_keys.remove(&record.id);
    }
    let mut model_sets = HashMap::new();
    problems.in_store(|problems| {
        let root = FieldPath::root();
        for name in &touched.consumers {
            if let Some(record) = store.consumers.get(name) {
                add_store_consumer(config, record, &mut model_sets, built, problems);
            }
        }
        let changed = store
            .keys
            .values()
            .filter(|k| touched.keys.contains(&k.id) || touched.consumers.contains(&k.consumer));
        for record in changed {
            let at = root.key("keys").key(&record.id);
            add_stored_key(config, store, record, Some(previous), &at, built, problems);
        }
    });
    built.listings = listings(config, built);
}

/// A store consumer, unless the file has one of that name.
fn add_store_consumer(
    config: &Config,
    record: &ConsumerRecord,
    model_sets: &mut HashMap<String, Arc<ModelSet>>,
    built: &mut Consumers,
    problems: &mut Problems,
) {
    let at = FieldPath::root().key("consumers").key(&record.name);
    if config.consumers.contains_key(&record.name) {
        problems.add(at, "the config file has a consumer of this name");
        return;
    }
    let cc = record.spec.to_config();
    add_consumer(
        config,
        &record.name,
        &cc,
        &at,
        true,
        model_sets,
        built,
        problems,
    );
}

/// Checks and builds one consumer, and files it under its name, custom id and emails.
#[allow(clippy::too_many_arguments)]
fn add_consumer(
    config: &Config,
    name: &str,
    cc: &ConsumerConfig,
    at: &FieldPath,
    from_store: bool,
    model_sets: &mut HashMap<String, Arc<ModelSet>>,
    built: &mut Consumers,
    problems: &mut Problems,
) -> Arc<Consumer> {
    check_groups(config, &cc.groups, &at.key("groups"), problems);
    check_model_list(config, cc.models.as_ref(), &at.key("models"), problems);
    check_limits(&cc.budgets, &at.key("budgets"), problems);
    let models = model_sets
        .entry(format!("{:?}{:?}", cc.groups, cc.models))
        .or_insert_with(|| {
            Arc::new(
                cc.groups
                    .iter()
                    .fold(ModelSet::from_list(cc.models.as_ref()), |acc, g| {
                        acc.union(&ModelSet::from_list(
                            config.groups.get(g).and_then(|g| g.models.as_ref()),
                        ))
                    }),
            )
        })
        .clone();
    let consumer = Arc::new(Consumer {
        name: name.into(),
        custom_id: cc.custom_id.clone(),
        groups: cc.groups.clone(),
        models,
        user_header: user_header(cc, at, problems),
        acts_for: acts_for(config, cc, at, problems),
        signed_user: signed_user(cc, at, problems),
        budgets: Budgets::compile(format!("consumer:{name}"), &cc.budgets),
        from_store,
    });
    if let Some(id) = cc.custom_id.as_deref() {
        match built.custom_ids.get(id) {
            Some(other) => problems.add(
                at.key("custom_id"),
                format!(
                    "custom_id {id:?} is already used by consumer {:?}",
                    other.name
                ),
            ),
            None => {
                built.custom_ids.insert(id.to_owned(), consumer.clone());
            }
        }
    }
    for (i, email) in cc.emails.iter().enumerate() {
        let normalized = email.trim().to_ascii_lowercase();
        if !normalized.contains('@') {
            problems.add(
                at.key("emails").index(i),
                format!("{email:?} is not an email address"),
            );
        } else if let Some(other) = built.emails.get(&normalized) {
            problems.add(
                at.key("emails").index(i),
                format!(
                    "email {email:?} already belongs to consumer {:?}",
                    other.name
                ),
            );
        } else {
            built.emails.insert(normalized, consumer.clone());
        }
    }
    built.by_name.insert(name.to_owned(), consumer.clone());
    consumer
}

/// Files a key digest; an error (never echoing the key) if another consumer has it.
fn add_key(
    built: &mut Consumers,
    digest: KeyDigest,
    consumer: &Arc<Consumer>,
    managed: Option<&Arc<ManagedKey>>,
    standing: KeyStanding,
) -> Result<(), String> {
    if let Some(other) = built.keys.get(&digest) {
        return Err(format!(
            "this key is already given to consumer {:?}",
            other.consumer.name
        ));
    }
    built.keys.insert(
        digest,
        KeyEntry {
            consumer: consumer.clone(),
            managed: managed.cloned(),
            standing,
        },
    );
    Ok(())
}

/// A stored key: its current secret, the previous one while a rotation's grace lasts (and
/// after, so that it gets its own error), each revoked if the key is.
fn add_stored_key(
    config: &Config,
    store: &StoreContents,
    record: &KeyRecord,
    previous: Option<&Snapshot>,
    at: &FieldPath,
    built: &mut Consumers,
    problems: &mut Problems,
) {
    let Some(owner) = built.by_name.get(&record.consumer).cloned() else {
        problems.add(
            at.key("consumer"),
            format!("no consumer {:?} in the store", record.consumer),
        );
        return;
    };
    let own_models = store
        .consumers
        .get(&record.consumer)
        .and_then(|c| c.spec.models.as_ref());
    let consumer = narrowed(config, &owner, own_models, &record.spec, at, problems);
    check_limits(&record.spec.budgets, &at.key("budgets"), problems);
    let managed = Arc::new(ManagedKey {
        id: record.id.clone(),
        expires_at_ms: record.expires_at,
        previous_until_ms: record.previous_until,
        budgets: Budgets::compile(format!("key:{}", record.id), &record.spec.budgets),
        last_used_ms: previous
            .and_then(|p| p.managed_key(&record.id))
            .map(|k| k.last_used_ms.clone())
            .unwrap_or_else(|| Arc::new(AtomicI64::new(record.last_used_at.unwrap_or(0)))),
    });
    let revoked = record.revoked_at.is_some();
    let secrets = [
        (Some(&record.digest), KeyStanding::Current),
        (record.previous_digest.as_ref(), KeyStanding::Previous),
    ];
    for (digest, standing) in secrets {
        let Some(digest) = digest else { continue };
        let Some(digest) = KeyDigest::from_hex(digest) else {
            problems.add(at.key("digest"), "the stored digest is not 64 hex digits");
            continue;
        };
        let standing = if revoked {
            KeyStanding::Revoked
        } else {
            standing
        };
        if let Err(message) = add_key(built, digest, &consumer, Some(&managed), standing) {
            problems.add(at.clone(), message);
        }
    }
    built.managed_keys.insert(record.id.clone(), managed);
}

/// The key's consumer, narrowed to the key's own groups and models (which must be among
/// the consumer's: a key never has more than its consumer).
fn narrowed(
    config: &Config,
    owner: &Arc<Consumer>,
    own_models: Option<&ModelList>,
    spec: &KeySpec,
    at: &FieldPath,
    problems: &mut Problems,
) -> Arc<Consumer> {
    if spec.groups.is_none() && spec.models.is_none() {
        return owner.clone();
    }
    let groups = match &spec.groups {
        Some(groups) => {
            for (i, g) in groups.iter().enumerate() {
                if !owner.groups.contains(g) {
                    problems.add(
                        at.key("groups").index(i),
                        format!("consumer {:?} is not in group {g:?}", owner.name),
                    );
                }
            }
            groups.clone()
        }
        None => owner.groups.clone(),
    };
    // With fewer groups, the consumer's own models and those of the groups kept.
    let mut models = match &spec.groups {
        Some(kept) => kept.iter().fold(ModelSet::from_list(own_models), |acc, g| {
            acc.union(&ModelSet::from_list(
                config.groups.get(g).and_then(|g| g.models.as_ref()),
            ))
        }),
        None => (*owner.models).clone(),
    };
    if let Some(list) = &spec.models {
        for (i, m) in list.iter().enumerate() {
            if !owner.models.contains(m) {
                problems.add(
                    at.key("models").index(i),
                    format!("consumer {:?} may not use model {m:?}", owner.name),
                );
            }
        }
        models = ModelSet::Only(
            list.iter()
                .filter(|m| models.contains(m))
                .cloned()
                .collect(),
        );
    }
    Arc::new(Consumer {
        name: owner.name.clone(),
        custom_id: owner.custom_id.clone(),
        groups,
        models: Arc::new(models),
        user_header: None,
        acts_for: None,
        signed_user: None,
        budgets: owner.budgets.clone(),
        from_store: true,
    })
}

/// What a trusted front end with `list_union` lists: its own models and those of every
/// user it may act for.
fn listings(config: &Config, built: &Consumers) -> HashMap<String, ModelSet> {
    let mut listings = HashMap::new();
    for (name, cc) in &config.consumers {
        let lists_union = cc
            .trust_user_header
            .as_ref()
            .and_then(|t| t.options())
            .is_some_and(|o| o.list_union);
        let Some(front) = built.by_name.get(name).filter(|_| lists_union) else {
            continue;
        };
        let union = built
            .emails
            .values()
            .filter(|user| front.may_act_for(user))
            .fold((*front.models).clone(), |acc, user| acc.union(&user.models));
        listings.insert(name.clone(), union);
    }
    listings
}

/// The header naming the end user, for a consumer trusted to send one.
fn user_header(cc: &ConsumerConfig, at: &FieldPath, problems: &mut Problems) -> Option<HeaderName> {
    let header = cc.trust_user_header.as_ref()?.header_name()?;
    match HeaderName::from_bytes(header.as_bytes()) {
        Ok(name) => Some(name),
        Err(_) => {
            problems.add(
                at.key("trust_user_header"),
                format!("{header:?} is not a valid header name"),
            );
            None
        }
    }
}

/// The groups whose members a trusted front end may act for.
fn acts_for(
    config: &Config,
    cc: &ConsumerConfig,
    at: &FieldPath,
    problems: &mut Problems,
) -> Option<Vec<String>> {
    let groups = cc.trust_user_header.as_ref()?.acts_for()?;
    for (i, group) in groups.iter().enumerate() {
        if !config.groups.contains_key(group) {
            problems.add(
                at.key("trust_user_header").key("acts_for").index(i),
                format!("unknown group {group:?}"),
            );
        }
    }
    Some(groups.to_vec())
}

/// The verifier of a front end's signed user token, when it sends one.
fn signed_user(
    cc: &ConsumerConfig,
    at: &FieldPath,
    problems: &mut Problems,
) -> Option<Arc<SignedUserHeader>> {
    let jwt = cc.trust_user_header.as_ref()?.options()?.jwt.as_ref()?;
    match SignedUserHeader::new(jwt) {
        Ok(verifier) => Some(Arc::new(verifier)),
        Err(message) => {
            problems.add(at.key("trust_user_header").key("jwt"), message);
            None
        }
    }
}
