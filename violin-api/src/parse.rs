//! Deserialising a document into the contract's types with errors that name the field
//! (`environment[0].vni`) and, for TOML, the line: the same wording for violind's
//! configuration, the controller's specs and the API's JSON bodies.
use std::fmt;

use serde::de::DeserializeOwned;

/// Where a document is wrong, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// 1-based line, 0 when unknown (JSON bodies, checks across fields).
    pub line: usize,
    pub field: String,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
        FieldError {
            line: 0,
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: {}: {}", self.line, self.field, self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for FieldError {}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The field a serde path names (a missing field is named itself); `whole` when the
/// error is about the document itself.
fn field_of(path: &serde_path_to_error::Path, message: &str, whole: &str) -> String {
    // toml's Spanned wrapper shows up as an inner segment of the path; it is not a field.
    let mut segments: Vec<String> = path
        .to_string()
        .split('.')
        .filter(|seg| !seg.is_empty() && *seg != "?" && !seg.starts_with("$__"))
        .map(str::to_string)
        .collect();
    if let Some(missing) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split('`').next())
    {
        segments.push(missing.to_string());
    }
    if segments.is_empty() {
        whole.to_string()
    } else {
        segments.join(".")
    }
}

/// Parses TOML; `whole` names the document in errors not about one field.
pub fn from_toml<T: DeserializeOwned>(text: &str, whole: &str) -> Result<T, FieldError> {
    serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
        let path = e.path().clone();
        let inner = e.into_inner();
        let field = field_of(&path, inner.message(), whole);
        FieldError {
            line: inner.span().map_or(0, |s| line_of(text, s.start)),
            field,
            reason: inner.message().trim_end().to_string(),
        }
    })
}

/// Parses a JSON body.
pub fn from_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, FieldError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().clone();
        // serde_json appends " at line L column C" to the message; the field says where.
        let msg = e.into_inner().to_string();
        let reason = match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_string(),
            None => msg,
        };
        FieldError::new(field_of(&path, &reason, "body"), reason)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Vni;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[allow(dead_code)]
        env: Vec<Env>,
    }
    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Env {
        #[allow(dead_code)]
        vni: Vni,
    }

    #[test]
    fn errors_name_field_and_line() {
        let e = from_toml::<Doc>("[[env]]\nvni = 1\n[[env]]\nvni = 0\n", "doc").unwrap_err();
        assert_eq!(e.field, "env[1].vni");
        assert_eq!(e.line, 4);
        assert_eq!(e.reason, "0 is outside 1..=16777215");
        assert_eq!(
            e.to_string(),
            "line 4: env[1].vni: 0 is outside 1..=16777215"
        );
        let e = from_toml::<Doc>("[[env]]\nvni = 1\ncolour = 2\n", "doc").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("unknown field `colour`"), "{e}");
        let e = from_json::<Doc>(br#"{"env":[{"vni":"x"}]}"#).unwrap_err();
        assert_eq!(e.field, "env[0].vni");
        let e = from_json::<Doc>(b"{").unwrap_err();
        assert_eq!(e.field, "body");
        let e = from_json::<Doc>(br#"{"env":[{}]}"#).unwrap_err();
        assert_eq!(e.field, "env[0].vni");
        assert_eq!(e.reason, "missing field `vni`");
    }
}
