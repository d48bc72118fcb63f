// The official Comfy SDK (@comfyorg/sdk) run against comfyshim in front of
// the fake ComfyUI, as an integrator would write it for Comfy Cloud: only
// COMFY_BASE_URL (and the key, if any) differ. Driven by TestOfficialSDK,
// which reads the summary printed last and checks what ComfyUI saw.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Comfy, IdempotencyKeyReuse, InvalidWorkflow, MissingAsset } from "@comfyorg/sdk";
import { ComfyLow, schemas } from "@comfyorg/sdk/low";

const key = process.env.COMFY_API_KEY || undefined;
const outputDir = process.env.COMFYSHIM_OUTPUT_DIR;
const client = new Comfy({ apiKey: key });
// The SDK's generated zod schemas are a second reading of the contract:
// every job and asset model it gets is checked against them too.
const low = new ComfyLow(process.env.COMFY_BASE_URL, key);
const checkJob = async (id) => schemas.zJob.parse(await low.getJob(id));
const summary = {};

const png = Buffer.from("89504e470d0a1a0a0000000d4948445200000001000000010806000000" + randomUUID().replace(/-/g, ""), "hex");
const graph = () => ({
  "10": { class_type: "LoadImage", inputs: { image: "placeholder" } },
  "9": { class_type: "SaveImage", inputs: { filename_prefix: "sdk", images: ["10", 0] } },
});

// 1. Upload an input as a lazy handle embedded in the workflow; submit,
// stream events to the terminal status. The fake's Wait node holds the job
// until the test, told the stream is open, releases it.
const input = client.assets.fromBytes(new Uint8Array(png), { filename: "sdk-input.png", contentType: "image/png" });
const wf = client.workflows.fromJson({ ...graph(), "3": { class_type: "Wait", inputs: {} } });
wf.setInput("10", "image", input);
const job = await client.submit(wf);
await checkJob(job.id);
assert.equal(input.createdNew, true, "the first upload stores new bytes");
const kinds = [];
let last;
for await (const ev of job.events()) {
  if (kinds.length === 0) console.log(`PROCEED ${job.id}`);
  kinds.push(ev.kind === "statusChange" ? `status:${ev.status}` : ev.kind);
  last = ev;
}
assert.equal(last.kind, "statusChange");
assert.equal(last.status, "succeeded", `events: ${kinds}`);
for (const k of ["progress", "preview", "outputReady"]) {
  assert.ok(kinds.includes(k), `no ${k} event: ${kinds}`);
}
summary.events = kinds;

// 2. The outputs: listed, downloaded whole and by range, as a URL.
await job.refresh();
schemas.zJob.parse(await low.getJob(job.id));
const outs = job.getOutputs("9");
assert.equal(outs.length, 1);
assert.equal(outs[0].type, "image");
assert.equal(outs[0].jobId, job.id);
const bytes = Buffer.from(await outs[0].toBytes());
const onDisk = await readFile(join(outputDir, outs[0].name));
assert.ok(bytes.equals(onDisk), "downloaded output differs from the file ComfyUI wrote");
const head = Buffer.from(await outs[0].toBytes({ range: [0, 3] }));
assert.ok(head.equals(onDisk.subarray(0, 4)), "ranged download");
const { url } = await outs[0].getDownloadUrl();
assert.ok(url.includes(`/api/v2/assets/${outs[0].id}/content`), url);
schemas.zAsset.parse(await low.getAsset(outs[0].id));
const { workflow, format } = await job.getWorkflow();
assert.equal(format, "api");
assert.equal(workflow["10"].inputs.image, "sdk-input.png", "core/ASSET resolved to the name LoadImage expects");
summary.job = job.id;
summary.output = outs[0].name;

// 3. The same bytes again: deduplicated, nothing uploaded twice.
const again = client.assets.fromBytes(new Uint8Array(png), { filename: "sdk-input.png", contentType: "image/png" });
await again.commit();
assert.equal(again.id, input.id, "the same bytes map to the same asset");
assert.equal(again.createdNew, false);
schemas.zAsset.parse(await low.getAsset(input.id));
summary.asset = input.id;

// 4. run() end to end with the committed asset.
const wf2 = client.workflows.fromJson(graph());
wf2.setInput("10", "image", again);
const ran = await client.run(wf2);
assert.equal(ran.status, "succeeded");

// 5. A long job, cancelled while it runs.
const long = await client.submit(client.workflows.fromJson({ "1": { class_type: "Wait", inputs: {} }, "9": { class_type: "SaveImage", inputs: {} } }));
for (let i = 0; i < 200 && long.status !== "running"; i++) {
  await new Promise((r) => setTimeout(r, 25));
  await long.refresh();
}
assert.equal(long.status, "running");
await long.cancel();
assert.ok(["canceling", "canceled"].includes(long.status), long.status);
await long.wait(10_000);
assert.equal(long.status, "canceled");
await checkJob(long.id);
summary.canceled = long.id;

// 6. Idempotent submission: the same key and body replay (one job, one
// execution); the same key with another body is refused.
const idem = randomUUID();
const once = client.workflows.fromJson({ "9": { class_type: "SaveImage", inputs: { filename_prefix: idem } } });
const a = await client.submit(once, { idempotencyKey: idem });
const b = await client.submit(once, { idempotencyKey: idem });
assert.equal(a.id, b.id, "a retry with the same Idempotency-Key is the same job");
await assert.rejects(
  client.submit(client.workflows.fromJson({ "9": { class_type: "SaveImage", inputs: { filename_prefix: "other" } } }), { idempotencyKey: idem }),
  IdempotencyKeyReuse,
);
await b.wait(10_000);
summary.idempotent = a.id;

// 7. Refusals arrive as the SDK's typed errors.
await assert.rejects(client.submit(client.workflows.fromJson({ "1": { class_type: "NoSuchNode", inputs: {} } })), InvalidWorkflow);
const ghost = client.workflows.fromJson(graph());
ghost.json["10"].inputs.image = { __type: "core/ASSET", info: { id: randomUUID() } };
await assert.rejects(client.submit(ghost), MissingAsset);

// 8. Deleting the uploaded input.
await client.assets.delete(input.id);
await assert.rejects(low.getAsset(input.id));

console.log(JSON.stringify(summary));
