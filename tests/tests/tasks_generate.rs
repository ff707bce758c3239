//! Built-in task generators under the GPT-2 tokenizer and SmolLM2's: deterministic per seed, every
//! example tokenized as its task needs, filters reported; and the splits (sizes, proportions, no
//! overlap).

use std::collections::HashSet;

use carve_core::model::load::load_gguf_tokenizer;
use carve_core::model::tokenizer::Tokenizer;
use carve_core::tasks::*;
use carve_tests::*;

fn gpt2() -> Tokenizer {
    Tokenizer::from_json_bytes(&std::fs::read(fixture("gpt2-tokenizer/tokenizer.json")).unwrap()).unwrap()
}

fn smollm2() -> Tokenizer {
    load_gguf_tokenizer(&std::fs::read(smollm2_gguf()).unwrap()).unwrap().expect("the GGUF has a tokenizer")
}

fn gen(name: &str, tok: &Tokenizer, n: usize, seed: u64) -> Task {
    generate(name, tok, &GenOptions { n, seed, bos: false }).unwrap()
}

fn text(tok: &Tokenizer, ids: &[u32]) -> String {
    tok.decode(ids).unwrap()
}

fn filter<'a>(t: &'a Task, what: &str) -> &'a Filter {
    t.filters.iter().find(|f| f.what.starts_with(what)).unwrap_or_else(|| panic!("{}: no filter {what}: {:?}", t.name, t.filters))
}

fn deterministic(tok: &Tokenizer) {
    for name in BUILTIN {
        let a = gen(name, tok, 120, 7);
        assert_eq!(a, gen(name, tok, 120, 7), "{name}: same seed, different task");
        let b = gen(name, tok, 120, 8);
        let same = a.examples.iter().zip(&b.examples).filter(|(x, y)| x.prompt == y.prompt).count();
        assert!(same < 12, "{name}: seeds 7 and 8 share {same} of 120 prompts");
        assert_eq!(a.examples.len(), 120);
        let distinct: HashSet<&Vec<u32>> = a.examples.iter().map(|e| &e.prompt).collect();
        assert_eq!(distinct.len(), 120, "{name}: repeated prompts");
    }
}

#[test]
fn generators_are_deterministic_gpt2() {
    deterministic(&gpt2());
}

#[test]
fn generators_are_deterministic_smollm2() {
    deterministic(&smollm2());
}

fn ioi(tok: &Tokenizer, dropped_name: &str) {
    let t = gen("ioi", tok, 200, 0);
    assert_eq!(t.metric, MetricKind::LogitDiff);
    let names = filter(&t, "names");
    assert!(names.dropped.iter().any(|d| d.starts_with(&format!("{dropped_name:?}"))), "{names}");
    assert_eq!(names.total, ioi::NAMES.len());
    assert!(names.kept >= 80 && names.kept < names.total, "{names}");
    let abba = t.examples.iter().filter(|e| e.source.starts_with("ABBA")).count();
    assert_eq!(abba, 100, "half the prompts are ABBA");
    let mut templates = HashSet::new();
    for e in &t.examples {
        templates.insert(e.source.clone());
        let Target::Token { answer, wrong: Some(s) } = e.target else { panic!("{e:?}") };
        assert_ne!(answer, s);
        // IO appears once, S twice, and both are " Name" as one token.
        assert_eq!(e.prompt.iter().filter(|&&x| x == answer).count(), 1);
        assert_eq!(e.prompt.iter().filter(|&&x| x == s).count(), 2);
        for id in [answer, s] {
            let name = text(tok, &[id]);
            assert!(name.starts_with(' ') && name[1..].chars().all(char::is_alphabetic), "{name:?}");
            assert_eq!(tok.encode(&name, false).unwrap(), [id]);
        }
        let p = text(tok, &e.prompt);
        assert!(p.ends_with(" to"), "{p}");
        // ABBA: IO comes first; BABA: S does.
        let first = e.prompt.iter().position(|&x| x == answer || x == s).unwrap();
        assert_eq!(e.prompt[first] == answer, e.source.starts_with("ABBA"), "{}: {p}", e.source);
        // The corrupted prompt: same length, same words, three other names.
        let c = e.corrupted.as_ref().unwrap();
        assert_eq!(c.len(), e.prompt.len());
        assert!(!c.contains(&answer) && !c.contains(&s), "{}", text(tok, c));
        let differ: Vec<usize> = (0..c.len()).filter(|&i| c[i] != e.prompt[i]).collect();
        assert_eq!(differ.len(), 3, "{p} vs {}", text(tok, c));
        let cnames: HashSet<u32> = differ.iter().map(|&i| c[i]).collect();
        assert_eq!(cnames.len(), 3, "three different names: {}", text(tok, c));
    }
    assert_eq!(templates.len(), 30, "all 15 templates in both orders");
}

