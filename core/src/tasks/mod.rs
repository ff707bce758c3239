//! Tasks: the prompts a circuit is found for, and what counts as the right answer.
//!
//! A [`Task`] is a list of [`Example`]s already in token ids (the model's tokenizer is applied
//! once, when the task is built), plus how to score them ([`MetricKind`]). Built-in generators
//! ([`ioi`], [`acronyms`], [`greater_than`]) are deterministic for a seed and drop the names, words
//! and answers that the tokenizer does not split the way the task needs, reporting each filter in
//! [`Task::filters`]. User tasks come from JSONL ([`jsonl`]). [`split`] cuts a task into the
//! patching, discovery and test splits of DESIGN.md ("Data splits").

pub mod acronyms;
pub mod greater_than;
pub mod ioi;
pub mod jsonl;
pub mod split;

pub use split::{Splits, SplitSizes};

use crate::model::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The built-in generators, by the name `carve eval --task` takes.
pub const BUILTIN: [&str; 3] = ["ioi", "acronyms", "greater-than"];

/// One prompt and its answer, in token ids.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Example {
    /// The prompt; metrics are read at its last position.
    pub prompt: Vec<u32>,
    /// The same prompt with the task's information destroyed (same length), for resample ablation.
    pub corrupted: Option<Vec<u32>>,
    pub target: Target,
    /// Where it came from, for people: "ABBA, template 4", "line 7".
    pub source: String,
}

/// What a right answer is.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// One next token; `wrong` is the distractor of the logit difference (IOI: the subject).
    Token { answer: u32, wrong: Option<u32> },
    /// Greater-than: any two-digit year above `yy` (0..=99), tokenized as [`YearTokens`] says.
    Year { yy: u8 },
}

/// The task's own metric, besides accuracy and the answer's probability.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// logit(answer) − logit(wrong).
    LogitDiff,
    /// P(year > YY) − P(year < YY).
    ProbDiff,
    /// log P(answer): for user tasks that give no distractor.
    LogProb,
}

impl MetricKind {
    /// The key used in JSON output.
    pub fn key(self) -> &'static str {
        match self {
            MetricKind::LogitDiff => "logit_diff",
            MetricKind::ProbDiff => "prob_diff",
            MetricKind::LogProb => "log_prob",
        }
    }
    /// A column title.
    pub fn title(self) -> &'static str {
        match self {
            MetricKind::LogitDiff => "logit diff",
            MetricKind::ProbDiff => "prob diff",
            MetricKind::LogProb => "log P(answer)",
        }
    }
}

/// How the tokenizer writes the two digits that end a year.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum YearTokens {
    /// One token per two-digit number (GPT-2: " 17" "32"): `ids[n]` is "00".."99".
    TwoDigit(Vec<u32>),
    /// One token per digit (SmolLM2, Llama 3): `ids[d]` is "0".."9"; a year is two next-token steps.
    Digits(Vec<u32>),
}

/// What a tokenizer filter kept and dropped (names, words, nouns, generated prompts).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Filter {
    pub what: String,
    pub kept: usize,
    pub total: usize,
    /// What was dropped and why, e.g. `" Christopher" (2 tokens)`; at most 20 listed.
    pub dropped: Vec<String>,
}

impl std::fmt::Display for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} of {} kept", self.what, self.kept, self.total)?;
        if !self.dropped.is_empty() {
            // A line stays readable: the first few, then a count.
            let shown = self.dropped.len().min(8);
            let more = (self.total - self.kept).saturating_sub(shown);
            write!(f, "; dropped {}", self.dropped[..shown].join(", "))?;
            if more > 0 {
                write!(f, " and {more} more")?;
            }
        }
        Ok(())
    }
}

