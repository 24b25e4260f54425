//! Decisions about what an authenticated caller may do: route ACLs and model access, the
//! prompt guard and decorator, token/request/cost limits, and what tokens cost.

pub mod access;
pub mod budget;
pub mod decorator;
pub mod guard;
pub mod limits;
pub mod model_set;
pub mod pricing;
pub mod tokens;
