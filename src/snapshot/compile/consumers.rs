//! `consumers:` checked (keys, custom ids, emails, groups, models, trusted headers) and built
//! into the lookups requests use: by key digest, email and custom id. Each key is parsed and
//! hashed once (a million keys make this the longest part of a start).

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderName;

use super::{Problems, check_groups, check_model_list};
use crate::auth::consumer::Consumer;
use crate::auth::keys::KeyDigest;
use crate::auth::signed_user::SignedUserHeader;
use crate::config::{Config, ConsumerConfig, FieldPath};
use crate::policy::model_set::ModelSet;

/// The compiled consumers, by each way a request names one.
pub(super) struct Consumers {
    pub keys: HashMap<KeyDigest, Arc<Consumer>>,
    pub emails: HashMap<String, Arc<Consumer>>,
    pub custom_ids: HashMap<String, Arc<Consumer>>,
    pub by_name: HashMap<String, Arc<Consumer>>,
    /// What trusted front ends with `list_union` list: the union of their users' models.
    pub listings: HashMap<String, ModelSet>,
}

pub(super) fn compile(config: &Config, at: &FieldPath, problems: &mut Problems) -> Consumers {
    let mut keys: HashMap<KeyDigest, Arc<Consumer>> = HashMap::new();
    let mut emails: HashMap<String, Arc<Consumer>> = HashMap::new();
    let mut custom_ids: HashMap<String, Arc<Consumer>> = HashMap::new();
    let mut by_name = HashMap::new();
    // Consumers with the same groups and models (most of a large config) share one set.
    let mut model_sets: HashMap<String, Arc<ModelSet>> = HashMap::new();
    for (name, cc) in &config.consumers {
        let at = at.key(name);
        check_groups(config, &cc.groups, &at.key("groups"), problems);
        check_model_list(config, cc.models.as_ref(), &at.key("models"), problems);
        let models = model_sets
            .entry(format!("{:?}{:?}", cc.groups, cc.models))
            .or_insert_with(|| {
                Arc::new(cc.groups.iter().fold(
                    ModelSet::from_list(cc.models.as_ref()),
                    |acc, g| {
                        acc.union(&ModelSet::from_list(
                            config.groups.get(g).and_then(|g| g.models.as_ref()),
                        ))
                    },
                ))
            })
            .clone();
        let consumer = Arc::new(Consumer {
            name: name.clone(),
            custom_id: cc.custom_id.clone(),
            groups: cc.groups.clone(),
            models,
            user_header: user_header(cc, &at, problems),
            acts_for: acts_for(config, cc, &at, problems),
            signed_user: signed_user(cc, &at, problems),
        });
        if let Some(id) = cc.custom_id.as_deref() {
            match custom_ids.get(id) {
                Some(other) => problems.add(
                    at.key("custom_id"),
                    format!(
                        "custom_id {id:?} is already used by consumer {:?}",
                        other.name
                    ),
                ),
                None => {
                    custom_ids.insert(id.to_owned(), consumer.clone());
                }
            }
        }
        for (i, key) in cc.keys.iter().enumerate() {
            match KeyDigest::from_config(key) {
                Ok(digest) => match keys.get(&digest) {
                    // Never echo the key itself.
                    Some(other) => problems.add(
                        at.key("keys").index(i),
                        format!("this key is already given to consumer {:?}", other.name),
                    ),
                    None => {
                        keys.insert(digest, consumer.clone());
                    }
                },
                Err(e) => problems.add(at.key("keys").index(i), e),
            }
        }
        for (i, email) in cc.emails.iter().enumerate() {
            let normalized = email.trim().to_ascii_lowercase();
            if !normalized.contains('@') {
                problems.add(
                    at.key("emails").index(i),
                    format!("{email:?} is not an email address"),
                );
            } else if let Some(other) = emails.get(&normalized) {
                problems.add(
                    at.key("emails").index(i),
                    format!(
                        "email {email:?} already belongs to consumer {:?}",
                        other.name
                    ),
                );
            } else {
                emails.insert(normalized, consumer.clone());
            }
        }
        by_name.insert(name.clone(), consumer);
    }

    // What a trusted front end with `list_union` lists: its own models and those of every
    // user it may act for.
    let mut listings = HashMap::new();
    for (name, cc) in &config.consumers {
        let lists_union = cc
            .trust_user_header
            .as_ref()
            .and_then(|t| t.options())
            .is_some_and(|o| o.list_union);
        let Some(front) = by_name.get(name).filter(|_| lists_union) else {
            continue;
        };
        let union = emails
            .values()
            .filter(|user| front.may_act_for(user))
            .fold((*front.models).clone(), |acc, user| acc.union(&user.models));
        listings.insert(name.clone(), union);
    }
    Consumers {
        keys,
        emails,
        custom_ids,
        by_name,
        listings,
    }
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