/// A task: examples in token ids and how to score them. Serialized as a run's `task.json` (the
/// test split), which the web app scores circuits on without a tokenizer-side generator.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Task {
    /// "ioi", "acronyms", "greater-than", or the file's name.
    pub name: String,
    pub metric: MetricKind,
    /// Set for greater-than (every example is a `Target::Year`).
    pub years: Option<YearTokens>,
    pub examples: Vec<Example>,
    /// What the tokenizer filters removed while generating.
    #[serde(default)]
    pub filters: Vec<Filter>,
}

impl Task {
    /// The tokens every answer is made of, when the task has a closed set of them (greater-than's
    /// year tokens: "00".."99", or the digits "0".."9" where a year is two steps): what a KL over
    /// the answers compares. None for tasks whose answers are open (IOI's names, user tasks).
    pub fn answer_vocab(&self) -> Option<Vec<u32>> {
        match &self.years {
            Some(YearTokens::TwoDigit(v)) | Some(YearTokens::Digits(v)) => Some(v.clone()),
            None => None,
        }
    }

    /// Reads a `task.json`, checking what scoring relies on: examples present, year targets exactly
    /// when the task has year tokens, ids below `vocab`.
    pub fn from_json(text: &str, vocab: usize) -> Result<Task> {
        let t: Task = serde_json::from_str(text).map_err(|e| crate::Error::Input(format!("not a carve task file: {e}")))?;
        if t.examples.is_empty() {
            return Err(crate::Error::Input(format!("task file `{}` has no examples", t.name)));
        }
        let year_ids = match &t.years {
            Some(YearTokens::TwoDigit(v)) | Some(YearTokens::Digits(v)) => v.as_slice(),
            None => &[],
        };
        if year_ids.iter().any(|&id| id as usize >= vocab) {
            return Err(crate::Error::Input(format!("task file `{}`: its year tokens do not fit this model", t.name)));
        }
        for (i, e) in t.examples.iter().enumerate() {
            let is_year = matches!(e.target, Target::Year { .. });
            let mut ids: Vec<u32> = e.prompt.clone();
            ids.extend(e.corrupted.iter().flatten());
            if let Target::Token { answer, wrong } = e.target {
                ids.push(answer);
                ids.extend(wrong);
            }
            let bad = e.prompt.is_empty() || is_year != t.years.is_some() || ids.iter().any(|&id| id as usize >= vocab);
            if bad {
                return Err(crate::Error::Input(format!("task file `{}`: example {i} does not fit this model or task", t.name)));
            }
        }
        Ok(t)
    }
}

/// Options of the built-in generators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenOptions {
    /// How many distinct examples to make.
    pub n: usize,
    pub seed: u64,
    /// Put the tokenizer's BOS in front of every prompt.
    pub bos: bool,
}

/// Generates built-in task `name` (one of [`BUILTIN`]) for tokenizer `tok`.
pub fn generate(name: &str, tok: &Tokenizer, opts: &GenOptions) -> Result<Task> {
    match name {
        "ioi" => ioi::generate(tok, opts),
        "acronyms" => acronyms::generate(tok, opts),
        "greater-than" | "greater_than" | "greaterthan" => greater_than::generate(tok, opts),
        _ => Err(Error::Input(format!(
            "unknown task `{name}`: the built-in tasks are {}, or give a .jsonl file",
            BUILTIN.join(", ")
        ))),
    }
}

/// A small, fast, seedable PRNG (splitmix64). Its output is fixed by this code, so a seed gives
/// the same tasks and splits on every platform and in every version of the dependencies.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// An independent stream for one purpose (generation, splitting) under one seed.
    pub fn stream(seed: u64, purpose: u64) -> Rng {
        let mut r = Rng(purpose.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Rng(seed ^ r.next_u64())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by rejection, so no value is favoured.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below(0)");
        let n = n as u64;
        let zone = u64::MAX - u64::MAX % n;
        loop {
            let v = self.next_u64();
            if v < zone {
                return (v % n) as usize;
            }
        }
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len())]
    }

    /// Fisher–Yates.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }

    /// `k` distinct indices below `n`, in the order drawn.
    pub fn distinct(&mut self, n: usize, k: usize) -> Vec<usize> {
        assert!(k <= n, "Rng::distinct: {k} of {n}");
        let mut out: Vec<usize> = Vec::with_capacity(k);
        while out.len() < k {
            let i = self.below(n);
            if !out.contains(&i) {
                out.push(i);
            }
        }
        out
    }
}

