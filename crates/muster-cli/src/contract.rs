//! The machine-readable output contract, `muster/v1`: what `-o json` and
//! `-o yaml` print, and what the `dask-muster` Python package (and any other
//! script) may rely on. Every document is an object carrying `schema` (this
//! contract's version) and `kind`; lists are `{schema, kind: "<X>List", items}`,
//! never bare arrays, so a reader can check the version before it reads a
//! field. Adding fields keeps `muster/v1`; renaming or removing one the
//! Python package reads means `muster/v2`. This module knows the envelope
//! only, not what goes inside it.

use serde::Serialize;

use crate::cli::Output;

/// The contract's version, written into every document.
pub const SCHEMA: &str = "muster/v1";

/// The kinds of document muster prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Kind {
    /// One cluster after `up` or `scale`.
    Cluster,
    /// `get clusters`.
    ClusterList,
    /// `get workers`.
    WorkerList,
    /// `describe`.
    ClusterDescription,
    /// `adapt`.
    Adapt,
    /// `down`.
    DownList,
    /// `render`.
    Rendered,
    /// `events`.
    EventList,
    /// `logs --all`.
    LogList,
}

#[derive(Serialize)]
struct Object<'a, T: Serialize> {
    schema: &'static str,
    kind: Kind,
    #[serde(flatten)]
    body: &'a T,
}

#[derive(Serialize)]
struct List<'a, T: Serialize> {
    schema: &'static str,
    kind: Kind,
    items: &'a [T],
}

fn print<T: Serialize>(doc: &T, output: Output) -> Option<String> {
    match output {
        Output::Json => Some(serde_json::to_string_pretty(doc).expect("serialisable") + "\n"),
        Output::Yaml => Some(serde_yaml_ng::to_string(doc).expect("serialisable")),
        Output::Table | Output::Wide | Output::Name => None,
    }
}

/// An object document (its fields flattened beside `schema` and `kind`) for
/// `-o json` / `-o yaml`; `None` for table formats.
pub fn object<T: Serialize>(kind: Kind, body: &T, output: Output) -> Option<String> {
    print(
        &Object {
            schema: SCHEMA,
            kind,
            body,
        },
        output,
    )
}

/// A list document for `-o json` / `-o yaml`; `None` for table formats.
pub fn list<T: Serialize>(kind: Kind, items: &[T], output: Output) -> Option<String> {
    print(
        &List {
            schema: SCHEMA,
            kind,
            items,
        },
        output,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Thing {
        name: &'static str,
    }

    #[test]
    fn every_document_is_an_object_with_schema_and_kind() {
        let o: serde_json::Value = serde_json::from_str(
            &object(Kind::Cluster, &Thing { name: "a" }, Output::Json).unwrap(),
        )
        .unwrap();
        assert_eq!(
            o,
            serde_json::json!({"schema": "muster/v1", "kind": "Cluster", "name": "a"})
        );
        let l: serde_json::Value =
            serde_json::from_str(&list::<Thing>(Kind::ClusterList, &[], Output::Json).unwrap())
                .unwrap();
        assert_eq!(
            l,
            serde_json::json!({"schema": "muster/v1", "kind": "ClusterList", "items": []})
        );
        let y = list(Kind::WorkerList, &[Thing { name: "w" }], Output::Yaml).unwrap();
        assert_eq!(
            y,
            "schema: muster/v1\nkind: WorkerList\nitems:\n- name: w\n"
        );
        assert!(object(Kind::Adapt, &Thing { name: "a" }, Output::Table).is_none());
    }
}
