// basic-ftp (Node) against the gateway: upload, list, rename, download, compare bytes.
// usage: node basic_ftp_client.js MODE HOST PORT USER PASSWORD   (MODE: plain or explicit)
// basic-ftp sends `OPTS MLST type;size;modify;unique;unix.mode;...` on every connect (issue 15,
// item 3) and closes FTPS data connections without TLS close_notify (item 4: an empty file).
"use strict";
const ftp = require("basic-ftp");
const { Readable, Writable } = require("stream");
const crypto = require("crypto");

function fail(what) {
  console.error(`basic-ftp: ${what}`);
  process.exit(1);
}

async function main() {
  const [mode, host, port, user, password] = process.argv.slice(2);
  const client = new ftp.Client(30000);
  await client.access({
    host,
    port: Number(port),
    user,
    password,
    secure: mode === "explicit",
    secureOptions: { rejectUnauthorized: false },
  });
  await client.ensureDir("/node");
  const data = crypto.randomBytes(250000);
  await client.uploadFrom(Readable.from([data]), "data.bin");
  await client.uploadFrom(Readable.from([]), "empty.bin");
  const list = await client.list();
  const sizes = Object.fromEntries(list.map((f) => [f.name, f.size]));
  if (sizes["data.bin"] !== 250000 || sizes["empty.bin"] !== 0) fail(`list ${JSON.stringify(sizes)}`);
  await client.rename("data.bin", "final.bin");
  const chunks = [];
  await client.downloadTo(
    new Writable({
      write(chunk, _enc, done) {
        chunks.push(chunk);
        done();
      },
    }),
    "final.bin"
  );
  if (!Buffer.concat(chunks).equals(data)) fail("downloaded bytes differ");
  if ((await client.size("final.bin")) !== 250000) fail("SIZE");
  client.close();
}

main().catch((e) => fail(e.stack || String(e)));
