//! Three-letter acronyms (García-Carrasco et al. 2024): "The Central Intelligence Agency (CI" → "A".
//!
//! Three capitalised words, then " (" and the first two letters; the answer is the third word's first
//! letter. As in the paper, the words are one token each (with a leading space) and the acronym is
//! taken as the model's tokenizer splits it: "The W1 W2 W3 (L1L2L3" is tokenized whole, and only
//! acronyms whose letters come out as one token each (" (", "L1", "L2", "L3") are kept; the prompt is
//! those ids without the last. (GPT-2 and SmolLM2 both merge some letter pairs, e.g. " (" "C" "IA".)
//!
//! The corrupted prompt keeps the written letters but replaces the three words with words that start
//! with other letters, so nothing in it points at the answer; the distractor of the logit difference
//! is the first letter of the corrupted third word.

use super::{collect_distinct, filter_list, one_token, with_bos, Example, Filter, GenOptions, MetricKind, Rng, Target, Task};
use crate::model::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Capitalised nouns and adjectives of the kind organisations are named with.
pub const WORDS: &[&str] = &[
    "Academy", "Agency", "Air", "Alliance", "American", "Analysis", "Animal", "Army", "Art", "Association",
    "Bank", "Base", "Basic", "Board", "Body", "Book", "Border", "Bridge", "British", "Budget",
    "Bureau", "Business", "Cable", "Capital", "Care", "Carbon", "Cell", "Center", "Central", "Chamber",
    "Chemical", "Child", "City", "Civil", "Club", "Coast", "College", "Command", "Commerce", "Committee",
    "Community", "Company", "Computer", "Control", "Corporation", "Council", "Court", "Credit", "Culture", "Customer",
    "Data", "Defense", "Democratic", "Department", "Design", "Development", "Digital", "Direct", "Disease", "District",
    "Division", "Drug", "Early", "Earth", "Economic", "Education", "Electric", "Emergency", "Energy", "Engineering",
    "Environmental", "European", "Evidence", "Exchange", "Executive", "Export", "Family", "Farm", "Federal", "Film",
    "Finance", "Fire", "First", "Fleet", "Food", "Force", "Foreign", "Forest", "Foundation", "Free",
    "Fund", "Future", "Game", "General", "Global", "Government", "Grand", "Green", "Group", "Guard",
    "Health", "Heritage", "High", "Home", "Hospital", "House", "Human", "Independent", "Industrial", "Information",
    "Institute", "Insurance", "Intelligence", "Interest", "Internal", "International", "Investment", "Island", "Joint", "Journal",
    "Justice", "Key", "Kingdom", "Labor", "Land", "Language", "Law", "League", "Learning", "Legal",
    "Library", "Light", "Local", "Machine", "Management", "Marine", "Market", "Media", "Medical", "Metal",
    "Military", "Mining", "Ministry", "Mobile", "Modern", "Motor", "Museum", "Music", "National", "Natural",
    "Naval", "Network", "News", "Nuclear", "Ocean", "Office", "Oil", "Open", "Operations", "Order",
    "Organization", "Pacific", "Park", "Party", "Patent", "Peace", "People", "Performance", "Planning", "Police",
    "Policy", "Political", "Port", "Power", "Press", "Primary", "Private", "Product", "Program", "Project",
    "Protection", "Public", "Quality", "Radio", "Rail", "Reading", "Real", "Regional", "Research", "Reserve",
    "Resource", "Revenue", "Road", "Royal", "Rural", "Safety", "School", "Science", "Security", "Service",
    "Social", "Society", "Software", "Solar", "Space", "Special", "Sports", "Standard", "State", "Station",
    "Steel", "Student", "Study", "Support", "System", "Tax", "Teaching", "Technical", "Technology", "Television",
    "Test", "Trade", "Traffic", "Training", "Transport", "Travel", "Treasury", "Trust", "Union", "United",
    "Unit", "University", "Urban", "User", "Valley", "Value", "Vehicle", "Veterans", "Video", "Village",
    "Virtual", "Vision", "Voice", "Volunteer", "Water", "Weather", "Welfare", "West", "Wildlife", "Wind",
    "Women", "Work", "World", "Writing", "Year", "Young", "Youth", "Zone", "Zoological", "Yard",
];

