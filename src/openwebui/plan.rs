//! What OpenWebUI should hold for its users to see exactly their models: one OpenWebUI group
//! per gateway group of the users the front end acts for (members by email), and per model the
//! groups (and single users) that may read it. Computed from the config alone, so it can be
//! printed (dry run) and tested without an OpenWebUI.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::{Config, ModelList};

/// OpenWebUI groups made by the sync carry this prefix; others are never touched.
pub const GROUP_PREFIX: &str = "tollgate-";

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// OpenWebUI group name → member emails.
    pub groups: BTreeMap<String, BTreeSet<String>>,
    /// Model id → who may read it.
    pub models: BTreeMap<String, Grant>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Grant {
    /// Everyone (the front end itself may use it, so every user of it may).
    pub public: bool,
    /// OpenWebUI group names.
    pub groups: BTreeSet<String>,
    /// Emails of users granted it on their own (a consumer's own `models`).
    pub users: BTreeSet<String>,
}

/// The plan for the trusted consumer `front`.
pub fn plan(config: &Config, front: &str) -> Result<Plan, String> {
    let front_config = config
        .consumers
        .get(front)
        .ok_or_else(|| format!("no consumer {front:?} in the config"))?;
    let trust = front_config
        .trust_user_header
        .as_ref()
        .filter(|t| t.header_name().is_some())
        .ok_or_else(|| {
            format!("consumer {front:?} is not a trusted front end (trust_user_header)")
        })?;
    let acts_for = trust.acts_for();
    let listed = |model: &str| config.models.get(model).is_some_and(|m| m.listed);
    let contains = |list: Option<&ModelList>, model: &str| match list {
        Some(ModelList::All(_)) => true,
        Some(ModelList::Only(models)) => models.iter().any(|m| m == model),
        None => false,
    };

    let mut plan = Plan::default();
    let users = config.consumers.iter().filter(|(name, c)| {
        name.as_str() != front
            && !c.emails.is_empty()
            && acts_for.is_none_or(|groups| c.groups.iter().any(|g| groups.contains(g)))
    });
    let mut own_models: Vec<(&Option<ModelList>, &[String])> = Vec::new();
    for (_, user) in users {
        for group in &user.groups {
            plan.groups
                .entry(format!("{GROUP_PREFIX}{group}"))
                .or_default()
                .extend(user.emails.iter().map(|e| e.trim().to_ascii_lowercase()));
        }
        own_models.push((&user.models, &user.emails));
    }
    for model in config.models.keys().filter(|m| listed(m)) {
        let mut grant = Grant {
            public: contains(front_config.models.as_ref(), model),
            ..Grant::default()
        };
        for name in plan.groups.keys() {
            let group = &name[GROUP_PREFIX.len()..];
            let models = config.groups.get(group).and_then(|g| g.models.as_ref());
            if contains(models, model) {
                grant.groups.insert(name.clone());
            }
        }
        for (models, emails) in &own_models {
            if contains(models.as_ref(), model) {
                grant
                    .users
                    .extend(emails.iter().map(|e| e.trim().to_ascii_lowercase()));
            }
        }
        if grant.public || !grant.groups.is_empty() || !grant.users.is_empty() {
            plan.models.insert(model.clone(), grant);
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::config::load_str(
            r#"
providers: {p: {type: mock}}
models: {a: {provider: p}, b: {provider: p}, c: {provider: p}, hidden: {provider: p, listed: false}}
routes: {r: {}}
groups: {devs: {models: [a, b]}, admins: {models: "*"}, outsiders: {models: [c]}}
consumers:
  dev: {keys: [dev-key-12345], groups: [devs], emails: [Dev@Example.com]}
  admin: {keys: [admin-key-12345], groups: [devs, admins], emails: [admin@example.com]}
  special: {keys: [special-key-12345], groups: [devs], models: [c], emails: [special@example.com]}
  outsider: {keys: [out-key-12345], groups: [outsiders], emails: [out@example.com]}
  owui: {keys: [owui-key-12345], models: [a], trust_user_header: {acts_for: [devs]}}
"#,
            "t.yaml",
            &|_| None,
        )
        .unwrap()
    }

    #[test]
    fn groups_and_grants_follow_the_config() {
        let plan = plan(&config(), "owui").unwrap();
        let names: Vec<&str> = plan.groups.keys().map(String::as_str).collect();
        // The outsider is not acted for, so their group is not synced.
        assert_eq!(names, ["tollgate-admins", "tollgate-devs"]);
        assert_eq!(
            plan.groups["tollgate-devs"],
            BTreeSet::from([
                "dev@example.com".into(),
                "admin@example.com".into(),
                "special@example.com".into()
            ])
        );
        let a = &plan.models["a"];
        assert!(a.public, "the front end's own model is for everyone");
        let c = &plan.models["c"];
        assert!(!c.public);
        assert_eq!(c.groups, BTreeSet::from(["tollgate-admins".into()]));
        assert_eq!(c.users, BTreeSet::from(["special@example.com".into()]));
        assert!(!plan.models.contains_key("hidden"));
    }

    #[test]
    fn only_a_trusted_front_end_can_be_synced() {
        assert!(
            plan(&config(), "dev")
                .unwrap_err()
                .contains("not a trusted front end")
        );
        assert!(
            plan(&config(), "nobody")
                .unwrap_err()
                .contains("no consumer")
        );
    }
}
