// MQTT.js (as a browser uses it) over WebSocket against filegate's embedded broker.
// usage: node ws_commands.js URL USER PASSWORD PROTOCOL_VERSION(4|5)
// Subscribes to the user's reply space, puts a file, gets it back, lists it; prints "ok".
const mqtt = require("mqtt");
const [url, username, password, version] = process.argv.slice(2);
const v5 = version === "5";
const client = mqtt.connect(url, {
  username,
  password,
  protocolVersion: v5 ? 5 : 4,
  clientId: `mqttjs-${version}-${Math.random().toString(16).slice(2, 8)}`,
  reconnectPeriod: 0,
  connectTimeout: 15000,
});
const fail = (why) => {
  console.error(why);
  process.exit(1);
};
setTimeout(() => fail("timed out"), 30000).unref();
const base = `filegate/replies/${username}`;
const waiting = new Map();
client.on("error", (e) => fail(`error: ${e.message}`));
client.on("message", (topic, payload, packet) => {
  const key = v5 ? packet.properties?.correlationData?.toString() : topic;
  const done = waiting.get(key);
  if (done) {
    waiting.delete(key);
    done(payload);
  }
});
let n = 0;
function ask(op, path, body) {
  return new Promise((resolve) => {
    n += 1;
    const opts = { qos: 1 };
    if (v5) {
      const id = `c${n}`;
      opts.properties = { responseTopic: `${base}/mqttjs`, correlationData: Buffer.from(id) };
      waiting.set(id, resolve);
    } else {
      waiting.set(`${base}/${op}/${path}`, resolve);
    }
    client.publish(`filegate/commands/${op}/${path}`, body ?? "", opts);
  });
}
client.on("connect", async () => {
  await client.subscribeAsync(`${base}/#`, { qos: 1 });
  const data = Buffer.alloc(5000, 7);
  const put = JSON.parse(await ask("put", `ws${version}/data.bin`, data));
  if (!put.ok || put.size !== data.length) fail(`put: ${JSON.stringify(put)}`);
  const got = await ask("get", `ws${version}/data.bin`);
  if (!got.equals(data)) fail(`get returned ${got.length} bytes`);
  const list = JSON.parse(await ask("list", `ws${version}`));
  if (list.entries[0].name !== "data.bin") fail(`list: ${JSON.stringify(list)}`);
  console.log("ok");
  client.end();
});