#[test]
fn ioi_gpt2() {
    ioi(&gpt2(), " Zachary");
}

#[test]
fn ioi_smollm2() {
    // SmolLM2 splits " Brandon" into " Brand" "on".
    ioi(&smollm2(), " Brandon");
}

fn acronyms(tok: &Tokenizer) {
    let t = gen("acronyms", tok, 200, 0);
    let paren = tok.encode(" (", false).unwrap();
    assert_eq!(paren.len(), 1);
    let triples = filter(&t, "acronyms");
    assert!(triples.kept > 500 && triples.kept < triples.total, "{triples}");
    // "(CIA" is merged by both tokenizers: it is dropped, and the report says how it splits.
    assert!(triples.dropped.iter().all(|d| d.contains("tokens:")), "{triples}");
    for e in &t.examples {
        let Target::Token { answer, wrong: Some(w) } = e.target else { panic!() };
        let p = text(tok, &e.prompt);
        let n = e.prompt.len();
        // "The W1 W2 W3 (L1L2": each word one token, then " (" and one token per letter.
        assert_eq!(n, tok.encode("The", false).unwrap().len() + 6, "{p}");
        assert_eq!(e.prompt[n - 3], paren[0]);
        let words: Vec<String> = e.prompt[n - 6..n - 3].iter().map(|&i| text(tok, &[i])).collect();
        let letters: Vec<String> = words.iter().map(|w| w[1..2].to_string()).collect();
        assert_eq!(text(tok, &e.prompt[n - 2..n - 1]), letters[0]);
        assert_eq!(text(tok, &e.prompt[n - 1..]), letters[1]);
        assert_eq!(text(tok, &[answer]), letters[2], "{p}");
        // The full acronym tokenizes letter by letter in context.
        let full = tok.encode(&format!("{p}{}", letters[2]), false).unwrap();
        assert_eq!(full[..n], e.prompt[..]);
        assert_eq!(full[n..], [answer]);
        // Corrupted: same letters, words starting with other letters; the distractor is the
        // corrupted third word's letter.
        let c = e.corrupted.as_ref().unwrap();
        assert_eq!(c.len(), n);
        assert_eq!(c[n - 3..], e.prompt[n - 3..]);
        for (k, &id) in c[n - 6..n - 3].iter().enumerate() {
            let cw = text(tok, &[id]);
            assert_ne!(cw[1..2], letters[k], "{} vs {p}", text(tok, c));
            if k == 2 {
                assert_eq!(text(tok, &[w]), cw[1..2]);
            }
        }
        assert_ne!(answer, w);
    }
}

#[test]
fn acronyms_gpt2() {
    acronyms(&gpt2());
}

#[test]
fn acronyms_smollm2() {
    let tok = smollm2();
    // The example of the issue: SmolLM2 splits " (CIA" as " (" "C" "IA".
    let ids = tok.encode(" (CIA", false).unwrap();
    assert_eq!(ids.iter().map(|&i| text(&tok, &[i])).collect::<Vec<_>>(), [" (", "C", "IA"]);
    let t = gen("acronyms", &tok, 400, 0);
    assert!(!t.examples.iter().any(|e| e.source.ends_with("(CIA)")));
    acronyms(&tok);
}

