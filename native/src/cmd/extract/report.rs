//! `report.json` and `report.md`: every number of a run, measured on the held-out test split.

use carve_core::circuit::file::{self, CircuitFile};
use carve_core::circuit::Component;
use carve_core::metrics::Scores;
use serde_json::{json, Value};

/// The pruned model's side of the report (absent when the ablation cannot be folded).
pub struct Pruned {
    pub params: (usize, usize),
    pub test: Scores,
    /// Median seconds, full then pruned.
    pub latency: (f64, f64),
    /// FLOPs of one forward on the latency batch, full then pruned.
    pub flops: (f64, f64),
    pub latency_batch: (usize, usize),
    pub runs: usize,
    pub warmup: usize,
    pub layers: Vec<usize>,
}

pub struct Inputs<'a> {
    pub circuit: &'a CircuitFile,
    pub full_params: (usize, usize),
    pub test_full: &'a Scores,
    pub test_circuit: &'a Scores,
    pub test_kl: f64,
    pub pruned: Option<&'a Pruned>,
    pub extract_seconds: f64,
    pub backend: String,
    pub metric_title: &'a str,
    /// A learned method's training (its curves are drawn in training.svg).
    pub training: Option<Training>,
}

/// A learned method's steps and where its loss ended.
pub struct Training {
    pub steps: usize,
    pub final_loss: f64,
    pub final_kl: f64,
    /// The sparsity held at the last step and the target (methods trained to a target).
    pub reached: Option<(f64, f64)>,
    /// What `reached` measures: the expected sparsity, or the fraction of gates closed (edge-prune's
    /// `--hold open`).
    pub closed_gates: bool,
    /// The training KL was over the task's answer tokens (edge-prune's `--kl-over answers`).
    pub kl_over_answers: bool,
    /// The circuit is the gates left open, not a cut to the target (edge-prune's `--cut open`).
    pub cut_open: bool,
    /// The gates are edge-prune's (`--cut` applies), not node-prune's.
    pub edges: bool,
    /// The step whose update first held the count of open gates exactly (edge-prune's `--hold exact`).
    pub count_held_from: Option<u64>,
}

impl Training {
    /// What to say when the gates ended short of the target: edge-prune's cut to the target then
    /// removes edges that training still used; node-prune's circuit (the gates left open) and
    /// edge-prune's `--cut open` are denser than the target.
    pub fn shortfall(&self) -> Option<String> {
        let (got, target) = self.reached?;
        let what = if self.closed_gates { "gates closed" } else { "expected sparsity" };
        (got < target - SHORT_BY.min(0.1 * (1.0 - target))).then(|| {
            let short = format!("The gates had not reached the target when training ended: {what} {got:.3} against {target:.3}.");
            if self.cut_open {
                format!("{short} The circuit is the edges they left open (--cut open), so it is denser than the target.")
            } else if self.edges {
                format!(
                    "{short} Cutting to the target removed what training still used, so expect the circuit to be less \
                     faithful; train longer (--steps), aim lower, or keep the edges the training left open (--cut open; a \
                     finished run resumed with it is cut again without training)."
                )
            } else {
                // node-prune keeps every gate above 0.5; it never cuts to the target.
                format!(
                    "{short} The circuit is the components whose gates ended open, so it is denser than the target; \
                     train longer (--steps) or aim lower (--target-sparsity)."
                )
            }
        })
    }
}

/// How far below its target the held sparsity may end before the report says so: 0.02, or a tenth
/// of what the target keeps when that is less (at 0.98, 2.2% of the edges left open is short).
const SHORT_BY: f64 = 0.02;

fn scores(s: &Scores) -> Value {
    json!({ "accuracy": s.accuracy, "metric": s.metric, "answer_prob": s.answer_prob })
}

fn reduction(full: usize, pruned: usize) -> f64 {
    1.0 - pruned as f64 / full as f64
}

