//! User task files (JSONL): a good file loads; every malformed one is rejected whole with its line
//! numbers and the reason; three files make the three splits.

use carve_core::model::tokenizer::Tokenizer;
use carve_core::tasks::*;
use carve_tests::*;

/// Loaded once per test binary.
fn gpt2() -> &'static Tokenizer {
    static T: std::sync::OnceLock<Tokenizer> = std::sync::OnceLock::new();
    T.get_or_init(|| Tokenizer::from_json_bytes(&std::fs::read(fixture("gpt2-tokenizer/tokenizer.json")).unwrap()).unwrap())
}

fn parse(text: &str) -> Result<Task, String> {
    jsonl::parse(text, "my_task.jsonl", gpt2(), false, CONTEXT).map_err(|e| e.to_string())
}

#[track_caller]
fn rejects(text: &str, wants: &[&str]) {
    let err = parse(text).expect_err("a malformed file was accepted");
    assert!(err.starts_with("my_task.jsonl: "), "the message names the file: {err}");
    assert!(err.contains("the file was not loaded"), "{err}");
    for w in wants {
        assert!(err.contains(w), "expected {w:?} in:\n{err}");
    }
}

/// GPT-2's context, as the models of these tests have.
const CONTEXT: usize = 1024;

const PARIS: &str = r#"{"prompt": "The capital of France is", "answer": " Paris"}"#;
const ROME: &str = r#"{"prompt": "The capital of Italy is", "answer": " Rome"}"#;

#[test]
fn good_file_loads() {
    let tok = gpt2();
    let text = std::fs::read_to_string(fixture("tasks/capitals.jsonl")).unwrap();
    let t = jsonl::parse(&text, "tests/fixtures/tasks/capitals.jsonl", tok, false, CONTEXT).unwrap();
    assert_eq!(t.name, "capitals.jsonl");
    assert_eq!(t.metric, MetricKind::LogitDiff);
    assert_eq!(t.examples.len(), 16);
    // A blank line (13) is skipped; line numbers stay the file's.
    assert_eq!(t.examples[11].source, "line 12");
    assert_eq!(t.examples[12].source, "line 14");
    let e = &t.examples[0];
    assert_eq!(e.prompt, tok.encode("The capital of France is", false).unwrap());
    assert_eq!(e.corrupted.as_ref().unwrap(), &tok.encode("The capital of Spain is", false).unwrap());
    let paris = tok.encode(" Paris", false).unwrap()[0];
    let london = tok.encode(" London", false).unwrap()[0];
    assert_eq!(e.target, Target::Token { answer: paris, wrong: Some(london) });

    // Without "wrong" the metric is log P(answer); BOS goes first when asked; CRLF and a BOM are fine.
    let t = jsonl::parse(&format!("\u{feff}{PARIS}\r\n{ROME}\r\n"), "x.jsonl", tok, true, CONTEXT).unwrap();
    assert_eq!(t.metric, MetricKind::LogProb);
    assert_eq!(t.examples.len(), 2);
    assert_eq!(t.examples[1].prompt[0], tok.bos_id.unwrap());
    assert_eq!(t.examples[1].prompt[1..], tok.encode("The capital of Italy is", false).unwrap()[..]);
    assert_eq!(t.examples[1].target, Target::Token { answer: tok.encode(" Rome", false).unwrap()[0], wrong: None });
}

#[test]
fn empty_file() {
    for text in ["", "\n\n  \n"] {
        let err = parse(text).unwrap_err();
        assert!(err.contains("my_task.jsonl: empty file"), "{err}");
    }
}

#[test]
fn invalid_json() {
    rejects(&format!("{PARIS}\n{{\"prompt\": \"The capital of Italy is\", \"answer\": \" Rome\"\n"), &["1 problem(s)", "line 2: invalid JSON at column 55: EOF while parsing an object"]);
    rejects("The capital of France is Paris\n", &["line 1: invalid JSON"]);
    rejects("[\"The capital of France is\", \" Paris\"]\n", &["line 1: expected a JSON object", "found an array"]);
}

#[test]
fn missing_and_mistyped_fields() {
    rejects(&format!("{PARIS}\n{{\"prompt\": \"The capital of Italy is\"}}\n"), &["line 2: missing field \"answer\""]);
    rejects("{\"answer\": \" Rome\"}\n", &["line 1: missing field \"prompt\""]);
    rejects("{\"prompt\": \"The capital of Italy is\", \"answer\": 7}\n", &["line 1: \"answer\" must be a string, found a number"]);
    rejects("{\"prompt\": \"The capital of Italy is\", \"anwser\": \" Rome\"}\n", &["line 1: unknown field \"anwser\""]);
    rejects("{\"prompt\": \"\", \"answer\": \" Rome\"}\n", &["line 1: \"prompt\" is empty"]);
}

#[test]
fn answer_of_two_tokens() {
    let zach = r#"{"prompt": "Then, Mary and Zachary went out. Mary waved to", "answer": " Zachary"}"#;
    rejects(&format!("{PARIS}\n{ROME}\n{zach}\n"), &["line 3: answer \" Zachary\" (2 tokens: \" Zach\" \"ary\") must be one token"]);
    let wrong = r#"{"prompt": "The capital of Italy is", "answer": " Rome", "wrong": " Zachary"}"#;
    rejects(wrong, &["line 1: wrong \" Zachary\" (2 tokens"]);
    let same = r#"{"prompt": "The capital of Italy is", "answer": " Rome", "wrong": " Rome"}"#;
    rejects(same, &["line 1: \"wrong\" \" Rome\" is the same token as \"answer\""]);
}