fn greater_than(tok: &Tokenizer, digits: bool) {
    let t = gen("greater-than", tok, 200, 0);
    assert_eq!(t.metric, MetricKind::ProbDiff);
    match (&t.years, digits) {
        (Some(YearTokens::Digits(d)), true) => assert_eq!(d.iter().map(|&i| text(tok, &[i])).collect::<String>(), "0123456789"),
        (Some(YearTokens::TwoDigit(d)), false) => {
            for (n, &id) in d.iter().enumerate() {
                assert_eq!(text(tok, &[id]), format!("{n:02}"));
            }
        }
        other => panic!("{} years: {other:?}", tok.kind),
    }
    for e in &t.examples {
        let Target::Year { yy } = e.target else { panic!() };
        assert!((2..=98).contains(&yy));
        let p = text(tok, &e.prompt);
        let (head, xx) = p.rsplit_once(" to the year ").unwrap();
        assert!(head.starts_with("The ") && head.ends_with(&format!(" lasted from the year {xx}{yy:02}")), "{p}");
        assert!((11..=17).contains(&xx.parse::<u32>().unwrap()), "{p}");
        let c = e.corrupted.as_ref().unwrap();
        assert_eq!(c.len(), e.prompt.len());
        assert_eq!(text(tok, c), p.replace(&format!("year {xx}{yy:02} "), &format!("year {xx}01 ")));
    }
    let yys: HashSet<u8> = t.examples.iter().map(|e| match e.target { Target::Year { yy } => yy, _ => 0 }).collect();
    assert!(yys.len() > 70, "start years are spread over 02..98");
}

#[test]
fn greater_than_gpt2() {
    greater_than(&gpt2(), false);
}

#[test]
fn greater_than_smollm2() {
    let tok = smollm2();
    greater_than(&tok, true);
    let nouns = filter(&gen("greater-than", &tok, 10, 0), "nouns").clone();
    assert!(nouns.dropped.iter().any(|d| d.starts_with("\" truce\"")), "{nouns}");
}

#[test]
fn bos_goes_first_when_asked() {
    let tok = smollm2();
    for name in BUILTIN {
        let plain = gen(name, &tok, 20, 3);
        let bos = generate(name, &tok, &GenOptions { n: 20, seed: 3, bos: true }).unwrap();
        for (a, b) in plain.examples.iter().zip(&bos.examples) {
            assert_eq!(b.prompt[0], tok.bos_id.unwrap());
            assert_eq!(b.prompt[1..], a.prompt[..]);
            assert_eq!(b.corrupted.as_ref().unwrap()[1..], a.corrupted.as_ref().unwrap()[..]);
        }
    }
}

#[test]
fn unknown_task_lists_the_builtins() {
    let err = generate("iio", &gpt2(), &GenOptions { n: 5, seed: 0, bos: false }).unwrap_err().to_string();
    assert!(err.contains("unknown task `iio`") && err.contains("ioi, acronyms, greater-than"), "{err}");
}

fn prompts(v: &[Example]) -> HashSet<Vec<u32>> {
    v.iter().map(|e| e.prompt.clone()).collect()
}

#[test]
fn splits_do_not_overlap_and_follow_the_seed() {
    let tok = smollm2();
    for name in BUILTIN {
        let plan = SplitSizes::default().plan_generated(None).unwrap();
        assert_eq!((plan.total, plan.sizes, plan.notes.len()), (400, SplitSizes { patching: 100, discovery: 100, test: 200 }, 0));
        let t = gen(name, &tok, plan.total, 0);
        let s = Splits::new(t.examples.clone(), plan.sizes, 0).unwrap();
        assert_eq!(s.sizes(), plan.sizes);
        let (p, d, te) = (prompts(&s.patching), prompts(&s.discovery), prompts(&s.test));
        assert_eq!(p.len() + d.len() + te.len(), 400, "{name}: a prompt repeats within a split");
        assert!(p.is_disjoint(&d) && p.is_disjoint(&te) && d.is_disjoint(&te), "{name}: splits overlap");
        assert_eq!(s, Splits::new(t.examples.clone(), plan.sizes, 0).unwrap());
        let other = Splits::new(t.examples.clone(), plan.sizes, 1).unwrap();
        assert_ne!(prompts(&other.test), te, "{name}: the split seed changes the test split");
    }
}

