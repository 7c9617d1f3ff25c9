"""Eclipse Paho (paho-mqtt 2.x) against filegate's embedded broker, MQTT 3.1.1 or 5.

usage: mqtt_paho.py HOST PORT USER PASSWORD VERSION(3.1.1|5)

Subscribes to the user's reply space, then put, get, list and delete over MQTT commands; for
MQTT 5 with a response topic and correlation data. Prints one line per step and "ok" at the end;
exits non-zero on the first surprise.
"""
import json
import queue
import sys
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

host, port, user, password, version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
v5 = version == "5"
got = queue.Queue()
ready = queue.Queue()

client = mqtt.Client(
    mqtt.CallbackAPIVersion.VERSION2,
    client_id=f"paho-{version}-{uuid.uuid4().hex[:6]}",
    protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
)
client.username_pw_set(user, password)
client.on_connect = lambda c, u, f, rc, p=None: ready.put(("connack", str(rc)))
client.on_subscribe = lambda c, u, mid, rcs, p=None: ready.put(("suback", [str(r) for r in rcs]))
client.on_message = lambda c, u, m: got.put(m)
client.connect(host, port, keepalive=30)
client.loop_start()
kind, rc = ready.get(timeout=20)
assert kind == "connack" and rc == "Success", (kind, rc)
reply_base = f"filegate/replies/{user}"
client.subscribe(f"{reply_base}/#", qos=1)
kind, codes = ready.get(timeout=20)
assert kind == "suback" and "Granted QoS 1" in codes[0], codes


def ask(op, path, payload=b""):
    props = None
    if v5:
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = f"{reply_base}/paho"
        props.CorrelationData = uuid.uuid4().bytes
    client.publish(f"filegate/commands/{op}/{path}", payload, qos=1, properties=props)
    while True:
        m = got.get(timeout=20)
        if v5:
            if m.properties and getattr(m.properties, "CorrelationData", None) == props.CorrelationData:
                return m
        elif m.topic in (f"{reply_base}/{op}/{path}", f"{reply_base}/get-error/{path}"):
            return m


data = bytes(range(256)) * 40
r = json.loads(ask("put", "paho/data.bin", data).payload)
assert r["ok"] and r["size"] == len(data), r
print("put", r["sha256"])
m = ask("get", "paho/data.bin")
assert m.payload == data, len(m.payload)
print("get", len(m.payload))
r = json.loads(ask("list", "paho").payload)
assert [e["name"] for e in r["entries"]] == ["data.bin"], r
print("list", r["entries"][0]["name"])
r = json.loads(ask("delete", "paho/data.bin").payload)
assert r["ok"], r
print("delete ok")
r = json.loads(ask("get", "paho/data.bin").payload)
assert r["ok"] is False and r["error"] == "not_found", r
print("get after delete: not_found")
client.loop_stop()
client.disconnect()
print("ok")
