//! Seed data: a few hundred realistic, linked rows (`--seed demo`), and synthetic bulk rows for
//! benchmarks. Both are deterministic apart from the clock, so demos and tests see the same names.

use std::collections::HashSet;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::keys;
use crate::reply::Fail;
use crate::store::Store;

/// A small deterministic generator (`SplitMix64`); the emulator needs repeatability, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn uuid(&mut self) -> Uuid {
        let bytes = (u128::from(self.next()) << 64 | u128::from(self.next())).to_be_bytes();
        uuid::Builder::from_random_bytes(bytes).into_uuid()
    }
}

const COMPANIES: &[&str] = &[
    "Contoso",
    "Fabrikam",
    "Adventure Works",
    "Northwind Traders",
    "Tailspin Toys",
    "Wide World Importers",
    "Litware",
    "Proseware",
    "Alpine Ski House",
    "Coho Winery",
    "Blue Yonder Airlines",
    "Fourth Coffee",
    "Woodgrove Bank",
    "Trey Research",
    "Lucerne Publishing",
    "Margie's Travel",
    "Humongous Insurance",
    "Graphic Design Institute",
    "VanArsdel",
    "Wingtip Toys",
    "Relecloud",
    "Bellows College",
    "A. Datum",
    "City Power & Light",
    "Consolidated Messenger",
    "Southridge Video",
    "Tailwind Traders",
    "Fincher Architects",
    "Munson's Pickles",
    "Nod Publishers",
];
const SUFFIXES: &[&str] = &["Ltd", "Inc.", "Group", "GmbH", "Holdings", "& Co"];
const FIRST: &[&str] = &[
    "Yvonne", "Susanna", "Nancy", "Maria", "Sidney", "Scott", "Robert", "Paul", "Rene", "Thomas",
    "Jim", "Patrick", "Christa", "Sanjay", "Aiko", "Chidi", "Ingrid", "Mateo", "Priya", "Olu",
    "Hana", "Lars", "Fatima", "Diego", "Mei", "Kofi", "Elena", "Tomasz", "Amara", "Noah",
];
const LAST: &[&str] = &[
    "McKay",
    "Stevens",
    "Anderson",
    "Campbell",
    "Higa",
    "Konersmann",
    "Lyon",
    "Cannon",
    "Valdes",
    "Andersen",
    "Glynn",
    "Sands",
    "Hasselberg",
    "Shah",
    "Tanaka",
    "Okafor",
    "Berg",
    "García",
    "Iyer",
    "Adeyemi",
    "Sato",
    "Nilsson",
    "O'Bryan",
    "Fernández",
    "Chen",
    "Mensah",
    "Popescu",
    "Kowalski",
    "Diallo",
    "Müller",
];
const CITIES: &[(&str, &str)] = &[
    ("Redmond", "United States"),
    ("Seattle", "United States"),
    ("Chicago", "United States"),
    ("London", "United Kingdom"),
    ("Manchester", "United Kingdom"),
    ("Berlin", "Germany"),
    ("Munich", "Germany"),
    ("Paris", "France"),
    ("Lyon", "France"),
    ("Tokyo", "Japan"),
    ("São Paulo", "Brazil"),
    ("Sydney", "Australia"),
    ("Toronto", "Canada"),
    ("Lagos", "Nigeria"),
    ("Bengaluru", "India"),
    ("Stockholm", "Sweden"),
];
const TITLES: &[&str] = &[
    "Purchasing Manager",
    "Chief Executive Officer",
    "IT Director",
    "Sales Representative",
    "Operations Lead",
    "Finance Controller",
    "Procurement Specialist",
    "Head of Marketing",
];
const SUBJECTS: &[&str] = &[
    "Interested in annual maintenance",
    "Requested a product demo",
    "Trade show contact",
    "Asked for volume pricing",
    "Website enquiry",
    "Referral from a partner",
];
const STEPS: &[&str] = &["1-Qualify", "2-Develop", "3-Propose", "4-Close"];

/// Builds `(column, value)` pairs by column name, so the seed reads like the data it writes.
fn row(store: &Store, t: usize, fields: &[(&str, Value)]) -> Vec<(usize, Value)> {
    let def = &store.tables[t].def;
    fields
        .iter()
        .filter_map(|(name, value)| def.column(name).map(|c| (c, value.clone())))
        .collect()
}

fn email(first: &str, last: &str, company: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .filter(char::is_ascii_alphanumeric)
            .collect::<String>()
            .to_ascii_lowercase()
    };
    format!(
        "{}.{}@{}.example.com",
        clean(first),
        clean(last),
        clean(company)
    )
}