#[test]
fn split_sizes_scale_in_proportion() {
    let d = SplitSizes::default();
    let s = |p, d, t| SplitSizes { patching: p, discovery: d, test: t };
    assert_eq!(d.scaled(400).unwrap(), d);
    assert_eq!(d.scaled(500).unwrap(), s(125, 125, 250));
    assert_eq!(d.scaled(40).unwrap(), s(10, 10, 20));
    assert_eq!(d.scaled(7).unwrap(), s(2, 2, 3));
    assert_eq!(d.scaled(3).unwrap(), s(1, 1, 1));
    let err = d.scaled(2).unwrap_err().to_string();
    assert!(err.contains("give at least 3"), "{err}");
    // An empty split stays empty; the test split cannot be.
    assert_eq!(s(0, 100, 200).scaled(30).unwrap(), s(0, 10, 20));
    assert!(s(100, 100, 0).scaled(30).unwrap_err().to_string().contains("test split cannot be empty"));

    // --n on a generated task.
    let plan = d.plan_generated(Some(500)).unwrap();
    assert_eq!((plan.total, plan.sizes), (500, s(125, 125, 250)));
    assert!(plan.notes[0].contains("patching 125 / discovery 125 / test 250"), "{:?}", plan.notes);

    // A file smaller than the defaults: split in proportion, and the sizes are said.
    let plan = d.plan_file(None, 16, "capitals.jsonl").unwrap();
    assert_eq!((plan.total, plan.sizes), (16, s(4, 4, 8)));
    assert!(plan.notes[0].contains("capitals.jsonl has 16 examples, fewer than the 400 asked for: split in proportion as patching 4 / discovery 4 / test 8"), "{:?}", plan.notes);
    // A larger file: the defaults, and the rest said to be unused.
    let plan = d.plan_file(None, 1000, "big.jsonl").unwrap();
    assert_eq!((plan.total, plan.sizes), (400, d));
    assert!(plan.notes.iter().any(|n| n.contains("400 of the 1000 examples of big.jsonl are used")), "{:?}", plan.notes);
    // Too small: how many lines it needs.
    let err = d.plan_file(None, 2, "tiny.jsonl").unwrap_err().to_string();
    assert!(err.contains("tiny.jsonl has 2 example line(s)") && err.contains("give at least 3"), "{err}");
    let err = d.plan_file(Some(50), 16, "capitals.jsonl").unwrap_err().to_string();
    assert!(err.contains("50 examples were asked for, but the file has 16"), "{err}");
}

#[test]
fn given_splits_must_not_overlap() {
    let e = |p: u32| Example { prompt: vec![p, p + 1], corrupted: None, target: Target::Token { answer: 1, wrong: None }, source: format!("line {p}") };
    let ok = Splits::from_parts(vec![e(1)], vec![e(2)], vec![e(3), e(4)]).unwrap();
    assert_eq!(ok.test, vec![e(3), e(4)], "file order is kept");
    let err = Splits::from_parts(vec![e(1)], vec![e(2)], vec![e(3), e(1)]).unwrap_err().to_string();
    assert!(err.contains("in both patching and test") && err.contains("line 1"), "{err}");
    let err = Splits::from_parts(vec![e(1)], vec![e(2), e(2)], vec![e(3)]).unwrap_err().to_string();
    assert!(err.contains("twice in discovery"), "{err}");
    assert!(Splits::from_parts(vec![e(1)], vec![e(2)], vec![]).unwrap_err().to_string().contains("test split cannot be empty"));
    let err = Splits::new(vec![e(1), e(2), e(3)], SplitSizes { patching: 1, discovery: 1, test: 2 }, 0).unwrap_err().to_string();
    assert!(err.contains("3 examples cannot fill splits"), "{err}");
}

/// A run's `task.json` (the test split the web app scores) reads back as the same task, and one
/// that does not fit the model is refused.
#[test]
fn task_files_round_trip_and_are_checked() {
    let tok = smollm2();
    for name in BUILTIN {
        let t = gen(name, &tok, 30, 1);
        let text = serde_json::to_string(&t).unwrap();
        assert_eq!(Task::from_json(&text, tok.vocab_size()).unwrap(), t, "{name}");
        let err = Task::from_json(&text, 10).unwrap_err().to_string();
        assert!(err.contains("fit this model"), "{name}: {err}");
    }
    let empty = Task { examples: vec![], ..gen("ioi", &tok, 5, 0) };
    assert!(Task::from_json(&serde_json::to_string(&empty).unwrap(), 49152).unwrap_err().to_string().contains("no examples"));
    assert!(Task::from_json("{\"name\": 3}", 49152).unwrap_err().to_string().contains("not a carve task file"));
}
