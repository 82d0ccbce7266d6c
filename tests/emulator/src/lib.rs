//! A local Microsoft Dataverse Web API emulator.
//!
//! It serves the Web API (`/api/data/v9.x/`), an Entra ID client-credentials token endpoint, and a
//! control API under `/_emulator/` for tests. It is strict where the real service is strict — paging,
//! upserts, conditional requests, change tracking, `$filter` parsing — because a lenient double lets
//! client bugs through to production. Everything it does not implement answers a clear 501.
//!
//! Webhooks registered in the plug-in registration tables receive each change as Dataverse posts it
//! (see [`webhooks`]). Service protection limits answer 429 with `Retry-After` when turned on (see
//! [`protection`]).
//!
//! All state sits in one [`Emulator`] behind one lock: requests are short, and a 5000-row page is
//! rendered in a few milliseconds (see `benches/page.rs`).

pub mod api;
pub mod auth;
pub mod bypass;
pub mod cli;
#[cfg(feature = "client")]
pub mod client;
pub mod clock;
pub mod control;
pub mod dates;
pub mod flows;
pub mod format;
pub mod guid;
pub mod keys;
pub mod odata;
pub mod protection;
pub mod relationships;
pub mod reply;
pub mod schema;
pub mod seed;
pub mod server;
pub mod store;
pub mod users;
pub mod webhooks;

use bytes::Bytes;
use hyper::HeaderMap;
use serde::Deserialize;

/// The tenant named in `WWW-Authenticate` challenges. Any tenant may ask for a token.
pub const TENANT_ID: &str = "0b6f1c3e-7d52-4e8a-9c41-5a2f8e6d0b17";

/// The whole emulated world.
#[derive(Debug)]
pub struct Emulator {
    pub store: store::Store,
    pub auth: auth::Auth,
    pub faults: Vec<control::Fault>,
    pub log: Vec<control::LogEntry>,
    pub seed: Seed,
    pub webhooks: webhooks::Webhooks,
    /// Service protection limits, off unless turned on.
    pub protection: protection::Protection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Seed {
    Demo,
    None,
}

impl Emulator {
    pub fn new(options: &cli::Options) -> Self {
        let mut emulator = Self {
            store: store::Store::new(options.delta_token_ttl_secs),
            auth: auth::Auth::new(
                options.client_id.clone(),
                options.client_secret.clone(),
                options.token_ttl_secs,
            ),
            faults: Vec::new(),
            log: Vec::new(),
            seed: options.seed,
            webhooks: webhooks::Webhooks::new(
                options.webhook_attempts,
                std::time::Duration::from_millis(options.webhook_backoff_ms),
            ),
            protection: protection::Protection::new(options.protection.clone()),
        };
        emulator.store.user_offset_minutes = options.user_offset_minutes;
        emulator.reset(options.seed);
        emulator
    }

    /// Empties the organisation and reloads the built-in tables and seed data. Issued tokens stay
    /// valid, so connected clients carry on. Deliveries still in flight carry on too, and stay in
    /// the delivery log until they settle.
    pub fn reset(&mut self, seed: Seed) {
        let ttl = self.store.delta_ttl_secs;
        let clock = std::mem::take(&mut self.store.clock);
        let offset = self.store.user_offset_minutes;
        self.store = store::Store::new(ttl);
        self.store.clock = clock;
        // The user's time zone is the server's setting, as the command line gave it.
        self.store.user_offset_minutes = offset;
        for def in schema::builtin_tables()
            .into_iter()
            .chain(webhooks::registration::tables())
        {
            self.store.add_table(def);
        }
        webhooks::registration::seed(&mut self.store);
        if seed == Seed::Demo {
            seed::demo(&mut self.store);
        }
        self.faults.clear();
        self.log.clear();
        self.webhooks.forget_settled();
        // The settings stay (they are the server's, like the command line's); what users have
        // used of the limits does not.
        self.protection.clear();
    }
}

/// A request as the handlers see it: the body read, the path and query still raw.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn headers_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    pub fn host(&self) -> &str {
        self.header("host").unwrap_or("localhost")
    }
}
