//! User tasks as JSONL, one example a line:
//!
//! ```text
//! {"prompt": "The capital of France is", "answer": " Paris"}
//! {"prompt": "The capital of Italy is", "answer": " Rome", "wrong": " Paris", "corrupted": "The capital of Spain is"}
//! ```
//!
//! `answer` (and `wrong`, a distractor for the logit difference) must be one token under the model's
//! tokenizer; `corrupted` is a prompt of the same token length. `wrong` and `corrupted` are given on
//! every line or on none. Blank lines are skipped. A file that breaks a rule is rejected whole, with
//! every offending line number and the reason; nothing is half-loaded.

use super::{describe_split, Example, MetricKind, Target, Task};
use crate::model::tokenizer::Tokenizer;
use crate::error::json_kind;
use crate::{Error, Result};

const FIELDS: [&str; 4] = ["prompt", "answer", "wrong", "corrupted"];
/// At most this many problems are listed; the rest are counted.
const MAX_LISTED: usize = 20;

/// Parses a JSONL task. `origin` names the file in messages and becomes the task's name;
/// `max_tokens` is the model's context: a prompt or corrupted prompt longer than that (BOS
/// included) is a problem of its line, like any other.
pub fn parse(text: &str, origin: &str, tok: &Tokenizer, bos: bool, max_tokens: usize) -> Result<Task> {
    let mut problems: Vec<String> = Vec::new();
    let mut examples = Vec::new();
    let mut with_wrong = Vec::new();
    let mut with_corrupted = Vec::new();
    let mut first_line_of: std::collections::HashMap<Vec<u32>, usize> = std::collections::HashMap::new();
    let mut lines = 0;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() {
            continue;
        }
        lines += 1;
        match parse_line(line, tok, bos, max_tokens) {
            Ok(mut p) => {
                p.example.source = format!("line {n}");
                if let Some(&first) = first_line_of.get(&p.example.prompt) {
                    problems.push(format!("line {n}: the same prompt as line {first} (prompts must be distinct, or the splits could overlap)"));
                    continue;
                }
                first_line_of.insert(p.example.prompt.clone(), n);
                if p.has_wrong {
                    with_wrong.push(n);
                }
                if p.example.corrupted.is_some() {
                    with_corrupted.push(n);
                }
                examples.push((n, p.example));
            }
            Err(why) => problems.push(format!("line {n}: {why}")),
        }
    }
    if lines == 0 {
        return Err(Error::format(origin, "empty file: give one JSON object per line, e.g. {\"prompt\": \"The capital of France is\", \"answer\": \" Paris\"}"));
    }
    for (field, have) in [("wrong", &with_wrong), ("corrupted", &with_corrupted)] {
        let lacking: Vec<usize> = examples.iter().map(|(n, _)| *n).filter(|n| !have.contains(n)).collect();
        if !have.is_empty() && !lacking.is_empty() {
            problems.push(format!(
                "\"{field}\" is given on {} line(s) but missing on line(s) {}: give it on every line or on none",
                have.len(),
                list_lines(&lacking)
            ));
        }
    }
    if !problems.is_empty() {
        let total = problems.len();
        let mut msg = format!("{total} problem(s); the file was not loaded:");
        for p in problems.iter().take(MAX_LISTED) {
            msg.push_str("\n  ");
            msg.push_str(p);
        }
        if total > MAX_LISTED {
            msg.push_str(&format!("\n  … and {} more", total - MAX_LISTED));
        }
        return Err(Error::format(origin, msg));
    }
    let metric = if with_wrong.is_empty() { MetricKind::LogProb } else { MetricKind::LogitDiff };
    let name = std::path::Path::new(origin).file_name().map_or(origin.to_string(), |f| f.to_string_lossy().into_owned());
    Ok(Task { name, metric, years: None, examples: examples.into_iter().map(|(_, e)| e).collect(), filters: vec![] })
}

struct Parsed {
    example: Example,
    has_wrong: bool,
}

fn parse_line(line: &str, tok: &Tokenizer, bos: bool, max_tokens: usize) -> std::result::Result<Parsed, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
        // serde's "at line 1 column 7" counts within this line; keep the column only.
        let msg = e.to_string();
        let msg = msg.rsplit_once(" at line ").map_or(msg.as_str(), |(m, _)| m);
        format!("invalid JSON at column {}: {msg}", e.column())
    })?;
    let obj = v.as_object().ok_or_else(|| format!("expected a JSON object like {{\"prompt\": …, \"answer\": …}}, found {}", json_kind(&v)))?;
    if let Some(k) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(format!("unknown field \"{k}\" (the fields are {})", FIELDS.map(|f| format!("\"{f}\"")).join(", ")));
    }
    let string = |field: &str| -> std::result::Result<Option<&str>, String> {
        match obj.get(field) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("\"{field}\" must be a string, found {}", json_kind(other))),
        }
    };
    let prompt = string("prompt")?.ok_or("missing field \"prompt\"")?;
    let answer = string("answer")?.ok_or("missing field \"answer\"")?;
    let wrong = string("wrong")?;
    let corrupted = string("corrupted")?;

    let encode = |what: &str, s: &str| -> std::result::Result<Vec<u32>, String> {
        let ids = tok.encode(s, false).map_err(|e| format!("{what}: {e}"))?;
        if ids.is_empty() {
            return Err(format!("\"{what}\" is empty"));
        }
        Ok(ids)
    };
    let one = |what: &str, s: &str| -> std::result::Result<u32, String> {
        let ids = encode(what, s)?;
        match ids.as_slice() {
            [id] => Ok(*id),
            _ => Err(format!("{what} {} must be one token", describe_split(tok, s))),
        }
    };
    let p = encode("prompt", prompt)?;
    let answer_id = one("answer", answer)?;
    let wrong_id = wrong.map(|w| one("wrong", w)).transpose()?;
    if wrong_id == Some(answer_id) {
        return Err(format!("\"wrong\" {:?} is the same token as \"answer\" {answer:?}", wrong.unwrap_or_default()));
    }
    let c = match corrupted {
        Some(c) => {
            let ids = encode("corrupted", c)?;
            if ids.len() != p.len() {
                return Err(format!(
                    "the corrupted prompt is {} tokens and the prompt {}: they must have the same token length",
                    ids.len(),
                    p.len()
                ));
            }
            Some(ids)
        }
        None => None,
    };
    let add_bos = |what: &str, ids: Vec<u32>| -> std::result::Result<Vec<u32>, String> {
        let ids = super::with_bos(tok, bos, ids).map_err(|e| e.to_string())?;
        if ids.len() > max_tokens {
            let with = if bos { " with BOS" } else { "" };
            return Err(format!("the {what} is {} tokens{with}, longer than the model's context of {max_tokens}", ids.len()));
        }
        Ok(ids)
    };
    let example = Example {
        prompt: add_bos("prompt", p)?,
        corrupted: c.map(|c| add_bos("corrupted prompt", c)).transpose()?,
        target: Target::Token { answer: answer_id, wrong: wrong_id },
        source: String::new(),
    };
    Ok(Parsed { example, has_wrong: wrong_id.is_some() })
}

/// "3, 5, 9" or "3, 5, 9, … (14 lines)".
fn list_lines(lines: &[usize]) -> String {
    let shown: Vec<String> = lines.iter().take(10).map(|n| n.to_string()).collect();
    if lines.len() > 10 {
        format!("{}, … ({} lines)", shown.join(", "), lines.len())
    } else {
        shown.join(", ")
    }
}
