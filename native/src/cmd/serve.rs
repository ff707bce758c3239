//! `carve serve DIR`: the web app and one run's files over HTTP, on 127.0.0.1 unless told otherwise.
//! `/` is the app (its built files: `index.html`, the wasm and its JS), `/run/…` the run directory
//! (`circuit.json`, `model/…`, reports). Prints the link that opens the run's pruned model.

use anyhow::{bail, Context, Result};
use carve_core::circuit::{CircuitFile, LinkState};
use std::path::{Component, Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// A run directory (from `carve extract`), or any directory of model files.
    dir: PathBuf,
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to listen on; 0.0.0.0 exposes the run to the network.
    #[arg(long, default_value = "127.0.0.1")]
    bind: String,
    /// The built web app [default: web/dist beside the binary's workspace, or ./web/dist].
    #[arg(long)]
    app: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    if !a.dir.is_dir() {
        bail!("{} is not a directory", a.dir.display());
    }
    let app = match &a.app {
        Some(p) => p.clone(),
        None => default_app_dir().context("the web app is not built: run `scripts/build-web.sh`, or give --app DIR")?,
    };
    if !app.join("index.html").is_file() {
        bail!("{} has no index.html: give the built web app with --app", app.display());
    }
    let addr = format!("{}:{}", a.bind, a.port);
    let server = tiny_http::Server::http(&addr).map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let base = format!("http://{addr}/");
    println!("serving the app from {} and {} under /run/", app.display(), a.dir.display());
    println!("{base}");
    if let Some(link) = run_link(&a.dir, &base)? {
        println!("open the run's circuit: {link}");
    }
    for req in server.incoming_requests() {
        let (status, body, mime) = respond(&app, &a.dir, req.url());
        let header = tiny_http::Header::from_bytes("Content-Type", mime).expect("a valid header");
        let res = tiny_http::Response::from_data(body).with_status_code(status).with_header(header);
        if let Err(e) = req.respond(res) {
            eprintln!("warning: a response failed: {e}");
        }
    }
    Ok(())
}

fn default_app_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/{debug,release}/carve → the workspace root.
    let from_exe = exe.parent()?.parent()?.parent().map(|w| w.join("web/dist"));
    [from_exe, Some(PathBuf::from("web/dist"))].into_iter().flatten().find(|p| p.join("index.html").is_file())
}

/// The share link of the run's pruned model (all components on), when the directory holds a run.
pub fn run_link(dir: &Path, base: &str) -> Result<Option<String>> {
    let (cj, model) = (dir.join("circuit.json"), dir.join("model"));
    if !cj.is_file() || !model.join("config.json").is_file() {
        return Ok(None);
    }
    let cf = CircuitFile::from_json(&std::fs::read_to_string(&cj)?).with_context(|| cj.display().to_string())?;
    let sha = carve_core::model::load::weights_sha256(&model)?;
    let n = crate::cmd::link::pruned_shape(&model)?.components(false).len();
    let state = LinkState { model_url: "/run/model/".into(), model_sha256: sha[..16].into(), task: LinkState::task_label(&cf.task.name), prompt: String::new(), mask: vec![true; n] };
    Ok(Some(state.encode(base)))
}

/// (status, body, content type) for a request path.
pub fn respond(app: &Path, run: &Path, url: &str) -> (u16, Vec<u8>, &'static str) {
    let path = url.split(['?', '#']).next().unwrap_or("/");
    let (root, rest) = match path.strip_prefix("/run/") {
        Some(r) => (run, r),
        None => (app, path.trim_start_matches('/')),
    };
    let rest = if rest.is_empty() { "index.html" } else { rest };
    let Some(file) = safe_join(root, rest) else {
        return (400, b"bad path".to_vec(), "text/plain; charset=utf-8");
    };
    match std::fs::read(&file) {
        Ok(bytes) => (200, bytes, mime(&file)),
        Err(_) => (404, format!("not found: {rest}").into_bytes(), "text/plain; charset=utf-8"),
    }
}

/// `root/rel` when `rel` stays inside `root` (no `..`, no absolute parts, percent-decoded).
fn safe_join(root: &Path, rel: &str) -> Option<PathBuf> {
    let decoded = percent_decode(rel)?;
    let p = Path::new(&decoded);
    if !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    Some(root.join(p))
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().filter(|s| !s.contains('\0'))
}

fn mime(p: &Path) -> &'static str {
    match p.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "json" => "application/json",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "md" => "text/markdown; charset=utf-8",
        "jsonl" => "application/jsonl",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}
