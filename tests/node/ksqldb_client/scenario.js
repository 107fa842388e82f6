// The npm client ksqldb-client, unmodified, against a running `eddy server`.
//
// Usage: node scenario.js http://127.0.0.1:PORT   (run by host/eddy/tests/e2e/server_http.rs)
"use strict";

const assert = require("assert");
const KsqldbClient = require("ksqldb-client");

async function main(base) {
  const url = new URL(base);
  const client = new KsqldbClient({ host: `${url.protocol}//${url.hostname}`, port: Number(url.port) });
  await client.connect();

  const created = await client.executeStatement("CREATE STREAM noderows (id INT, name VARCHAR);");
  assert.strictEqual(created.status, 200, JSON.stringify(created));
  assert.strictEqual(created.error, undefined, JSON.stringify(created));

  // insertInto resolves with the ack array, no error: the server honoured Accept: application/json.
  for (const row of [{ ID: 1, NAME: "one" }, { ID: 2, NAME: "two" }]) {
    const inserted = await client.insertInto("noderows", row);
    assert.strictEqual(inserted.status, 200, JSON.stringify(inserted));
    assert.strictEqual(inserted.error, undefined, JSON.stringify(inserted));
    assert.deepStrictEqual(inserted.data.rows.map((a) => a.status), ["ok"], JSON.stringify(inserted));
  }

  // A pull query sees exactly those rows, once each.
  const pulled = await client.query("SELECT id, name FROM noderows;");
  assert.strictEqual(pulled.status, 200, JSON.stringify(pulled));
  assert.deepStrictEqual(pulled.data.metadata.columnNames, ["ID", "NAME"]);
  assert.deepStrictEqual(pulled.data.rows, [
    { ID: 1, NAME: "one" },
    { ID: 2, NAME: "two" },
  ]);

  // A failed insert is reported as an error, not as success.
  const bad = await client.insertInto("nosuchstream", { ID: 3 });
  assert.notStrictEqual(bad.error, undefined, JSON.stringify(bad));

  await client.disconnect();
  console.log("ksqldb-client scenario: ok");
}

main(process.argv[2]).catch((e) => {
  console.error(e);
  process.exit(1);
});