/// Generates `opts.n` acronym prompts.
pub fn generate(tok: &Tokenizer, opts: &GenOptions) -> Result<Task> {
    let paren = one_token(tok, " (")?
        .ok_or_else(|| Error::Input(format!("acronyms: this tokenizer splits \" (\" as {}", super::describe_split(tok, " ("))))?;
    let (words, word_filter) = filter_list("words (one token with a leading space)", WORDS, |w| {
        let text = format!(" {w}");
        let letter = &w[..1];
        Ok(match (one_token(tok, &text)?, one_token(tok, letter)?) {
            (Some(id), Some(letter_id)) => Ok(Word { text: w, id, letter: w.as_bytes()[0], letter_id }),
            (None, _) => Err(super::describe_split(tok, &text)),
            (_, None) => Err(format!("{w:?} (its letter {letter:?} is not one token)")),
        })
    })?;
    if words.len() < 6 {
        return Err(Error::Input(format!("acronyms: {word_filter}; the task needs at least 6 words that are one token")));
    }
    let the_len = tok.encode("The", false)?.len();
    // Every acronym the words can spell whose letters the tokenizer keeps apart.
    let mut letters: Vec<(u8, u32)> = words.iter().map(|w| (w.letter, w.letter_id)).collect();
    letters.sort();
    letters.dedup();
    let mut triples = Vec::new();
    let mut merged = Vec::new();
    let total = letters.len().pow(3);
    for &a in &letters {
        for &b in &letters {
            for &c in &letters {
                let text = format!(" ({}{}{}", a.0 as char, b.0 as char, c.0 as char);
                if tok.encode(&text, false)? == [paren, a.1, b.1, c.1] {
                    triples.push([a.0, b.0, c.0]);
                } else {
                    merged.push(text);
                }
            }
        }
    }
    // Twenty examples spread over the alphabet, not twenty that start with "AA".
    let step = merged.len().div_ceil(20).max(1);
    let dropped = merged.iter().step_by(step).map(|t| super::describe_split(tok, t)).collect();
    let triple_filter = Filter { what: "acronyms (each letter one token)".into(), kept: triples.len(), total, dropped };
    if triples.is_empty() {
        return Err(Error::Input(format!("acronyms: {triple_filter}")));
    }
    let mut rng = Rng::stream(opts.seed, 2);
    let (examples, rejected) = collect_distinct("acronyms", opts.n, |_| {
        // Three distinct words, as in the paper; acronyms the tokenizer merges are skipped. Then,
        // for the corrupted prompt, a word with another first letter in each slot (six distinct).
        let pick = rng.distinct(words.len(), 3);
        let mut chosen: Vec<&Word> = pick.iter().map(|&i| &words[i]).collect();
        let letters = [chosen[0].letter, chosen[1].letter, chosen[2].letter];
        if triples.binary_search(&letters).is_err() {
            return Ok(None);
        }
        for &l in &letters {
            let fits: Vec<&Word> = words.iter().filter(|w| w.letter != l && !chosen.iter().any(|c| c.id == w.id)).collect();
            if fits.is_empty() {
                return Ok(None);
            }
            chosen.push(fits[rng.below(fits.len())]);
        }
        let (w, c) = (&chosen[..3], &chosen[3..]);
        let letter_ids = [w[0].letter_id, w[1].letter_id, w[2].letter_id];
        let acronym: String = letters.iter().map(|&l| l as char).collect();
        let ids = acronym_ids(tok, the_len, [w[0].text, w[1].text, w[2].text], &acronym, paren, letter_ids)?;
        // Same letters, other words.
        let cids = acronym_ids(tok, the_len, [c[0].text, c[1].text, c[2].text], &acronym, paren, letter_ids)?;
        let (Some(ids), Some(cids)) = (ids, cids) else { return Ok(None) };
        let prompt = ids[..ids.len() - 1].to_vec();
        let corrupted = cids[..cids.len() - 1].to_vec();
        Ok(Some(Example {
            prompt: with_bos(tok, opts.bos, prompt)?,
            corrupted: Some(with_bos(tok, opts.bos, corrupted)?),
            target: Target::Token { answer: w[2].letter_id, wrong: Some(c[2].letter_id) },
            source: format!("{} {} {} ({acronym})", w[0].text, w[1].text, w[2].text),
        }))
    })?;
    let prompts = Filter {
        what: "word triples (acronym split letter by letter in context)".into(),
        kept: examples.len(),
        total: examples.len() + rejected,
        dropped: vec![],
    };
    Ok(Task {
        name: "acronyms".into(),
        metric: MetricKind::LogitDiff,
        years: None,
        examples,
        filters: vec![word_filter, triple_filter, prompts],
    })
}

struct Word {
    text: &'static str,
    id: u32,
    letter: u8,
    letter_id: u32,
}

/// The ids of "The W1 W2 W3 (L1L2L3" when the words are one token each and the acronym is
/// " (" and one token per letter; None otherwise.
fn acronym_ids(tok: &Tokenizer, the_len: usize, words: [&str; 3], letters: &str, paren: u32, letter_ids: [u32; 3]) -> Result<Option<Vec<u32>>> {
    let text = format!("The {} {} {} ({letters}", words[0], words[1], words[2]);
    let ids = tok.encode(&text, false)?;
    let n = ids.len();
    let ok = n == the_len + 7 && ids[n - 4..] == [paren, letter_ids[0], letter_ids[1], letter_ids[2]];
    Ok(ok.then_some(ids))
}
