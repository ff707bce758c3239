// The web app on an edge-prune run, end to end in Debian's chromium (headless, WebGPU on
// SwiftShader), driven by playwright-core. Needs web/dist (scripts/build-web.sh) and the carve
// binary (CARVE=path).
//
// On tiny-llama with a word-level tokenizer and an edge circuit extracted by `carve extract
// --method edge-prune`, served by `carve serve`:
// - the link serve prints is an edge link (version 2) and opens the standalone edge model, whose
//   top tokens equal `carve run`'s and whose evaluation equals the run's report;
// - the graph draws exactly the circuit's edges, between nodes placed by layer;
// - cutting an edge changes the outputs, and the test split's scores are then those of
//   `carve eval --circuit` on the full model with that edge removed from circuit.json;
// - cutting a node cuts its edges and changes the outputs; "reset to circuit" restores them;
// - "copy link" → a fresh page on that link shows the same toggles and outputs;
// - "save edge mask" → "load edge mask" in a fresh page restores the same toggles;
// - a link whose edge mask has the wrong length says so and shows the circuit; markup in a link's
//   fields runs nothing;
// - a screenshot of the graph is saved (ARTIFACTS dir).
import { carve, launch, launchWithoutWebGPU, root, run, serve, tinyModel } from "./harness.mjs";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import assert from "node:assert/strict";

const artifacts = process.env.ARTIFACTS || path.join(root, "target/e2e");
fs.mkdirSync(artifacts, { recursive: true });
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "carve-e2e-edges-"));

// The model and its edge circuit.
const model = tinyModel(tmp);
const task = path.join(root, "tests/fixtures/word-tokenizer/words.jsonl");
const out = path.join(tmp, "run");
const splits = ["--patching", "20", "--discovery", "12", "--test", "16"];
run(["extract", "--model", model, "--task", task, ...splits, "--method", "edge-prune", "--sparsity", "0.9", "--steps", "30", "--batch", "8",
  "--out", out, "--backend", "cpu", "--latency-batch", "4"]);
const circuit = JSON.parse(fs.readFileSync(path.join(out, "circuit.json"), "utf8"));
const kept = circuit.edges.kept.map((k) => k.edge);
assert.ok(kept.length >= 3, `an edge circuit with a few edges: ${kept}`);
const report = JSON.parse(fs.readFileSync(path.join(out, "report.json"), "utf8"));
const prompt = "w5 w17 w40 w41 w42 w99";
const cliTop = () => JSON.parse(run(["run", "--model", path.join(out, "model"), "--prompt", prompt, "--json", "--backend", "cpu"]));

const { server, printed, base } = await serve(out, 20000);
const browser = await launch();
let failures = 0;
async function check(name, f) {
  try {
    await f();
    console.log(`ok   ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}\n${e.stack || e}`);
  }
}

async function open(url) {
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  page.on("pageerror", (e) => { failures++; console.log(`FAIL page error: ${e.message}`); });
  page.on("dialog", (d) => { failures++; console.log(`FAIL a dialog opened: ${d.message()}`); d.dismiss(); });
  await page.goto(url);
  return page;
}

async function ready(page, { allowError = false } = {}) {
  await page.waitForFunction(() => document.querySelector("#status")?.textContent === "ready" || document.querySelector("#error")?.textContent, null, { timeout: 120000 });
  if (!allowError) assert.equal(await page.textContent("#error"), "", `the page says: ${await page.textContent("#error")}`);
}

const rows = () => [...document.querySelectorAll("#top tbody tr")].map((r) => ({ id: Number(r.querySelector("td.tok").dataset.id), prob: Number(r.querySelector("td.prob").dataset.prob) }));

async function top(page) {
  await page.waitForSelector("#top tbody tr", { timeout: 120000 });
  await page.waitForTimeout(300);
  return page.evaluate(`(${rows})()`);
}

async function setPrompt(page) {
  await page.fill("#prompt", prompt);
  await page.dispatchEvent("#prompt", "change");
}

