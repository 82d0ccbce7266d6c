//! `$select`, `$filter`, `$orderby`, `$top`, `$count`, and paging with `Prefer: odata.maxpagesize`.

// Integration tests: a panic is a failed assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{Emulator, expect_error};

async fn names(emulator: &Emulator, query: &str) -> Vec<String> {
    let body = emulator
        .get_json(&format!("accounts?$select=name&{query}"))
        .await;
    body["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn filtered(emulator: &Emulator, filter: &str) -> Vec<String> {
    let mut found = names(emulator, &format!("$filter={}", urlencode(filter))).await;
    found.sort();
    found
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn select_returns_only_the_named_columns_plus_key_and_etag() {
    let emulator = Emulator::accounts().await;
    let body = emulator
        .get_json("accounts?$select=name,numberofemployees&$top=1")
        .await;
    assert!(
        body["@odata.context"]
            .as_str()
            .unwrap()
            .ends_with("$metadata#accounts(name,numberofemployees)")
    );
    let keys: Vec<&str> = body["value"][0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["@odata.etag", "name", "numberofemployees", "accountid"]
    );
    expect_error(
        emulator.get("accounts?$select=Name").await,
        400,
        "0x0",
        "Could not find a property named 'Name' on type 'Microsoft.Dynamics.CRM.account'.",
    )
    .await;
}

#[tokio::test]
async fn filter_supports_comparison_and_logical_operators() {
    let emulator = Emulator::accounts().await;
    assert_eq!(
        filtered(&emulator, "numberofemployees eq 250").await,
        ["Contoso Ltd", "Fabrikam"]
    );
    assert_eq!(
        filtered(
            &emulator,
            "numberofemployees ne 250 and numberofemployees gt 10"
        )
        .await,
        ["O'Bryan & Sons", "contoso east"]
    );
    assert_eq!(
        filtered(
            &emulator,
            "numberofemployees ge 40 and numberofemployees le 40"
        )
        .await,
        ["contoso east"]
    );
    assert_eq!(
        filtered(&emulator, "numberofemployees lt 5 or creditonhold eq true").await,
        ["100% Cotton", "contoso east"]
    );
    assert_eq!(
        filtered(&emulator, "not (creditonhold eq false)").await,
        ["100% Cotton", "contoso east"]
    );
    assert_eq!(
        filtered(&emulator, "revenue gt 10.5 and revenue lt 1000001").await,
        ["Contoso Ltd", "contoso east"]
    );
}

#[tokio::test]
async fn filter_string_functions_are_case_insensitive_and_honour_sql_wildcards() {
    let emulator = Emulator::accounts().await;
    assert_eq!(
        filtered(&emulator, "contains(name,'CONTOSO')").await,
        ["Contoso Ltd", "contoso east"]
    );
    assert_eq!(
        filtered(&emulator, "startswith(name,'o''bryan')").await,
        ["O'Bryan & Sons"]
    );
    assert_eq!(
        filtered(&emulator, "endswith(name,'east')").await,
        ["contoso east"]
    );
    assert_eq!(
        filtered(&emulator, "not contains(name,'o')").await,
        ["Fabrikam"]
    );
    // '%' is a wildcard inside the value, as the service's SQL LIKE makes it.
    assert_eq!(
        filtered(&emulator, "startswith(name,'1%n')").await,
        ["100% Cotton"]
    );
    assert_eq!(
        filtered(&emulator, "name eq 'FABRIKAM'").await,
        ["Fabrikam"]
    );
}

#[tokio::test]
async fn filter_handles_null_booleans_guids_and_datetimes() {
    let emulator = Emulator::accounts().await;
    assert_eq!(
        filtered(&emulator, "address1_city eq null").await,
        ["Fabrikam"]
    );
    assert_eq!(
        filtered(&emulator, "revenue ne null and creditonhold").await,
        ["contoso east"]
    );
    let first = emulator
        .get_json("accounts?$select=name,createdon&$filter=name eq 'Fabrikam'")
        .await;
    let id = first["value"][0]["accountid"].as_str().unwrap().to_owned();
    assert_eq!(
        filtered(&emulator, &format!("accountid eq {id}")).await,
        ["Fabrikam"]
    );
    assert_eq!(
        filtered(&emulator, &format!("accountid eq '{}'", id.to_uppercase())).await,
        ["Fabrikam"]
    );
    assert_eq!(
        filtered(
            &emulator,
            "createdon ge 2000-01-01T00:00:00-00:00 and createdon lt 2999-01-01T00:00:00Z"
        )
        .await
        .len(),
        5
    );
    assert!(
        filtered(&emulator, "createdon lt 2000-01-01T00:00:00Z")
            .await
            .is_empty()
    );
    assert_eq!(
        filtered(
            &emulator,
            "address1_city eq 'Redmond' and name ne address1_city"
        )
        .await,
        ["Contoso Ltd", "O'Bryan & Sons"]
    );
}

#[tokio::test]
async fn filter_syntax_errors_answer_400_with_the_position() {
    let emulator = Emulator::accounts().await;
    let get = |filter: &str| emulator.get(format!("accounts?$filter={}", urlencode(filter)));
    expect_error(
        get("name eq 'O'Bryan'").await,
        400,
        "0x80060888",
        "There is an unterminated literal at position 17 in 'name eq 'O'Bryan''.",
    )
    .await;
    expect_error(
        get("name eq").await,
        400,
        "0x80060888",
        "Expression expected at position 7 in 'name eq'.",
    )
    .await;
    expect_error(
        get("name eq 'a' andd numberofemployees eq 1").await,
        400,
        "0x80060888",
        "Syntax error at position 12",
    )
    .await;
    expect_error(
        get("numberofemployees eq 'many'").await,
        400,
        "0x80060888",
        "incompatible types",
    )
    .await;
    expect_error(
        get("nosuch eq 1").await,
        400,
        "0x0",
        "Could not find a property named 'nosuch'",
    )
    .await;
    expect_error(
        get("primarycontactid/fullname eq 'x'").await,
        501,
        "0x80040216",
        "does not implement",
    )
    .await;
}

#[tokio::test]
async fn reads_an_unencoded_plus_as_a_space_so_clients_must_encode_it() {
    let emulator = Emulator::accounts().await;
    emulator.create("accounts", json!({"name": "A+B"})).await;
    let raw = emulator
        .get_json("accounts?$select=name&$filter=name+eq+'A+B'")
        .await;
    assert_eq!(raw["value"], json!([]), "'A+B' arrived as 'A B'");
    assert_eq!(filtered(&emulator, "name eq 'A+B'").await, ["A+B"]);
}

#[tokio::test]
async fn orderby_sorts_on_several_keys_in_either_direction() {
    let emulator = Emulator::accounts().await;
    assert_eq!(
        names(&emulator, "$orderby=numberofemployees desc,name asc").await,
        [
            "Contoso Ltd",
            "Fabrikam",
            "contoso east",
            "O'Bryan & Sons",
            "100% Cotton"
        ]
    );
    // Nulls sort first ascending; text sorts case-insensitively.
    assert_eq!(
        names(&emulator, "$orderby=address1_city,name desc").await,
        [
            "Fabrikam",
            "100% Cotton",
            "O'Bryan & Sons",
            "Contoso Ltd",
            "contoso east"
        ]
    );
    expect_error(
        emulator.get("accounts?$orderby=nosuch").await,
        400,
        "0x0",
        "Could not find a property",
    )
    .await;
    expect_error(
        emulator.get("accounts?$orderby=name%20sideways").await,
        400,
        "0x80060888",
        "Syntax error",
    )
    .await;
    for lookup in ["_parentaccountid_value", "_ownerid_value"] {
        expect_error(
            emulator.get(format!("accounts?$orderby={lookup}")).await,
            501,
            "0x80040216",
            "ordering by a lookup column",
        )
        .await;
    }
}

#[tokio::test]
async fn top_limits_the_rows_and_gives_no_next_link() {
    let emulator = Emulator::accounts().await;
    let body = emulator
        .get_json("accounts?$select=name&$top=2&$orderby=name")
        .await;
    assert_eq!(body["value"].as_array().unwrap().len(), 2);
    assert!(body.get("@odata.nextLink").is_none());
    expect_error(
        emulator.get("accounts?$top=-1").await,
        400,
        "0x80060888",
        "$top",
    )
    .await;
}

#[tokio::test]
async fn count_reports_the_matching_rows() {
    let emulator = Emulator::accounts().await;
    let body = emulator
        .get_json("accounts?$select=name&$count=true&$filter=creditonhold eq false&$top=1")
        .await;
    assert_eq!(body["@odata.count"], 3);
    assert_eq!(body["value"].as_array().unwrap().len(), 1);
    let text = emulator.get("accounts/$count").await.text().await.unwrap();
    assert_eq!(text.trim_start_matches('\u{feff}'), "5");
}

#[tokio::test]
async fn refuses_skip_search_and_format_as_the_service_does() {
    let emulator = Emulator::accounts().await;
    for option in ["$skip=1", "$search=contoso", "$format=json"] {
        let name = option.split('=').next().unwrap();
        expect_error(
            emulator.get(&format!("accounts?{option}")).await,
            400,
            "0x80060888",
            &format!("The query parameter {name} is not supported"),
        )
        .await;
    }
    expect_error(
        emulator.get("accounts?$top=1&$top=2").await,
        400,
        "0x80060888",
        "more than once",
    )
    .await;
}

/// SQL Server compares a GUID's groups last first (`dddddddd-cccc-bbbb-aaaa-eeeeeeeeeeee` sorts by e,
/// a, then b, c and d byte-swapped): written out here from the text, independently of the emulator.
fn sql_server_order(id: &str) -> String {
    let groups: Vec<&str> = id.split('-').collect();
    let swap = |g: &str| -> String {
        g.as_bytes()
            .chunks(2)
            .rev()
            .map(|pair| std::str::from_utf8(pair).unwrap())
            .collect()
    };
    format!(
        "{}{}{}{}{}",
        groups[4],
        groups[3],
        swap(groups[2]),
        swap(groups[1]),
        swap(groups[0])
    )
}

async fn page(
    emulator: &Emulator,
    url: &str,
    page_size: Option<usize>,
) -> (Value, reqwest::header::HeaderMap) {
    let mut request = emulator
        .http
        .get(url)
        .bearer_auth(emulator.fresh_token().await);
    if let Some(n) = page_size {
        request = request.header("Prefer", format!("odata.maxpagesize={n}"));
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    let headers = response.headers().clone();
    (response.json().await.unwrap(), headers)
}

#[tokio::test]
async fn pages_with_maxpagesize_and_an_opaque_next_link_in_primary_key_order() {
    let emulator = Emulator::empty().await;
    emulator
        .control(
            Method::POST,
            "tables/account/generate",
            json!({"count": 12}),
        )
        .await;
    let first_url = emulator.api("accounts?$select=name&$filter=numberofemployees%20ge%200");
    let (first, headers) = page(&emulator, &first_url, Some(5)).await;
    assert_eq!(headers["preference-applied"], "odata.maxpagesize=5");
    let mut ids: Vec<String> = Vec::new();
    let mut body = first;
    let mut pages = 0;
    loop {
        pages += 1;
        ids.extend(
            body["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["accountid"].as_str().unwrap().to_owned()),
        );
        let Some(next) = body["@odata.nextLink"].as_str() else {
            break;
        };
        assert!(next.contains("$skiptoken=%3Ccookie"), "{next}");
        assert!(
            next.contains("$select=name"),
            "the link keeps the query's options: {next}"
        );
        body = page(&emulator, next, Some(5)).await.0;
    }
    assert_eq!(pages, 3);
    assert_eq!(ids.len(), 12);
    let mut sorted = ids.clone();
    sorted.sort_by_key(|id| sql_server_order(id));
    assert_eq!(
        ids, sorted,
        "no $orderby means primary key order, as SQL Server orders GUIDs"
    );
    sorted.dedup();
    assert_eq!(sorted.len(), 12);
}

#[tokio::test]
async fn paging_neither_skips_nor_repeats_rows_changed_between_pages() {
    let emulator = Emulator::empty().await;
    emulator
        .control(
            Method::POST,
            "tables/account/generate",
            json!({"count": 10}),
        )
        .await;
    let url = emulator.api("accounts?$select=name&$orderby=name");
    let (first, _) = page(&emulator, &url, Some(4)).await;
    let seen: Vec<String> = first["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    // Delete a row already sent: an offset-based skiptoken would now skip an unseen row.
    let gone = first["value"][0]["accountid"].as_str().unwrap();
    emulator
        .request(Method::DELETE, &format!("accounts({gone})"))
        .send()
        .await
        .unwrap();
    let (second, _) = page(
        &emulator,
        first["@odata.nextLink"].as_str().unwrap(),
        Some(4),
    )
    .await;
    let (third, _) = page(
        &emulator,
        second["@odata.nextLink"].as_str().unwrap(),
        Some(4),
    )
    .await;
    let rest: Vec<String> = [second, third]
        .iter()
        .flat_map(|b| {
            b["value"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(seen.len() + rest.len(), 10);
    assert!(seen.iter().all(|n| !rest.contains(n)));
}

#[tokio::test]
async fn caps_pages_at_5000_and_ignores_top_when_a_page_size_is_asked() {
    let emulator = Emulator::empty().await;
    emulator
        .control(
            Method::POST,
            "tables/account/generate",
            json!({"count": 5003}),
        )
        .await;
    let (body, headers) = page(
        &emulator,
        &emulator.api("accounts?$select=name"),
        Some(9000),
    )
    .await;
    assert_eq!(body["value"].as_array().unwrap().len(), 5000);
    assert_eq!(headers["preference-applied"], "odata.maxpagesize=9000");
    assert!(body["@odata.nextLink"].is_string());
    let (default, _) = page(&emulator, &emulator.api("accounts?$select=name"), None).await;
    assert_eq!(
        default["value"].as_array().unwrap().len(),
        5000,
        "the default page size is 5000"
    );
    let (ignored_top, _) = page(
        &emulator,
        &emulator.api("accounts?$select=name&$top=3"),
        Some(10),
    )
    .await;
    assert_eq!(
        ignored_top["value"].as_array().unwrap().len(),
        10,
        "$top is ignored with maxpagesize"
    );
    assert!(ignored_top["@odata.nextLink"].is_string());
    let (count, _) = page(
        &emulator,
        &emulator.api("accounts?$select=name&$count=true"),
        Some(1),
    )
    .await;
    assert_eq!(count["@odata.count"], 5000, "counts stop at 5000");
}

#[tokio::test]
async fn a_count_of_exactly_5000_is_not_over_the_limit() {
    let emulator = Emulator::empty().await;
    let generate = |count: usize| {
        emulator.control(
            Method::POST,
            "tables/account/generate",
            json!({"count": count}),
        )
    };
    let exceeded = async || {
        let response = emulator
            .request(Method::GET, "accounts?$select=name&$count=true&$top=1")
            .header(
                "prefer",
                "odata.include-annotations=\"Microsoft.Dynamics.CRM.totalrecordcount*\"",
            )
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["@Microsoft.Dynamics.CRM.totalrecordcount"], 5000);
        body["@Microsoft.Dynamics.CRM.totalrecordcountlimitexceeded"].clone()
    };
    generate(5000).await;
    assert_eq!(exceeded().await, false);
    generate(1).await;
    assert_eq!(exceeded().await, true);
}

#[tokio::test]
async fn refuses_a_tampered_skiptoken() {
    let emulator = Emulator::accounts().await;
    expect_error(
        emulator.get("accounts?$skiptoken=page%3D2").await,
        400,
        "0x80060888",
        "paging cookie",
    )
    .await;
    // A forged page number at the top of its range still answers, and the emulator stays up.
    let forged = urlencode(
        r#"<cookie pagenumber="4294967296" pagingcookie="%3ccookie%20page%3d%221%22%3e%3c%2fcookie%3e" istracking="False" />"#,
    );
    let status = emulator
        .request(
            Method::GET,
            &format!("accounts?$select=name&$skiptoken={forged}"),
        )
        .header("prefer", "odata.maxpagesize=1")
        .send()
        .await
        .unwrap()
        .status();
    assert!(status.is_success() || status == 400, "{status}");
    assert_eq!(names(&emulator, "$top=1").await.len(), 1);
}

#[tokio::test]
async fn deeply_nested_filters_answer_400_and_leave_the_emulator_up() {
    let emulator = Emulator::accounts().await;
    let filter = format!("{}name eq 'x'{}", "(".repeat(5_000), ")".repeat(5_000));
    expect_error(
        emulator
            .get(format!("accounts?$filter={}", urlencode(&filter)))
            .await,
        400,
        "0x80060888",
        "recursion limit",
    )
    .await;
    let nots = format!("{}name eq 'x'", "not ".repeat(5_000));
    expect_error(
        emulator
            .get(format!("accounts?$filter={}", urlencode(&nots)))
            .await,
        400,
        "0x80060888",
        "recursion limit",
    )
    .await;
    assert_eq!(
        filtered(&emulator, "(((name eq 'Fabrikam')))").await,
        ["Fabrikam"]
    );
}
