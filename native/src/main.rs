//! carve: find the circuit a language model uses for a task and cut the model down to it.

mod backend_pick;
mod cmd;
mod source;

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
    /// Score a task's held-out test split: accuracy, logit or probability difference, P(answer).
    Eval(cmd::eval::Args),
    /// Look at tasks: prompts, answers, corrupted prompts, token splits.
    #[command(subcommand)]
    Tasks(cmd::tasks::Tasks),
    /// Measure speed.
    #[command(subcommand)]
    Bench(cmd::bench::Bench),
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Command::Info(a) => cmd::info::run(a),
        Command::Logits(a) => cmd::logits::run(a),
        Command::Bench(b) => cmd::bench::run(b),
        Command::Eval(a) => cmd::eval::run(a),
        Command::Tasks(t) => cmd::tasks::run(t),
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