function same(a, b, what) {
  const want = b.top || b;
  assert.equal(a.length, want.length, `${what}: row count`);
  a.forEach((r, i) => {
    assert.equal(r.id, want[i].id, `${what}: rank ${i + 1} id`);
    const d = Math.abs(r.prob - want[i].prob) / Math.max(want[i].prob, 1e-6);
    assert.ok(d <= 1e-4, `${what}: rank ${i + 1} p ${r.prob} vs ${want[i].prob}`);
  });
}

// Runs `act` and waits for the outputs to change from what they were.
async function changes(page, act) {
  const before = JSON.stringify(await top(page));
  await act();
  await page.waitForFunction(([b, f]) => {
    const now = eval(`(${f})()`);
    return now.length && JSON.stringify(now) !== b;
  }, [before, rows.toString()], { timeout: 120000 });
  return top(page);
}

// The edges drawn, by name, with their state (on, cut, added, off).
const drawn = (page) => page.$$eval("svg.graph g.edge", (gs) => gs.map((g) => ({ name: g.dataset.edge, index: Number(g.dataset.index), cls: g.getAttribute("class") })));
const clickEdge = (page, name) => page.dispatchEvent(`svg.graph g.edge[data-edge="${name}"]`, "click");

async function evaluate(page) {
  await page.click("#evaluate");
  await page.waitForFunction(() => /accuracy/.test(document.querySelector("#eval-out")?.textContent || ""), null, { timeout: 120000 });
  return page.textContent("#eval-out");
}

// The circuit file without `edge`, scored on the full model by carve eval.
function evalWithout(edge) {
  const c = structuredClone(circuit);
  c.edges.kept = c.edges.kept.filter((k) => k.edge !== edge);
  c.edges.sparsity = 1 - c.edges.kept.length / c.edges.total;
  const p = path.join(tmp, "without.json");
  fs.writeFileSync(p, JSON.stringify(c));
  return JSON.parse(run(["eval", "--model", model, "--circuit", p, "--task", task, ...splits, "--backend", "cpu", "--json"]));
}

const cut = kept.find((e) => e.endsWith("-> logits")) || kept[0];
const node = kept.map((e) => e.split(" -> ")[0]).find((w) => /^L\dH\d$/.test(w) && !cut.startsWith(`${w} `)) || kept[0].split(" -> ")[0];
let toggledLink = "";
let toggledTop = null;
let toggledEdges = null;

