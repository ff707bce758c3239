// The web app end to end in Debian's chromium (headless, WebGPU on SwiftShader), driven by
// playwright-core. Needs web/dist (scripts/build-web.sh) and the carve binary (CARVE=path).
//
// On tiny-llama with a word-level tokenizer and a circuit extracted by `carve extract`:
// - the page's top tokens and probabilities equal `carve run`'s (1e-4);
// - toggling a head changes them exactly as `carve run --ablate` says;
// - "copy link" → a fresh page on that link shows the same state;
// - a corrupted link and a link with <script> in every field give an error and run no script;
// - a screenshot of the page with the graph is saved (ARTIFACTS dir).
import { chromium } from "playwright-core";
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import assert from "node:assert/strict";

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");
const carve = process.env.CARVE || path.join(root, "target/debug/carve");
const artifacts = process.env.ARTIFACTS || path.join(root, "target/e2e");
fs.mkdirSync(artifacts, { recursive: true });
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "carve-e2e-"));

function run(args) {
  return execFileSync(carve, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

// The model and its circuit.
const model = path.join(tmp, "tiny");
fs.mkdirSync(model);
for (const f of ["config.json", "model.safetensors"]) fs.copyFileSync(path.join(root, "tests/fixtures/tiny-llama", f), path.join(model, f));
fs.copyFileSync(path.join(root, "tests/fixtures/word-tokenizer/tokenizer.json"), path.join(model, "tokenizer.json"));
const out = path.join(tmp, "run");
run(["extract", "--model", model, "--task", path.join(root, "tests/fixtures/word-tokenizer/words.jsonl"), "--patching", "20",
  "--discovery", "12", "--test", "16", "--alpha", "0.15", "--mlps", "--ablation", "zero", "--out", out, "--backend", "cpu",
  "--latency-batch", "4"]);
const circuit = JSON.parse(fs.readFileSync(path.join(out, "circuit.json"), "utf8"));
const prompt = "w5 w17 w40 w41 w42 w99";

// The server.
const port = 18000 + Math.floor(Math.random() * 2000);
const server = spawn(carve, ["serve", out, "--port", String(port), "--app", path.join(root, "web/dist")], { stdio: ["ignore", "pipe", "inherit"] });
const printed = await new Promise((resolve, reject) => {
  let text = "";
  server.stdout.on("data", (d) => {
    text += d;
    const m = text.match(/open the run's circuit: (\S+)/);
    if (m) resolve(m[1]);
  });
  server.on("exit", (c) => reject(new Error(`carve serve exited with ${c}`)));
});
const base = `http://127.0.0.1:${port}/`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan"],
});
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
  const page = await browser.newPage();
  page.on("pageerror", (e) => console.log(`page error: ${e.message}`));
  page.on("dialog", (d) => { failures++; console.log(`FAIL a dialog opened: ${d.message()}`); d.dismiss(); });
  await page.goto(url);
  return page;
}

async function ready(page) {
  await page.waitForFunction(() => document.querySelector("#status")?.textContent === "ready" || document.querySelector("#error")?.textContent, null, { timeout: 120000 });
  const err = await page.textContent("#error");
  assert.equal(err, "", `the page says: ${err}`);
}

async function top(page) {
  await page.waitForSelector("#top tbody tr", { timeout: 120000 });
  await page.waitForTimeout(300);
  return page.$$eval("#top tbody tr", (rows) => rows.map((r) => ({
    id: Number(r.querySelector("td.tok").dataset.id), prob: Number(r.querySelector("td.prob").dataset.prob),
  })));
}

function same(pageTop, cli, what) {
  assert.equal(pageTop.length, cli.top.length, `${what}: row count`);
  pageTop.forEach((r, i) => {
    assert.equal(r.id, cli.top[i].id, `${what}: rank ${i + 1} id`);
    const d = Math.abs(r.prob - cli.top[i].prob) / Math.max(cli.top[i].prob, 1e-6);
    assert.ok(d <= 1e-4, `${what}: rank ${i + 1} p ${r.prob} vs carve run ${cli.top[i].prob}`);
  });
}

let linkFromPage = "";
await check("page top-k equals carve run (browser/CLI parity)", async () => {
  const page = await open(printed);
  await ready(page);
  await page.fill("#prompt", prompt);
  await page.dispatchEvent("#prompt", "change");
  const cli = JSON.parse(run(["run", "--model", path.join(out, "model"), "--prompt", prompt, "--json", "--backend", "cpu"]));
  same(await top(page), cli, "circuit");
  console.log(`     backend: ${await page.textContent("#backend")}`);

  const head = circuit.kept.find((c) => c.includes("H"));
  const tip = await page.textContent(`rect[data-name="${head}"] title`);
  const kl = circuit.decisions.find((d) => d.component === head).kl;
  assert.ok(tip.includes(head) && tip.includes(`KL ${kl.toFixed(5)}`), `hover text: ${tip}`);
  const before = JSON.stringify(await top(page));
  await page.click(`rect[data-name="${head}"]`);
  await page.waitForFunction((b) => {
    const rows = [...document.querySelectorAll("#top tbody tr")].map((r) => ({ id: Number(r.querySelector("td.tok").dataset.id), prob: Number(r.querySelector("td.prob").dataset.prob) }));
    return rows.length && JSON.stringify(rows) !== b;
  }, before, { timeout: 120000 });
  const ablated = JSON.parse(run(["run", "--model", path.join(out, "model"), "--prompt", prompt, "--ablate", head, "--json", "--backend", "cpu"]));
  same(await top(page), ablated, `with ${head} ablated`);

  await page.click("#copy-link");
  linkFromPage = await page.inputValue("#link");
  assert.ok(linkFromPage.includes("#carve=1."), linkFromPage);
  await page.screenshot({ path: path.join(artifacts, "web-graph.png"), fullPage: true });
  await page.close();
  // The same state in a fresh page.
  const again = await open(linkFromPage);
  await ready(again);
  assert.equal(await again.inputValue("#prompt"), prompt);
  same(await top(again), ablated, "reopened link");
  const cls = await again.getAttribute(`rect[data-name="${head}"]`, "class");
  assert.ok(cls.includes("removed"), `${head} stays ablated: ${cls}`);
  await again.close();
});

