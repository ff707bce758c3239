//! `carve tasks show`: a task's prompts, answers, corrupted prompts and token splits as the model's
//! tokenizer makes them, with the model's own prediction for each. Also the task and split options
//! that `carve eval` shares.

use crate::backend_pick::{dispatch, BackendChoice, Job};
use crate::source;
use anyhow::{anyhow, bail, Context, Result};
use carve_core::backend::Backend;
use carve_core::metrics::{evaluate, EvalOptions, ExampleScore, Report};
use carve_core::model::load::LoadedModel;
use carve_core::model::tokenizer::Tokenizer;
use carve_core::tasks::{self, jsonl, Example, GenOptions, SplitSizes, Splits, Target, Task, YearTokens};
use std::path::{Path, PathBuf};

/// How a task is made and split; shared by `eval` and `tasks show`.
#[derive(clap::Args, Clone, Debug)]
pub struct TaskArgs {
    /// Seed of the generators and of the split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Examples in the patching split (mean ablation values) [default: 100, or in proportion].
    #[arg(long)]
    pub patching: Option<usize>,
    /// Examples in the discovery split (extraction decisions and training) [default: 100].
    #[arg(long)]
    pub discovery: Option<usize>,
    /// Examples in the held-out test split (every reported number) [default: 200].
    #[arg(long)]
    pub test: Option<usize>,
    /// The patching split as a JSONL file, used in file order (with --discovery-file, --test-file).
    #[arg(long, requires_all = ["discovery_file", "test_file"], conflicts_with_all = ["patching", "discovery", "test"])]
    pub patching_file: Option<PathBuf>,
    /// The discovery split as a JSONL file.
    #[arg(long, requires_all = ["patching_file", "test_file"])]
    pub discovery_file: Option<PathBuf>,
    /// The test split as a JSONL file.
    #[arg(long, requires_all = ["patching_file", "discovery_file"])]
    pub test_file: Option<PathBuf>,
    /// Put the model's BOS token in front of every prompt.
    #[arg(long)]
    pub bos: bool,
}

/// A task cut into splits, with what was decided along the way.
pub struct Prepared {
    pub task: Task,
    pub splits: Splits,
    /// Sizes scaled to a small file, examples left out, and the like.
    pub notes: Vec<String>,
}

impl TaskArgs {
    fn requested(&self) -> SplitSizes {
        let d = SplitSizes::default();
        SplitSizes {
            patching: self.patching.unwrap_or(d.patching),
            discovery: self.discovery.unwrap_or(d.discovery),
            test: self.test.unwrap_or(d.test),
        }
    }

    /// Refuses a wrong combination of task and files before the model is loaded.
    pub fn check(&self, name: Option<&str>, n: Option<usize>) -> Result<()> {
        let files = self.patching_file.is_some();
        match name {
            Some(name) if files => bail!("give either a task ({name}) or the three split files, not both"),
            None if !files => bail!("give a task (ioi, acronyms, greater-than or a .jsonl file) or --patching-file, --discovery-file and --test-file"),
            Some(name) if !is_builtin(name) && !Path::new(name).exists() => {
                bail!("unknown task `{name}`: the built-in tasks are {}, or give a .jsonl file that exists", tasks::BUILTIN.join(", "))
            }
            _ if files && n.is_some() => bail!("--n does not apply to split files: their sizes are their line counts"),
            _ if files => Ok(()),
            _ => Ok(self.requested().check(n)?),
        }
    }

    /// The task `name` (built-in or a JSONL file) with `n` examples in all (None: the split sizes'
    /// total, or a file's length when shorter), or the three split files. `n_ctx` is the model's
    /// context: a file with a longer prompt is refused at load, each such line named.
    pub fn prepare(&self, name: Option<&str>, n: Option<usize>, tok: &Tokenizer, n_ctx: usize) -> Result<Prepared> {
        if let (Some(p), Some(d), Some(t)) = (&self.patching_file, &self.discovery_file, &self.test_file) {
            if let Some(name) = name {
                bail!("give either a task ({name}) or the three split files, not both");
            }
            if n.is_some() {
                bail!("--n does not apply to split files: their sizes are their line counts");
            }
            let [p, d, t] = [p, d, t].map(|f| read_jsonl(f, tok, self.bos, n_ctx));
            let (task, splits) = Splits::from_tasks(p?, d?, t?)?;
            return Ok(Prepared { task, splits, notes: vec![] });
        }
        let name = name.ok_or_else(|| anyhow!("give a task (ioi, acronyms, greater-than or a .jsonl file) or --patching-file, --discovery-file and --test-file"))?;
        let requested = self.requested();
        if is_builtin(name) {
            let plan = requested.plan_generated(n)?;
            let task = tasks::generate(name, tok, &GenOptions { n: plan.total, seed: self.seed, bos: self.bos })?;
            let splits = Splits::new(task.examples.clone(), plan.sizes, self.seed)?;
            return Ok(Prepared { task, splits, notes: plan.notes });
        }
        let path = Path::new(name);
        if !path.exists() {
            bail!("unknown task `{name}`: the built-in tasks are {}, or give a .jsonl file that exists", tasks::BUILTIN.join(", "));
        }
        let task = read_jsonl(path, tok, self.bos, n_ctx)?;
        let plan = requested.plan_file(n, task.examples.len(), &path.display().to_string())?;
        let splits = Splits::new(task.examples.clone(), plan.sizes, self.seed)?;
        Ok(Prepared { task, splits, notes: plan.notes })
    }
}

