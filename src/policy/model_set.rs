//! A set of model names, possibly "every model": what a route serves, a group or a consumer
//! may use. A leaf type, so that the snapshot, authentication and the access policy can share
//! it without depending on each other.

use std::collections::HashSet;

use crate::config::ModelList;

/// A set of model names, possibly "every model".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSet {
    All,
    Only(HashSet<String>),
}

impl ModelSet {
    pub fn none() -> Self {
        ModelSet::Only(HashSet::new())
    }

    pub fn from_list(list: Option<&ModelList>) -> Self {
        match list {
            Some(ModelList::All(_)) => ModelSet::All,
            Some(ModelList::Only(models)) => ModelSet::Only(models.iter().cloned().collect()),
            None => ModelSet::none(),
        }
    }

    pub fn contains(&self, model: &str) -> bool {
        match self {
            ModelSet::All => true,
            ModelSet::Only(set) => set.contains(model),
        }
    }

    pub fn union(self, other: &ModelSet) -> ModelSet {
        match (self, other) {
            (ModelSet::All, _) | (_, ModelSet::All) => ModelSet::All,
            (ModelSet::Only(mut a), ModelSet::Only(b)) => {
                a.extend(b.iter().cloned());
                ModelSet::Only(a)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(names: &[&str]) -> ModelSet {
        ModelSet::Only(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn set_algebra() {
        assert_eq!(only(&["a"]).union(&only(&["b"])), only(&["a", "b"]));
        assert_eq!(only(&["a"]).union(&ModelSet::All), ModelSet::All);
        assert!(!ModelSet::none().contains("a"));
    }
}
