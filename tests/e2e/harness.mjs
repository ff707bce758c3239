// What both browser tests share: the carve binary, a tiny model with the word tokenizer, `carve
// serve` on a run (waiting for the link it prints), and headless chromium with WebGPU.
import { chromium } from "playwright-core";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

export const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "../..");
export const carve = process.env.CARVE || path.join(root, "target/debug/carve");

export function run(args) {
  return execFileSync(carve, args, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
}

/// tiny-llama with the word-level tokenizer, copied into `dir/tiny`.
export function tinyModel(dir) {
  const model = path.join(dir, "tiny");
  fs.mkdirSync(model);
  for (const f of ["config.json", "model.safetensors"]) fs.copyFileSync(path.join(root, "tests/fixtures/tiny-llama", f), path.join(model, f));
  fs.copyFileSync(path.join(root, "tests/fixtures/word-tokenizer/tokenizer.json"), path.join(model, "tokenizer.json"));
  return model;
}

/// `carve serve out` on a random port from `portBase`: the process, the link it prints, the base URL.
export async function serve(out, portBase) {
  const port = portBase + Math.floor(Math.random() * 2000);
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
  return { server, printed, base: `http://127.0.0.1:${port}/` };
}

export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless=new", "--no-sandbox", "--enable-unsafe-webgpu", "--enable-features=Vulkan"],
  });
}

/// Chromium without WebGPU: the page must fall back to its CPU backend.
export function launchWithoutWebGPU() {
  return chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--headless=new", "--no-sandbox", "--disable-features=WebGPU"] });
}