await check("serve opens the edge model: the circuit's edges drawn, outputs and scores as the CLI's", async () => {
  assert.match(printed, /#carve=2\./, "an edge link");
  const page = await open(printed);
  await ready(page);
  assert.match(await page.textContent("#info"), /standalone edge model \(\d+ edges, \d+ on\).*writer's mean/);
  const edges = await drawn(page);
  assert.deepEqual(edges.map((e) => e.name).sort(), [...kept].sort(), "exactly the circuit's edges are drawn");
  assert.ok(edges.every((e) => / on$/.test(e.cls)), JSON.stringify(edges));
  for (const n of ["emb", "logits", "L0H0"]) assert.ok(await page.$(`rect[data-name="${n}"]`), `node ${n} drawn`);
  const pruned = circuit.removed.find((c) => /H/.test(c));
  if (pruned) assert.match(await page.getAttribute(`rect[data-name="${pruned}"]`, "class"), /pruned/);
  // Layers stack upwards: the embeddings below L0, the logits above the last layer.
  const y = async (n) => Number(await page.getAttribute(`rect[data-name="${n}"]`, "y"));
  assert.ok((await y("emb")) > (await y("L0H0")) && (await y("L0H0")) > (await y("L1H0")) && (await y("L1H0")) > (await y("logits")));
  // Each edge a curve in the colour of what it feeds.
  const colours = { q: "rgb(43, 108, 176)", k: "rgb(47, 133, 90)", v: "rgb(221, 107, 32)", mlp: "rgb(107, 70, 193)", logits: "rgb(34, 34, 34)" };
  const styles = await page.$$eval("svg.graph g.edge", (gs) => gs.map((g) => {
    const s = getComputedStyle(g.querySelector(".line"));
    return { cls: g.getAttribute("class"), fill: s.fill, stroke: s.stroke };
  }));
  for (const s of styles) {
    const feeds = s.cls.split(" ")[1];
    assert.equal(s.fill, "none", s.cls);
    assert.equal(s.stroke, colours[feeds], `${s.cls}: ${s.stroke}`);
  }
  const tip = await page.textContent(`g.edge[data-edge="${cut}"] title`);
  assert.ok(tip.includes(cut) && /gate \d\.\d{3}/.test(tip), tip);

  await setPrompt(page);
  const start = await top(page);
  same(start, cliTop(), "the edge model");
  const full = await evaluate(page);
  assert.ok(full.includes(`${report.test.pruned.metric.toFixed(3)}`), `${full} vs report ${report.test.pruned.metric}`);

  // An edge cut: new outputs; the test split scores as the full model's circuit without it.
  await changes(page, () => clickEdge(page, cut));
  assert.match(await page.getAttribute(`g.edge[data-edge="${cut}"]`, "class"), /cut/);
  const text = await evaluate(page);
  const cli = evalWithout(cut);
  assert.ok(text.includes(`accuracy ${cli.circuit.accuracy.toFixed(3)}`) && text.includes(`${cli.circuit.metric.toFixed(3)}`),
    `page: ${text}; carve eval without ${cut}: ${JSON.stringify(cli.circuit)}`);
  assert.notEqual(cli.circuit.metric.toFixed(3), report.test.pruned.metric.toFixed(3), "cutting the edge changes the scores");

  // A node cut: all its edges go.
  await changes(page, () => page.click(`rect[data-name="${node}"]`));
  assert.match(await page.getAttribute(`rect[data-name="${node}"]`, "class"), /removed changed/);
  for (const e of (await drawn(page)).filter((e) => e.name.startsWith(`${node} `))) assert.match(e.cls, /cut/, e.name);
  toggledTop = await top(page);
  toggledEdges = await drawn(page);
  await page.screenshot({ path: path.join(artifacts, "web-edges.png"), fullPage: true });

  await page.click("#copy-link");
  toggledLink = await page.inputValue("#link");
  assert.match(toggledLink, /#carve=2\./);
  assert.equal(await page.textContent("#link-note"), "");

  // The mask as a file, for the next check.
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#save-mask")]);
  fs.copyFileSync(await download.path(), path.join(tmp, "edge-mask.json"));

  await changes(page, () => page.click("#reset"));
  same(await top(page), start, "reset to circuit");
  assert.ok((await drawn(page)).every((e) => / on$/.test(e.cls)), "every circuit edge back on");
  await page.close();
});

await check("every edge of the model can be shown and added", async () => {
  const st = JSON.parse(run(["link", "--decode", printed]));
  const page = await open(printed);
  await ready(page);
  await setPrompt(page);
  await top(page);
  await page.check("#show-all");
  const all = await drawn(page);
  assert.equal(all.length, st.edges, "the model's every edge drawn");
  assert.equal(all.filter((e) => / on$/.test(e.cls)).length, kept.length);
  const extra = all.find((e) => / off$/.test(e.cls));
  await changes(page, () => page.dispatchEvent(`svg.graph g.edge[data-index="${extra.index}"]`, "click"));
  assert.match(await page.getAttribute(`svg.graph g.edge[data-index="${extra.index}"]`, "class"), /on added/);
  await page.uncheck("#show-all");
  assert.equal((await drawn(page)).length, kept.length + 1, "the circuit's edges and the one added");
  await page.close();
});

await check("a share link with an edge mask restores the toggles", async () => {
  const page = await open(toggledLink);
  await ready(page);
  assert.equal(await page.inputValue("#prompt"), prompt);
  same(await top(page), toggledTop, "reopened link");
  assert.deepEqual(await drawn(page), toggledEdges);
  assert.equal(run(["link", "--decode", toggledLink]).includes('"version": 2'), true);
  await page.close();
});

await check("a saved edge mask loads into a fresh page", async () => {
  const page = await open(printed);
  await ready(page);
  await setPrompt(page);
  await changes(page, () => page.setInputFiles("#mask-file", path.join(tmp, "edge-mask.json")));
  assert.match(await page.textContent("#link-note"), /edge mask loaded/);
  same(await top(page), toggledTop, "mask file");
  assert.deepEqual(await drawn(page), toggledEdges);
  // A mask of another model's size is refused, naming the sizes.
  const other = JSON.parse(fs.readFileSync(path.join(tmp, "edge-mask.json"), "utf8"));
  other.edges -= 1;
  fs.writeFileSync(path.join(tmp, "bad-mask.json"), JSON.stringify(other));
  await page.setInputFiles("#mask-file", path.join(tmp, "bad-mask.json"));
  await page.waitForFunction(() => document.querySelector("#error")?.textContent, null, { timeout: 30000 });
  assert.match(await page.textContent("#error"), /edge mask file/);
  await page.close();
});

await check("the edge model's folder picked locally runs as served; without its edges file it is refused", async () => {
  const page = await open(base);
  await page.setInputFiles("#folder", path.join(out, "model"));
  await ready(page);
  await setPrompt(page);
  same(await top(page), cliTop(), "picked folder");
  await page.close();
  const bare = await open(base);
  const files = ["config.json", "model.safetensors", "tokenizer.json"].map((f) => path.join(out, "model", f));
  await bare.setInputFiles("#files", files);
  await bare.waitForFunction(() => document.querySelector("#error")?.textContent, null, { timeout: 30000 });
  assert.match(await bare.textContent("#error"), /standalone edge model whose edges are in `edges\.safetensors`/);
  await bare.close();
});

await check("without WebGPU the edge model runs on the CPU backend and agrees with carve run", async () => {
  const plain = await launchWithoutWebGPU();
  const page = await plain.newPage();
  await page.goto(printed);
  await ready(page);
  assert.match(await page.textContent("#backend"), /CPU/);
  await setPrompt(page);
  same(await top(page), cliTop(), "CPU in wasm");
  await changes(page, () => clickEdge(page, cut));
  await plain.close();
});

// A version-2 link signed as carve signs it.
function edgeLink(wire, bits) {
  const payload = Buffer.from(JSON.stringify(wire));
  const sum = createHash("sha256").update(Buffer.concat([payload, Buffer.from([0]), Buffer.from(bits)])).digest().subarray(0, 6).toString("base64url");
  return `${base}#carve=2.${payload.toString("base64url")}.${bits}.${sum}`;
}

await check("an edge mask of the wrong length says so and shows the circuit", async () => {
  const st = JSON.parse(run(["link", "--decode", printed]));
  const n = st.edges - 1;
  const bits = Buffer.alloc(Math.ceil(n / 8), 0).toString("base64url");
  const page = await open(edgeLink({ m: "/run/model/", h: st.model_sha256, t: "", p: prompt, e: n }, bits));
  await ready(page, { allowError: true });
  assert.match(await page.textContent("#error"), new RegExp(`edge mask has ${n} edges, the model ${st.edges}.*showing the circuit`));
  assert.deepEqual((await drawn(page)).map((e) => e.name).sort(), [...kept].sort());
  await page.close();
});

await check("<script> in an edge link's fields runs nothing", async () => {
  const s = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=1\">";
  const page = await open(edgeLink({ m: "", h: "", t: s, p: s, e: 0 }, ""));
  await page.waitForFunction(() => document.querySelector("#error")?.textContent, null, { timeout: 30000 });
  assert.equal(await page.evaluate(() => window.__pwned), undefined, "a script from the link ran");
  assert.equal(await page.$$eval("body script, body img", (e) => e.length), 0, "markup from the link reached the page");
  await page.close();
});

await browser.close();
server.kill();
fs.rmSync(tmp, { recursive: true, force: true });
if (failures) {
  console.log(`${failures} browser check(s) of edge circuits failed`);
  process.exit(1);
}
console.log(`browser checks of edge circuits passed; screenshot: ${path.join(artifacts, "web-edges.png")}`);
