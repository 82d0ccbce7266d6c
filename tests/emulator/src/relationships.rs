//! 1:N relationships, derived from the lookups the tables already have.
//!
//! In Dataverse a lookup is the many side of a one-to-many relationship: `contact.parentcustomerid`
//! is two of them, `contact_customer_accounts` (to account) and `contact_customer_contacts` (to
//! contact), one per navigation property of the lookup. The referenced table has a collection-valued
//! navigation property named like the relationship, so `accounts(<id>)/contact_customer_accounts`
//! lists the contacts whose `parentcustomerid` is that account. Each [`Nav`] carries its
//! relationship's name; this module pairs them with the tables at both ends.
//!
//! A navigation property whose target table the organisation does not have (a step's
//! `eventhandler_plugintype`, say) has no relationship here: there is no table for its other end.
//! The emulator has no many-to-many relationships.

use uuid::Uuid;

use crate::schema::{ColumnType, Nav, stable_id};
use crate::store::Store;

/// One 1:N relationship: rows of `referencing` point through lookup `column` at rows of
/// `referenced`.
#[derive(Debug, Clone, Copy)]
pub struct Relationship<'a> {
    /// The table on the many side, which has the lookup.
    pub referencing: usize,
    /// The lookup column in `referencing`.
    pub column: usize,
    /// The lookup's navigation property to `referenced`; its `relationship` is the schema name.
    pub nav: &'a Nav,
    /// The table on the one side.
    pub referenced: usize,
}

impl Relationship<'_> {
    pub fn schema_name(&self) -> &str {
        &self.nav.relationship
    }

    /// A `MetadataId` derived from the schema name, the same in every run.
    pub fn metadata_id(&self) -> Uuid {
        stable_id(&format!("relationship/{}", self.nav.relationship))
    }
}

/// Every relationship, by referencing table and column order.
pub fn all(store: &Store) -> impl Iterator<Item = Relationship<'_>> {
    store.tables.iter().enumerate().flat_map(move |(t, table)| {
        table
            .def
            .columns
            .iter()
            .enumerate()
            .flat_map(move |(column, c)| {
                let navs: &[Nav] = match &c.ty {
                    ColumnType::Lookup { navs } => navs,
                    _ => &[],
                };
                navs.iter().filter_map(move |nav| {
                    store
                        .by_logical(&nav.target)
                        .map(|referenced| Relationship {
                            referencing: t,
                            column,
                            nav,
                            referenced,
                        })
                })
            })
    })
}

/// Table `t`'s `ManyToOneRelationships`: its own lookups.
pub fn many_to_one(store: &Store, t: usize) -> Vec<Relationship<'_>> {
    all(store).filter(|r| r.referencing == t).collect()
}

/// Table `t`'s `OneToManyRelationships`: the lookups that point at it.
pub fn one_to_many(store: &Store, t: usize) -> Vec<Relationship<'_>> {
    all(store).filter(|r| r.referenced == t).collect()
}

/// The relationship behind table `t`'s collection-valued navigation property `name`.
pub fn collection<'a>(store: &'a Store, t: usize, name: &str) -> Option<Relationship<'a>> {
    all(store).find(|r| r.referenced == t && r.nav.relationship == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::builtin_tables;

    fn store() -> Store {
        let mut store = Store::new(60);
        for def in builtin_tables() {
            store.add_table(def);
        }
        store
    }

    #[test]
    fn each_navigation_property_of_a_lookup_is_one_relationship() {
        let store = store();
        let account = store.by_logical("account").unwrap();
        let contact = store.by_logical("contact").unwrap();
        let names = |list: Vec<Relationship<'_>>| {
            list.iter()
                .map(|r| r.schema_name().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(many_to_one(&store, contact)),
            [
                "contact_customer_accounts",
                "contact_customer_contacts",
                "contact_originating_lead"
            ]
        );
        assert_eq!(
            names(one_to_many(&store, account)),
            [
                "account_parent_account",
                "contact_customer_accounts",
                "lead_parent_account",
                "opportunity_customer_accounts",
                "opportunity_parent_account"
            ]
        );
        let r = collection(&store, account, "contact_customer_accounts").unwrap();
        assert_eq!((r.referencing, r.referenced), (contact, account));
        assert_eq!(r.nav.name, "parentcustomerid_account");
        assert!(collection(&store, contact, "contact_customer_accounts").is_none());
    }
}