pub fn json(r: &Inputs) -> Value {
    let c = r.circuit;
    let (kh, km) = c.kept_counts();
    let kn = c.kept.iter().filter(|x| matches!(x, Component::Neuron { .. })).count();
    let total_heads: usize = c.shape.n_heads.iter().sum();
    let total_mlps = c.shape.d_ff.iter().filter(|&&f| f > 0).count();
    let (full, full_ne) = r.full_params;
    let mut v = json!({
        "format": "carve-report",
        "version": 1,
        "model": c.model,
        "task": c.task,
        "splits": {
            "seed": c.task.seed,
            "patching": c.task.n_patching,
            "discovery": c.task.n_discovery,
            "test": c.task.n_test,
        },
        "method": c.method,
        "ablation": c.ablation,
        "backend": r.backend,
        "params": {
            "full": full,
            "full_non_embedding": full_ne,
            "pruned": Value::Null,
            "pruned_non_embedding": Value::Null,
        },
        "test": {
            "n": c.task.n_test,
            "metric": c.task.metric,
            "full": scores(r.test_full),
            "circuit": scores(r.test_circuit),
            "pruned": Value::Null,
            "kl": r.test_kl,
        },
        "discovery": { "kl": c.method.discovery_kl },
        "latency_ms": { "full": Value::Null, "pruned": Value::Null },
        "extract_seconds": r.extract_seconds,
        "kept": { "heads": kh, "mlps": km, "neurons": kn, "components": c.kept },
        "total": { "heads": total_heads, "mlps": total_mlps, "neurons": c.shape.d_ff.iter().sum::<usize>() },
    });
    if let Some(h) = &r.training {
        v["training"] = json!({
            "steps": h.steps,
            "final_loss": h.final_loss,
            "final_kl": h.final_kl,
            "kl_over": if h.kl_over_answers { "answers" } else { "vocab" },
            "final_sparsity": h.reached.map(|r| r.0),
            "final_sparsity_of": h.reached.map(|_| if h.closed_gates { "closed gates" } else { "expected" }),
            "target_sparsity": h.reached.map(|r| r.1),
            "short_of_target": h.shortfall().is_some(),
            "count_held_from": h.count_held_from,
            "plot": "training.svg",
        });
    }
    if let Some(e) = &c.edges {
        v["edges"] = json!({
            "total": e.total,
            "target_sparsity": e.target_sparsity,
            "selected": e.selected,
            "closed": e.closed,
            "kept": e.kept.len(),
            "sparsity": e.sparsity,
        });
    }
    if let Some(p) = r.pruned {
        let (pa, pne) = p.params;
        v["params"]["pruned"] = json!(pa);
        v["params"]["pruned_non_embedding"] = json!(pne);
        v["params"]["reduction"] = json!(reduction(full, pa));
        v["params"]["reduction_non_embedding"] = json!(reduction(full_ne, pne));
        v["params"]["pruned_layers"] = json!(p.layers);
        v["test"]["pruned"] = scores(&p.test);
        v["latency_ms"] = json!({
            "full": p.latency.0 * 1e3,
            "pruned": p.latency.1 * 1e3,
            "speedup": p.latency.0 / p.latency.1,
            "flops_ratio": p.flops.0 / p.flops.1,
            "batch": p.latency_batch.0,
            "seq": p.latency_batch.1,
            "runs": p.runs,
            "warmup": p.warmup,
            "logits": "last position",
        });
    }
    v
}

