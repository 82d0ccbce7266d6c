// Runs dynamics-web-api's own request builders against the Dataverse emulator, so that the emulator is
// checked against a client written by someone else: upsert by alternate key, associate, a changeset
// in executeBatch, retrieveAll following next links, and fetchAll following FetchXML paging cookies.
//
// Reads EMULATOR_URL and TOKEN; prints one JSON object of what each call returned, for the Rust
// suite (tests/e2e/tests/interop.rs) to check against the emulator's state. Any failure exits 1.

import { DynamicsWebApi } from "dynamics-web-api";

const api = new DynamicsWebApi({
  serverUrl: process.env.EMULATOR_URL,
  dataApi: { version: "9.2" },
  onTokenRefresh: async () => process.env.TOKEN,
  propagateErrors: true,
});

const results = {};

results.upserted = await api.upsert({
  collection: "accounts",
  key: "accountnumber='DWA-1'",
  data: { name: "Made by dynamics-web-api" },
  returnRepresentation: true,
  select: ["name", "accountnumber"],
});

const contact = await api.create({
  collection: "contacts",
  data: { lastname: "Interop" },
  returnRepresentation: true,
});
results.contact = contact.contactid;

await api.associate({
  collection: "accounts",
  primaryKey: results.upserted.accountid,
  relationshipName: "contact_customer_accounts",
  relatedCollection: "contacts",
  relatedKey: contact.contactid,
});

api.startBatch();
api.create({ collection: "contacts", data: { lastname: "Batched" }, contentId: "1" });
api.create({
  collection: "accounts",
  data: { name: "Batched account", "primarycontactid@odata.bind": "$1" },
});
results.batch = await api.executeBatch();

const all = await api.retrieveAll({ collection: "accounts", select: ["name"], maxPageSize: 1 });
results.all = all.value.map((row) => row.name);

const fetched = await api.fetchAll({
  collection: "accounts",
  fetchXml:
    '<fetch count="1"><entity name="account"><attribute name="name"/><order attribute="name"/></entity></fetch>',
});
results.fetched = fetched.value.map((row) => row.name);

process.stdout.write(JSON.stringify(results));
