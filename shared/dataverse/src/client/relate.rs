//! Relating rows through a navigation property, as Microsoft Learn's "Associate and disassociate table
//! rows using the Web API" describes:
//!
//! - a **collection-valued** property (the "many" side of a one-to-many relationship, either side of a
//!   many-to-many one) gains a row with `POST {row}/{property}/$ref` and loses it with
//!   `DELETE {row}/{property}/$ref?$id={related}`;
//! - a **single-valued** property (a lookup, the "one" side) is bound with `PUT {row}/{property}/$ref`
//!   and cleared with `DELETE {row}/{property}/$ref`.
//!
//! Which kind a property is comes from the table's relationship definitions, read once per table.

use std::sync::{Arc, PoisonError};

use reqwest::Method;
use serde::Deserialize;
use serde_json::json;

use super::send::Call;
use super::{Client, Table, Url};
use crate::key::RowRef;
use crate::query::encode;
use crate::retry::{Deadline, Repeat};
use crate::{Error, TableName};

/// One navigation property of a table, as its relationship definitions describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Navigation {
    /// The property's name, as it appears in a URL.
    pub name: String,
    /// The relationship's schema name.
    pub relationship: String,
    /// The table on the other side (its logical name).
    pub related_table: String,
    /// A collection of rows (`true`) or a single lookup (`false`).
    pub collection: bool,
}

