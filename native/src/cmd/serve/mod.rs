//! `carve serve DIR`: the web app and one run's files over HTTP, on 127.0.0.1 unless told otherwise.
//! `/` is the app (its built files: `index.html`, the wasm and its JS), `/run/…` the run directory
//! (`circuit.json`, `model/…`, reports). Prints the link that opens the run's pruned model.
//!
//! Connections are served concurrently (axum on tokio) and files streamed from disk with range
//! requests (tower-http), so one slow download of a large model blocks nothing else.

mod files;
mod hosts;
mod respond;

use anyhow::{bail, Context, Result};
use carve_core::circuit::{CircuitFile, EdgeLinkState, Link, LinkState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct Args {
    /// A run directory (from `carve extract`), or any directory of model files.
    dir: PathBuf,
    /// Port to listen on; 0 picks a free one (the URL printed names it).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// IP address to listen on; 0.0.0.0 (or ::) exposes the run to the network.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// A host name the server answers to besides localhost and IP addresses, e.g. this machine's
    /// name on the network with --bind 0.0.0.0 (repeatable). Requests naming other hosts are refused.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_host: Vec<String>,
    /// The built web app [default: web/dist beside the binary's workspace, or ./web/dist].
    #[arg(long)]
    app: Option<PathBuf>,
}

/// Checks the run directory, the app and the run's circuit.json, listens, then prints the URL
/// and serves until killed.
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
    let roots = files::Roots::new(&app, &a.dir)?;
    let hosts = hosts::Hosts::new(a.bind, &a.allow_host)?;
    let link = run_state(&a.dir)?;

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the server's runtime")?;
    let addr = SocketAddr::new(a.bind, a.port);
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    // Bound to every interface: this machine reaches it on loopback.
    let shown = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), local.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), local.port()),
        _ => local,
    };
    let base = format!("http://{shown}/");
    println!("serving the app from {} and {} under /run/", app.display(), a.dir.display());
    println!("{base}");
    if let Some(state) = link {
        println!("open the run's circuit: {}", encode(&state, &base));
    }
    if local.ip().is_unspecified() {
        eprintln!("listening on every interface ({local}): other machines can read this run, by IP address or by a name given with --allow-host");
    }

    let served = Arc::new(respond::Served { roots, hosts });
    let router = axum::Router::new().fallback(respond::respond).with_state(served);
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, router).await
    })
    .with_context(|| format!("serving on {local}"))
}

fn default_app_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/{debug,release}/carve → the workspace root.
    let from_exe = exe.parent()?.parent()?.parent().map(|w| w.join("web/dist"));
    [from_exe, Some(PathBuf::from("web/dist"))].into_iter().flatten().find(|p| p.join("index.html").is_file())
}

/// The share link of the run's pruned model (all components on, or a standalone edge model's own
/// edges), when the directory holds a run.
pub fn run_link(dir: &Path, base: &str) -> Result<Option<String>> {
    Ok(run_state(dir)?.map(|s| encode(&s, base)))
}

/// An edge link whose mask is too long is made without it: the page then opens the model's own
/// edges, which are what it holds.
fn encode(link: &Link, base: &str) -> String {
    match link {
        Link::Components(s) => s.encode(base),
        Link::Edges(s) => s.encode(base).0,
    }
}

/// The page state that opens the run's pruned model (all components on; a standalone edge model
/// with its own edges), when the directory holds a circuit and a model. A circuit.json that is
/// there must load, model or not.
fn run_state(dir: &Path) -> Result<Option<Link>> {
    let (cj, model) = (dir.join("circuit.json"), dir.join("model"));
    if !cj.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&cj).with_context(|| format!("cannot read {}", cj.display()))?;
    let cf = CircuitFile::from_json(&text).with_context(|| cj.display().to_string())?;
    if !model.join("config.json").is_file() {
        return Ok(None);
    }
    let sha = carve_core::model::load::weights_sha256(&model)?;
    let sha16 = sha.get(..16).with_context(|| format!("{}: the weights' sha256 `{sha}` is too short", model.display()))?;
    let (url, task) = ("/run/model/".to_string(), LinkState::task_label(&cf.task.name));
    if let Some(on) = crate::cmd::link::edge_model_on(&model)? {
        let state = EdgeLinkState { model_url: url, model_sha256: sha16.into(), task, prompt: String::new(), n_edges: on.len(), edges: Some(on) };
        return Ok(Some(Link::Edges(state)));
    }
    let n = crate::cmd::link::pruned_shape(&model)?.components(false).len();
    Ok(Some(Link::Components(LinkState { model_url: url, model_sha256: sha16.into(), task, prompt: String::new(), mask: vec![true; n] })))
}
