//! The page: load a model, run a prompt, see and toggle the circuit (its components, or a
//! standalone edge model's edges), evaluate, share.
//! Everything shown comes through text nodes and attributes: nothing from a link or a file is ever
//! inserted as markup.

use std::collections::HashMap;
use std::rc::Rc;

use carve_core::circuit::link::MAX_LINK_CHARS;
use carve_core::circuit::{Component, EdgeLinkState, EdgeMaskFile, Link, LinkState, ModelShape};
use leptos::prelude::*;
use leptos::task::spawn_local;

use crate::edge_graph::EdgeGraph;
use crate::edge_view::{edge_drawing, EdgeDrawing};
use crate::engine::{Engine, Next, Session};
use crate::graph::{Graph, Node};
use crate::load::{fetch_model, read_files, read_text, Files};

/// A loaded model on its backend.
struct Live {
    session: Session,
    engine: Engine,
    /// Where it came from: a URL (goes into links) or "local files".
    url: String,
}

#[derive(Clone, Default)]
struct Shown {
    nodes: Vec<Node>,
    labels: Vec<String>,
    cols: usize,
    info: String,
    examples: Vec<String>,
    side_by_side: bool,
    /// A warning about how components are ablated, if any.
    notice: Option<String>,
    /// A standalone edge model's drawing (then the mask is over its edges).
    edges: Option<EdgeDrawing>,
}

fn hash() -> String {
    web_sys::window().and_then(|w| w.location().hash().ok()).unwrap_or_default()
}