fn is_builtin(name: &str) -> bool {
    tasks::BUILTIN.contains(&name) || matches!(name, "greater_than" | "greaterthan")
}

fn read_jsonl(path: &Path, tok: &Tokenizer, bos: bool, n_ctx: usize) -> Result<Task> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(jsonl::parse(&text, &path.display().to_string(), tok, bos, n_ctx)?)
}

pub fn tokenizer(m: &LoadedModel) -> Result<&Tokenizer> {
    m.tokenizer.as_ref().ok_or_else(|| anyhow!("{} has no tokenizer (no tokenizer.json): tasks need one", m.source))
}

#[derive(clap::Subcommand)]
pub enum Tasks {
    /// Print a task's prompts, answers, corrupted prompts and token splits, with the model's predictions.
    Show(ShowArgs),
}

#[derive(clap::Args)]
pub struct ShowArgs {
    /// ioi, acronyms, greater-than, or a JSONL file.
    task: Option<String>,
    /// A model directory, a GGUF file, or a hub name (its tokenizer builds the task).
    #[arg(long)]
    model: String,
    /// How many examples to print.
    #[arg(long, default_value_t = 5)]
    n: usize,
    /// Examples in all, as `carve eval --n` takes it (the same splits as that eval).
    #[arg(long)]
    total: Option<usize>,
    /// Which split to print from.
    #[arg(long, value_enum, default_value = "test")]
    split: Which,
    #[command(flatten)]
    task_args: TaskArgs,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendChoice,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Which {
    Patching,
    Discovery,
    Test,
}

pub fn run(t: Tasks) -> Result<()> {
    match t {
        Tasks::Show(a) => show(a),
    }
}

fn show(a: ShowArgs) -> Result<()> {
    a.task_args.check(a.task.as_deref(), a.total)?;
    let m = source::load(&a.model)?;
    let tok = tokenizer(&m)?;
    let prep = a.task_args.prepare(a.task.as_deref(), a.total, tok, m.config.n_ctx)?;
    let (task, splits) = (&prep.task, &prep.splits);
    let (which, part) = match a.split {
        Which::Patching => ("patching", &splits.patching),
        Which::Discovery => ("discovery", &splits.discovery),
        Which::Test => ("test", &splits.test),
    };
    let shown: Vec<Example> = part.iter().take(a.n).cloned().collect();
    println!("{} · {which} split, {} of {} shown · splits {} · seed {} · metric {}", task.name, shown.len(), part.len(), splits.sizes(), a.task_args.seed, task.metric.title());
    for f in &task.filters {
        println!("filter  {f}");
    }
    for n in &prep.notes {
        println!("note    {n}");
    }
    if let Some(YearTokens::Digits(_)) = &task.years {
        println!("note    this tokenizer writes one token per digit: P(year > YY) takes two next-token steps");
    }
    if shown.is_empty() {
        return Ok(());
    }
    let report = dispatch(a.backend, ShowJob { m: &m, task, examples: &shown })?;
    for (i, (e, s)) in shown.iter().zip(&report.full_examples).enumerate() {
        println!();
        println!("[{}] {}", i + 1, e.source);
        println!("  prompt     {:?}", tok.decode(&e.prompt)?);
        println!("  tokens     {} {}", e.prompt.len(), pieces(tok, &e.prompt)?);
        match &e.target {
            Target::Token { answer, wrong } => {
                let mut line = format!("  answer     {:?} ({answer})", tok.decode(&[*answer])?);
                if let Some(w) = wrong {
                    line.push_str(&format!("   wrong {:?} ({w})", tok.decode(&[*w])?));
                }
                println!("{line}");
            }
            Target::Year { yy } => println!("  answer     any year above {yy:02}"),
        }
        if let Some(c) = &e.corrupted {
            println!("  corrupted  {:?}", tok.decode(c)?);
            println!("  tokens     {} {}", c.len(), pieces(tok, c)?);
        }
        println!("  model      {}", prediction(tok, task, s)?);
    }
    Ok(())
}

/// `"The" " war" …`: each token as the tokenizer decodes it alone.
fn pieces(tok: &Tokenizer, ids: &[u32]) -> Result<String> {
    Ok(ids.iter().map(|&i| tok.decode(&[i]).map(|s| format!("{s:?}"))).collect::<Result<Vec<_>, _>>()?.join(" "))
}

fn prediction(tok: &Tokenizer, task: &Task, s: &ExampleScore) -> Result<String> {
    let top: String = s.predicted.iter().map(|&i| tok.decode(&[i])).collect::<Result<Vec<_>, _>>()?.concat();
    let what = if task.years.is_some() { "P(year > YY)" } else { "P(answer)" };
    Ok(format!(
        "predicts {top:?} ({}) · {what} {:.3} · {} {:.3}",
        if s.correct { "right" } else { "wrong" },
        s.answer_prob,
        task.metric.title(),
        s.metric
    ))
}

struct ShowJob<'a> {
    m: &'a LoadedModel,
    task: &'a Task,
    examples: &'a [Example],
}

impl Job for ShowJob<'_> {
    type Out = Report;
    fn run<B: Backend>(self, be: &B) -> Result<Report> {
        let model = self.m.upload(be)?;
        Ok(pollster::block_on(evaluate(&model, be, self.task, self.examples, None, &EvalOptions::default()))?)
    }
}
