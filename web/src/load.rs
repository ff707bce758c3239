//! Getting a model into the page: from a URL (a model directory ending in `/`, or a `.gguf`), with
//! download progress, or from files the user picks or drops (folders too). A model directory may
//! hold `circuit.json`, `task.json` and `means.safetensors` beside the weights; they are read when
//! present. A standalone edge model's config.json names its edges file (`edges.safetensors`),
//! which it needs.

use carve_core::circuit::{CircuitFile, MEANS_FILE};
use carve_core::model::load::{load_gguf_bytes, parse_config, parse_layout, sha256_hex, strip_bom};
use carve_core::prune::edge_bytes::edges_name;
use carve_core::prune::{load_hf_bytes_with_edges, PrunedLayer, EDGES_FILE};
use carve_core::tasks::Task;
use js_sys::{Reflect, Uint8Array};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

use crate::engine::Session;

/// A model directory's files, and whether it needs each (fetched in this order: the weights last,
/// after the small files that can fail quickly).
const DIR_FILES: [(&str, bool); 6] = [
    ("config.json", true),
    ("tokenizer.json", false),
    ("circuit.json", false),
    ("task.json", false),
    (MEANS_FILE, false),
    ("model.safetensors", true),
];

/// Whether a file of this name belongs to a model; anything else in a picked or dropped folder is
/// left unread.
pub fn wanted(name: &str) -> bool {
    name.ends_with(".gguf") || name == EDGES_FILE || DIR_FILES.iter().any(|(n, _)| *n == name)
}

/// The files of a model, by path relative to what was picked or dropped (`run/model/config.json`;
/// a bare name for single files).
pub struct Files {
    pub files: Vec<(String, Vec<u8>)>,
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

impl Files {
    pub fn new(files: Vec<(String, Vec<u8>)>) -> Files {
        let files = files.into_iter().map(|(p, b)| (p.trim_start_matches('/').to_string(), b)).collect();
        Files { files }
    }

    /// The file `name` in the model's folder `dir`, else among the files given loose.
    fn get(&self, dir: &str, name: &str) -> Option<&[u8]> {
        let at = |d: &str| self.files.iter().find(|(p, _)| split(p) == (d, name)).map(|(_, b)| b.as_slice());
        at(dir).or_else(|| at(""))
    }

    /// The folder of the one model among the files: the shallowest `.gguf` or `config.json`. A
    /// dropped run directory holds its pruned model in `model/`; two models side by side are refused.
    fn model_dir(&self) -> Result<&str, String> {
        let depth = |p: &str| p.matches('/').count();
        let models: Vec<&str> = self
            .files
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| p.ends_with(".gguf") || split(p).1 == "config.json")
            .collect();
        let Some(min) = models.iter().map(|p| depth(p)).min() else {
            return Err("no model among the files: give a model directory (config.json, model.safetensors, …) or a .gguf".into());
        };
        let top: Vec<&str> = models.into_iter().filter(|p| depth(p) == min).collect();
        if top.len() > 1 {
            return Err(format!("several models among the files ({}): give one", top.join(", ")));
        }
        Ok(split(top[0]).0)
    }

    /// Builds the session: a `.gguf`, or config.json + model.safetensors (+ tokenizer.json,
    /// circuit.json, task.json, means.safetensors).
    pub fn session(&self, origin: &str) -> Result<Session, String> {
        let dir = self.model_dir()?;
        let get = |name: &str| self.get(dir, name);
        let gguf = self.files.iter().find(|(p, _)| p.ends_with(".gguf") && split(p).0 == dir);
        let (loaded, weights, layout) = if let Some((_, g)) = gguf {
            (load_gguf_bytes(g).map_err(|e| e.to_string())?, g.as_slice(), None)
        } else {
            let config = get("config.json").ok_or("no config.json among the files (pick a model directory's files, or a .gguf)")?;
            let beside = format!("{dir}{}config.json", if dir.is_empty() { "" } else { "/" });
            let w = get("model.safetensors").ok_or_else(|| format!("no model.safetensors beside {beside}"))?;
            let edges = match edges_name(config).map_err(|e| e.to_string())? {
                Some(n) => Some(get(&n).ok_or_else(|| {
                    format!("{beside} says this is a standalone edge model whose edges are in `{n}`: give that file too")
                })?),
                None => None,
            };
            let loaded = load_hf_bytes_with_edges(config, &[w], get("tokenizer.json"), edges).map_err(|e| e.to_string())?;
            (loaded, w, pruned_layout(config)?)
        };
        let mut loaded = loaded;
        loaded.source = origin.to_string();
        let circuit = match get("circuit.json") {
            Some(b) => {
                let text = std::str::from_utf8(b).map_err(|_| "circuit.json is not UTF-8".to_string())?;
                // A pruned model's own circuit.json may be the placeholder written without a run.
                CircuitFile::from_json(text).ok()
            }
            None => None,
        };
        let task = match get("task.json") {
            Some(b) => {
                let text = std::str::from_utf8(b).map_err(|_| "task.json is not UTF-8".to_string())?;
                Some(Task::from_json(text, loaded.config.vocab).map_err(|e| e.to_string())?)
            }
            None => None,
        };
        let mut s = Session::new(loaded, sha256_hex(weights), circuit, task, layout);
        if let Some(b) = get(MEANS_FILE) {
            s.set_means(b).map_err(|e| e.to_string())?;
        }
        Ok(s)
    }
}

