// The Node peer of `get-record`, for the cold-start bench (tests/e2e/benches/cold_start.rs): what a
// Node function built on dynamics-web-api does for the same event. It takes a client-credentials
// token from the credentials' token endpoint, then GETs the row with the event's $select and $expand,
// and prints it as one line of JSON: the bench stops its clock at that line.
//
//   node get-record.js <credentials.json> <event.json> <entity set>
//
// The credentials file is the one get-record reads locally (CRM_SECRETS=file:...): an object mapping
// dataset names to {url, tenant_id, client_id, client_secret, authority}. The peer is told the
// table's entity set name ("accounts" for the event's "account"), so it makes two requests where
// get-record makes three (it looks the name up first): the comparison favours the peer.
"use strict";

const { readFileSync } = require("node:fs");
const { DynamicsWebApi } = require("dynamics-web-api");

// "primarycontactid($select=fullname,emailaddress1)" as dynamics-web-api's expand objects.
function expandOf(text) {
  if (!text) return undefined;
  return text.split(/,(?![^(]*\))/).map((part) => {
    const match = /^\s*(\w+)(?:\(\$select=([^)]*)\))?\s*$/.exec(part);
    if (!match) throw new Error(`unsupported $expand: ${part}`);
    return { property: match[1], select: match[2] ? match[2].split(",") : undefined };
  });
}

async function main() {
  const [credentialsPath, eventPath, entitySet] = process.argv.slice(2);
  if (!credentialsPath || !eventPath || !entitySet) {
    throw new Error("usage: node get-record.js <credentials.json> <event.json> <entity set>");
  }
  const event = JSON.parse(readFileSync(eventPath, "utf8"));
  const credentials = JSON.parse(readFileSync(credentialsPath, "utf8"))[event.dataset];
  if (!credentials) throw new Error(`no credentials for dataset ${event.dataset}`);
  const url = credentials.url.replace(/\/+$/, "");
  const authority = (credentials.authority || "https://login.microsoftonline.com").replace(/\/+$/, "");

  const token = async () => {
    const response = await fetch(`${authority}/${credentials.tenant_id}/oauth2/v2.0/token`, {
      method: "POST",
      body: new URLSearchParams({
        grant_type: "client_credentials",
        client_id: credentials.client_id,
        client_secret: credentials.client_secret,
        scope: `${url}/.default`,
      }),
    });
    if (!response.ok) throw new Error(`the token endpoint answered ${response.status}`);
    return (await response.json()).access_token;
  };

  const api = new DynamicsWebApi({
    serverUrl: url,
    dataApi: { version: "9.2" },
    onTokenRefresh: token,
  });
  const row = await api.retrieve({
    collection: entitySet,
    key: event.id,
    select: event.$select ? event.$select.split(",") : undefined,
    expand: expandOf(event.$expand),
  });
  process.stdout.write(`${JSON.stringify(row)}\n`);
}

main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
