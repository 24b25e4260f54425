//! `tollgate import kong|litellm FILE...`: another gateway's configuration turned into a
//! Tollgate config. What has an equivalent is carried over; everything else is listed with
//! its place in the source and why, in the output's header and on standard error — nothing
//! is dropped silently. Secrets are never copied: API keys of clients are written hashed
//! (`sha256:`), provider keys and other secrets become `${VAR}` references to set.

pub mod kong;
pub mod litellm;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::auth::keys::KeyDigest;

/// A source file that cannot be read as what it should be.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", location.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default())]
pub struct ImportError {
    pub file: String,
    /// Line and column, where known.
    pub location: Option<(usize, usize)>,
    pub message: String,
}

impl ImportError {
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        Self {
            file: file.display().to_string(),
            location: None,
            message: message.into(),
        }
    }

    fn yaml(file: &Path, e: &serde_yaml_ng::Error) -> Self {
        Self {
            file: file.display().to_string(),
            location: e.location().map(|l| (l.line(), l.column())),
            message: e.to_string(),
        }
    }
}

/// Every YAML document of a file (a Kubernetes manifest has several), as JSON values.
pub fn read_documents(file: &Path) -> Result<Vec<Value>, ImportError> {
    let text = std::fs::read_to_string(file).map_err(|e| ImportError::new(file, e.to_string()))?;
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_str(&text) {
        let value: Value =
            serde::Deserialize::deserialize(document).map_err(|e| ImportError::yaml(file, &e))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// What the import could not carry over, and what the operator must provide.
#[derive(Debug, Default)]
pub struct Report {
    /// `(where in the source, why)` for what was left out or only partly carried.
    pub not_carried: Vec<(String, String)>,
    /// Environment variables the output refers to: `(name, what it holds)`.
    pub variables: Vec<(String, String)>,
    /// Notes on how something was carried (semantics that differ).
    pub notes: Vec<String>,
}

impl Report {
    pub fn skip(&mut self, at: impl Into<String>, why: impl Into<String>) {
        self.not_carried.push((at.into(), why.into()));
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        if !self.notes.contains(&note) {
            self.notes.push(note);
        }
    }

    fn variable(&mut self, name: &str, holds: String) {
        if !self.variables.iter().any(|(n, _)| n == name) {
            self.variables.push((name.to_owned(), holds));
        }
    }

    /// A secret as a `${VAR}` reference: a decK `${{ env "X" }}` template keeps its variable,
    /// anything else gets `suggested` (the value itself is never written).
    pub fn secret(&mut self, value: &str, suggested: &str, at: &str) -> String {
        let name = env_template(value).unwrap_or_else(|| env_name(suggested));
        self.variable(&name, format!("the secret at {at}"));
        format!("${{{name}}}")
    }
}

/// `${{ env "DECK_X" }}` (decK's templating) → `DECK_X`.
fn env_template(value: &str) -> Option<String> {
    let start = value.find("${{")?;
    let inner = &value[start + 3..value[start..].find("}}")? + start];
    let name = inner.trim().strip_prefix("env")?.trim().trim_matches('"');
    (!name.is_empty()).then(|| name.to_owned())
}

/// An environment variable name from a free text: upper case, `_` for anything else.
pub fn env_name(text: &str) -> String {
    let mut name: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    while name.contains("__") {
        name = name.replace("__", "_");
    }
    name.trim_matches('_').to_owned()
}

/// A client's API key as the config keeps it: hashed, or a `${VAR}` when the source holds
/// only a template.
pub fn client_key(value: &str, suggested: &str, at: &str, report: &mut Report) -> String {
    if env_template(value).is_some() {
        return report.secret(value, suggested, at);
    }
    KeyDigest::of(value).to_config_string()
}

/// The result: the config and what was not carried.
pub struct Imported {
    pub config: Map<String, Value>,
    pub report: Report,
}

impl Imported {
    /// The config as YAML, headed by the report as comments.
    pub fn render(&self, from: &str) -> Result<String, String> {
        let mut out = String::new();
        let _ = writeln!(out, "# Imported by `tollgate import` from {from}.");
        if !self.report.variables.is_empty() {
            out.push_str("#\n# Set these environment variables (values were not copied):\n");
            for (name, holds) in &self.report.variables {
                let _ = writeln!(out, "#   {name}: {holds}");
            }
        }
        if !self.report.notes.is_empty() {
            out.push_str("#\n# Notes:\n");
            for note in &self.report.notes {
                let _ = writeln!(out, "#   - {note}");
            }
        }
        if self.report.not_carried.is_empty() {
            out.push_str("#\n# Everything was carried over.\n");
        } else {
            out.push_str("#\n# Not carried over:\n");
            for (at, why) in &self.report.not_carried {
                let _ = writeln!(out, "#   - {at}: {why}");
            }
        }
        out.push('\n');
        out.push_str(
            &serde_yaml_ng::to_string(&Value::Object(self.config.clone()))
                .map_err(|e| e.to_string())?,
        );
        Ok(out)
    }

    /// The report alone, for standard error.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for (at, why) in &self.report.not_carried {
            let _ = writeln!(out, "not carried: {at}: {why}");
        }
        for (name, holds) in &self.report.variables {
            let _ = writeln!(out, "set {name}: {holds}");
        }
        out
    }
}