#[component]
pub fn App() -> impl IntoView {
    let live: StoredValue<Option<Rc<Live>>, LocalStorage> = StoredValue::new_local(None);
    let status = RwSignal::new(String::from("no model loaded"));
    let error = RwSignal::new(None::<String>);
    let backend = RwSignal::new(String::new());
    let url = RwSignal::new(String::new());
    let prompt = RwSignal::new(String::new());
    let mask = RwSignal::new(Vec::<bool>::new());
    let baseline = RwSignal::new(Vec::<bool>::new());
    let shown = RwSignal::new(None::<Shown>);
    let results = RwSignal::new(Vec::<(Next, Option<Next>)>::new());
    let eval_out = RwSignal::new(None::<String>);
    let link = RwSignal::new(String::new());
    // What became of a link's or a file's edge mask, when there is something to say.
    let link_note = RwSignal::new(None::<String>);
    let show_all = RwSignal::new(false);
    // The hash a link asks for; checked against whatever gets loaded.
    let expect_sha = RwSignal::new(None::<String>);
    // The link this page was opened with, until its model is loaded (from its URL or, when that
    // fails, from files the user picks): its prompt and mask are then restored.
    let pending: StoredValue<Option<Link>, LocalStorage> = StoredValue::new_local(None);
    let run_seq = StoredValue::new(0u64);

    let install = move |files: Files, origin: String, link_state: Option<Link>| {
        spawn_local(async move {
            status.set("building the model…".into());
            let session = match files.session(&origin) {
                Ok(s) => s,
                Err(e) => return error.set(Some(e)),
            };
            if let Some(want) = expect_sha.get_untracked() {
                if !session.sha256.starts_with(&want) {
                    return error.set(Some(format!(
                        "these weights have sha256 {}…, but the link was made with {want}…: not the same model",
                        &session.sha256[..16]
                    )));
                }
            }
            // navigator.gpu (read by name: web-sys exposes it only under unstable APIs).
            let has_gpu = web_sys::window()
                .and_then(|w| js_sys::Reflect::get(&w.navigator(), &"gpu".into()).ok())
                .is_some_and(|g| !g.is_undefined() && !g.is_null());
            let (engine, why) = match Engine::start(&session, has_gpu).await {
                Ok(x) => x,
                Err(e) => return error.set(Some(e.to_string())),
            };
            backend.set(if has_gpu { why } else { "CPU (wasm): this browser has no WebGPU".into() });
            pending.set_value(None);
            let start = session.circuit_mask();
            let (start_mask, refused, note) = link_mask(&session, link_state.as_ref(), &start);
            if refused.is_some() {
                error.set(refused);
            }
            link_note.set(note);
            shown.set(Some(describe(&session)));
            live.set_value(Some(Rc::new(Live { session, engine, url: origin })));
            baseline.set(start);
            if let Some(ls) = &link_state {
                prompt.set(ls.prompt().to_string());
            }
            mask.set(start_mask);
            status.set("ready".into());
        });
    };

    // Files picked or dropped; for a link whose URL failed they stand for its model (hash checked).
    let install_local = move |files: Files| match pending.get_value() {
        Some(ls) => install(files, ls.model_url().to_string(), Some(ls)),
        None => install(files, "local files".into(), None),
    };

    let load_url = move |u: String, link_state: Option<Link>| {
        error.set(None);
        spawn_local(async move {
            let report = |name: &str, n: u64, total: Option<u64>| {
                let mb = |b: u64| b as f64 / 1e6;
                status.set(match total {
                    Some(t) => format!("downloading {name}: {:.1} of {:.1} MB", mb(n), mb(t)),
                    None => format!("downloading {name}: {:.1} MB", mb(n)),
                });
            };
            match fetch_model(&u, &report).await {
                Ok(files) => install(files, u, link_state),
                Err(e) => {
                    status.set("not loaded".into());
                    error.set(Some(format!("{e}. Pick the model's files below; the link's hash will be checked.")));
                }
            }
        });
    };

    // Every change of prompt or mask runs the model again; only the latest run is shown.
    Effect::new(move |_| {
        let (p, m) = (prompt.get(), mask.get());
        let Some(l) = live.get_value() else { return };
        if p.is_empty() || m.is_empty() {
            results.set(vec![]);
            return;
        }
        run_seq.update_value(|s| *s += 1);
        let me = run_seq.get_value();
        spawn_local(async move {
            match run(&l, &p, &m).await {
                Ok(r) if run_seq.get_value() == me => {
                    results.set(r);
                    error.set(None);
                }
                Ok(_) => {}
                Err(e) => error.set(Some(e)),
            }
        });
    });

    let on_files = move |list: web_sys::FileList| {
        error.set(None);
        spawn_local(async move {
            match read_files(&list).await {
                Ok(files) => install_local(files),
                Err(e) => error.set(Some(e)),
            }
        });
    };

    let copy_link = move |_| {
        let Some(l) = live.get_value() else { return };
        let base = web_sys::window().and_then(|w| w.location().href().ok()).unwrap_or_default();
        let (model_url, model_sha256) = (if l.url == "local files" { String::new() } else { l.url.clone() }, l.session.sha256[..16].to_string());
        let task = l.session.task.as_ref().map(|t| t.name.clone()).unwrap_or_default();
        let (s, whole) = if l.session.edges.is_some() {
            let m = mask.get_untracked();
            let state = EdgeLinkState { model_url, model_sha256, task, prompt: prompt.get_untracked(), n_edges: m.len(), edges: Some(m) };
            state.encode(&base)
        } else {
            let state = LinkState { model_url, model_sha256, task, prompt: prompt.get_untracked(), mask: mask.get_untracked() };
            (state.encode(&base), true)
        };
        link_note.set((!whole).then(|| {
            format!(
                "the edge mask ({} edges) would make a link longer than {MAX_LINK_CHARS} characters: this link opens the model's own \
                 edges; \"save edge mask\" saves yours as a file to send with it",
                mask.with_untracked(|m| m.len())
            )
        }));
        if let Some(w) = web_sys::window() {
            let _ = w.location().set_hash(s.split_once('#').map_or("", |(_, f)| f));
            let _ = w.navigator().clipboard().write_text(&s);
        }
        link.set(s);
    };

    // The edge mask as a file: for a mask too long for a link, or to keep.
    let mask_href = move || {
        let Some(l) = live.get_value() else { return String::new() };
        let file = EdgeMaskFile { model_sha256: l.session.sha256[..16].to_string(), edges: mask.get() };
        format!("data:application/json;charset=utf-8,{}", String::from(js_sys::encode_uri_component(&file.to_json())))
    };
    let on_mask_file = move |list: web_sys::FileList| {
        let Some(f) = list.item(0) else { return };
        spawn_local(async move {
            let Some(l) = live.get_value() else { return };
            let got = async {
                let layout = l.session.edges.as_ref().ok_or("this model is not a standalone edge model: it has no edges to mask")?;
                let text = read_text(&f).await?;
                let file = EdgeMaskFile::from_json(&text).map_err(|e| e.to_string())?;
                file.edges_for(&l.session.sha256, layout).map(|b| b.to_vec()).map_err(|e| e.to_string())
            };
            match got.await {
                Ok(bits) => {
                    let n = bits.iter().filter(|&&b| b).count();
                    link_note.set(Some(format!("edge mask loaded from {}: {n} of {} edges on", f.name(), bits.len())));
                    error.set(None);
                    mask.set(bits);
                }
                Err(e) => error.set(Some(e)),
            }
        });
    };

    let evaluate = move |_| {
        let Some(l) = live.get_value() else { return };
        let m = mask.get_untracked();
        let all_on = if l.session.edges.is_some() { "the model's own edges" } else { "all on" };
        eval_out.set(Some("evaluating…".into()));
        spawn_local(async move {
            eval_out.set(Some(match l.engine.evaluate(&l.session, &m).await {
                Ok(r) => {
                    let c = r.circuit.unwrap_or(r.full.clone());
                    format!(
                        "{} test examples: accuracy {:.3} ({all_on}: {:.3}), {} {:.3}, KL to {all_on} {:.4}",
                        r.n,
                        c.accuracy,
                        r.full.accuracy,
                        r.metric.title(),
                        c.metric,
                        r.kl.unwrap_or(0.0)
                    )
                }
                Err(e) => format!("cannot evaluate: {e}"),
            }));
        });
    };

    // Open the link this page was opened with, if any.
    let h = hash();
    if h.contains("carve=") {
        match Link::decode(&h) {
            Ok(ls) => {
                expect_sha.set(Some(ls.model_sha256().to_string()).filter(|s| !s.is_empty()));
                pending.set_value(Some(ls.clone()));
                if ls.model_url().is_empty() {
                    error.set(Some("this link's model was loaded from local files: pick them below".into()));
                } else {
                    url.set(ls.model_url().to_string());
                    load_url(ls.model_url().to_string(), Some(ls));
                }
            }
            Err(e) => error.set(Some(e.to_string())),
        }
    }

    view! {
        <header>
            <h1>"carve"</h1>
            <span id="backend">{move || backend.get()}</span>
        </header>
        <section class="load">
            <input id="url" type="text" placeholder="model URL: a directory ending in / or a .gguf"
                prop:value=move || url.get() on:input=move |ev| url.set(event_target_value(&ev)) />
            <button id="load" on:click=move |_| { expect_sha.set(None); pending.set_value(None); load_url(url.get_untracked(), None) }>"Load"</button>
            <input id="files" type="file" multiple
                on:change=move |ev| {
                    let input: web_sys::HtmlInputElement = event_target(&ev);
                    if let Some(list) = input.files() { on_files(list) }
                } />
            <label>" or a model folder: "
                <input id="folder" type="file" prop:webkitdirectory=true
                    on:change=move |ev| {
                        let input: web_sys::HtmlInputElement = event_target(&ev);
                        if let Some(list) = input.files() { on_files(list) }
                    } />
            </label>
            <div id="drop" class="drop"
                on:dragover=move |ev: web_sys::DragEvent| ev.prevent_default()
                on:drop=move |ev: web_sys::DragEvent| {
                    ev.prevent_default();
                    let Some(dt) = ev.data_transfer() else { return };
                    let entries = crate::drop::entries(&dt);
                    if entries.is_empty() {
                        if let Some(list) = dt.files() { on_files(list) }
                        return;
                    }
                    error.set(None);
                    spawn_local(async move {
                        match crate::drop::read_entries(entries).await {
                            Ok(files) => install_local(files),
                            Err(e) => error.set(Some(e)),
                        }
                    });
                }>"or drop a model folder, a run folder, or a model's files here (config.json, model.safetensors, tokenizer.json, circuit.json, task.json, means.safetensors, edges.safetensors; or a .gguf)"</div>
            <p id="status">{move || status.get()}</p>
            <p id="error" class="error">{move || error.get().unwrap_or_default()}</p>
        </section>
        <Show when=move || shown.with(|s| s.is_some())>
            <section class="run">
                <p id="info">{move || shown.with(|s| s.as_ref().map(|s| s.info.clone()).unwrap_or_default())}</p>
                <p id="notice" class="notice">{move || shown.with(|s| s.as_ref().and_then(|s| s.notice.clone()).unwrap_or_default())}</p>
                <textarea id="prompt" rows="2" placeholder="a prompt"
                    prop:value=move || prompt.get() on:change=move |ev| prompt.set(event_target_value(&ev))></textarea>
                <select id="examples" on:change=move |ev| prompt.set(event_target_value(&ev))>
                    <option value="">"task examples…"</option>
                    {move || shown.with(|s| s.as_ref().map(|s| s.examples.clone()).unwrap_or_default())
                        .into_iter().map(|e| view! { <option value=e.clone()>{e.clone()}</option> }).collect_view()}
                </select>
                <table id="top">
                    <thead><tr>
                        <th>"circuit"</th><th>"p"</th>
                        <Show when=move || shown.with(|s| s.as_ref().is_some_and(|s| s.side_by_side))><th>"full model"</th><th>"p"</th></Show>
                    </tr></thead>
                    <tbody>
                        {move || results.get().into_iter().map(|(c, f)| view! {
                            <tr>
                                <td class="tok" data-id=c.id.to_string()>{format!("{:?}", c.token)}</td>
                                <td class="prob" data-prob=c.prob.to_string()>{format!("{:.4}", c.prob)}</td>
                                {f.map(|f| view! {
                                    <td class="tok full" data-id=f.id.to_string()>{format!("{:?}", f.token)}</td>
                                    <td class="prob full" data-prob=f.prob.to_string()>{format!("{:.4}", f.prob)}</td>
                                })}
                            </tr>
                        }).collect_view()}
                    </tbody>
                </table>
            </section>
            <section class="circuit">
                <div class="buttons">
                    <button id="reset" on:click=move |_| mask.set(baseline.get_untracked())>"reset to circuit"</button>
                    <button id="evaluate" on:click=evaluate>"evaluate on the test split"</button>
                    <button id="copy-link" on:click=copy_link>"copy link"</button>
                    <Show when=move || shown.with(|s| s.as_ref().is_some_and(|s| s.edges.is_some()))>
                        <a id="save-mask" class="button" download="edge-mask.json" href=mask_href>"save edge mask"</a>
                        <label>" load edge mask: "
                            <input id="mask-file" type="file" accept=".json,application/json"
                                on:change=move |ev| {
                                    let input: web_sys::HtmlInputElement = event_target(&ev);
                                    if let Some(list) = input.files() { on_mask_file(list) }
                                } />
                        </label>
                        <label>
                            <input id="show-all" type="checkbox" prop:checked=move || show_all.get()
                                on:change=move |ev| show_all.set(event_target_checked(&ev)) />
                            " show every edge of this model"
                        </label>
                    </Show>
                </div>
                <p id="eval-out">{move || eval_out.get().unwrap_or_default()}</p>
                <input id="link" type="text" readonly prop:value=move || link.get() />
                <p id="link-note" class="notice">{move || link_note.get().unwrap_or_default()}</p>
                {move || shown.get().map(|s| match s.edges {
                    Some(d) => view! { <EdgeGraph drawing=d mask=mask baseline=baseline.into() show_all=show_all.into() /> }.into_any(),
                    None => view! { <Graph nodes=s.nodes labels=s.labels cols=s.cols mask=mask baseline=baseline.into() /> }.into_any(),
                })}
                <p class="legend">{move || if shown.with(|s| s.as_ref().is_some_and(|s| s.edges.is_some())) {
                    concat!(
                        "edges: blue into a query, green into a key, orange into a value, purple into an MLP, black into the logits, ",
                        "thicker and darker for a higher gate · pink: added, dashed pink: cut from the circuit · nodes filled: an edge ",
                        "out of them is on · outlined orange: changed · dashed: pruned away · click an edge or a node (all its edges) to ",
                        "toggle, hover for names and gates"
                    )
                } else {
                    "filled: on · hollow: ablated · dashed: pruned away (not in this model) · orange: changed from the circuit · click to toggle, hover for numbers"
                }}</p>
            </section>
        </Show>
    }
}

