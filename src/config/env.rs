//! `${VAR}` / `${VAR:-default}` substitution, applied to string values after the YAML is
//! parsed (never to the raw text), so a secret containing `#`, `: ` or quotes cannot change
//! the structure of the file.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex};

/// `$${...}` is an escaped literal; `${NAME}`, `${NAME:-default}` (unset or empty) and
/// `${NAME-default}` (unset only) are substituted.
static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")
        .expect("static regex is valid")
});

/// Substitutes every reference in `input`, or names the first variable that is unset and
/// has no default. A string with no reference (most of a config) comes back borrowed, not
/// copied.
pub fn interpolate<'a>(
    input: &'a str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Cow<'a, str>, String> {
    if !input.contains('$') {
        return Ok(Cow::Borrowed(input));
    }
    let mut missing = None;
    let out = REFERENCE.replace_all(input, |caps: &Captures<'_>| {
        let Some(name) = caps.get(1) else {
            return "${".to_owned(); // the `$${` escape
        };
        let value = lookup(name.as_str());
        match (caps.get(2).map(|m| m.as_str()), value) {
            (Some(":-"), Some(v)) if v.is_empty() => caps[3].to_owned(),
            (_, Some(v)) => v,
            (Some(_), None) => caps[3].to_owned(),
            (None, None) => {
                missing.get_or_insert_with(|| name.as_str().to_owned());
                String::new()
            }
        }
    });
    match missing {
        Some(name) => Err(format!(
            "environment variable {name} is not set (write ${{{name}:-default}} to give a default)"
        )),
        None => Ok(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("example.org".into()),
            "EMPTY" => Some(String::new()),
            "TRICKY" => Some("a: b # c".into()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_and_defaults() {
        assert_eq!(
            interpolate("http://${HOST}/v1", &env).unwrap(),
            "http://example.org/v1"
        );
        assert_eq!(interpolate("${NOPE:-x}", &env).unwrap(), "x");
        assert_eq!(interpolate("${EMPTY:-x}", &env).unwrap(), "x");
        assert_eq!(interpolate("${EMPTY-x}", &env).unwrap(), "");
        assert_eq!(interpolate("${NOPE-x}", &env).unwrap(), "x");
        assert_eq!(interpolate("${NOPE:-}", &env).unwrap(), "");
        assert_eq!(interpolate("${TRICKY}", &env).unwrap(), "a: b # c");
        assert_eq!(
            interpolate("cost: $5 and $${HOST}", &env).unwrap(),
            "cost: $5 and ${HOST}"
        );
    }

    #[test]
    fn unset_without_default_is_an_error() {
        let err = interpolate("${NOPE}", &env).unwrap_err();
        assert!(err.contains("NOPE"), "{err}");
    }
}