/// `tollgate import`: reads, translates, writes the config (to `output` or standard out) and
/// the report (to standard error).
pub fn run(kind: &str, files: &[PathBuf], output: Option<&Path>) -> Result<(), String> {
    let imported = match kind {
        "kong" => kong::import(files),
        "litellm" => match files {
            [file] => litellm::import(file),
            _ => return Err("tollgate import litellm takes one config.yaml".into()),
        },
        other => return Err(format!("unknown source {other:?} (kong or litellm)")),
    }
    .map_err(|e| e.to_string())?;
    let from = files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let text = imported.render(&format!("{kind}: {from}"))?;
    match output {
        Some(path) => std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?,
        None => print!("{text}"),
    }
    eprint!("{}", imported.summary());
    Ok(())
}

/// A duration in seconds as the config writes it.
pub fn seconds(secs: f64) -> String {
    if secs >= 3600.0 && secs % 3600.0 == 0.0 {
        format!("{}h", secs as u64 / 3600)
    } else if secs >= 60.0 && secs % 60.0 == 0.0 {
        format!("{}m", secs as u64 / 60)
    } else if secs.fract() == 0.0 {
        format!("{}s", secs as u64)
    } else {
        format!("{}ms", (secs * 1000.0).round() as u64)
    }
}

/// A provider's name, unique in `providers` (`base`, `base-2`, ...).
pub fn unique_name(taken: &Map<String, Value>, base: &str) -> String {
    if !taken.contains_key(base) {
        return base.to_owned();
    }
    (2..)
        .map(|i| format!("{base}-{i}"))
        .find(|n| !taken.contains_key(n))
        .unwrap_or_else(|| base.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_become_references_and_keys_are_hashed() {
        let mut report = Report::default();
        assert_eq!(
            report.secret(
                r#"Bearer ${{ env "DECK_OPENAI_API_KEY" }}"#,
                "openai key",
                "x"
            ),
            "${DECK_OPENAI_API_KEY}"
        );
        assert_eq!(
            report.secret("Bearer sk-live-123", "openai api key", "y"),
            "${OPENAI_API_KEY}"
        );
        assert_eq!(report.variables.len(), 2);
        let hashed = client_key("dev-key-12345", "k", "z", &mut report);
        assert!(hashed.starts_with("sha256:") && !hashed.contains("dev-key"));
        assert_eq!(seconds(60.0), "1m");
        assert_eq!(seconds(30.0), "30s");
        assert_eq!(seconds(0.5), "500ms");
    }
}