/// Top-k of the circuit (the current mask) and, for a full model with a circuit, of the full model.
async fn run(l: &Live, prompt: &str, mask: &[bool]) -> Result<Vec<(Next, Option<Next>)>, String> {
    let tok = l.session.loaded.tokenizer.as_ref().ok_or("this model has no tokenizer.json")?;
    let ids = tok.encode(prompt, false).map_err(|e| e.to_string())?;
    if ids.is_empty() {
        return Ok(vec![]);
    }
    let k = 10;
    let c = l.engine.top_k(&l.session, &ids, mask, k).await.map_err(|e| e.to_string())?;
    let full = if l.session.side_by_side() {
        let all = vec![true; mask.len()];
        Some(l.engine.top_k(&l.session, &ids, &all, k).await.map_err(|e| e.to_string())?)
    } else {
        None
    };
    Ok(c.into_iter().enumerate().map(|(i, n)| (n, full.as_ref().and_then(|f| f.get(i).cloned()))).collect())
}

fn describe(s: &Session) -> Shown {
    let detail = |name: &str| -> String {
        let d = s.circuit.as_ref().and_then(|c| c.decisions.iter().find(|d| d.component.to_string() == name));
        match d {
            Some(d) => format!("\nablate: KL {:.5} when tried → {}", d.kl, if d.removed { "removed" } else { "kept" }),
            None => String::new(),
        }
    };
    let (nodes, labels, cols) = match (&s.layout, &s.circuit) {
        (Some(_), Some(c)) if c.shape.n_layers() > 0 => source_grid(s, &c.shape, &detail),
        _ => own_grid(s, &detail),
    };
    let cfg = &s.loaded.config;
    let kind = match (&s.edges, &s.layout) {
        (Some(e), _) => format!("standalone edge model ({} edges, {} on)", e.n_edges(), s.circuit_mask().iter().filter(|&&b| b).count()),
        (None, Some(_)) => "pruned model".into(),
        (None, None) => "model".into(),
    };
    let (ablation, notice) = s.ablation_note();
    let info = format!(
        "{kind}: {} · {} layers · {} heads · d {} · sha256 {}…{} · {ablation}",
        cfg.arch.name(),
        s.shape.n_layers(),
        s.shape.n_heads.iter().sum::<usize>(),
        cfg.d_model,
        &s.sha256[..12],
        s.task.as_ref().map(|t| format!(" · task {} ({} test examples)", t.name, t.examples.len())).unwrap_or_default()
    );
    let examples = match (&s.task, &s.loaded.tokenizer) {
        (Some(t), Some(tok)) => t.examples.iter().take(50).filter_map(|e| tok.decode(&e.prompt).ok()).collect(),
        _ => vec![],
    };
    let side_by_side = s.side_by_side();
    let edges = s.edges.as_ref().map(|layout| edge_drawing(s, layout));
    Shown { nodes, labels, cols, info, examples, side_by_side, notice, edges }
}

