//! `OneToManyRelationshipMetadata`: a table's `ManyToOneRelationships` (its lookups) and
//! `OneToManyRelationships` (the lookups pointing at it), as [`crate::relationships`] derives them.
//! Both are lists of the same type, a relationship seen from either end. `ManyToManyRelationships`
//! is always empty: the emulator has no N:N relationships.
//!
//! Not reported: cascade configuration (the emulator cascades no deletes of business rows), menu
//! configuration, and the other properties only the maker tools read.

use serde_json::{Value, json};

use super::{MetaType, Object, Ty, write_object};
use crate::relationships::{self, Relationship};
use crate::reply::Fail;
use crate::schema::Edm;
use crate::store::Store;

/// Which of a table's relationship lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    ManyToOne,
    OneToMany,
    ManyToMany,
}

impl Which {
    pub(super) fn of(name: &str) -> Option<Self> {
        match name {
            "ManyToOneRelationships" => Some(Which::ManyToOne),
            "OneToManyRelationships" => Some(Which::OneToMany),
            "ManyToManyRelationships" => Some(Which::ManyToMany),
            _ => None,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Which::ManyToOne => "ManyToOneRelationships",
            Which::OneToMany => "OneToManyRelationships",
            Which::ManyToMany => "ManyToManyRelationships",
        }
    }

    fn meta_type(self) -> MetaType {
        let common: [(&'static str, Ty); 5] = [
            ("MetadataId", Ty::Prim(Edm::Guid)),
            ("SchemaName", Ty::Prim(Edm::String)),
            ("RelationshipType", Ty::Prim(Edm::String)),
            ("IsCustomRelationship", Ty::Prim(Edm::Boolean)),
            ("IsValidForAdvancedFind", Ty::Prim(Edm::Boolean)),
        ];
        let (name, own): (&str, &[(&'static str, Ty)]) = match self {
            Which::ManyToOne | Which::OneToMany => (
                "OneToManyRelationshipMetadata",
                &[
                    ("ReferencedEntity", Ty::Prim(Edm::String)),
                    ("ReferencedAttribute", Ty::Prim(Edm::String)),
                    ("ReferencingEntity", Ty::Prim(Edm::String)),
                    ("ReferencingAttribute", Ty::Prim(Edm::String)),
                    (
                        "ReferencedEntityNavigationPropertyName",
                        Ty::Prim(Edm::String),
                    ),
                    (
                        "ReferencingEntityNavigationPropertyName",
                        Ty::Prim(Edm::String),
                    ),
                    ("IsHierarchical", Ty::Prim(Edm::Boolean)),
                ],
            ),
            Which::ManyToMany => (
                "ManyToManyRelationshipMetadata",
                &[
                    ("Entity1LogicalName", Ty::Prim(Edm::String)),
                    ("Entity2LogicalName", Ty::Prim(Edm::String)),
                    ("IntersectEntityName", Ty::Prim(Edm::String)),
                    ("Entity1IntersectAttribute", Ty::Prim(Edm::String)),
                    ("Entity2IntersectAttribute", Ty::Prim(Edm::String)),
                    ("Entity1NavigationPropertyName", Ty::Prim(Edm::String)),
                    ("Entity2NavigationPropertyName", Ty::Prim(Edm::String)),
                ],
            ),
        };
        MetaType {
            name: format!("Microsoft.Dynamics.CRM.{name}"),
            props: common.into_iter().chain(own.iter().copied()).collect(),
        }
    }
}

/// A relationship list with its `$select` and `$filter` checked.
#[derive(Debug)]
pub(super) struct Query {
    pub(super) which: Which,
    meta: MetaType,
    select: Option<Vec<&'static str>>,
    filter: Option<crate::odata::filter::Expr>,
    context: String,
}

impl Query {
    pub(super) fn parse(
        which: Which,
        select: Option<&str>,
        filter: Option<&str>,
    ) -> Result<Self, Fail> {
        let meta = which.meta_type();
        Ok(Self {
            which,
            select: meta.select(select)?,
            filter: meta.filter(filter)?,
            meta,
            context: String::new(),
        })
    }

    /// The names `$select` picked, for the context URL.
    pub(super) fn selected(&self) -> Option<Vec<&'static str>> {
        self.select.clone()
    }

    pub(super) fn with_context(mut self, context: String) -> Self {
        self.context = context;
        self
    }

    pub(super) fn context(&self) -> &str {
        &self.context
    }

    /// Table `t`'s relationships of this kind as a JSON array.
    pub(super) fn write_array(&self, out: &mut Vec<u8>, store: &Store, t: usize) {
        let list = match self.which {
            Which::ManyToOne => relationships::many_to_one(store, t),
            Which::OneToMany => relationships::one_to_many(store, t),
            Which::ManyToMany => Vec::new(),
        };
        out.push(b'[');
        let mut first = true;
        for relationship in list {
            let object = object(store, &relationship);
            if !self.meta.matches(self.filter.as_ref(), &object) {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            write_object(out, None, &object, self.select.as_deref(), &[]);
        }
        out.push(b']');
    }
}

/// One relationship as `OneToManyRelationshipMetadata`.
fn object(store: &Store, r: &Relationship<'_>) -> Object {
    let referencing = &store.tables[r.referencing].def;
    let referenced = &store.tables[r.referenced].def;
    vec![
        ("MetadataId", json!(r.metadata_id())),
        ("SchemaName", json!(r.schema_name())),
        ("RelationshipType", json!("OneToManyRelationship")),
        // A custom table's lookups are custom relationships; the built-in tables' and the
        // registration tables' are the platform's.
        ("IsCustomRelationship", json!(referencing.is_custom)),
        ("IsValidForAdvancedFind", json!(true)),
        ("ReferencedEntity", json!(referenced.logical_name)),
        ("ReferencedAttribute", json!(referenced.primary_id)),
        ("ReferencingEntity", json!(referencing.logical_name)),
        (
            "ReferencingAttribute",
            json!(referencing.columns[r.column].attribute()),
        ),
        (
            "ReferencedEntityNavigationPropertyName",
            json!(r.schema_name()),
        ),
        ("ReferencingEntityNavigationPropertyName", json!(r.nav.name)),
        // Only `account_parent_account` is hierarchical among these, as in Dataverse.
        (
            "IsHierarchical",
            Value::Bool(r.schema_name() == "account_parent_account"),
        ),
    ]
}
