// The web app end to end in Debian's chromium (headless, WebGPU on SwiftShader), driven by
// playwright-core. Needs web/dist (scripts/build-web.sh) and the carve binary (CARVE=path).
//
// On tiny-llama with a word-level tokenizer and a circuit extracted by `carve extract`:
// - the page's top tokens and probabilities equal `carve run`'s (1e-4);
// - toggling a head changes them exactly as `carve run --ablate` says (mean ablation, with the
//   circuit's means.safetensors, in the page and in the CLI);
// - a full model with circuit.json (and its means) gives both columns as `carve run` does; without
//   the means the page says it ablates with zeros, and does;
// - a dropped run folder (walked through the File and Directory Entries API) loads its model;
// - "copy link" → a fresh page on that link shows the same state;
// - a corrupted link and a link with <script> in every field give an error and run no script;
// - a screenshot of the page with the graph is saved (ARTIFACTS dir).
import { carve, launch, launchWithoutWebGPU, root, run, serve, tinyModel } from "./harness.mjs";
import { createHash } from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import assert from "node:assert/strict";

const artifacts = process.env.ARTIFACTS || path.join(root, "target/e2e");
fs.mkdirSync(artifacts, { recursive: true });
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "carve-e2e-"));

// The model and its circuit.
const model = tinyModel(tmp);
const out = path.join(tmp, "run");
run(["extract", "--model", model, "--task", path.join(root, "tests/fixtures/word-tokenizer/words.jsonl"), "--patching", "20",
  "--discovery", "12", "--test", "16", "--alpha", "0.12", "--mlps", "--ablation", "mean", "--out", out, "--backend", "cpu",
  "--latency-batch", "4"]);
const circuit = JSON.parse(fs.readFileSync(path.join(out, "circuit.json"), "utf8"));
assert.equal(circuit.ablation.values, "means.safetensors", "a mean-ablation run ships its means");
assert.ok(circuit.removed.some((c) => c.includes("H")) && circuit.kept.some((c) => c.includes("H")), `a circuit with heads kept and removed: ${circuit.removed}`);
const prompt = "w5 w17 w40 w41 w42 w99";

// The server.
const { server, printed, base } = await serve(out, 18000);
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

