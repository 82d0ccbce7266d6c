//! GUIDs in SQL Server's order.
//!
//! Dataverse keeps rows in SQL Server, which compares `uniqueidentifier` values by byte groups, last
//! group first: the final six bytes, then the fourth group, then the third, second and first, each of
//! those three byte-swapped (the order `System.Data.SqlTypes.SqlGuid` documents). So the "primary key
//! order" Dataverse pages in, and what `accountid gt <guid>` means, are not string order; a client that
//! assumes string order repeats or skips rows. The emulator orders GUIDs the same way.

use std::cmp::Ordering;

use uuid::Uuid;

/// The bytes of `id` in the order SQL Server compares them.
pub fn sql_key(id: &Uuid) -> [u8; 16] {
    let u = id.as_bytes();
    [
        u[10], u[11], u[12], u[13], u[14], u[15], u[8], u[9], u[7], u[6], u[5], u[4], u[3], u[2],
        u[1], u[0],
    ]
}

/// A GUID that sorts as SQL Server sorts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SqlGuid(pub Uuid);

impl Ord for SqlGuid {
    fn cmp(&self, other: &Self) -> Ordering {
        sql_key(&self.0).cmp(&sql_key(&other.0))
    }
}

impl PartialOrd for SqlGuid {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Compares two GUIDs written as text in SQL Server's order (text that is not a GUID compares as text).
pub fn compare_text(a: &str, b: &str) -> Ordering {
    match (Uuid::parse_str(a), Uuid::parse_str(b)) {
        (Ok(x), Ok(y)) => SqlGuid(x).cmp(&SqlGuid(y)),
        _ => a.cmp(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(ids: &[&str]) -> Vec<String> {
        let mut sorted: Vec<SqlGuid> = ids
            .iter()
            .map(|s| SqlGuid(Uuid::parse_str(s).unwrap()))
            .collect();
        sorted.sort();
        sorted.iter().map(|g| g.0.to_string()).collect()
    }

    #[test]
    fn sorts_by_the_last_group_first_and_swaps_the_first_three() {
        // Each id has one non-zero byte; ascending SQL Server order puts them as listed.
        let ascending = [
            "01000000-0000-0000-0000-000000000000", // first group: its last byte is compared first...
            "00000001-0000-0000-0000-000000000000", // ...so 00000001 sorts after 01000000
            "00000000-0100-0000-0000-000000000000",
            "00000000-0001-0000-0000-000000000000",
            "00000000-0000-0100-0000-000000000000",
            "00000000-0000-0001-0000-000000000000",
            "00000000-0000-0000-0001-000000000000",
            "00000000-0000-0000-0100-000000000000",
            "00000000-0000-0000-0000-000000000001",
            "00000000-0000-0000-0000-010000000000",
        ];
        let mut shuffled = ascending.to_vec();
        shuffled.reverse();
        assert_eq!(order(&shuffled), ascending);
    }
}