/// The id of `text` when the tokenizer makes exactly one token of it.
pub(crate) fn one_token(tok: &Tokenizer, text: &str) -> Result<Option<u32>> {
    let ids = tok.encode(text, false)?;
    Ok(if ids.len() == 1 { Some(ids[0]) } else { None })
}

/// `"text" (3 tokens: "a" "b" "c")`, for filter reports and error messages.
pub(crate) fn describe_split(tok: &Tokenizer, text: &str) -> String {
    match tok.encode(text, false) {
        Ok(ids) => {
            let parts: Vec<String> = ids.iter().map(|&i| format!("{:?}", tok.decode(&[i]).unwrap_or_default())).collect();
            format!("{text:?} ({} tokens: {})", ids.len(), parts.join(" "))
        }
        Err(e) => format!("{text:?} ({e})"),
    }
}

/// The prompt's ids with the BOS in front when asked.
pub(crate) fn with_bos(tok: &Tokenizer, bos: bool, ids: Vec<u32>) -> Result<Vec<u32>> {
    if !bos {
        return Ok(ids);
    }
    let b = tok.bos_id.ok_or_else(|| Error::Tokenizer("a BOS token was asked for, but this tokenizer has none".into()))?;
    let mut out = Vec::with_capacity(ids.len() + 1);
    out.push(b);
    out.extend(ids);
    Ok(out)
}

/// Keeps the items whose text `ok` accepts, recording the rest (with the reason) in a [`Filter`].
pub(crate) fn filter_list<'a, T>(
    what: &str,
    items: &[&'a str],
    mut ok: impl FnMut(&'a str) -> Result<std::result::Result<T, String>>,
) -> Result<(Vec<T>, Filter)> {
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    let mut n_dropped = 0;
    for &s in items {
        match ok(s)? {
            Ok(t) => kept.push(t),
            Err(why) => {
                n_dropped += 1;
                if dropped.len() < 20 {
                    dropped.push(why);
                }
            }
        }
    }
    let f = Filter { what: what.into(), kept: items.len() - n_dropped, total: items.len(), dropped };
    Ok((kept, f))
}

/// Runs `make` until `n` distinct prompts are made, giving up after many repeats: a generator whose
/// filtered lists are too small to make `n` different prompts says so instead of looping.
pub(crate) fn collect_distinct(
    task: &str,
    n: usize,
    mut make: impl FnMut(usize) -> Result<Option<Example>>,
) -> Result<(Vec<Example>, usize)> {
    let mut out: Vec<Example> = Vec::with_capacity(n);
    let mut seen = std::collections::HashSet::new();
    let mut rejected = 0usize;
    // Give up after many tries in all, or many in a row that make nothing new (the lists are
    // nearly exhausted).
    let budget = 100 * n + 1000;
    let (mut tries, mut since_new) = (0, 0);
    while out.len() < n {
        tries += 1;
        since_new += 1;
        if tries > budget || since_new > 20_000 {
            return Err(Error::Input(format!(
                "{task}: could make only {} distinct prompts of the {n} asked for with this tokenizer \
                 ({rejected} candidates did not tokenize as the task needs): ask for fewer",
                out.len()
            )));
        }
        match make(out.len())? {
            Some(e) => {
                if seen.insert(e.prompt.clone()) {
                    out.push(e);
                    since_new = 0;
                }
            }
            None => rejected += 1,
        }
    }
    Ok((out, rejected))
}
