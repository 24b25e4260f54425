//! What the gateway tells operators: the request log (and later metrics and traces).

pub mod metrics;
pub mod request_log;