pub fn demo(store: &mut Store) {
    let (Some(account), Some(contact), Some(lead), Some(opportunity)) = (
        store.by_logical("account"),
        store.by_logical("contact"),
        store.by_logical("lead"),
        store.by_logical("opportunity"),
    ) else {
        return;
    };
    let mut rng = Rng(0x00D1_5EED);
    let now = store.clock.now();
    let day = 86_400;
    // Creation times spread over the last 180 days, in insertion order, so versions follow time.
    let total = 60 + 160 + 80 + 90;
    let mut n = 0;
    let mut stamp = |rng: &mut Rng| {
        n += 1;
        let created =
            now - 180 * day + (180 * day * n / total) - i64::try_from(rng.below(3600)).unwrap_or(0);
        let modified = (created + i64::try_from(rng.below(20 * 86_400)).unwrap_or(0)).min(now - 60);
        (created, modified.max(created))
    };

    let mut accounts = Vec::new();
    for i in 0..60 {
        let id = rng.uuid();
        let name = format!(
            "{} {}",
            COMPANIES[i % COMPANIES.len()],
            SUFFIXES[(i / COMPANIES.len() + i) % SUFFIXES.len()]
        );
        let (city, country) = CITIES[rng.below(CITIES.len())];
        let values = row(
            store,
            account,
            &[
                ("name", json!(name)),
                ("accountnumber", json!(format!("ACC-{:05}", 1000 + i))),
                (
                    "telephone1",
                    json!(format!("+1-555-{:04}", rng.below(10_000))),
                ),
                (
                    "emailaddress1",
                    json!(format!(
                        "info@{}.example.com",
                        name.split(' ').next().unwrap_or("org").to_ascii_lowercase()
                    )),
                ),
                (
                    "websiteurl",
                    json!(format!(
                        "https://www.{}.example.com",
                        name.split(' ').next().unwrap_or("org").to_ascii_lowercase()
                    )),
                ),
                (
                    "address1_line1",
                    json!(format!("{} Main Street", 1 + rng.below(999))),
                ),
                ("address1_city", json!(city)),
                ("address1_country", json!(country)),
                (
                    "address1_postalcode",
                    json!(format!("{:05}", rng.below(99_999))),
                ),
                (
                    "revenue",
                    json!(f64::from(u32::try_from(rng.below(5_000)).unwrap_or(0)) * 10_000.0),
                ),
                ("numberofemployees", json!(10 + rng.below(20_000))),
                ("industrycode", json!(1 + rng.below(33))),
                ("accountcategorycode", json!(1 + rng.below(2))),
                ("creditonhold", json!(rng.below(10) == 0)),
                (
                    "description",
                    json!(format!("{name} is a customer in {city}.")),
                ),
            ],
        );
        let at = stamp(&mut rng);
        store.insert(account, id, values, Some(at));
        accounts.push(id);
    }

    let mut contacts = Vec::new();
    for i in 0..160 {
        let id = rng.uuid();
        let first = rng.pick(FIRST);
        let last = rng.pick(LAST);
        let employer = accounts[i % accounts.len()];
        let company = COMPANIES[(i % accounts.len()) % COMPANIES.len()];
        let (city, country) = CITIES[rng.below(CITIES.len())];
        let values = row(
            store,
            contact,
            &[
                ("firstname", json!(first)),
                ("lastname", json!(last)),
                ("jobtitle", json!(rng.pick(TITLES))),
                ("emailaddress1", json!(email(first, last, company))),
                (
                    "telephone1",
                    json!(format!("+1-555-{:04}", rng.below(10_000))),
                ),
                (
                    "birthdate",
                    json!(format!(
                        "{}-{:02}-{:02}",
                        1955 + rng.below(45),
                        1 + rng.below(12),
                        1 + rng.below(28)
                    )),
                ),
                ("gendercode", json!(1 + rng.below(2))),
                ("address1_city", json!(city)),
                ("address1_country", json!(country)),
                ("donotemail", json!(rng.below(8) == 0)),
                ("_parentcustomerid_value", json!(employer.to_string())),
            ],
        );
        let at = stamp(&mut rng);
        store.insert(contact, id, values, Some(at));
        contacts.push((id, employer));
    }
    // Each account's primary contact is one of its own people.
    for (i, account_id) in accounts.iter().enumerate() {
        let (contact_id, _) = contacts[i];
        if let Some(c) = store.tables[account].def.column("_primarycontactid_value")
            && let Some(r) = store.tables[account].rows.get_mut(account_id)
        {
            r.cells[c] = json!(contact_id.to_string());
        }
    }

    for i in 0..80 {
        let id = rng.uuid();
        let first = rng.pick(FIRST);
        let last = rng.pick(LAST);
        let company = format!("{} {}", rng.pick(COMPANIES), rng.pick(SUFFIXES));
        let (parent_account, parent_contact) = if i % 3 == 0 {
            let (c, a) = contacts[rng.below(contacts.len())];
            (json!(a.to_string()), json!(c.to_string()))
        } else {
            (Value::Null, Value::Null)
        };
        let values = row(
            store,
            lead,
            &[
                ("subject", json!(rng.pick(SUBJECTS))),
                ("firstname", json!(first)),
                ("lastname", json!(last)),
                ("companyname", json!(company)),
                ("emailaddress1", json!(email(first, last, &company))),
                ("leadsourcecode", json!(1 + rng.below(10))),
                ("leadqualitycode", json!(1 + rng.below(3))),
                (
                    "estimatedvalue",
                    json!(f64::from(u32::try_from(rng.below(200)).unwrap_or(0)) * 500.0),
                ),
                ("_parentaccountid_value", parent_account),
                ("_parentcontactid_value", parent_contact),
            ],
        );
        let at = stamp(&mut rng);
        store.insert(lead, id, values, Some(at));
    }

    for i in 0..90 {
        let id = rng.uuid();
        let customer = accounts[rng.below(accounts.len())];
        let (contact_id, _) = contacts[rng.below(contacts.len())];
        let estimate = f64::from(u32::try_from(1 + rng.below(400)).unwrap_or(1)) * 1_250.0;
        let step = STEPS[i % STEPS.len()];
        let values = row(
            store,
            opportunity,
            &[
                (
                    "name",
                    json!(format!(
                        "{} units of {}",
                        5 * (1 + rng.below(40)),
                        rng.pick(&["licences", "support hours", "devices", "seats"])
                    )),
                ),
                ("estimatedvalue", json!(estimate)),
                (
                    "estimatedclosedate",
                    json!(format!(
                        "2027-{:02}-{:02}",
                        1 + rng.below(12),
                        1 + rng.below(28)
                    )),
                ),
                ("closeprobability", json!(10 * (1 + rng.below(9)))),
                ("opportunityratingcode", json!(1 + rng.below(3))),
                ("stepname", json!(step)),
                ("_customerid_value", json!(customer.to_string())),
                ("_parentaccountid_value", json!(customer.to_string())),
                ("_parentcontactid_value", json!(contact_id.to_string())),
            ],
        );
        let at = stamp(&mut rng);
        store.insert(opportunity, id, values, Some(at));
    }
}