/// A table's relationship definitions, of the three kinds.
#[derive(Deserialize)]
struct Definitions {
    #[serde(rename = "ManyToOneRelationships", default)]
    many_to_one: Vec<ManyToOne>,
    #[serde(rename = "OneToManyRelationships", default)]
    one_to_many: Vec<OneToMany>,
    #[serde(rename = "ManyToManyRelationships", default)]
    many_to_many: Vec<ManyToMany>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ManyToOne {
    schema_name: String,
    referenced_entity: String,
    #[serde(default)]
    referencing_entity_navigation_property_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OneToMany {
    schema_name: String,
    referencing_entity: String,
    #[serde(default)]
    referenced_entity_navigation_property_name: Option<String>,
}

#[derive(Deserialize)]
struct ManyToMany {
    #[serde(rename = "SchemaName")]
    schema: String,
    #[serde(rename = "Entity1LogicalName")]
    entity1: String,
    #[serde(rename = "Entity2LogicalName")]
    entity2: String,
    #[serde(rename = "Entity1NavigationPropertyName", default)]
    entity1_property: Option<String>,
    #[serde(rename = "Entity2NavigationPropertyName", default)]
    entity2_property: Option<String>,
}

impl Definitions {
    /// Every navigation property of `logical`, from its side of each relationship.
    fn navigations(self, logical: &str) -> Vec<Navigation> {
        let mut all = Vec::new();
        for r in self.many_to_one {
            if let Some(name) = r.referencing_entity_navigation_property_name {
                all.push(Navigation {
                    name,
                    relationship: r.schema_name,
                    related_table: r.referenced_entity,
                    collection: false,
                });
            }
        }
        for r in self.one_to_many {
            if let Some(name) = r.referenced_entity_navigation_property_name {
                all.push(Navigation {
                    name,
                    relationship: r.schema_name,
                    related_table: r.referencing_entity,
                    collection: true,
                });
            }
        }
        for r in self.many_to_many {
            // A table related to itself has both names; each leads to the same table.
            let sides = [
                (r.entity1 == logical, r.entity1_property, r.entity2.clone()),
                (r.entity2 == logical, r.entity2_property, r.entity1),
            ];
            for (ours, name, related_table) in sides {
                if let (true, Some(name)) = (ours, name) {
                    all.push(Navigation {
                        name,
                        relationship: r.schema.clone(),
                        related_table,
                        collection: true,
                    });
                }
            }
        }
        all
    }
}

impl Client {
    /// The navigation property `name` of `table`, from its relationship definitions (read once per
    /// table for the life of the client). `Error::UnknownNavigation` when the table has none of that
    /// name.
    pub async fn navigation(
        &self,
        table: &Table,
        name: &str,
        deadline: Deadline,
    ) -> Result<Navigation, Error> {
        let navigations = if let Some(cached) = self.cached_navigations(&table.logical_name) {
            cached
        } else {
            let read = Arc::new(self.read_navigations(table, deadline).await?);
            self.inner
                .navigations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(table.logical_name.clone(), read.clone());
            read
        };
        // The property's own name first; a relationship's schema name also names it when only one
        // property of this table belongs to that relationship (a self-referential one has two).
        let by_relationship = || {
            let mut of = navigations.iter().filter(|n| n.relationship == name);
            match (of.next(), of.next()) {
                (Some(only), None) => Some(only),
                _ => None,
            }
        };
        navigations
            .iter()
            .find(|n| n.name == name)
            .or_else(by_relationship)
            .cloned()
            .ok_or_else(|| Error::UnknownNavigation {
                table: table.logical_name.clone(),
                name: crate::excerpt(name),
                known: navigations.iter().map(|n| n.name.clone()).collect(),
            })
    }

    fn cached_navigations(&self, logical: &str) -> Option<Arc<Vec<Navigation>>> {
        self.inner
            .navigations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(logical)
            .cloned()
    }

    async fn read_navigations(
        &self,
        table: &Table,
        deadline: Deadline,
    ) -> Result<Vec<Navigation>, Error> {
        let url = self.url(&format!(
            "EntityDefinitions(LogicalName='{}')?$select=LogicalName&$expand={}",
            table.logical_name,
            encode(
                "ManyToOneRelationships($select=SchemaName,ReferencedEntity,ReferencingEntityNavigationPropertyName),\
                 OneToManyRelationships($select=SchemaName,ReferencingEntity,ReferencedEntityNavigationPropertyName),\
                 ManyToManyRelationships($select=SchemaName,Entity1LogicalName,Entity2LogicalName,Entity1NavigationPropertyName,Entity2NavigationPropertyName)"
            )
        ))?;
        let answer = self.get_json(&url, None, deadline).await?;
        let found: Definitions = crate::transport::decode("EntityDefinitions", &answer.body)?;
        Ok(found.navigations(&table.logical_name))
    }

    /// The absolute address of a row, as `@odata.id` and `$id` take it.
    async fn row_address(
        &self,
        table: &Table,
        row: RowRef,
        deadline: Deadline,
    ) -> Result<Url, Error> {
        let row = self
            .locate(table, row, deadline)
            .await?
            .ok_or_else(|| super::no_such_key(table))?;
        self.row_url(table, &row, &crate::Query::default())
    }

    /// Relates each of `related` (rows of the navigation's other table) to `row` through
    /// `navigation`: adds them to a collection, or binds the lookup (then to one row). The rows are
    /// located once, and related one request at a time; a failure stops there.
    pub async fn relate(
        &self,
        table: &Table,
        row: impl Into<RowRef>,
        navigation: &Navigation,
        related: &[RowRef],
        deadline: Deadline,
    ) -> Result<(), Error> {
        let url = self
            .reference_url(table, row.into(), navigation, deadline)
            .await?;
        let other = self.related_table(navigation, deadline).await?;
        for one in related {
            let target = self.row_address(&other, one.clone(), deadline).await?;
            let body = serde_json::to_vec(&json!({ "@odata.id": target.as_str() }))
                .map_err(Error::Encode)?;
            self.execute(
                Call {
                    method: if navigation.collection {
                        Method::POST
                    } else {
                        Method::PUT
                    },
                    url: &url,
                    headers: vec![("content-type", "application/json; charset=utf-8".into())],
                    body: Some(body.into()),
                    // Relating the same rows again changes nothing, so a repeat is harmless.
                    repeat: Repeat::Safe,
                    done_if_retried: None,
                },
                deadline,
            )
            .await?;
        }
        Ok(())
    }

    /// Takes each of `related` out of `row`'s collection `navigation`; for a lookup (`related`
    /// then empty), clears it.
    pub async fn unrelate(
        &self,
        table: &Table,
        row: impl Into<RowRef>,
        navigation: &Navigation,
        related: &[RowRef],
        deadline: Deadline,
    ) -> Result<(), Error> {
        let base = self
            .reference_url(table, row.into(), navigation, deadline)
            .await?;
        let mut urls = Vec::with_capacity(related.len().max(1));
        if related.is_empty() {
            urls.push(base);
        } else {
            let other = self.related_table(navigation, deadline).await?;
            for one in related {
                let target = self.row_address(&other, one.clone(), deadline).await?;
                let mut url = base.clone();
                // Written as Dataverse's samples write it: the option's `$` bare, the address
                // encoded.
                url.set_query(Some(&format!("$id={}", encode(target.as_str()))));
                urls.push(url);
            }
        }
        for url in &urls {
            self.execute(
                Call {
                    method: Method::DELETE,
                    url,
                    headers: Vec::new(),
                    body: None,
                    repeat: Repeat::Safe,
                    done_if_retried: None,
                },
                deadline,
            )
            .await?;
        }
        Ok(())
    }

    /// The table on the navigation's other side.
    async fn related_table(
        &self,
        navigation: &Navigation,
        deadline: Deadline,
    ) -> Result<Arc<Table>, Error> {
        self.table(
            &TableName::try_from(navigation.related_table.as_str())?,
            deadline,
        )
        .await
    }

    /// `{row}/{navigation}/$ref`.
    async fn reference_url(
        &self,
        table: &Table,
        row: RowRef,
        navigation: &Navigation,
        deadline: Deadline,
    ) -> Result<Url, Error> {
        let row = self
            .locate(table, row, deadline)
            .await?
            .ok_or_else(|| super::no_such_key(table))?;
        let mut url = self.row_url(table, &row, &crate::Query::default())?;
        let path = format!("{}/{}/$ref", url.path(), navigation.name);
        url.set_path(&path);
        Ok(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_relationship_gives_its_side_a_navigation() {
        let found: Definitions = serde_json::from_value(json!({
            "ManyToOneRelationships": [{"SchemaName": "contact_customer_accounts", "ReferencedEntity": "account",
                "ReferencingEntityNavigationPropertyName": "parentcustomerid_account"}],
            "OneToManyRelationships": [{"SchemaName": "contact_master_contact", "ReferencingEntity": "contact",
                "ReferencedEntityNavigationPropertyName": "contact_master_contact"}],
            "ManyToManyRelationships": [{"SchemaName": "contactleads_association", "Entity1LogicalName": "contact",
                "Entity2LogicalName": "lead", "Entity1NavigationPropertyName": "contactleads_association",
                "Entity2NavigationPropertyName": "contactleads_association"}]
        }))
        .unwrap();
        let all = found.navigations("contact");
        let kinds: Vec<(&str, &str, bool)> = all
            .iter()
            .map(|n| (n.name.as_str(), n.related_table.as_str(), n.collection))
            .collect();
        assert_eq!(
            kinds,
            [
                ("parentcustomerid_account", "account", false),
                ("contact_master_contact", "contact", true),
                ("contactleads_association", "lead", true),
            ]
        );
    }
}
