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
    };
    if let Err(e) = res {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