/// The mask a link asks for on this session, else the circuit's, with why (an error) or a note.
fn link_mask(s: &Session, link: Option<&Link>, start: &[bool]) -> (Vec<bool>, Option<String>, Option<String>) {
    let keep = |why: String| (start.to_vec(), Some(why), None);
    match (link, &s.edges) {
        (None, _) => (start.to_vec(), None, None),
        (Some(Link::Components(ls)), None) if ls.mask.len() == start.len() => (ls.mask.clone(), None, None),
        (Some(Link::Components(ls)), None) => {
            keep(format!("the link's mask has {} components, this model {}: showing the circuit instead", ls.mask.len(), start.len()))
        }
        (Some(Link::Edges(es)), Some(layout)) => match es.edges_for(layout) {
            Ok(Some(bits)) => (bits.to_vec(), None, None),
            Ok(None) => (
                start.to_vec(),
                None,
                Some(format!(
                    "this link's edge mask ({} edges) was too long for a link: showing the model's own edges; load the mask file sent with the link (\"load edge mask\")",
                    es.n_edges
                )),
            ),
            Err(e) => keep(format!("{e}: showing the circuit instead")),
        },
        (Some(Link::Edges(_)), None) => keep("this link holds an edge mask, but this model is not a standalone edge model: showing its circuit".into()),
        (Some(Link::Components(_)), Some(_)) => {
            keep("this link holds a component mask, but this is a standalone edge model (its mask is over edges): showing its circuit".into())
        }
    }
}

