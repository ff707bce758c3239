//! Indirect object identification (Wang et al. 2022): "When Mary and John went to the store, John
//! gave a drink to" → " Mary".
//!
//! The 15 templates of the paper, half in ABBA order (IO first) and half in BABA order (S first).
//! The answer is the indirect object IO; the logit difference is IO − S. Names are kept only when
//! they are one token with a leading space. The corrupted prompt is the same sentence with three
//! other names (the ABC distribution): no name is repeated, so nothing marks the answer.

use super::{collect_distinct, filter_list, one_token, with_bos, Example, Filter, GenOptions, MetricKind, Rng, Target, Task};
use crate::model::tokenizer::Tokenizer;
use crate::{Error, Result};

/// The BABA templates up to the answer; `{S}` is the subject, `{IO}` the indirect object. The ABBA
/// form swaps the first pair (`{S} and {IO}` → `{IO} and {S}`).
pub const TEMPLATES: [&str; 15] = [
    "Then, {S} and {IO} went to the {PLACE}. {S} gave a {OBJECT} to",
    "Then, {S} and {IO} had a lot of fun at the {PLACE}. {S} gave a {OBJECT} to",
    "Then, {S} and {IO} were working at the {PLACE}. {S} decided to give a {OBJECT} to",
    "Then, {S} and {IO} were thinking about going to the {PLACE}. {S} wanted to give a {OBJECT} to",
    "Then, {S} and {IO} had a long argument, and afterwards {S} said to",
    "After {S} and {IO} went to the {PLACE}, {S} gave a {OBJECT} to",
    "When {S} and {IO} got a {OBJECT} at the {PLACE}, {S} decided to give it to",
    "When {S} and {IO} got a {OBJECT} at the {PLACE}, {S} decided to give the {OBJECT} to",
    "While {S} and {IO} were working at the {PLACE}, {S} gave a {OBJECT} to",
    "While {S} and {IO} were commuting to the {PLACE}, {S} gave a {OBJECT} to",
    "After the lunch, {S} and {IO} went to the {PLACE}. {S} gave a {OBJECT} to",
    "Afterwards, {S} and {IO} went to the {PLACE}. {S} gave a {OBJECT} to",
    "Then, {S} and {IO} had a long argument. Afterwards {S} said to",
    "The {PLACE} {S} and {IO} went to had a {OBJECT}. {S} gave it to",
    "Friends {S} and {IO} found a {OBJECT} at the {PLACE}. {S} gave it to",
];

pub const PLACES: [&str; 8] = ["store", "garden", "restaurant", "school", "hospital", "office", "house", "station"];
pub const OBJECTS: [&str; 8] = ["ring", "kiss", "bone", "basketball", "computer", "necklace", "drink", "snack"];

/// Common English first names; those that are not one token (with a leading space) are dropped.
pub const NAMES: &[&str] = &[
    "Mary", "John", "Michael", "Jessica", "Matthew", "Ashley", "Jennifer", "Joshua", "Amanda", "Daniel",
    "David", "James", "Robert", "Joseph", "Andrew", "Ryan", "Brandon", "Jason", "Justin", "Sarah",
    "William", "Jonathan", "Stephanie", "Brian", "Nicole", "Nicholas", "Anthony", "Heather", "Eric", "Elizabeth",
    "Adam", "Megan", "Melissa", "Kevin", "Steven", "Thomas", "Timothy", "Christina", "Kyle", "Rachel",
    "Laura", "Lauren", "Amber", "Brittany", "Danielle", "Richard", "Kimberly", "Jeffrey", "Amy", "Crystal",
    "Michelle", "Tiffany", "Jeremy", "Benjamin", "Mark", "Emily", "Aaron", "Charles", "Rebecca", "Jacob",
    "Stephen", "Patrick", "Sean", "Erin", "Zachary", "Jamie", "Kelly", "Samantha", "Nathan", "Sara",
    "Dustin", "Paul", "Angela", "Tyler", "Scott", "Katherine", "Andrea", "Gregory", "Erica", "Grace",
    "Travis", "Lisa", "Kenneth", "Bryan", "Lindsey", "Kristen", "Jose", "Alexander", "Jesse", "Katie",
    "Lindsay", "Shannon", "Vanessa", "Courtney", "Christine", "Alicia", "Cody", "Allison", "Bradley", "Samuel",
];

