//! carve: find the circuit a language model uses for a task and cut the model down to it.

mod alloc;
mod backend_pick;
mod circuit_eval;
mod cmd;
mod measure;
mod source;
mod timed;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "carve", version, about = "Find a language model's circuit for a task and cut the model down to it")]
struct Cli {
    #[command(subcommand)]
    cmd: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a model's architecture, sizes, tokenizer, and the backend `auto` would pick.
    Info(cmd::info::Args),
    /// Run prompts through a model and write every position's logits to a safetensors file.
    Logits(cmd::logits::Args),
    /// Find a task's circuit, prune the model down to it, and report on the held-out test split.
    Extract(cmd::extract::Args),
    /// The loss (mean KL at the last position) and its gradient with respect to every mask.
    Grad(cmd::grad::Args),
    /// Attribution patching: every component's estimated ablation effect on the task metric, ranked.
    Attribute(cmd::attribute::Args),
    /// A prompt through a model: the top-k next tokens and, optionally, a greedy continuation.
    Run(cmd::run::Args),
    /// Score a task's held-out test split: accuracy, logit or probability difference, P(answer).
    Eval(cmd::eval::Args),
    /// Look at tasks: prompts, answers, corrupted prompts, token splits.
    #[command(subcommand)]
    Tasks(cmd::tasks::Tasks),
    /// Make a circuit's share link for the web app, or decode one.
    Link(cmd::link::Args),
    /// Serve the web app and a run's files on 127.0.0.1, and print the link that opens the run.
    Serve(cmd::serve::Args),
    /// Measure speed.
    #[command(subcommand)]
    Bench(cmd::bench::Bench),
}

fn main() {
    alloc::keep_freed_buffers();
    let cli = Cli::parse();
    backend_pick::quiet_display_probe();
    let res = match cli.cmd {
        Command::Info(a) => cmd::info::run(a),
        Command::Logits(a) => cmd::logits::run(a),
        Command::Bench(b) => cmd::bench::run(b),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Run(a) => cmd::run::run(a),
        Command::Link(a) => cmd::link::run(a),
        Command::Serve(a) => cmd::serve::run(a),
        Command::Extract(a) => cmd::extract::run(a),
        Command::Grad(a) => cmd::grad::run(a),
        Command::Attribute(a) => cmd::attribute::run(a),
        Command::Tasks(t) => cmd::tasks::run(t),
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
