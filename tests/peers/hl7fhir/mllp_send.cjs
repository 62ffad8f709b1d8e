// Send HL7 messages (files) over MLLP with Medplum's Hl7Client and print each ACK as JSON.
// usage: node mllp_send.cjs <port> <message-file>...
"use strict";
const fs = require("fs");
const { Hl7Message } = require("@medplum/core");
const { Hl7Client } = require("@medplum/hl7");

const [port, ...files] = process.argv.slice(2);
(async () => {
  const client = new Hl7Client({ host: "127.0.0.1", port: Number(port), connectTimeout: 10000 });
  try {
    for (const file of files) {
      const text = fs.readFileSync(file, "utf8");
      const ack = await client.sendAndWait(Hl7Message.parse(text), { timeoutMs: 15000 });
      process.stdout.write(JSON.stringify({ ack: ack.toString() }) + "\n");
    }
  } finally {
    await client.close();
  }
  process.exit(0); // a pending sendAndWait timer would keep node alive for its full timeout
})().catch((err) => {
  process.stderr.write(`send failed: ${err}\n`);
  process.exit(2);
});
