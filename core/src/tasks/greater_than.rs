//! Greater-than (Hanna et al. 2023): "The war lasted from the year 1732 to the year 17" → any year
//! above 32.
//!
//! Centuries 11..=17 and start years 02..=98, as in the paper; nouns are kept when they are one
//! token with a leading space. The tokenizer decides how the year's last two digits are predicted:
//! GPT-2 writes them as one token ("17" "32"), so P(>YY) sums the probabilities of the tokens
//! "YY+1".."99"; SmolLM2 and Llama 3 write one token per digit, so the year takes two next-token
//! steps and the metrics use the exact two-step probability (see `metrics`). The corrupted prompt
//! starts the span in year XX01, which makes every later year "greater".

use super::{collect_distinct, filter_list, one_token, with_bos, Example, Filter, GenOptions, MetricKind, Rng, Target, Task, YearTokens};
use crate::model::tokenizer::Tokenizer;
use crate::{Error, Result};

/// Events that last a span of years.
pub const NOUNS: &[&str] = &[
    "war", "dynasty", "reign", "siege", "strike", "trial", "voyage", "expedition", "campaign", "occupation",
    "rebellion", "revolution", "empire", "kingdom", "famine", "drought", "plague", "epidemic", "crisis", "conflict",
    "alliance", "treaty", "truce", "partnership", "marriage", "friendship", "rivalry", "feud", "dispute", "negotiation",
    "investigation", "project", "program", "study", "survey", "construction", "excavation", "journey", "pilgrimage", "exile",
    "imprisonment", "captivity", "tenure", "presidency", "administration", "boom", "depression", "recession", "shortage", "embargo",
    "blockade", "invasion", "crusade", "mission", "festival", "tournament", "competition", "exhibition", "era", "period",
    "movement", "reform", "boycott", "protest", "migration", "expansion", "decline", "collapse", "restoration", "regime",
];

pub const CENTURIES: std::ops::RangeInclusive<u32> = 11..=17;
pub const START_YEARS: std::ops::RangeInclusive<u8> = 2..=98;

fn text(noun: &str, xx: u32, start: &str) -> String {
    format!("The {noun} lasted from the year {xx}{start} to the year {xx}")
}

/// Generates `opts.n` greater-than prompts.
pub fn generate(tok: &Tokenizer, opts: &GenOptions) -> Result<Task> {
    let years = year_tokens(tok)?;
    let (nouns, noun_filter) = filter_list("nouns (one token with a leading space)", NOUNS, |n| {
        let t = format!(" {n}");
        Ok(match one_token(tok, &t)? {
            Some(_) => Ok(n),
            None => Err(super::describe_split(tok, &t)),
        })
    })?;
    if nouns.is_empty() {
        return Err(Error::Input(format!("greater-than: {noun_filter}")));
    }
    let mut rng = Rng::stream(opts.seed, 3);
    let centuries: Vec<u32> = CENTURIES.collect();
    let starts: Vec<u8> = START_YEARS.collect();
    let (examples, rejected) = collect_distinct("greater-than", opts.n, |_| {
        let noun = *rng.pick(&nouns);
        let xx = *rng.pick(&centuries);
        let yy = *rng.pick(&starts);
        let clean = text(noun, xx, &format!("{yy:02}"));
        let prompt = tok.encode(&clean, false)?;
        let corrupted = tok.encode(&text(noun, xx, "01"), false)?;
        // The answer must continue the prompt as the year tokens the metric sums over.
        let full = tok.encode(&format!("{clean}{yy:02}"), false)?;
        let want: Vec<u32> = match &years {
            YearTokens::TwoDigit(ids) => vec![ids[yy as usize]],
            YearTokens::Digits(ids) => vec![ids[(yy / 10) as usize], ids[(yy % 10) as usize]],
        };
        let continues = full.len() == prompt.len() + want.len() && full[..prompt.len()] == prompt[..] && full[prompt.len()..] == want[..];
        if !continues || corrupted.len() != prompt.len() {
            return Ok(None);
        }
        Ok(Some(Example {
            prompt: with_bos(tok, opts.bos, prompt)?,
            corrupted: Some(with_bos(tok, opts.bos, corrupted)?),
            target: Target::Year { yy },
            source: format!("{noun}, {xx}{yy:02}"),
        }))
    })?;
    let prompts = Filter { what: "prompts (year tokenized as the metric reads it)".into(), kept: examples.len(), total: examples.len() + rejected, dropped: vec![] };
    Ok(Task {
        name: "greater-than".into(),
        metric: MetricKind::ProbDiff,
        years: Some(years),
        examples,
        filters: vec![noun_filter, prompts],
    })
}

/// How this tokenizer continues "…the year 17" with "32": one two-digit token, or two digit tokens.
pub fn year_tokens(tok: &Tokenizer) -> Result<YearTokens> {
    let table = |n: usize, width: usize| -> Result<Option<Vec<u32>>> {
        (0..n).map(|i| one_token(tok, &format!("{i:0width$}"))).collect::<Result<Option<Vec<u32>>>>()
    };
    let probe = text("war", 17, "32");
    let base = tok.encode(&probe, false)?;
    let full = tok.encode(&format!("{probe}32"), false)?;
    let tail = if full.len() > base.len() && full[..base.len()] == base[..] { &full[base.len()..] } else { &[][..] };
    if let (1, Some(two)) = (tail.len(), table(100, 2)?) {
        if tail[0] == two[32] {
            return Ok(YearTokens::TwoDigit(two));
        }
    }
    if let (2, Some(d)) = (tail.len(), table(10, 1)?) {
        if tail == [d[3], d[2]] {
            return Ok(YearTokens::Digits(d));
        }
    }
    Err(Error::Input(format!(
        "greater-than: this tokenizer writes the \"32\" after {probe:?} as {}, neither one two-digit token nor one token per digit",
        super::describe_split(tok, "32")
    )))
}