pub fn markdown(r: &Inputs) -> String {
    let c = r.circuit;
    let (kh, km) = c.kept_counts();
    let total_heads: usize = c.shape.n_heads.iter().sum();
    let total_mlps = c.shape.d_ff.iter().filter(|&&f| f > 0).count();
    let mut s = String::new();
    let t = &c.task;
    s += &format!("# carve: {} circuit of {}\n\n", t.name, c.model.name);
    s += &format!(
        "- method: {} ({}), ablation: {}\n",
        c.method.name,
        c.method.hyperparameters.as_object().map_or(String::new(), |o| {
            o.iter().map(|(k, v)| format!("{k} {}", v.as_str().map_or(v.to_string(), str::to_string))).collect::<Vec<_>>().join(", ")
        }),
        c.ablation.kind
    );
    s += &format!("- splits (seed {}): patching {}, discovery {}, test {}\n", t.seed, t.n_patching, t.n_discovery, t.n_test);
    let kn = c.kept.iter().filter(|x| matches!(x, Component::Neuron { .. })).count();
    let neurons = if c.kept.iter().chain(&c.removed).any(|x| matches!(x, Component::Neuron { .. })) {
        format!(", {kn}/{} neurons", c.shape.d_ff.iter().sum::<usize>())
    } else {
        String::new()
    };
    s += &format!("- kept: {kh}/{total_heads} heads, {km}/{total_mlps} MLPs{neurons}\n");
    if let Some(e) = &c.edges {
        s += &format!(
            "- edges: {} of {} kept (sparsity {:.4}, target {}); the threshold selected {}, and {} reached nothing\n",
            e.kept.len(),
            e.total,
            e.sparsity,
            e.target_sparsity,
            e.selected,
            e.selected - e.kept.len()
        );
        if e.closed > 0 {
            s += &format!(
                "- the gates ended sparser than the target: {} of the target's {} edges had been closed by the training (gate at most ½) and were left out rather than reopened\n",
                e.closed,
                e.selected + e.closed
            );
        }
        let reopened = e.kept.iter().filter(|k| k.gate <= 0.5).count();
        if reopened > 0 && e.kept.len() < e.total {
            s += &format!(
                "- {reopened} of the kept edges had been closed by the training (gate at most ½) and were reopened to hit the target\n"
            );
        }
    }
    s += &format!("- model sha256: {}\n", c.model.sha256);
    s += &format!("- backend: {}\n", r.backend);
    s += &format!("- extraction: {:.1} s\n\n", r.extract_seconds);

    s += &format!("| test split ({}) | accuracy | {} | P(answer) |\n|---|---:|---:|---:|\n", t.n_test, r.metric_title);
    let row = |name: &str, x: &Scores| format!("| {name} | {:.3} | {:.3} | {:.3} |\n", x.accuracy, x.metric, x.answer_prob);
    s += &row("full model", r.test_full);
    s += &row("circuit (masked)", r.test_circuit);
    if let Some(p) = r.pruned {
        s += &row("pruned model", &p.test);
    }
    s += &format!("\nKL(full ‖ circuit) on the test split: {:.4} nats (discovery: {:.4})\n\n", r.test_kl, c.method.discovery_kl);

    let (full, full_ne) = r.full_params;
    s += "| | full | pruned | reduction |\n|---|---:|---:|---:|\n";
    match r.pruned {
        Some(p) => {
            let (pa, pne) = p.params;
            s += &format!("| parameters | {} | {} | {:.1}% |\n", millions(full), millions(pa), 100.0 * reduction(full, pa));
            s += &format!("| non-embedding | {} | {} | {:.1}% |\n", millions(full_ne), millions(pne), 100.0 * reduction(full_ne, pne));
            s += &format!(
                "| latency (ms) | {:.2} | {:.2} | {:.2}× faster |\n| FLOPs per forward | {:.2} G | {:.2} G | {:.2}× fewer |\n",
                p.latency.0 * 1e3,
                p.latency.1 * 1e3,
                p.latency.0 / p.latency.1,
                p.flops.0 / 1e9,
                p.flops.1 / 1e9,
                p.flops.0 / p.flops.1
            );
            s += &format!(
                "\nLatency: median of {} synchronised runs after {} warm-up runs, batch of {} test prompts padded to {} tokens, last-position logits.\n",
                p.runs, p.warmup, p.latency_batch.0, p.latency_batch.1
            );
        }
        None => {
            s += &format!("| parameters | {} | — | — |\n", millions(full));
            s += &format!("\nNo pruned model: {} ablation values depend on the prompt and cannot be folded into biases.\n", c.ablation.kind);
        }
    }
    if let Some(h) = &r.training {
        s += &format!(
            "\nTraining: {} steps, final loss {:.4} (KL {:.4}{} on the last minibatch with sampled gates).\n",
            h.steps,
            h.final_loss,
            h.final_kl,
            if h.kl_over_answers { " over the task's answer tokens" } else { "" }
        );
        if let Some(from) = h.count_held_from {
            s += &format!("The count of open gates was held at the target from step {from} on.\n");
        }
        if let Some(w) = h.shortfall() {
            s += &format!("\n**{w}**\n");
        }
        s += "\n![training](training.svg)\n";
    }
    s += &format!("\nKept components ({}): {}\n", c.kept.len(), names(&c.kept));
    s
}

fn millions(n: usize) -> String {
    format!("{:.2} M", n as f64 / 1e6)
}

fn names(v: &[Component]) -> String {
    let (heads, mlps) = file::count(v);
    if v.len() > 400 {
        let neurons = v.len() - heads - mlps;
        return format!("{heads} heads, {mlps} MLPs, {neurons} neurons (see circuit.json)");
    }
    v.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(" ")
}
