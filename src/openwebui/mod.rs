//! `tollgate openwebui sync`: makes OpenWebUI's groups and per-model grants match the gateway
//! config, through OpenWebUI's admin API (0.12 and later: access grants). Each user's model
//! picker then shows exactly their models, whoever listed models last — OpenWebUI keeps one
//! model table for all its users, and refuses a model its table does not grant the user.
//!
//! Idempotent: it computes the changes first (printed by `--dry-run`) and sends only those.
//! Only groups named `tollgate-…` are touched; users are matched by email (users who have not
//! signed up to OpenWebUI yet are reported and picked up by the next run).

pub mod plan;

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::Config;
pub use plan::{GROUP_PREFIX, Plan, plan};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("{0}")]
    Plan(String),
    #[error("cannot reach OpenWebUI at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "OpenWebUI refused the admin token ({status}): sign in as an admin and use its API key or token"
    )]
    Unauthorized { status: u16 },
    #[error("OpenWebUI answered {status} to {what}: {body}")]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error(
        "OpenWebUI sent something unexpected for {what}: {reason} (is {url} an OpenWebUI 0.12 or later?)"
    )]
    Unexpected {
        what: String,
        url: String,
        reason: String,
    },
}

/// One change the sync makes (or, in a dry run, would make).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    CreateGroup(String),
    AddMembers(String, BTreeSet<String>),
    RemoveMembers(String, BTreeSet<String>),
    SetGrants(String, Vec<String>),
    /// Not a change: an email of the config without an OpenWebUI account yet.
    UnknownUser(String),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>().join(", ");
        match self {
            Change::CreateGroup(g) => write!(f, "create group {g}"),
            Change::AddMembers(g, m) => write!(f, "add to {g}: {}", list(m)),
            Change::RemoveMembers(g, m) => write!(f, "remove from {g}: {}", list(m)),
            Change::SetGrants(model, grants) => {
                write!(f, "model {model}: readable by {}", grants.join(", "))
            }
            Change::UnknownUser(e) => write!(f, "skip {e}: no OpenWebUI account yet"),
        }
    }
}

