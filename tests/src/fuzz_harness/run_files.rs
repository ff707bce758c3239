//! The files of a run, read back as the program reads them for `fixtures/tiny-llama` (2 layers of
//! 4 heads, head size 16, d_model 64, MLP width 128): `circuit.json` (`run`/`eval --circuit`,
//! `link --full`), `means.safetensors` (`run --means`), `state.json` (`extract --resume`) and
//! share links (`link --decode`, the web app).

use carve_core::backend::cpu::CpuBackend;
use carve_core::circuit::{means, CircuitFile, EdgeLinkState, Link, LinkState, ModelShape};
use carve_core::extract::{ablate, AblateData, AblateState, AblationKind, RunOptions};
use carve_core::model::load::{load_path, weights_sha256};
use carve_core::model::Model;

/// tiny-llama on the CPU backend, with what the readers check against.
pub struct TinyRun {
    pub be: CpuBackend,
    pub model: Model<CpuBackend>,
    pub shape: ModelShape,
    pub sha256: String,
    /// Prompts the resumed sweeps run on (the state seeds were saved on them).
    pub data: AblateData,
}

thread_local! {
    static TINY: TinyRun = TinyRun::load();
}

impl TinyRun {
    fn load() -> TinyRun {
        let dir = crate::fixture("tiny-llama");
        let m = load_path(&dir).expect("tiny-llama loads");
        let be = CpuBackend::new();
        let shape = ModelShape::of(&m.weights.layers, |t| t.shape[0]);
        let model = Model::upload(&be, m.config, &m.weights).expect("tiny-llama uploads");
        let sha256 = weights_sha256(&dir).expect("tiny-llama hashes");
        let data = AblateData {
            discovery: vec![vec![1, 5, 9, 20], vec![1, 7, 3, 44], vec![1, 12, 60, 8]],
            patching: vec![vec![1, 8, 9, 10], vec![1, 30, 31, 32]],
            corrupted: Some(vec![vec![1, 5, 99, 20], vec![1, 7, 98, 44], vec![1, 12, 97, 8]]),
        };
        TinyRun { be, model, shape, sha256, data }
    }

    /// Runs `f` on this thread's tiny-llama.
    pub fn with<R>(f: impl FnOnce(&TinyRun) -> R) -> R {
        TINY.with(f)
    }
}

/// Input: a `circuit.json`. What loads is checked against tiny-llama (its weights' sha256, its
/// shape), turned into masks and a full-model share link, and written back out.
pub fn circuit_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(c) = CircuitFile::from_json(text) else { return };
    TinyRun::with(|t| {
        let _ = c.check_model(&t.sha256);
        let _ = c.masks(&t.shape);
    });
    let _ = c.shape.masks_without(&c.removed);
    let _ = LinkState::mask_for(&c.shape, &c.removed);
    let _ = serde_json::from_value::<AblationKind>(serde_json::json!(c.ablation.kind));
    let _ = c.kept_counts();
    let again = CircuitFile::from_json(&c.to_json());
    assert!(again.is_ok(), "a circuit file that loaded does not load once written again: {:?}", again.err());
}

/// Input: a `means.safetensors`, read for tiny-llama; what loads is written again and must load.
pub fn means(data: &[u8]) {
    TinyRun::with(|t| {
        let (hd, d) = (t.model.config.head_dim, t.model.config.d_model);
        let Ok(v) = means::from_bytes(data, &t.shape, hd, d) else { return };
        let bytes = means::to_bytes(&v).expect("means read from a file are position-independent");
        assert!(means::from_bytes(&bytes, &t.shape, hd, d).is_ok(), "means that loaded do not load once written again");
    });
}

