// An EHR over MLLP built on Medplum's HL7 stack (@medplum/hl7 Hl7Connection does the framing
// and enhanced mode, @medplum/core Hl7Message parses and builds the ACKs). Sockets come from a
// node server bound to loopback (Hl7Server.start listens on every interface).
// Writes each message to <out>/<n>_<MSH-10>.hl7, then answers with Medplum's own ACKs.
// usage: node mllp_ehr.cjs <port> <out-dir> [--ack AA|AE|AR] [--enhanced] [--stray]
//   --enhanced  Medplum's enhanced mode: it sends a commit ACK (CA) itself on receipt, then ours
//   --stray     before each answer, an AA built for the previous message (a stray late ACK)
// prints "mllp-ehr listening on <port>" when ready
"use strict";
const fs = require("fs");
const net = require("net");
const path = require("path");
const { Hl7Connection } = require("@medplum/hl7");

const args = process.argv.slice(2);
const [portArg, out] = args;
const flag = (name) => args.includes(name);
const ackIndex = args.indexOf("--ack");
const ackCode = ackIndex >= 0 ? args[ackIndex + 1] : "AA";
fs.mkdirSync(out, { recursive: true });

let counter = 0;
let previous = null;
function serve(connection) {
  connection.addEventListener("message", ({ message }) => {
    const control = message.header.getField(10).toString() || "no-id";
    counter += 1;
    const name = `${String(counter).padStart(6, "0")}_${control.replace(/[^A-Za-z0-9._-]/g, "_")}.hl7`;
    const tmp = path.join(out, `.${name}.tmp`);
    fs.writeFileSync(tmp, message.toString());
    fs.renameSync(tmp, path.join(out, name));
    if (flag("--stray") && previous) {
      connection.send(previous.buildAck({ ackCode: "AA" }));
    }
    previous = message;
    connection.send(message.buildAck({ ackCode }));
  });
  connection.addEventListener("error", (e) => process.stderr.write(`connection error ${e.error}\n`));
}

const server = net.createServer((socket) => serve(new Hl7Connection(socket, "utf-8", flag("--enhanced"))));
server.listen(Number(portArg) || 0, "127.0.0.1", () => {
  process.stdout.write(`mllp-ehr listening on ${server.address().port}\n`);
});
process.on("SIGTERM", () => process.exit(0));
