//! Change tracking: following a `$deltatoken`.
//!
//! A delta returns the rows changed after the token's version (current state, once per row, ordered by
//! version; creates and updates look alike), then `$deletedEntity` tombstones, then a fresh
//! `@odata.deltaLink`. Each pass is bounded by the version current when it began, so changes made
//! while a client pages through it wait for the next pass instead of being lost or repeated.

use std::ops::Bound;

use percent_encoding::utf8_percent_encode;

use super::render::{parse_select, write_json, write_row};
use super::rows::{MAX_PAGE, link};
use super::{Ctx, URL};
use crate::clock;
use crate::format::{self, Annotate};
use crate::odata::cookie::Cursor;
use crate::odata::query::Options;
use crate::reply::{Fail, Reply};
use crate::store::{Row, Store};

pub fn refuse_options(opts: &Options) -> Result<(), Fail> {
    for (name, present) in [
        ("$filter", opts.filter.is_some()),
        ("$orderby", opts.orderby.is_some()),
        ("$top", opts.top.is_some()),
        ("$expand", opts.expand.is_some()),
    ] {
        if present {
            return Err(Fail::bad_query(format!(
                "The \"{name}\" query parameter isn't supported when Change Tracking is enabled."
            )));
        }
    }
    Ok(())
}

/// `<version>!<MM/dd/yyyy HH:mm:ss>`, the shape real delta tokens have.
pub fn token(version: u64, now: i64) -> String {
    format!("{version}!{}", clock::format_token_time(now))
}

fn expired() -> Fail {
    Fail::new(
        400,
        "0x80044352",
        "Version stamp associated with the client has expired. Please perform a full sync.",
    )
}

/// Checks a delta token: it must parse, must not be from the future, must be younger than the
/// retention period, and must not predate an expiry made through the control API.
fn check_token(store: &Store, token: &str) -> Result<u64, Fail> {
    let (version, at) = token.split_once('!').ok_or_else(expired)?;
    let version: u64 = version.parse().map_err(|_| expired())?;
    let at = clock::parse_token_time(at).ok_or_else(expired)?;
    let now = store.clock.now();
    if version > store.version
        || version < store.delta_floor
        || at > now.saturating_add(60)
        || at < now.saturating_sub(store.delta_ttl_secs)
    {
        return Err(expired());
    }
    Ok(version)
}

enum Entry<'a> {
    Changed(&'a Row),
    Deleted(u64, uuid::Uuid),
}

pub fn read(store: &Store, ctx: &Ctx, t: usize) -> Result<Reply, Fail> {
    let table = &store.tables[t];
    let def = &table.def;
    if !def.change_tracking {
        return Err(Fail::bad_query(format!(
            "Change tracking is not enabled for the entity '{}'.",
            def.logical_name
        )));
    }
    refuse_options(&ctx.options)?;
    let raw_token = ctx.options.deltatoken.as_deref().unwrap_or_default();
    let token_version = check_token(store, raw_token)?;
    let (page, pass_version, section, last_version) = match ctx.options.skiptoken.as_deref() {
        None => (0, store.version, 0u8, token_version),
        Some(cookie) => match Cursor::decode(cookie)? {
            Cursor::Delta {
                page,
                token_version: v,
                pass_version,
                section,
                last_version,
            } if v == token_version => (page, pass_version, section, last_version),
            _ => {
                return Err(Fail::bad_query(
                    "The $skiptoken does not belong to this query.",
                ));
            }
        },
    };
    let projection = parse_select(def, ctx.options.select.as_deref())?;
    let page_size = ctx.prefer.max_page_size.unwrap_or(MAX_PAGE).min(MAX_PAGE);

    let changed_from = if section == 0 {
        last_version
    } else {
        pass_version
    };
    let deleted_from = if section == 0 {
        token_version
    } else {
        last_version
    };
    if changed_from > pass_version || deleted_from > pass_version {
        return Err(Fail::bad_query(
            "The $skiptoken does not belong to this query.",
        ));
    }
    // Half-open ranges, so a pass with no changes is an empty range rather than an inverted one.
    let after = |from: u64| (Bound::Excluded(from), Bound::Included(pass_version));
    let changed = table
        .by_version
        .range(after(changed_from))
        .filter_map(|(_, id)| table.rows.get(id))
        .map(Entry::Changed);
    let deleted = table
        .tombstones
        .range(after(deleted_from))
        // A row deleted and then created again within the pass is reported as it now is.
        .filter(|(_, id)| table.rows.get(id).is_none_or(|r| r.version > pass_version))
        .map(|(v, id)| Entry::Deleted(*v, *id));
    let mut entries: Vec<Entry<'_>> = changed.chain(deleted).take(page_size + 1).collect();
    let more = entries.len() > page_size;
    entries.truncate(page_size);

    // Changed rows carry the annotations asked for; a tombstone carries only its id and reason.
    let annotate = Annotate::of(&ctx.prefer);
    let mut out = Vec::with_capacity(256 + entries.len() * 512);
    out.extend_from_slice(b"{\"@odata.context\":");
    write_json(
        &mut out,
        &format!(
            "{}$metadata#{}{}/$delta",
            ctx.base, def.entity_set_name, projection.context
        ),
    );
    out.extend_from_slice(b",\"value\":[");
    let tombstone_context = format!(
        "{}$metadata#{}/$deletedEntity",
        ctx.base, def.entity_set_name
    );
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        match entry {
            Entry::Changed(row) => write_row(&mut out, store, def, row, &projection, &[], annotate),
            Entry::Deleted(_, id) => {
                out.extend_from_slice(b"{\"@odata.context\":");
                write_json(&mut out, &tombstone_context);
                out.extend_from_slice(b",\"id\":");
                write_json(&mut out, &id.to_string());
                out.extend_from_slice(b",\"reason\":\"deleted\"}");
            }
        }
    }
    out.push(b']');
    if more {
        let (section, last_version) = match entries.last() {
            Some(Entry::Changed(row)) => (0, row.version),
            Some(Entry::Deleted(version, _)) => (1, *version),
            None => (section, last_version),
        };
        let cursor = Cursor::Delta {
            page: page.saturating_add(1),
            token_version,
            pass_version,
            section,
            last_version,
        };
        let next = link(
            ctx,
            &def.entity_set_name,
            "$skiptoken",
            &cursor.encode(),
            |n| n == "$select",
        );
        let next = format!("{next}&$deltatoken={}", utf8_percent_encode(raw_token, URL));
        out.extend_from_slice(b",\"@odata.nextLink\":");
        write_json(&mut out, &next);
    } else {
        let next = token(pass_version, store.clock.now());
        out.extend_from_slice(b",\"@odata.deltaLink\":");
        write_json(
            &mut out,
            &link(ctx, &def.entity_set_name, "$deltatoken", &next, |n| {
                n == "$select"
            }),
        );
    }
    out.push(b'}');
    let mut reply = Reply::raw_json(200, out);
    let mut applied = Vec::new();
    if ctx.prefer.track_changes {
        applied.push("odata.track-changes".to_owned());
    }
    format::push_applied(&mut applied, &ctx.prefer);
    if !applied.is_empty() {
        reply = reply.with_header("preference-applied", applied.join(","));
    }
    Ok(reply)
}