pub struct Sync {
    base: String,
    token: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct User {
    id: String,
    email: String,
}

#[derive(Deserialize)]
struct Users {
    users: Vec<User>,
}

#[derive(Deserialize)]
struct Group {
    id: String,
    name: String,
}

#[derive(Deserialize)]
struct GroupMembers {
    #[serde(default)]
    user_ids: Vec<String>,
}

#[derive(Deserialize, PartialEq, Eq, PartialOrd, Ord, Clone)]
struct Grant {
    principal_type: String,
    principal_id: String,
    permission: String,
}

#[derive(Deserialize)]
struct ModelEntry {
    #[serde(default)]
    access_grants: Vec<Grant>,
}

impl Sync {
    pub fn new(url: &str, token: &str) -> Result<Self, SyncError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| SyncError::Unreachable {
                url: url.into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            base: url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            http,
        })
    }

    /// Computes the changes for `front`'s users and, unless `dry_run`, makes them.
    pub async fn run(
        &self,
        config: &Config,
        front: &str,
        dry_run: bool,
    ) -> Result<Vec<Change>, SyncError> {
        let plan = plan(config, front).map_err(SyncError::Plan)?;
        let users: Users = self.get("/api/v1/users/all", "the user list").await?;
        let user_ids: HashMap<String, String> = users
            .users
            .into_iter()
            .map(|u| (u.email.trim().to_ascii_lowercase(), u.id))
            .collect();
        let id_to_email: HashMap<&str, &str> = user_ids
            .iter()
            .map(|(e, id)| (id.as_str(), e.as_str()))
            .collect();
        let mut changes = Vec::new();
        let mut unknown = BTreeSet::new();

        let groups: Vec<Group> = self.get("/api/v1/groups/", "the group list").await?;
        let mut group_ids: HashMap<String, String> =
            groups.into_iter().map(|g| (g.name, g.id)).collect();
        for (name, emails) in &plan.groups {
            let wanted: BTreeSet<String> = emails
                .iter()
                .filter(|e| {
                    let known = user_ids.contains_key(*e);
                    if !known {
                        unknown.insert((*e).clone());
                    }
                    known
                })
                .cloned()
                .collect();
            let current: BTreeSet<String> = match group_ids.get(name) {
                Some(id) => {
                    let members: GroupMembers = self
                        .get(
                            &format!("/api/v1/groups/id/{id}/export"),
                            "a group's members",
                        )
                        .await?;
                    members
                        .user_ids
                        .iter()
                        .filter_map(|id| id_to_email.get(id.as_str()).map(|e| (*e).to_owned()))
                        .collect()
                }
                None => {
                    changes.push(Change::CreateGroup(name.clone()));
                    if !dry_run {
                        let created: Group = self
                            .post(
                                "/api/v1/groups/create",
                                &json!({"name": name, "description": "Managed by tollgate openwebui sync"}),
                                "creating a group",
                            )
                            .await?;
                        group_ids.insert(name.clone(), created.id);
                    }
                    BTreeSet::new()
                }
            };
            let add: BTreeSet<String> = wanted.difference(&current).cloned().collect();
            let remove: BTreeSet<String> = current.difference(&wanted).cloned().collect();
            let group_id = group_ids.get(name).cloned().unwrap_or_default();
            for (members, path, change) in [
                (add, "add", Change::AddMembers as fn(_, _) -> _),
                (remove, "remove", Change::RemoveMembers as fn(_, _) -> _),
            ] {
                if members.is_empty() {
                    continue;
                }
                if !dry_run {
                    let ids: Vec<&String> =
                        members.iter().filter_map(|e| user_ids.get(e)).collect();
                    let _: Value = self
                        .post(
                            &format!("/api/v1/groups/id/{group_id}/users/{path}"),
                            &json!({"user_ids": ids}),
                            "changing a group's members",
                        )
                        .await?;
                }
                changes.push(change(name.clone(), members));
            }
        }

        for (model, grant) in &plan.models {
            let mut wanted: Vec<(String, String)> = Vec::new(); // (type, id) read grants
            if grant.public {
                // "Every user" for a model (OpenWebUI strips its `anyone` audience for models).
                wanted.push(("user".into(), "*".into()));
            }
            for g in &grant.groups {
                // In a dry run a group to be created has no id yet: name it.
                let id = group_ids.get(g).cloned().unwrap_or_else(|| g.clone());
                wanted.push(("group".into(), id));
            }
            for email in &grant.users {
                match user_ids.get(email) {
                    Some(id) => wanted.push(("user".into(), id.clone())),
                    None => {
                        unknown.insert(email.clone());
                    }
                }
            }
            wanted.sort();
            let current = self.model_grants(model).await?;
            if current == wanted {
                continue;
            }
            let described: Vec<String> = grant
                .public
                .then(|| "everyone".to_owned())
                .into_iter()
                .chain(grant.groups.iter().cloned())
                .chain(
                    grant
                        .users
                        .iter()
                        .filter(|e| user_ids.contains_key(*e))
                        .cloned(),
                )
                .collect();
            if !dry_run {
                let grants: Vec<Value> = wanted
                    .iter()
                    .map(|(t, id)| json!({"principal_type": t, "principal_id": id, "permission": "read"}))
                    .collect();
                let _: Value = self
                    .post(
                        "/api/v1/models/model/access/update",
                        &json!({"id": model, "name": model, "access_grants": grants}),
                        "setting a model's access",
                    )
                    .await?;
            }
            changes.push(Change::SetGrants(model.clone(), described));
        }
        changes.extend(unknown.into_iter().map(Change::UnknownUser));
        Ok(changes)
    }

    /// A model's read grants as (type, id), sorted; none when OpenWebUI has no entry for it.
    async fn model_grants(&self, model: &str) -> Result<Vec<(String, String)>, SyncError> {
        let url = format!("{}/api/v1/models/model", self.base);
        let response = self
            .http
            .get(&url)
            .query(&[("id", model)])
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if matches!(response.status().as_u16(), 401 | 403 | 404) && !self.token_works().await? {
            return Err(SyncError::Unauthorized {
                status: response.status().as_u16(),
            });
        }
        if !response.status().is_success() {
            return Ok(Vec::new()); // no entry yet (a connection's model never edited)
        }
        let entry: Option<ModelEntry> = response
            .json()
            .await
            .map_err(|e| self.unexpected("a model", e))?;
        let mut grants: Vec<(String, String)> = entry
            .map(|e| e.access_grants)
            .unwrap_or_default()
            .into_iter()
            .filter(|g| g.permission == "read")
            .map(|g| (g.principal_type, g.principal_id))
            .collect();
        grants.sort();
        Ok(grants)
    }

    async fn token_works(&self) -> Result<bool, SyncError> {
        let response = self
            .http
            .get(format!("{}/api/v1/users/all", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        Ok(response.status().is_success())
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        what: &str,
    ) -> Result<T, SyncError> {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request, what).await
    }

    async fn post<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &Value,
        what: &str,
    ) -> Result<T, SyncError> {
        let request = self.http.post(format!("{}{path}", self.base)).json(body);
        self.send(request, what).await
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<T, SyncError> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(SyncError::Unauthorized { status });
        }
        if !(200..300).contains(&status) {
            let body = response.text().await.unwrap_or_default();
            return Err(SyncError::Status {
                what: what.to_owned(),
                status,
                body: body.chars().take(300).collect(),
            });
        }
        response.json().await.map_err(|e| self.unexpected(what, e))
    }

    fn unreachable(&self, e: reqwest::Error) -> SyncError {
        SyncError::Unreachable {
            url: self.base.clone(),
            reason: e.to_string(),
        }
    }

    fn unexpected(&self, what: &str, e: reqwest::Error) -> SyncError {
        SyncError::Unexpected {
            what: what.to_owned(),
            url: self.base.clone(),
            reason: e.to_string(),
        }
    }
}