#[test]
fn corrupted_of_another_length() {
    let bad = r#"{"prompt": "The capital of Italy is", "answer": " Rome", "corrupted": "The capital city of Spain is"}"#;
    let good = r#"{"prompt": "The capital of France is", "answer": " Paris", "corrupted": "The capital of Spain is"}"#;
    rejects(&format!("{good}\n{bad}\n"), &["line 2: the corrupted prompt is 6 tokens and the prompt 5: they must have the same token length"]);
}

#[test]
fn optional_fields_on_some_lines_only() {
    let w = r#"{"prompt": "The capital of Spain is", "answer": " Madrid", "wrong": " Rome"}"#;
    rejects(&format!("{PARIS}\n{w}\n{ROME}\n"), &["\"wrong\" is given on 1 line(s) but missing on line(s) 1, 3: give it on every line or on none"]);
    let c = r#"{"prompt": "The capital of Spain is", "answer": " Madrid", "corrupted": "The capital of Italy is"}"#;
    rejects(&format!("{c}\n{ROME}\n"), &["\"corrupted\" is given on 1 line(s) but missing on line(s) 2"]);
}

#[test]
fn repeated_prompt() {
    rejects(&format!("{PARIS}\n{ROME}\n{PARIS}\n"), &["line 3: the same prompt as line 1"]);
}

#[test]
fn every_problem_is_listed() {
    let text = format!("{PARIS}\nnot json\n{ROME}\n{{\"prompt\": \"x\"}}\n{PARIS}\n");
    rejects(&text, &["3 problem(s)", "line 2: invalid JSON", "line 4: missing field \"answer\"", "line 5: the same prompt as line 1"]);
    let many: String = (0..30).map(|i| format!("{{\"prompt\": \"p{i}\"}}\n")).collect();
    rejects(&many, &["30 problem(s)", "line 20: missing", "… and 10 more"]);
    assert!(!parse(&many).unwrap_err().contains("line 21:"));
}

#[test]
fn three_split_files() {
    let tok = gpt2();
    let file = |name: &str, lines: &[&str]| jsonl::parse(&lines.join("\n"), name, tok, false, CONTEXT).unwrap();
    let w = |c: &str, a: &str| format!(r#"{{"prompt": "The capital of {c} is", "answer": " {a}", "wrong": " London"}}"#);
    let p = file("p.jsonl", &[&w("France", "Paris")]);
    let d = file("d.jsonl", &[&w("Italy", "Rome"), &w("Spain", "Madrid")]);
    let t = file("t.jsonl", &[&w("Japan", "Tokyo"), &w("Egypt", "Cairo"), &w("Greece", "Athens")]);
    let (task, s) = Splits::from_tasks(p.clone(), d.clone(), t.clone()).unwrap();
    assert_eq!(s.sizes(), SplitSizes { patching: 1, discovery: 2, test: 3 });
    let sources: Vec<&str> = s.test.iter().map(|e| e.source.as_str()).collect();
    assert_eq!(sources, ["t.jsonl: line 1", "t.jsonl: line 2", "t.jsonl: line 3"], "used in file order");
    assert!(s.test.iter().zip(&t.examples).all(|(a, b)| a.prompt == b.prompt && a.target == b.target));
    assert_eq!(task.name, "t.jsonl");
    assert_eq!(task.examples.len(), 6);

    // A prompt in two files.
    let t2 = file("t.jsonl", &[&w("Japan", "Tokyo"), &w("Italy", "Rome")]);
    let err = Splits::from_tasks(p.clone(), d.clone(), t2).unwrap_err().to_string();
    assert!(err.contains("in both discovery and test") && err.contains("(d.jsonl: line 1; t.jsonl: line 2)"), "{err}");
    // Files that score differently.
    let nowrong = file("t.jsonl", &[r#"{"prompt": "The capital of Japan is", "answer": " Tokyo"}"#]);
    let err = Splits::from_tasks(p, d, nowrong).unwrap_err().to_string();
    assert!(err.contains("score differently") && err.contains("log_prob"), "{err}");
}

/// A prompt or corrupted prompt longer than the model's context is found at load, on every line
/// that has one (not only on a line that a forward happens to reach).
#[test]
fn prompts_longer_than_the_context() {
    let tok = gpt2();
    let line = |p: &str, c: &str| format!(r#"{{"prompt": "{p}", "answer": " Paris", "wrong": " Rome", "corrupted": "{c}"}}"#);
    // "The capital of France is" is 5 tokens; so is its corrupted version.
    let lines = [
        line("The capital of France is", "The capital of Spain is"),
        line("The capital city of France is", "The capital city of Spain is"),
        line("Here the capital city of France is", "Here the capital city of Spain is"),
    ];
    let text = lines.join("\n");
    let at = |max: usize, bos: bool| jsonl::parse(&text, "long.jsonl", tok, bos, max).map_err(|e| e.to_string());
    let err = at(5, false).expect_err("prompts of 6 and 7 tokens in a context of 5");
    for want in ["2 problem(s)", "line 2: the prompt is 6 tokens, longer than the model's context of 5", "line 3: the prompt is 7 tokens"] {
        assert!(err.contains(want), "expected {want:?} in:\n{err}");
    }
    assert!(!err.contains("line 1:"), "{err}");
    assert_eq!(at(7, false).unwrap().examples.len(), 3, "7 tokens fit a context of 7");
    let err = at(7, true).expect_err("BOS makes the last prompt 8 tokens");
    assert!(err.contains("line 3: the prompt is 8 tokens with BOS"), "{err}");
    assert!(at(0, false).unwrap_err().contains("3 problem(s)"), "every line is named");
}