/// Input: a run's `state.json` (`{"format": "carve-extract-state", "model_sha256", …, "ablate": {…}}`)
/// or a bare sweep state. The run folder's wrapper is read by the `carve` program itself (not a
/// library); here its `ablate` part goes through the library's reader and resumes a sweep on
/// tiny-llama, with the options it names.
pub fn state_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(text) else { return };
    let inner = v.get("ablate").map_or_else(|| text.to_string(), |a| a.to_string());
    let Ok(st) = AblateState::from_json(&inner) else { return };
    TinyRun::with(|t| {
        let opts = st.options.clone();
        let run = RunOptions::default();
        let _ = pollster::block_on(ablate(&t.model, &t.be, &t.data, &opts, &run, Some(st), &mut ()));
    });
}

/// Input: a share link (or any text), decoded as it is and, so that the fuzzer gets past the
/// checksum, also with the input as the payload of a correctly signed link. A link that decodes is
/// applied to tiny-llama and encoded again, and the new link must decode to the same state.
pub fn link(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check_link(text);
    }
    check_link(&signed_link(data));
    check_link(&signed_edge_link(data));
}

/// `carve=2.<payload>..<check>` (an edge link without its mask) with `payload` as the JSON inside.
pub fn signed_edge_link(payload: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let sum = Sha256::new().chain_update(payload).chain_update([0u8]).finalize();
    format!("carve=2.{}..{}", B64.encode(payload), B64.encode(&sum[..6]))
}

/// `carve=1.<payload>.<check>` with `payload` as the JSON inside.
pub fn signed_link(payload: &[u8]) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    use sha2::{Digest, Sha256};
    format!("carve=1.{}.{}", B64.encode(payload), B64.encode(&Sha256::digest(payload)[..6]))
}

fn check_link(text: &str) {
    if let Ok(Link::Edges(e)) = Link::decode(text) {
        // tiny-llama's own edge layout: 82 edges.
        let layout = carve_core::mask::EdgeLayout::new(&[4, 4], &[2, 2], &[true, true], false).expect("tiny-llama's layout");
        assert_eq!(e.edges_for(&layout).is_ok(), e.n_edges == 82);
        let (again, whole) = e.encode("http://127.0.0.1:8080/");
        if whole || e.edges.is_none() {
            assert_eq!(EdgeLinkState::decode(&again).ok().as_ref(), Some(&e), "a decoded edge link does not survive encoding");
        }
        return;
    }
    let Ok(s) = LinkState::decode(text) else { return };
    TinyRun::with(|t| {
        let _ = s.removed(&t.shape);
    });
    let _ = LinkState::task_label(&s.task);
    let again = LinkState::decode(&s.encode("http://127.0.0.1:8080/"));
    assert_eq!(again.as_ref().ok(), Some(&s), "a decoded link does not survive encoding: {again:?}");
}

/// `state.json` files as `carve extract` saves them after each decision batch of a sweep on
/// tiny-llama, for each ablation kind (the seeds of `state_json`).
pub fn state_seeds() -> Vec<Vec<u8>> {
    use carve_core::extract::{AblateOptions, Flow, ProgressInfo};
    let mut out = Vec::new();
    TinyRun::with(|t| {
        let kinds = [AblationKind::Zero, AblationKind::Mean, AblationKind::Resample];
        for (i, ablation) in kinds.into_iter().enumerate() {
            let opts = AblateOptions { alpha: 0.05, ablation, mlps: true, neurons: i == 0 };
            let mut saved: Vec<Vec<u8>> = Vec::new();
            let mut hook = |_: &ProgressInfo, st: &AblateState| {
                let file = serde_json::json!({
                    "format": "carve-extract-state",
                    "model_sha256": t.sha256,
                    "extract_seconds": 1.5,
                    "ablate": serde_json::from_str::<serde_json::Value>(&st.to_json()).expect("state JSON"),
                });
                saved.push(serde_json::to_vec_pretty(&file).expect("JSON"));
                if saved.len() >= 2 { Flow::Stop } else { Flow::Continue }
            };
            pollster::block_on(ablate(&t.model, &t.be, &t.data, &opts, &RunOptions::default(), None, &mut hook))
                .expect("the sweep runs on tiny-llama");
            out.extend(saved);
        }
    });
    out
}