// Clicks a component in the graph and waits for the outputs to change.
async function toggle(page, name) {
  const before = JSON.stringify(await top(page));
  await page.click(`rect[data-name="${name}"]`);
  await page.waitForFunction((b) => {
    const rows = [...document.querySelectorAll("#top tbody tr")].map((r) => ({ id: Number(r.querySelector("td.tok").dataset.id), prob: Number(r.querySelector("td.prob").dataset.prob) }));
    return rows.length && JSON.stringify(rows) !== b;
  }, before, { timeout: 120000 });
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

  const gone = circuit.removed.find((c) => c.includes("H"));
  const goneCls = await page.getAttribute(`rect[data-name="${gone}"]`, "class");
  assert.ok(goneCls.includes("pruned"), `${gone}, pruned away, is drawn so: ${goneCls}`);
  assert.match(await page.textContent("#info"), /mean ablation/);

  const head = circuit.kept.find((c) => c.includes("H"));
  const tip = await page.textContent(`rect[data-name="${head}"] title`);
  const kl = circuit.decisions.find((d) => d.component === head).kl;
  assert.ok(tip.includes(head) && tip.includes(`KL ${kl.toFixed(5)}`), `hover text: ${tip}`);
  await toggle(page, head);
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

async function sideBySide(page) {
  await page.fill("#prompt", prompt);
  await page.dispatchEvent("#prompt", "change");
  await page.waitForSelector("#top tbody tr td.full", { timeout: 120000 });
  const rows = await page.$$eval("#top tbody tr", (rs) => rs.map((r) => {
    const [c, cp, f, fp] = r.querySelectorAll("td");
    return [{ id: Number(c.dataset.id), prob: Number(cp.dataset.prob) }, { id: Number(f.dataset.id), prob: Number(fp.dataset.prob) }];
  }));
  return [rows.map((r) => r[0]), rows.map((r) => r[1])];
}

await check("a full model, circuit.json and its means from local files: circuit and full model side by side", async () => {
  const page = await open(base);
  const files = ["config.json", "model.safetensors", "tokenizer.json"].map((f) => path.join(model, f));
  await page.setInputFiles("#files", [...files, path.join(out, "circuit.json"), path.join(out, "means.safetensors")]);
  await ready(page);
  assert.equal(await page.textContent("#notice"), "");
  const [c, f] = await sideBySide(page);
  const cli = ["run", "--model", model, "--prompt", prompt, "--json", "--backend", "cpu"];
  same(c, JSON.parse(run([...cli, "--circuit", path.join(out, "circuit.json")])), "circuit column");
  same(f, JSON.parse(run(cli)), "full-model column");
  // The circuit column is the pruned model's output: the means make the two the same circuit.
  same(c, JSON.parse(run(["run", "--model", path.join(out, "model"), "--prompt", prompt, "--json", "--backend", "cpu"])), "circuit column vs pruned model");
  await page.close();

  const bare = await open(base);
  await bare.setInputFiles("#files", [...files, path.join(out, "circuit.json")]);
  await ready(bare);
  assert.match(await bare.textContent("#notice"), /means\.safetensors was not loaded/);
  const [z] = await sideBySide(bare);
  same(z, JSON.parse(run([...cli, "--circuit", path.join(out, "circuit.json"), "--zero-ablation"])), "circuit column, zero ablation");
  await bare.close();
});

// Drops `dir` on the drop zone as Chrome hands over a dropped folder: a FileSystemDirectoryEntry
// whose reader gives its entries in batches (here of 2), files read through FileSystemFileEntry.file.
async function dropFolder(page, dir) {
  const files = [];
  const walk = (d, rel) => {
    for (const n of fs.readdirSync(d)) {
      const p = path.join(d, n);
      if (fs.statSync(p).isDirectory()) walk(p, `${rel}/${n}`);
      else files.push({ path: `${rel}/${n}`, b64: fs.readFileSync(p).toString("base64") });
    }
  };
  const top = `/${path.basename(dir)}`;
  walk(dir, top);
  await page.waitForSelector("#drop");
  await page.evaluate(({ files, top }) => {
    const dirs = new Map();
    const dirEntry = (full) => {
      if (!dirs.has(full)) {
        const children = [];
        dirs.set(full, {
          isFile: false, isDirectory: true, name: full.split("/").pop(), fullPath: full, children,
          createReader() {
            let at = 0;
            return { readEntries(ok) { const b = children.slice(at, at + 2); at += b.length; setTimeout(() => ok(b), 1); } };
          },
        });
        const parent = full.slice(0, full.lastIndexOf("/"));
        if (parent) dirEntry(parent).children.push(dirs.get(full));
      }
      return dirs.get(full);
    };
    for (const f of files) {
      const name = f.path.split("/").pop();
      const bytes = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
      dirEntry(f.path.slice(0, f.path.lastIndexOf("/"))).children.push({
        isFile: true, isDirectory: false, name, fullPath: f.path,
        file(ok) { setTimeout(() => ok(new File([bytes], name)), 1); },
      });
    }
    const ev = new DragEvent("drop", { bubbles: true, cancelable: true });
    Object.defineProperty(ev, "dataTransfer", { value: { items: { length: 1, 0: { webkitGetAsEntry: () => dirEntry(top) } }, files: { length: 0 } } });
    document.querySelector("#drop").dispatchEvent(ev);
  }, { files, top });
}

await check("a run folder dropped on the page loads its pruned model, means and task", async () => {
  const page = await open(base);
  await dropFolder(page, out);
  await ready(page);
  assert.match(await page.textContent("#info"), /pruned model.*mean ablation/);
  await page.fill("#prompt", prompt);
  await page.dispatchEvent("#prompt", "change");
  same(await top(page), JSON.parse(run(["run", "--model", path.join(out, "model"), "--prompt", prompt, "--json", "--backend", "cpu"])), "dropped run folder");
  const head = circuit.kept.find((c) => c.includes("H"));
  await toggle(page, head);
  same(await top(page), JSON.parse(run(["run", "--model", path.join(out, "model"), "--prompt", prompt, "--ablate", head, "--json", "--backend", "cpu"])), `dropped run folder, ${head} ablated`);
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

await check("a link whose model can't be fetched offers the local files and checks their hash", async () => {
  const link = run(["link", path.join(out, "circuit.json"), "--model-url", "http://127.0.0.1:9/model/", "--prompt", prompt, "--base", base]).trim();
  const page = await open(link);
  await page.waitForFunction(() => document.querySelector("#error")?.textContent, null, { timeout: 30000 });
  assert.match(await page.textContent("#error"), /cannot fetch.*pick the files locally/is);
  // Another model's files are refused by the hash in the link …
  await page.setInputFiles("#folder", model);
  await page.waitForFunction(() => /not the same model/.test(document.querySelector("#error")?.textContent || ""), null, { timeout: 30000 });
  // … the right ones load and show the link's prompt.
  await page.setInputFiles("#folder", path.join(out, "model"));
  await ready(page);
  assert.equal(await page.inputValue("#prompt"), prompt);
  same(await top(page), JSON.parse(run(["run", "--model", path.join(out, "model"), "--prompt", prompt, "--json", "--backend", "cpu"])), "files picked for a link");
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
  const plain = await launchWithoutWebGPU();
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
