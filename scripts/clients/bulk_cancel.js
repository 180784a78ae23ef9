// Cancel Bulk Data exports with the SMART bulk-data-client library (its cancelExport sends DELETE to the
// status URL) and check what the server says afterwards, with Node's own fetch. Prints PASS/FAIL lines;
// exit status 1 if any check fails.
//
// Usage: node bulk_cancel.js BULK_CLIENT_DIR BASE_URL
"use strict";

const path = require("path");

const [clientDir, baseUrl] = process.argv.slice(2);
if (!clientDir || !baseUrl) {
    console.error("usage: node bulk_cancel.js BULK_CLIENT_DIR BASE_URL");
    process.exit(2);
}
const BulkDataClient = require(path.resolve(clientDir, "built/lib/BulkDataClient")).default;
const defaults = require(path.resolve(clientDir, "config/defaults.js"));

let failed = 0;
function report(ok, name, detail) {
    if (!ok) failed += 1;
    console.log(`${ok ? "PASS" : "FAIL"} bulk-data-client ${name}${detail ? ` (${detail})` : ""}`);
}

function newClient() {
    return new BulkDataClient({
        ...defaults,
        fhirUrl: baseUrl.replace(/\/*$/, "/"),
        tokenUrl: "none",
        global: true,
        reporter: "text",
        log: { enabled: false },
    });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The status URL's answer once the job is gone: 404 with an OperationOutcome (Bulk Data IG, "Delete").
async function expectGone(name, statusUrl) {
    const answer = await fetch(statusUrl, { headers: { accept: "application/json" } });
    const body = await answer.text();
    let kind = null;
    try {
        kind = JSON.parse(body).resourceType;
    } catch {
        kind = null;
    }
    report(answer.status === 404 && kind === "OperationOutcome", name, `status ${answer.status}, ${kind}`);
}

async function cancelAtOnce() {
    const client = newClient();
    const statusUrl = await client.kickOff();
    const answer = await client.cancelExport(statusUrl);
    report(answer.statusCode === 202, "cancelExport right after kick-off", `DELETE answered ${answer.statusCode}`);
    await expectGone("status URL after cancel", statusUrl);
}

async function cancelFinished() {
    const client = newClient();
    const statusUrl = await client.kickOff();
    let manifest = null;
    for (let attempt = 0; attempt < 60 && manifest === null; attempt += 1) {
        const answer = await fetch(statusUrl, { headers: { accept: "application/json" } });
        if (answer.status === 200) {
            manifest = await answer.json();
        } else if (answer.status === 202 || answer.status === 429) {
            const wait = Number(answer.headers.get("retry-after") || "1");
            await sleep(Math.max(wait, 0.2) * 1000);
        } else {
            report(false, "finished export before cancel", `status ${answer.status}`);
            return;
        }
    }
    if (manifest === null || !manifest.output || manifest.output.length === 0) {
        report(false, "finished export before cancel", "no manifest with output");
        return;
    }
    const fileUrl = manifest.output[0].url;
    const before = await fetch(fileUrl);
    await before.arrayBuffer();
    const answer = await client.cancelExport(statusUrl);
    report(answer.statusCode === 202, "cancelExport of a finished export", `DELETE answered ${answer.statusCode}`);
    await expectGone("status URL after deleting a finished export", statusUrl);
    const after = await fetch(fileUrl);
    await after.arrayBuffer();
    report(
        before.status === 200 && after.status >= 400 && after.status < 500,
        "its files are deleted",
        `file ${before.status} before, ${after.status} after`,
    );
}

(async () => {
    for (const scenario of [cancelAtOnce, cancelFinished]) {
        try {
            await scenario();
        } catch (error) {
            const status = error.response ? ` (HTTP ${error.response.statusCode})` : "";
            report(false, scenario.name, `${error.name}: ${error.message}${status}`);
        }
    }
    process.exit(failed ? 1 : 0);
})();
