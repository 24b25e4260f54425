//! What the gateway tells operators: the request log (and later metrics and traces).

pub mod clock;
pub mod json_line;
pub mod metrics;
pub mod recent;
pub mod redact;
pub mod request_log;
pub mod sinks;
pub mod traces;