/// How many of source layer `l`'s `d_ff` MLP neurons the circuit keeps, when it keeps some but not
/// all (node-prune's neuron masks): from a pruned model's layout, else from the circuit file.
fn kept_neurons(s: &Session, l: usize, d_ff: usize) -> Option<usize> {
    let kept = match (&s.layout, &s.circuit) {
        (Some(layers), _) => layers.iter().find(|p| p.source_layer == l).map(|p| p.d_ff),
        (None, Some(c)) => {
            let listed = c.kept.iter().chain(&c.removed).any(|x| matches!(x, Component::Neuron { layer, .. } if *layer == l));
            listed.then(|| c.kept.iter().filter(|x| matches!(x, Component::Neuron { layer, .. } if *layer == l)).count())
        }
        _ => None,
    }?;
    (kept > 0 && kept < d_ff).then_some(kept)
}

/// The loaded model's own components, one row per layer it has.
fn own_grid(s: &Session, detail: &dyn Fn(&str) -> String) -> (Vec<Node>, Vec<String>, usize) {
    let cols = s.shape.n_heads.iter().copied().max().unwrap_or(0);
    let nodes = s
        .components()
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let name = s.source_name(c);
            let detail = detail(&name);
            let (layer, col, mlp) = match c {
                Component::Head { layer, head } => (layer, head, false),
                Component::Mlp { layer } | Component::Neuron { layer, .. } => (layer, cols, true),
            };
            let neurons = if mlp && s.layout.is_none() { kept_neurons(s, layer, s.shape.d_ff.get(layer).copied().unwrap_or(0)) } else { None };
            Node { index: Some(i), name, detail, layer, col, mlp, neurons }
        })
        .collect();
    let labels = (0..s.shape.n_layers())
        .map(|l| match &s.layout {
            Some(layers) => format!("L{}", layers[l].source_layer),
            None => format!("L{l}"),
        })
        .collect();
    (nodes, labels, cols)
}

/// A pruned model drawn in its source model's shape: what it kept can be toggled, what pruning
/// dropped is drawn apart (its weights are not in this model).
fn source_grid(s: &Session, source: &ModelShape, detail: &dyn Fn(&str) -> String) -> (Vec<Node>, Vec<String>, usize) {
    let index: HashMap<String, usize> = s.components().into_iter().enumerate().map(|(i, c)| (s.source_name(c), i)).collect();
    let cols = source.n_heads.iter().copied().max().unwrap_or(0);
    let mut nodes = Vec::new();
    for l in 0..source.n_layers() {
        let heads = (0..source.n_heads[l]).map(|h| (format!("L{l}H{h}"), h, false));
        let mlp = (source.d_ff[l] > 0).then(|| (format!("L{l}MLP"), cols, true));
        for (name, col, is_mlp) in heads.chain(mlp) {
            let detail = detail(&name);
            let neurons = if is_mlp { kept_neurons(s, l, source.d_ff[l]) } else { None };
            nodes.push(Node { index: index.get(&name).copied(), name, detail, layer: l, col, mlp: is_mlp, neurons });
        }
    }
    (nodes, (0..source.n_layers()).map(|l| format!("L{l}")).collect(), cols)
}