fn pruned_layout(config: &[u8]) -> Result<Option<Vec<PrunedLayer>>, String> {
    let path = std::path::Path::new("config.json");
    let cfg = parse_config(config, path).map_err(|e| e.to_string())?;
    if parse_layout(config, path, &cfg).map_err(|e| e.to_string())?.is_none() {
        return Ok(None);
    }
    let v: serde_json::Value = serde_json::from_slice(strip_bom(config)).map_err(|e| e.to_string())?;
    serde_json::from_value(v["carve_layers"].clone()).map(Some).map_err(|e| format!("config.json `carve_layers`: {e}"))
}

pub(crate) fn js_err(e: &wasm_bindgen::JsValue) -> String {
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
/// model.safetensors and optionally tokenizer.json, circuit.json, task.json and means.safetensors.
pub async fn fetch_model(url: &str, progress: &dyn Fn(&str, u64, Option<u64>)) -> Result<Files, String> {
    let mut files = Vec::new();
    if url.ends_with(".gguf") {
        let name = url.rsplit('/').next().unwrap_or("model.gguf").to_string();
        let b = fetch(url, &|n, t| progress(&name, n, t)).await?.ok_or_else(|| format!("{url}: not found (404)"))?;
        files.push((name, b));
        return Ok(Files::new(files));
    }
    let base = if url.ends_with('/') { url.to_string() } else { format!("{url}/") };
    for (name, required) in DIR_FILES {
        match fetch(&format!("{base}{name}"), &|n, t| progress(name, n, t)).await? {
            Some(b) => files.push((name.to_string(), b)),
            None if required => return Err(format!("{base}{name}: not found (404); is {base} a model directory?")),
            None => {}
        }
        // A standalone edge model's edges file, named by its config.json.
        if name == "config.json" {
            let named = files.last().map(|(_, b)| edges_name(b)).transpose().map_err(|e| e.to_string())?.flatten();
            if let Some(e) = named {
                let b = fetch(&format!("{base}{e}"), &|n, t| progress(&e, n, t)).await?;
                let b = b.ok_or_else(|| format!("{base}{e}: not found (404); config.json says this standalone edge model's edges are there"))?;
                files.push((e, b));
            }
        }
    }
    Ok(Files::new(files))
}

/// The text of a file the user picked.
pub async fn read_text(f: &web_sys::File) -> Result<String, String> {
    let buf = JsFuture::from(f.array_buffer()).await.map_err(|e| format!("{}: {}", f.name(), js_err(&e)))?;
    String::from_utf8(Uint8Array::new(&buf).to_vec()).map_err(|_| format!("{}: not UTF-8 text", f.name()))
}

/// Reads files the user picked (a folder picker gives each its path in the folder) or dropped,
/// skipping those a model does not use.
pub async fn read_files(list: &web_sys::FileList) -> Result<Files, String> {
    let mut named = Vec::new();
    for i in 0..list.length() {
        let Some(f) = list.item(i) else { continue };
        let rel = Reflect::get(&f, &"webkitRelativePath".into()).ok().and_then(|p| p.as_string()).filter(|p| !p.is_empty());
        named.push((rel.unwrap_or_else(|| f.name()), f));
    }
    read_named(named).await
}

/// Reads the bytes of the wanted files among `named` (path, file).
pub async fn read_named(named: Vec<(String, web_sys::File)>) -> Result<Files, String> {
    let mut files = Vec::new();
    for (path, f) in named {
        if !wanted(split(&path).1) {
            continue;
        }
        let buf = JsFuture::from(f.array_buffer()).await.map_err(|e| format!("{path}: {}", js_err(&e)))?;
        files.push((path, Uint8Array::new(&buf).to_vec()));
    }
    if files.is_empty() {
        return Err("none of these files belongs to a model (config.json, model.safetensors, tokenizer.json, circuit.json, task.json, means.safetensors, edges.safetensors, or a .gguf)".into());
    }
    Ok(Files::new(files))
}
