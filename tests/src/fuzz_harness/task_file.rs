//! Task files: a JSONL task read with a small word-level tokenizer and split as `--task FILE`
//! does, and the same bytes as a run's `task.json` (what the web app scores circuits on).

use std::sync::OnceLock;

use carve_core::model::tokenizer::Tokenizer;
use carve_core::tasks::split::{SplitSizes, Splits};
use carve_core::tasks::{jsonl, Task};

/// `fixtures/word-tokenizer`: `<unk>`, `<s>`, `</s>`, then `w3` … `w511`.
fn tokenizer() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| {
        Tokenizer::from_json_bytes(include_bytes!("../../fixtures/word-tokenizer/tokenizer.json"))
            .expect("the word tokenizer fixture loads")
    })
}

/// The context a task's prompts are checked against: short, so that both sides of the check run.
const CONTEXT: usize = 12;

/// Input: the text of a task file (invalid UTF-8 is refused before parsing, as the program does).
pub fn task_jsonl(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for bos in [false, true] {
        let Ok(task) = jsonl::parse(text, "task.jsonl", tokenizer(), bos, CONTEXT) else { continue };
        let lines = task.examples.len();
        if let Ok(plan) = SplitSizes::default().plan_file(None, lines, "task.jsonl") {
            let _ = Splits::new(task.examples.clone(), plan.sizes, 7);
        }
    }
    let _ = Task::from_json(text, 512);
}
