//! The sweep's progress: a bar with the layer, the candidates left, KL_cur and an ETA; the state
//! saved after every decision batch; Ctrl-C asks the sweep to stop after the batch it is in (a
//! second Ctrl-C quits at once: the last saved state still resumes the run).

use super::rundir::{RunDir, SavedState};
use carve_core::extract::edge_prune::{EdgeProgress, EdgePruneState, EdgeStepRecord};
use carve_core::extract::node_prune::{NodePruneState, StepInfo, TrainProgress};
use carve_core::extract::{AblateState, Flow, Progress, ProgressInfo};
use indicatif::{ProgressBar, ProgressStyle};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub struct Hook<'a> {
    pub bar: ProgressBar,
    stop: Arc<AtomicBool>,
    dir: &'a RunDir,
    model_sha256: String,
    seconds_before: f64,
    started: Instant,
    /// Stop after this many decision batches (tests simulate an interruption with it).
    stop_after: Option<usize>,
    batches: usize,
    last_layer: Option<usize>,
    /// A failed save stops the sweep; the error is reported after it returns.
    pub error: Option<anyhow::Error>,
    pub interrupted: bool,
}

/// Sets the Ctrl-C handler once per process.
fn ctrl_c_flag() -> Arc<AtomicBool> {
    static FLAG: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        let res = ctrlc::set_handler(move || {
            if f.swap(true, Ordering::SeqCst) {
                eprintln!("\nstopped (the state saved after the last decision batch resumes the run)");
                std::process::exit(130);
            }
            eprintln!("\nCtrl-C: stopping after this decision batch (press again to quit now)…");
        });
        if let Err(e) = res {
            eprintln!("warning: Ctrl-C will not stop cleanly: {e}");
        }
        flag
    })
    .clone()
}

impl<'a> Hook<'a> {
    pub fn new(dir: &'a RunDir, model_sha256: String, seconds_before: f64, stop_after: Option<usize>) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} candidates · ETA {eta} · {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        Hook {
            bar,
            stop: ctrl_c_flag(),
            dir,
            model_sha256,
            seconds_before,
            started: Instant::now(),
            stop_after,
            batches: 0,
            last_layer: None,
            error: None,
            interrupted: false,
        }
    }

    pub fn seconds(&self) -> f64 {
        self.seconds_before + self.started.elapsed().as_secs_f64()
    }
}

impl Progress for Hook<'_> {
    fn update(&mut self, info: &ProgressInfo, state: &AblateState) -> Flow {
        let saved = SavedState::new(self.model_sha256.clone(), self.seconds(), state.clone());
        if let Err(e) = self.dir.save_state(&saved) {
            self.error = Some(e);
            return Flow::Stop;
        }
        if self.bar.length() != Some(info.total as u64) {
            // First batch of this process: the ETA counts from here, not from a resumed run's start.
            self.bar.set_length(info.total as u64);
            self.bar.set_position((info.total - info.left) as u64);
            self.bar.reset_eta();
        }
        self.bar.set_position((info.total - info.left) as u64);
        let msg = format!("L{} · {} left in layer · KL {:.5} · removed {}", info.layer, info.left_in_layer, info.kl, info.removed);
        // Without a terminal the bar is hidden: log a line per finished layer instead.
        if self.bar.is_hidden() && info.left_in_layer == 0 && self.last_layer != Some(info.layer) {
            self.last_layer = Some(info.layer);
            eprintln!("[{:>6.0} s] {}/{} candidates · {msg}", self.seconds(), info.total - info.left, info.total);
        }
        self.bar.set_message(msg);
        self.batches += 1;
        if self.stop.load(Ordering::SeqCst) || self.stop_after.is_some_and(|n| self.batches >= n) {
            self.interrupted = true;
            return Flow::Stop;
        }
        Flow::Continue
    }
}

/// node-prune's progress: a bar over the steps with loss, KL and the kept fractions; the state
/// saved at most every 20 seconds of training, at the end and whenever the run stops.
pub struct TrainHook<'a> {
    pub inner: Hook<'a>,
    last_save: Option<Instant>,
}

impl<'a> TrainHook<'a> {
    pub fn new(inner: Hook<'a>) -> Self {
        inner.bar.set_style(
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30.cyan/blue} step {pos}/{len} · ETA {eta} · {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        TrainHook { inner, last_save: None }
    }
}

impl TrainHook<'_> {
    /// After step `step` of `total`: saves the state (`saved`, made only when it is written) and
    /// shows `msg`.
    fn step(&mut self, step: u64, total: u64, msg: String, saved: impl FnOnce(String, f64) -> SavedState) -> Flow {
        let h = &mut self.inner;
        h.batches += 1;
        let stop = h.stop.load(Ordering::SeqCst) || h.stop_after.is_some_and(|n| h.batches >= n);
        let done = step >= total;
        if stop || done || self.last_save.is_none_or(|t| t.elapsed().as_secs_f64() >= 20.0) {
            if let Err(e) = h.dir.save_state(&saved(h.model_sha256.clone(), h.seconds())) {
                h.error = Some(e);
                return Flow::Stop;
            }
            self.last_save = Some(Instant::now());
        }
        if h.bar.length() != Some(total) {
            h.bar.set_length(total);
            h.bar.set_position(step.saturating_sub(1));
            h.bar.reset_eta();
        }
        h.bar.set_position(step);
        if h.bar.is_hidden() && (step.is_multiple_of(25) || done) {
            eprintln!("[{:>6.0} s] step {step}/{total} · {msg}", h.seconds());
        }
        h.bar.set_message(msg);
        if stop && !done {
            h.interrupted = true;
            return Flow::Stop;
        }
        Flow::Continue
    }
}

impl TrainProgress for TrainHook<'_> {
    fn update(&mut self, info: &StepInfo, state: &NodePruneState) -> Flow {
        let r = &info.record;
        let kept: Vec<String> = r.kept.iter().map(|(k, f)| format!("{k} {:.0}%", 100.0 * f)).collect();
        let msg = format!("loss {:.4} · KL {:.4} · kept {}", r.loss, r.kl, kept.join(" "));
        self.step(r.step, info.total, msg, |sha, secs| SavedState::node_prune(sha, secs, state.clone()))
    }
}

impl EdgeProgress for TrainHook<'_> {
    fn update(&mut self, r: &EdgeStepRecord, state: &EdgePruneState) -> Flow {
        let msg = format!(
            "loss {:.4} · KL {:.4} · sparsity {:.3} (target {:.3}) · edges kept {:.1}%",
            r.loss,
            r.kl,
            r.sparsity,
            r.target,
            100.0 * r.kept
        );
        self.step(r.step, state.options.steps, msg, |sha, secs| SavedState::edge_prune(sha, secs, state.clone()))
    }
}
