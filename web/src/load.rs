//! Getting a model into the page: from a URL (a model directory ending in `/`, or a `.gguf`), with
//! download progress, or from files the user picks or drops. A model directory may hold
//! `circuit.json` and `task.json` beside the weights; they are read when present.

use carve_core::circuit::CircuitFile;
use carve_core::model::load::{load_gguf_bytes, load_hf_bytes, parse_config, parse_layout, sha256_hex};
use carve_core::prune::PrunedLayer;
use carve_core::tasks::Task;
use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::engine::Session;

/// The files of a model, by name.
#[derive(Default)]
pub struct Files {
    pub files: Vec<(String, Vec<u8>)>,
}

impl Files {
    fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.iter().find(|(n, _)| n == name).map(|(_, b)| b.as_slice())
    }

    /// Builds the session: a `.gguf`, or config.json + model.safetensors (+ tokenizer.json,
    /// circuit.json, task.json).
    pub fn session(&self, origin: &str) -> Result<Session, String> {
        let (loaded, weights, layout) = if let Some((_, g)) = self.files.iter().find(|(n, _)| n.ends_with(".gguf")) {
            (load_gguf_bytes(g).map_err(|e| e.to_string())?, g.as_slice(), None)
        } else {
            let config = self.get("config.json").ok_or("no config.json among the files (pick a model directory's files, or a .gguf)")?;
            let w = self.get("model.safetensors").ok_or("no model.safetensors among the files")?;
            let loaded = load_hf_bytes(config, &[w], self.get("tokenizer.json")).map_err(|e| e.to_string())?;
            (loaded, w, pruned_layout(config)?)
        };
        let mut loaded = loaded;
        loaded.source = origin.to_string();
        let circuit = match self.get("circuit.json") {
            Some(b) => {
                let text = std::str::from_utf8(b).map_err(|_| "circuit.json is not UTF-8".to_string())?;
                // A pruned model's own circuit.json may be the placeholder written without a run.
                CircuitFile::from_json(text).ok()
            }
            None => None,
        };
        let task = match self.get("task.json") {
            Some(b) => {
                let text = std::str::from_utf8(b).map_err(|_| "task.json is not UTF-8".to_string())?;
                Some(Task::from_json(text, loaded.config.vocab).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        Ok(Session::new(loaded, sha256_hex(weights), circuit, task, layout))
    }
}

fn pruned_layout(config: &[u8]) -> Result<Option<Vec<PrunedLayer>>, String> {
    let path = std::path::Path::new("config.json");
    let cfg = parse_config(config, path).map_err(|e| e.to_string())?;
    if parse_layout(config, path, &cfg).map_err(|e| e.to_string())?.is_none() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(config).map_err(|e| e.to_string())?;
    serde_json::from_value(v["carve_layers"].clone()).map(Some).map_err(|e| format!("config.json `carve_layers`: {e}"))
}

fn js_err(e: &wasm_bindgen::JsValue) -> String {
    e.as_string()
        .or_else(|| Reflect::get(e, &"message".into()).ok().and_then(|m| m.as_string()))
        .unwrap_or_else(|| format!("{e:?}"))
}

/// GETs `url` whole, reporting (bytes so far, total when the server says). `Ok(None)` for a 404.
pub async fn fetch(url: &str, progress: &dyn Fn(u64, Option<u64>)) -> Result<Option<Vec<u8>>, String> {
    let window = web_sys::window().ok_or("no window")?;
    let resp = JsFuture::from(window.fetch_with_str(url)).await.map_err(|e| {
        format!("cannot fetch {url}: {} — the server may be offline or not allow this page to read it (CORS); pick the files locally instead", js_err(&e))
    })?;
    let resp: web_sys::Response = resp.dyn_into().map_err(|_| "fetch returned something other than a Response".to_string())?;
    if resp.status() == 404 {
        return Ok(None);
    }
    if !resp.ok() {
        return Err(format!("{url}: HTTP {}", resp.status()));
    }
    let total = resp.headers().get("content-length").ok().flatten().and_then(|s| s.parse::<u64>().ok());
    let Some(body) = resp.body() else { return Ok(Some(Vec::new())) };
    let reader: web_sys::ReadableStreamDefaultReader = body.get_reader().dyn_into().map_err(|_| "no stream reader".to_string())?;
    let mut out = Vec::with_capacity(total.unwrap_or(0) as usize);
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| format!("{url}: download failed: {}", js_err(&e)))?;
        if Reflect::get(&chunk, &"done".into()).ok().and_then(|d| d.as_bool()).unwrap_or(true) {
            break;
        }
        let value = Reflect::get(&chunk, &"value".into()).map_err(|e| js_err(&e))?;
        let arr = Uint8Array::new(&value);
        let n = out.len();
        out.resize(n + arr.length() as usize, 0);
        arr.copy_to(&mut out[n..]);
        progress(out.len() as u64, total);
    }
    Ok(Some(out))
}

/// Fetches a model from `url`: a `.gguf` file, or a directory (`…/`) holding config.json,
/// model.safetensors and optionally tokenizer.json, circuit.json and task.json.
pub async fn fetch_model(url: &str, progress: &dyn Fn(&str, u64, Option<u64>)) -> Result<Files, String> {
    let mut files = Files::default();
    if url.ends_with(".gguf") {
        let name = url.rsplit('/').next().unwrap_or("model.gguf").to_string();
        let b = fetch(url, &|n, t| progress(&name, n, t)).await?.ok_or_else(|| format!("{url}: not found (404)"))?;
        files.files.push((name, b));
        return Ok(files);
    }
    let base = if url.ends_with('/') { url.to_string() } else { format!("{url}/") };
    for (name, required) in [("config.json", true), ("tokenizer.json", false), ("circuit.json", false), ("task.json", false), ("model.safetensors", true)] {
        match fetch(&format!("{base}{name}"), &|n, t| progress(name, n, t)).await? {
            Some(b) => files.files.push((name.to_string(), b)),
            None if required => return Err(format!("{base}{name}: not found (404); is {base} a model directory?")),
            None => {}
        }
    }
    Ok(files)
}

/// Reads files the user picked or dropped.
pub async fn read_files(list: &web_sys::FileList) -> Result<Files, String> {
    let mut files = Files::default();
    for i in 0..list.length() {
        let Some(f) = list.item(i) else { continue };
        let buf = JsFuture::from(f.array_buffer()).await.map_err(|e| format!("{}: {}", f.name(), js_err(&e)))?;
        files.files.push((f.name(), Uint8Array::new(&buf).to_vec()));
    }
    if files.files.is_empty() {
        return Err("no files".into());
    }
    Ok(files)
}