await check("evaluate scores the shipped test split as carve extract did", async () => {
  const report = JSON.parse(fs.readFileSync(path.join(out, "report.json"), "utf8"));
  const page = await open(printed);
  await ready(page);
  await page.click("#evaluate");
  await page.waitForFunction(() => /accuracy/.test(document.querySelector("#eval-out")?.textContent || ""), null, { timeout: 120000 });
  const text = await page.textContent("#eval-out");
  assert.ok(text.includes(`accuracy ${report.test.pruned.accuracy.toFixed(3)}`), `${text} vs report ${report.test.pruned.accuracy}`);
  await page.close();
});

await check("a full model and circuit.json from local files: circuit and full model side by side", async () => {
  const page = await open(base);
  await page.setInputFiles("#files", [...["config.json", "model.safetensors", "tokenizer.json"].map((f) => path.join(model, f)), path.join(out, "circuit.json")]);
  await ready(page);
  await page.fill("#prompt", prompt);
  await page.dispatchEvent("#prompt", "change");
  await page.waitForSelector("#top tbody tr td.full", { timeout: 120000 });
  const rows = await page.$$eval("#top tbody tr", (rs) => rs.map((r) => {
    const [c, cp, f, fp] = r.querySelectorAll("td");
    return [{ id: Number(c.dataset.id), prob: Number(cp.dataset.prob) }, { id: Number(f.dataset.id), prob: Number(fp.dataset.prob) }];
  }));
  const full = JSON.parse(run(["run", "--model", model, "--prompt", prompt, "--json", "--backend", "cpu"]));
  const args = ["run", "--model", model, "--prompt", prompt, "--json", "--backend", "cpu"];
  if (circuit.removed.length) args.push("--ablate", circuit.removed.join(","));
  const masked = JSON.parse(run(args));
  same(rows.map((r) => r[0]), masked, "circuit column");
  same(rows.map((r) => r[1]), full, "full-model column");
  await page.close();
});

await check("a pruned model's folder picked locally runs as served", async () => {
  const page = await open(base);
  await page.setInputFiles("#folder", path.join(out, "model"));
  await ready(page);
  await page.fill("#prompt", prompt);
  await page.dispatchEvent("#prompt", "change");
  same(await top(page), JSON.parse(run(["run", "--model", path.join(out, "model"), "--prompt", prompt, "--json", "--backend", "cpu"])), "folder");
  await page.close();
});

await check("a corrupted link shows an error", async () => {
  const bad = linkFromPage.slice(0, -3) + "zzz";
  const page = await open(bad);
  await page.waitForFunction(() => document.querySelector("#error")?.textContent, null, { timeout: 30000 });
  assert.match(await page.textContent("#error"), /checksum|broken/);
  await page.close();
});

await check("<script> in every field runs nothing", async () => {
  const s = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=1\">";
  const payload = Buffer.from(JSON.stringify({ m: s, h: s, t: s, p: s, n: 1, k: "AQ" }));
  const check6 = createHash("sha256").update(payload).digest().subarray(0, 6).toString("base64url");
  for (const frag of [`carve=1.${payload.toString("base64url")}.${check6}`, `carve=${s}`]) {
    const page = await open(`${base}#${frag}`);
    await page.waitForFunction(() => document.querySelector("#error")?.textContent, null, { timeout: 30000 });
    assert.equal(await page.evaluate(() => window.__pwned), undefined, "a script from the link ran");
    assert.equal(await page.$$eval("body script, body img", (e) => e.length), 0, "markup from the link reached the page");
    await page.close();
  }
});

await check("without WebGPU the page runs the CPU backend, says so, and agrees with carve run", async () => {
  const plain = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--headless=new", "--no-sandbox", "--disable-features=WebGPU"] });
  const page = await plain.newPage();
  await page.goto(printed);
  await ready(page);
  const b = await page.textContent("#backend");
  assert.match(b, /CPU/, b);
  await page.fill("#prompt", prompt);
  await page.dispatchEvent("#prompt", "change");
  same(await top(page), JSON.parse(run(["run", "--model", path.join(out, "model"), "--prompt", prompt, "--json", "--backend", "cpu"])), "CPU in wasm");
  await plain.close();
});

await browser.close();
server.kill();
fs.rmSync(tmp, { recursive: true, force: true });
if (failures) {
  console.log(`${failures} browser check(s) failed`);
  process.exit(1);
}
console.log(`browser checks passed; screenshot: ${path.join(artifacts, "web-graph.png")}`);