/// Inserts `count` plain rows into table `t`, with a name and, where the table has them, a few typed
/// columns. Bypasses payload validation: this is for filling a table fast.
///
/// The rows keep to the table's alternate keys, checked against the rows already there and each
/// other before any is inserted: a batch that would break one inserts nothing (`0x80060892`).
pub fn synthetic(
    store: &mut Store,
    t: usize,
    count: usize,
    at: Option<(i64, i64)>,
) -> Result<(), Fail> {
    let mut rng = Rng(store.version);
    let def = &store.tables[t].def;
    let name = def.column(&def.primary_name);
    let extra: Vec<(usize, &'static str)> = ["numberofemployees", "address1_city", "revenue"]
        .iter()
        .filter_map(|n| def.column(n).map(|c| (c, *n)))
        .collect();
    let mut rows = Vec::with_capacity(count);
    for i in 0..count {
        let id = rng.uuid();
        let mut values = Vec::with_capacity(4);
        if let Some(c) = name {
            values.push((c, json!(format!("Generated {i:07}"))));
        }
        for (c, n) in &extra {
            let v = match *n {
                "numberofemployees" => json!(rng.below(50_000)),
                "address1_city" => json!(CITIES[rng.below(CITIES.len())].0),
                _ => json!(f64::from(u32::try_from(rng.below(100_000)).unwrap_or(0)) * 10.0),
            };
            values.push((*c, v));
        }
        rows.push((id, values));
    }
    let table = &store.tables[t];
    let mut batch: Vec<HashSet<keys::Tuple>> = vec![HashSet::new(); table.def.keys.len()];
    for (id, values) in &rows {
        store.check_keys(t, *id, None, values)?;
        for (k, key) in table.def.keys.iter().enumerate() {
            let value = |c: usize| {
                values
                    .iter()
                    .find(|(column, _)| *column == c)
                    .map_or(&Value::Null, |(_, v)| v)
            };
            if let Some(tuple) = keys::tuple(&table.def, key, value)
                && !batch[k].insert(tuple)
            {
                return Err(keys::duplicate(&table.def, key));
            }
        }
    }
    for (id, values) in rows {
        store.insert(t, id, values, at);
    }
    Ok(())
}
