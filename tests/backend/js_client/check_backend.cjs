// Drives a terramind-openeo back-end the way the openEO Web Editor does, with the same libraries:
// @openeo/js-client for every request, @openeo/js-processgraphs for validating graphs against the
// back-end's own process specs (the editor's model builder). Prints one JSON object on stdout; the
// Python test (tests/backend/test_js_client.py) makes the assertions.
//
//   node check_backend.cjs ROOT_URL USER PASSWORD COLLECTION_ID WEST SOUTH EAST NORTH EPSG
"use strict";
const { OpenEO } = require("@openeo/js-client");
const { ProcessGraph, ProcessRegistry } = require("@openeo/js-processgraphs");

const [url, user, password, collection, west, south, east, north, epsg] = process.argv.slice(2);
const FEATURES = ["listCollections", "describeCollection", "listProcesses", "listFileTypes", "listUdfRuntimes",
  "authenticateBasic", "authenticateOIDC", "describeAccount", "validateProcess", "computeResult", "listJobs",
  "createJob", "describeJob", "startJob", "stopJob", "debugJob", "listResults", "estimateJob",
  "listUserProcesses", "setUserProcess", "describeUserProcess", "deleteUserProcess"];

function ndviGraph(format) {
  return {
    process_graph: {
      load: { process_id: "load_collection", arguments: {
        id: collection, bands: ["B04", "B08"], temporal_extent: ["2022-06-01", "2022-06-03"],
        spatial_extent: { west: +west, south: +south, east: +east, north: +north, crs: +epsg } } },
      ndvi: { process_id: "ndvi", arguments: { data: { from_node: "load" }, nir: "B08", red: "B04" } },
      save: { process_id: "save_result", arguments: { data: { from_node: "ndvi" }, format: format }, result: true },
    },
  };
}

async function localErrors(registry, process) {
  const pg = new ProcessGraph(process, registry);
  const errors = await pg.validate(false);
  return errors.getAll().map((e) => `${e.code}: ${e.message}`);
}

async function main() {
  const out = {};
  const con = await OpenEO.connect(url); // from the root URL: /.well-known/openeo discovery, as the editor
  const caps = con.capabilities();
  out.apiVersion = caps.apiVersion();
  out.features = Object.fromEntries(FEATURES.map((f) => [f, caps.hasFeature(f)]));
  out.authProviders = (await con.listAuthProviders()).map((p) => p.getType());
  await con.authenticateBasic(user, password);
  out.account = (await con.describeAccount()).user_id;

  out.collections = (await con.listCollections()).collections.map((c) => c.id);
  const described = await con.describeCollection(collection);
  out.collectionDimensions = Object.keys(described["cube:dimensions"] || {});
  const processes = (await con.listProcesses()).processes;
  out.processCount = processes.length;
  out.outputFormats = Object.keys((await con.listFileTypes()).getOutputTypes()).map((f) => f.toLowerCase());
  out.udfRuntimes = Object.keys(await con.listUdfRuntimes());

  // the model builder: graphs checked locally against the back-end's processes
  const registry = new ProcessRegistry(processes);
  out.localValidation = {
    ndvi: await localErrors(registry, ndviGraph("netCDF")),
    terramind: await localErrors(registry, { process_graph: {
      load: { process_id: "load_collection", arguments: { id: collection, spatial_extent: null, temporal_extent: null } },
      gen: { process_id: "terramind_generate", arguments: { data: { from_node: "load" }, target: "LULC" },
        result: true } } }),
    missingArgument: await localErrors(registry, { process_graph: {
      n: { process_id: "ndvi", arguments: { nir: "B08" }, result: true } } }),
    unknownProcess: await localErrors(registry, { process_graph: {
      n: { process_id: "no_such_process", arguments: {}, result: true } } }),
  };
  out.serverValidation = {
    ndvi: await con.validateProcess(ndviGraph("netCDF")),
    unknownCollection: (await con.validateProcess({ process_graph: {
      load: { process_id: "load_collection", arguments: { id: "NO_SUCH_COLLECTION" }, result: true } } }))
      .map((e) => e.code),
  };

  // "Run now": synchronous processing, logs from the monitor link
  const sync = await con.computeResult(ndviGraph("netCDF"));
  const chunks = [];
  for await (const chunk of sync.data) chunks.push(chunk);
  out.sync = { type: sync.type, bytes: Buffer.concat(chunks).length, head: Buffer.concat(chunks).subarray(0, 4).toString("latin1"),
    logs: sync.logs.map((l) => l.message) };

  // batch job: create, start, poll, logs, results
  const job = await con.createJob(ndviGraph("GTiff"), "js-client batch job");
  await job.startJob();
  const deadline = Date.now() + 240000;
  let status = (await job.describeJob()).status;
  while (!["finished", "error", "canceled"].includes(status) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    status = (await job.describeJob()).status;
  }
  const logIterator = job.debugJob(); // the editor's log viewer: pages on by the last id it saw
  out.job = { status, progress: job.progress, logs: (await logIterator.nextLogs()).map((l) => l.message),
    logsAfterLast: (await logIterator.nextLogs()).length };
  if (status === "finished") {
    const assets = await job.listResults();
    out.job.assets = assets.map((a) => ({ href: a.href, type: a.type }));
    const stac = await job.getResultsAsStac();
    out.job.stacType = stac.type;
    const first = await fetch(assets[0].href);
    out.job.download = { status: first.status, bytes: (await first.arrayBuffer()).byteLength };
  }
  out.jobsListed = (await con.listJobs()).map((j) => j.id).includes(job.id);
  await job.deleteJob();

  // user-defined processes (the editor's "Save as process")
  const udp = await con.setUserProcess("js_ndvi", { ...ndviGraph("netCDF"), summary: "NDVI from the JS client" });
  out.udp = { listed: (await con.listUserProcesses()).map((p) => p.id),
    summary: (await udp.describeUserProcess()).summary };
  await udp.deleteUserProcess();
  out.udp.afterDelete = (await con.listUserProcesses()).map((p) => p.id);
  process.stdout.write(JSON.stringify(out));
}

main().catch((err) => {
  process.stderr.write(`js-client check failed: ${err && err.stack ? err.stack : err}\n`);
  if (err && err.response) process.stderr.write(`response: ${JSON.stringify(err.response.data)}\n`);
  process.exit(1);
});
