// Send one HL7 message (a file) with npm's node-hl7-client and print the ACK it gets back.
// usage: node node_mllp_send.cjs <port> <message-file>   (NODE_PATH points at node_modules)
"use strict";
const fs = require("fs");
const { Client, Message } = require("node-hl7-client");

const [port, file] = process.argv.slice(2);
const text = fs.readFileSync(file, "utf8");
const client = new Client({ host: "127.0.0.1" });
const timer = setTimeout(() => { console.error("no ACK within 15 s"); process.exit(3); }, 15000);

const conn = client.createConnection({ port: Number(port), waitAck: true }, async (res) => {
  process.stdout.write(JSON.stringify({ ack: res.getMessage().toString() }) + "\n");
  clearTimeout(timer);
  await conn.close();
  process.exit(0);
});
conn.on("client.error", (err) => { console.error("client error", String(err)); });
conn.sendMessage(new Message({ text })).catch((err) => {
  console.error("send failed", String(err));
  process.exit(2);
});
