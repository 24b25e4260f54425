//! Decisions about what an authenticated caller may do: route ACLs and model access.
//! (Rate limits, budgets and prompt guards will live here too.)

pub mod access;
