//! A consumer: who a key, a token or a trusted front end's user is, with the groups and models
//! that follow from the config. Compiled into the snapshot; read by authentication, access
//! checks and limits.

use std::sync::Arc;

use axum::http::HeaderName;

use crate::auth::signed_user::SignedUserHeader;
use crate::policy::limits::Budgets;
use crate::policy::model_set::ModelSet;

#[derive(Debug)]
pub struct Consumer {
    /// Shared with every request record that names it (a count, not a copy).
    pub name: Arc<str>,
    pub custom_id: Option<String>,
    pub groups: Vec<String>,
    /// The union of the consumer's own and its groups' models (shared by consumers alike).
    pub models: Arc<ModelSet>,
    /// For trusted consumers: the header naming the end user.
    pub user_header: Option<HeaderName>,
    /// For trusted consumers: the groups whose members it may act for (`None`: anyone).
    pub acts_for: Option<Vec<String>>,
    /// For trusted consumers: the user must be signed (OpenWebUI's user JWT).
    pub signed_user: Option<Arc<SignedUserHeader>>,
    /// Its own limits (`budgets`), if any.
    pub budgets: Option<Arc<Budgets>>,
    /// Managed through the admin API (kept in the store), not written in the config file.
    pub from_store: bool,
}

impl Consumer {
    /// Whether this trusted consumer may act as `user`.
    pub fn may_act_for(&self, user: &Consumer) -> bool {
        self.acts_for
            .as_ref()
            .is_none_or(|groups| user.groups.iter().any(|g| groups.contains(g)))
    }
}
