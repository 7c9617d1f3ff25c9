// Driven by tests/gateway/clients_sftp.rs: uploads, lists, renames, downloads and compares bytes with
// ssh2-sftp-client against the gateway. Arguments: port, user, private key file, local directory.
'use strict';
const fs = require('fs');
const path = require('path');
const Client = require('ssh2-sftp-client');

async function main() {
  const [port, username, keyFile, dir] = process.argv.slice(2);
  const sftp = new Client();
  await sftp.connect({
    host: '127.0.0.1',
    port: Number(port),
    username,
    privateKey: fs.readFileSync(keyFile),
    readyTimeout: 20000,
  });
  const data = fs.readFileSync(path.join(dir, 'node.bin'));
  await sftp.mkdir('/node/deep', true);
  await sftp.put(path.join(dir, 'node.bin'), '/node/deep/up.bin');
  await sftp.put(Buffer.from('small from a buffer'), '/node/small.txt');
  // fastPut: parallel offset writes.
  await sftp.fastPut(path.join(dir, 'node.bin'), '/node/fast.bin');
  const listing = await sftp.list('/node/deep');
  const entry = listing.find((e) => e.name === 'up.bin');
  if (!entry || entry.size !== data.length) {
    throw new Error(`listing: ${JSON.stringify(listing)}`);
  }
  await sftp.rename('/node/deep/up.bin', '/node/deep/renamed.bin');
  if (await sftp.exists('/node/deep/up.bin')) throw new Error('the old name is still there');
  const back = await sftp.get('/node/deep/renamed.bin');
  if (!Buffer.isBuffer(back) || !back.equals(data)) throw new Error('downloaded bytes differ');
  await sftp.fastGet('/node/fast.bin', path.join(dir, 'fast-back.bin'));
  if (!fs.readFileSync(path.join(dir, 'fast-back.bin')).equals(data)) {
    throw new Error('fastGet bytes differ');
  }
  const stat = await sftp.stat('/node/small.txt');
  if (stat.size !== 19) throw new Error(`stat: ${JSON.stringify(stat)}`);
  await sftp.end();
  console.log('node-sftp ok');
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