/// Generates `opts.n` IOI prompts: example i is ABBA when i is even, BABA when odd.
pub fn generate(tok: &Tokenizer, opts: &GenOptions) -> Result<Task> {
    let (names, name_filter) = filter_list("names (one token with a leading space)", NAMES, |n| {
        let text = format!(" {n}");
        Ok(match one_token(tok, &text)? {
            Some(id) => Ok((n, id)),
            None => Err(super::describe_split(tok, &text)),
        })
    })?;
    // IO, S and three other names for the corrupted prompt.
    if names.len() < 5 {
        return Err(Error::Input(format!("ioi: {name_filter}; the task needs at least 5 names that are one token")));
    }
    let mut rng = Rng::stream(opts.seed, 1);
    let (examples, rejected) = collect_distinct("ioi", opts.n, |i| {
        let abba = i % 2 == 0;
        let t = rng.below(TEMPLATES.len());
        let pick = rng.distinct(names.len(), 5);
        let (io, s) = (names[pick[0]], names[pick[1]]);
        let abc = [names[pick[2]].0, names[pick[3]].0, names[pick[4]].0];
        let place = *rng.pick(&PLACES);
        let object = *rng.pick(&OBJECTS);
        let template = order(TEMPLATES[t], abba);
        let text = fill(&template, |slot, _| if slot == "IO" { io.0 } else { s.0 }, place, object);
        let corrupted_text = fill(&template, |_, k| abc[k], place, object);
        let prompt = tok.encode(&text, false)?;
        let corrupted = tok.encode(&corrupted_text, false)?;
        // The names must stay single tokens in context: IO once, S twice, and the corrupted prompt
        // exactly as long.
        let count = |id: u32| prompt.iter().filter(|&&x| x == id).count();
        if count(io.1) != 1 || count(s.1) != 2 || corrupted.len() != prompt.len() {
            return Ok(None);
        }
        Ok(Some(Example {
            prompt: with_bos(tok, opts.bos, prompt)?,
            corrupted: Some(with_bos(tok, opts.bos, corrupted)?),
            target: Target::Token { answer: io.1, wrong: Some(s.1) },
            source: format!("{}, template {}", if abba { "ABBA" } else { "BABA" }, t + 1),
        }))
    })?;
    let prompts = Filter { what: "prompts (names single tokens in context)".into(), kept: examples.len(), total: examples.len() + rejected, dropped: vec![] };
    Ok(Task {
        name: "ioi".into(),
        metric: MetricKind::LogitDiff,
        years: None,
        examples,
        filters: vec![name_filter, prompts],
    })
}

/// The template in ABBA or BABA order.
fn order(template: &str, abba: bool) -> String {
    if abba {
        template.replacen("{S} and {IO}", "{IO} and {S}", 1)
    } else {
        template.to_string()
    }
}

/// Fills the place, the object and the three name slots: `name(slot, k)` gives the name for the
/// k-th name slot (`slot` is "S" or "IO"); the corrupted prompt ignores `slot` and gives three
/// other names.
fn fill<'a>(template: &str, mut name: impl FnMut(&str, usize) -> &'a str, place: &str, object: &str) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    let mut k = 0;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = start + rest[start..].find('}').expect("templates close every brace");
        match &rest[start + 1..end] {
            slot @ ("S" | "IO") => {
                out.push_str(name(slot, k));
                k += 1;
            }
            "PLACE" => out.push_str(place),
            "OBJECT" => out.push_str(object),
            other => unreachable!("unknown slot {other} in an IOI template"),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}
