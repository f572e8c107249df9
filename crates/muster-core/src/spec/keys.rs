//! Reading a spec, or a backend's options, while collecting every key that
//! no field takes, each with its full path (`worker.coress`,
//! `backend.hosts[0].prot`). serde's `deny_unknown_fields` stops at the
//! first unknown key; `serde_ignored` is told of each key the derived code
//! skips and lets the read go on, so validation can list every unknown key
//! together with every bad value. Type errors still end the read (serde
//! cannot go on after one); `serde_path_to_error` gives their path. This
//! module knows nothing of what the keys mean.

use serde::de::{Deserialize, Deserializer};

use super::FieldError;

/// What one read found: the value (unless a value could not be read), the
/// path and message of the error that ended it, and every unknown key.
#[derive(Debug)]
pub struct Read<T> {
    /// The value, when it could be read.
    pub value: Option<T>,
    /// The error that ended the read: its field's full path (`None` at the
    /// top) and its message without the parser's location prefix.
    pub error: Option<(Option<String>, String)>,
    /// The full path of every key no field took, in document order.
    pub unknown: Vec<String>,
}

impl<T> Read<T> {
    /// Every problem of the read as field errors, unknown keys first.
    pub fn problems(&self, top: &str) -> Vec<FieldError> {
        let mut errs: Vec<FieldError> = self.unknown.iter().cloned().map(unknown_field).collect();
        if let Some((field, reason)) = &self.error {
            errs.push(FieldError {
                field: field.clone().unwrap_or_else(|| top.to_string()),
                value: String::new(),
                reason: reason.clone(),
            });
        }
        errs
    }
}

/// Reads a `T` from `de`; every path is given under `prefix` (empty for the
/// top of a spec, `backend` for a backend's options).
pub fn read<'de, T, D>(de: D, prefix: &str) -> Read<T>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    let mut unknown = Vec::new();
    let mut note = |path: serde_ignored::Path<'_>| unknown.push(full_path(prefix, &path));
    let ignoring = serde_ignored::Deserializer::new(de, &mut note);
    let result: Result<T, _> = serde_path_to_error::deserialize(ignoring);
    let (value, error) = match result {
        Ok(v) => (Some(v), None),
        Err(e) => {
            let path = e.path().to_string();
            let (field, reason) = super::error_path(&path, &e.into_inner().to_string());
            let field = match (prefix, field) {
                (_, None) if prefix.is_empty() => None,
                (_, None) => Some(prefix.to_string()),
                ("", Some(f)) => Some(f),
                (p, Some(f)) => Some(format!("{p}.{f}")),
            };
            (None, Some((field, reason)))
        }
    };
    Read {
        value,
        error,
        unknown,
    }
}

/// The problem of a key no field takes.
pub fn unknown_field(field: String) -> FieldError {
    FieldError {
        field,
        value: String::new(),
        reason: super::UNKNOWN_FIELD.into(),
    }
}

/// `serde_ignored`'s path as muster writes field paths: dotted keys and
/// `[index]` for list items, under `prefix`.
fn full_path(prefix: &str, path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => prefix.to_string(),
        Path::Seq { parent, index } => format!("{}[{index}]", full_path(prefix, parent)),
        Path::Map { parent, key } => match full_path(prefix, parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => full_path(prefix, parent),
    }
}
