//! Share links of an edge-prune run, as `carve link` and `carve serve` make them (format version 2,
//! the standalone edge model's own edges as the mask), and the standalone edge model read from
//! bytes as the web app reads it: the same model as read from its directory.

mod common;
use common::*;

use carve_core::backend::cpu::CpuBackend;
use carve_core::backend::Backend;
use carve_core::circuit::{EdgeLinkState, Link};
use carve_core::mask::EdgeLayout;
use carve_core::model::load::{load_path, LoadedModel};
use carve_core::model::{Batch, ForwardArgs, LogitsAt};
use carve_core::prune::edge_bytes::{edge_model_gates, load_hf_bytes_with_edges};
use serde_json::Value;
use std::path::Path;

fn edge_run(d: &Path) -> std::path::PathBuf {
    let (m, t) = (tiny_model(d), task_file(d));
    let out = d.join("run");
    ok(&[
        "extract", "--model", s(&m), "--task", s(&t), "--patching", "20", "--discovery", "12", "--test", "16", "--method", "edge-prune",
        "--sparsity", "0.9", "--steps", "30", "--batch", "8", "--out", s(&out), "--backend", "cpu", "--latency-batch", "4",
    ]);
    out
}

fn last_logits(m: &LoadedModel) -> Vec<f32> {
    let be = CpuBackend::new();
    let model = m.upload(&be).unwrap();
    let batch = Batch::new(&[vec![1, 5, 17, 40, 41]], &model.config).unwrap();
    let out = model.forward(&be, &batch, &ForwardArgs { logits: LogitsAt::Last, ..ForwardArgs::default() }).unwrap();
    pollster::block_on(be.read(&out.logits.unwrap())).unwrap().data
}

#[test]
fn edge_runs_link_their_edge_model_and_it_loads_from_bytes() {
    let d = scratch("edge-link");
    let run = edge_run(&d);
    let model = run.join("model");
    let cf = read_json(&run.join("circuit.json"));
    let kept = cf["edges"]["kept"].as_array().unwrap().len();
    let [config, weights, tok, edges] = ["config.json", "model.safetensors", "tokenizer.json", "edges.safetensors"].map(|f| std::fs::read(model.join(f)).unwrap());
    let (layout, gates) = edge_model_gates(&config, &edges).unwrap();
    assert_eq!(gates.iter().filter(|&&g| g != 0.0).count(), kept, "the edge model's own edges are the circuit's");

    // carve link: version 2, the model's own edges on; markup in the prompt is data.
    let link = ok(&["link", s(&run.join("circuit.json")), "--model-url", "/run/model/", "--prompt", "<b>w1</b>"]);
    let st: Value = serde_json::from_str(&ok(&["link", "--decode", link.trim()])).unwrap();
    assert_eq!((st["version"].as_u64(), st["edges"].as_u64(), st["on"].as_u64()), (Some(2), Some(layout.n_edges() as u64), Some(kept as u64)));
    assert_eq!(st["prompt"], "<b>w1</b>");
    let bits: String = gates.iter().map(|&g| if g != 0.0 { '1' } else { '0' }).collect();
    assert_eq!(st["mask"], bits.as_str());
    fails(&["link", s(&run.join("circuit.json")), "--full"], "is an edge circuit");

    // The mask reads back for this model's layout, and is refused for another's.
    let Link::Edges(es) = Link::decode(link.trim()).unwrap() else { panic!("not an edge link: {link}") };
    let on: Vec<bool> = gates.iter().map(|&g| g != 0.0).collect();
    assert_eq!(es.edges_for(&layout).unwrap(), Some(on.as_slice()));
    let full = EdgeLayout::new(&[4, 4], &[2, 2], &[true, true], false).unwrap();
    let e = es.edges_for(&full).unwrap_err().to_string();
    assert!(e.contains(&format!("has {} edges, the model 82", layout.n_edges())) && e.contains("another model"), "{e}");

    // serve prints the same kind of link.
    let app = d.join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("index.html"), "<!doctype html>").unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_carve"))
        .args(["serve", s(&run), "--port", "0", "--app", s(&app)])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let printed: Vec<String> = (0..3).map(|_| lines.next().unwrap().unwrap()).collect();
    let _ = child.kill();
    let _ = child.wait();
    let served = printed[2].rsplit(' ').next().unwrap();
    let Link::Edges(ss) = Link::decode(served).unwrap() else { panic!("serve printed no edge link: {printed:?}") };
    assert_eq!((ss.model_url.as_str(), ss.edges_for(&layout).unwrap()), ("/run/model/", Some(on.as_slice())));

    // From bytes, as the web app reads it: the model its directory holds.
    let from_dir = load_path(&model).unwrap();
    let from_bytes = load_hf_bytes_with_edges(&config, &[&weights], Some(&tok), Some(&edges)).unwrap();
    assert_eq!(from_bytes.edges, from_dir.edges);
    assert_eq!(last_logits(&from_bytes), last_logits(&from_dir));
    let e = load_hf_bytes_with_edges(&config, &[&weights], Some(&tok), None).err().unwrap().to_string();
    assert!(e.contains("edges.safetensors"), "{e}");
    let base = tiny_model(&d.join("base"));
    let (bc, bw) = (std::fs::read(base.join("config.json")).unwrap(), std::fs::read(base.join("model.safetensors")).unwrap());
    let e = load_hf_bytes_with_edges(&bc, &[&bw], None, Some(&edges)).err().unwrap().to_string();
    assert!(e.contains("not a standalone edge model"), "{e}");
    let e = load_hf_bytes_with_edges(&config, &[&weights], None, Some(&edges[..edges.len() / 2])).err().unwrap().to_string();
    assert!(e.contains("edges.safetensors"), "{e}");
    // A link's state, whatever its version, keeps markup as plain text.
    let mut st2 = es.clone();
    st2.prompt = "<script>x</script>".into();
    assert_eq!(EdgeLinkState::decode(&st2.encode("http://h/").0).unwrap(), st2);
    let _ = std::fs::remove_dir_all(&d);
}
