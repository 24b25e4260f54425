//! Reading the one YAML configuration file: parse, substitute `${ENV}`, deserialise into the
//! schema. Every error carries the file, line and field path so `tollgate check` can point at
//! it. What the types cannot say (references between sections, URLs, keys, duplicates) is
//! checked as the config is compiled (`snapshot::compile`), in the same pass that builds it.

mod env;
pub mod locate;
pub mod schema;

use std::borrow::Cow;
use std::fmt;
use std::path::{Path, PathBuf};

pub use locate::{FieldPath, Location};
pub use schema::*;

use locate::{Locator, Segment};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub location: Option<Location>,
    /// Empty for problems that are not about one field (unreadable file, YAML syntax).
    pub path: Option<FieldPath>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(loc) = self.location {
            write!(f, ":{}:{}", loc.line, loc.column)?;
        }
        if let Some(path) = &self.path {
            write!(f, ": {path}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// All the problems found in one file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The text of a config file, or a located error saying why it cannot be read.
pub fn read_file(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.display().to_string(),
            location: None,
            path: None,
            message: format!("cannot read: {e}"),
        }])
    })
}

/// A route's URL prefix: its `path`, or `/<name>`.
pub fn route_path(name: &str, path: Option<&str>) -> String {
    path.map(str::to_owned)
        .unwrap_or_else(|| format!("/{name}"))
}

/// The path a relative config path resolves to, for watching.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Parses, substitutes and deserialises `text`; `file` only names it in errors.
pub fn load_str(
    text: &str,
    file: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let error = |location, path, message: String| ConfigError {
        file: file.to_owned(),
        location,
        path,
        message,
    };

    let mut value: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(|e| {
        let location = e.location().map(|l| Location {
            line: l.line(),
            column: l.column(),
        });
        ConfigErrors(vec![error(
            location,
            None,
            format!("invalid YAML: {}", strip_location(&e.to_string())),
        )])
    })?;
    if value.is_null() {
        value = serde_yaml_ng::Value::Mapping(Default::default());
    }
    let locator = Locator::new(text);
    let at = |path: FieldPath, message: String| error(locator.find(&path), Some(path), message);

    let mut env_errors = Vec::new();
    substitute_env(&mut value, &Step::Root, lookup, &mut |path, msg| {
        env_errors.push(at(path, msg))
    });
    if !env_errors.is_empty() {
        return Err(ConfigErrors(env_errors));
    }

    let config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
        let mut path = from_serde_path(e.path());
        let message = strip_location(&e.inner().to_string());
        // Point at the misspelled key itself rather than at the map holding it.
        if let Some(field) = unknown_field_name(&message) {
            path = path.key(field);
        }
        ConfigErrors(vec![at(path, message)])
    })?;

    Ok(config)
}

/// Where a value stands, as a chain of steps up to the root, made into a [`FieldPath`] only
/// for a problem: a config of a million consumers has millions of values, nearly all without
/// one, and a path built for each of them was seconds of the start-up.
enum Step<'p> {
    Root,
    Key(&'p Step<'p>, &'p serde_yaml_ng::Value),
    Index(&'p Step<'p>, usize),
}

impl Step<'_> {
    fn path(&self) -> FieldPath {
        match self {
            Step::Root => FieldPath::root(),
            Step::Key(parent, serde_yaml_ng::Value::String(key)) => parent.path().key(key.as_str()),
            Step::Key(parent, key) => parent.path().key(
                serde_yaml_ng::to_string(key)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            ),
            Step::Index(parent, i) => parent.path().index(*i),
        }
    }
}

fn substitute_env(
    value: &mut serde_yaml_ng::Value,
    at: &Step<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
    report: &mut dyn FnMut(FieldPath, String),
) {
    use serde_yaml_ng::Value;
    match value {
        Value::String(s) => match env::interpolate(s, lookup) {
            Ok(Cow::Owned(new)) => *s = new,
            // Nothing to substitute (most strings): left as it is.
            Ok(Cow::Borrowed(_)) => {}
            Err(msg) => report(at.path(), msg),
        },
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, &Step::Index(at, i), lookup, report);
            }
        }
        Value::Mapping(map) => {
            for (key, v) in map.iter_mut() {
                substitute_env(v, &Step::Key(at, key), lookup, report);
            }
        }
        Value::Tagged(tagged) => substitute_env(&mut tagged.value, at, lookup, report),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

fn from_serde_path(path: &serde_path_to_error::Path) -> FieldPath {
    use serde_path_to_error::Segment as S;
    FieldPath(
        path.iter()
            .filter_map(|seg| match seg {
                S::Map { key } => Some(Segment::Key(key.clone())),
                S::Seq { index } => Some(Segment::Index(*index)),
                S::Enum { .. } | S::Unknown => None,
            })
            .collect(),
    )
}

fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

/// serde_yaml appends " at line X column Y"; we print locations ourselves.
fn strip_location(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let cfg = load_str("", "t.yaml", &no_env).unwrap();
        assert_eq!(cfg.listen.proxy.port(), 8080);
        assert_eq!(cfg.limits.max_body.as_u64(), 16 * 1024 * 1024);
    }

    #[test]
    fn unknown_field_points_at_the_key() {
        let text =
            "providers:\n  p:\n    type: mock\nmodels:\n  m:\n    provider: p\n    lisetd: false\n";
        let errs = load_str(text, "t.yaml", &no_env).unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].location.unwrap().line, 7, "{}", errs[0]);
        assert!(
            errs[0].to_string().contains("models.m.lisetd"),
            "{}",
            errs[0]
        );
    }

    #[test]
    fn env_is_substituted_in_values_only() {
        let text = "providers:\n  p:\n    type: openai\n    base_url: ${URL:-http://localhost:1/v1}\n    api_key: ${KEY}\n";
        let env = |n: &str| (n == "KEY").then(|| "s3cr#t: x".to_owned());
        let cfg = load_str(text, "t.yaml", &env).unwrap();
        let ProviderConfig::Openai(p) = &cfg.providers["p"] else {
            panic!()
        };
        assert_eq!(p.base_url.as_deref(), Some("http://localhost:1/v1"));
        assert_eq!(p.api_key.as_deref(), Some("s3cr#t: x"));

        let errs = load_str(text, "t.yaml", &no_env).unwrap_err().0;
        assert_eq!(errs[0].location.unwrap().line, 5);
        assert!(errs[0].message.contains("KEY"));
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let errs = load_str("a: [1, 2\nb: 3\n", "t.yaml", &no_env)
            .unwrap_err()
            .0;
        assert!(errs[0].location.is_some(), "{}", errs[0]);
        assert!(errs[0].message.starts_with("invalid YAML"));
    }
}
