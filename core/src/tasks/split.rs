//! Patching, discovery and test splits (DESIGN.md, "Data splits"): patching for mean ablation
//! values, discovery for an extraction method's decisions and training, test for every number
//! reported. The splits never share a prompt.

use std::collections::HashMap;

use super::{Example, Rng, Task};
use crate::{Error, Result};

/// How many examples go to each split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SplitSizes {
    pub patching: usize,
    pub discovery: usize,
    pub test: usize,
}

impl Default for SplitSizes {
    fn default() -> Self {
        SplitSizes { patching: 100, discovery: 100, test: 200 }
    }
}

impl std::fmt::Display for SplitSizes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "patching {} / discovery {} / test {}", self.patching, self.discovery, self.test)
    }
}

/// The most examples a task is split into (generated tasks make this many prompts).
pub const MAX_EXAMPLES: usize = 10_000_000;

impl SplitSizes {
    /// The examples asked for in all (saturating: `check` refuses sizes that overflow).
    pub fn total(&self) -> usize {
        self.patching.saturating_add(self.discovery).saturating_add(self.test)
    }

    /// Sizes a run can be given: their sum, and `n` where given, at most [`MAX_EXAMPLES`].
    pub fn check(&self, n: Option<usize>) -> Result<()> {
        let sum = self.patching.checked_add(self.discovery).and_then(|s| s.checked_add(self.test));
        match (sum, n) {
            (_, Some(n)) if n > MAX_EXAMPLES => {
                Err(Error::Input(format!("{n} examples were asked for; at most {MAX_EXAMPLES} are supported")))
            }
            (Some(t), None) if t > MAX_EXAMPLES => Err(Error::Input(format!(
                "the splits ask for {t} examples ({self}); at most {MAX_EXAMPLES} are supported"
            ))),
            (None, None) => Err(Error::Input(format!("the split sizes ({self}) add up to more than any run can hold"))),
            _ => Ok(()),
        }
    }

    fn as_array(&self) -> [usize; 3] {
        [self.patching, self.discovery, self.test]
    }

    /// These sizes scaled in proportion to `total` examples (largest remainders; ties go to test,
    /// then discovery). A split asked to be non-empty stays non-empty: when `total` is too small for
    /// that, the error says how many examples are needed.
    pub fn scaled(self, total: usize) -> Result<SplitSizes> {
        if self.test == 0 {
            return Err(Error::Input("the test split cannot be empty: every reported number comes from it".into()));
        }
        if total == self.total() {
            return Ok(self);
        }
        match self.try_scale(total) {
            Some(s) => Ok(s),
            None => {
                let need = (total + 1..).find(|&t| self.try_scale(t).is_some()).expect("a large enough total always splits");
                Err(Error::Input(format!(
                    "{total} examples are too few to split into patching, discovery and test in the proportions \
                     {self}: give at least {need}"
                )))
            }
        }
    }

    fn try_scale(self, total: usize) -> Option<SplitSizes> {
        let want = self.as_array();
        let sum = self.total() as u128;
        let mut got = [0usize; 3];
        let mut frac = [0u128; 3];
        for i in 0..3 {
            let exact = want[i] as u128 * total as u128;
            got[i] = (exact / sum) as usize;
            frac[i] = exact % sum;
        }
        let mut left = total - got.iter().sum::<usize>();
        // Largest fractional part first; ties: test (2), discovery (1), patching (0).
        let mut order = [2usize, 1, 0];
        order.sort_by(|&a, &b| frac[b].cmp(&frac[a]));
        for &i in order.iter().cycle() {
            if left == 0 {
                break;
            }
            if want[i] > 0 {
                got[i] += 1;
                left -= 1;
            }
        }
        let ok = (0..3).all(|i| want[i] == 0 || got[i] > 0);
        ok.then_some(SplitSizes { patching: got[0], discovery: got[1], test: got[2] })
    }
}

/// How many examples a task uses and how they are split, with notes for the user (sizes scaled to
/// a small file, examples left out).
#[derive(Clone, Debug, PartialEq)]
pub struct SplitPlan {
    pub total: usize,
    pub sizes: SplitSizes,
    pub notes: Vec<String>,
}

impl SplitSizes {
    /// A generated task: `n` examples in all (None: these sizes' total), in these proportions.
    pub fn plan_generated(self, n: Option<usize>) -> Result<SplitPlan> {
        self.check(n)?;
        let total = n.unwrap_or(self.total());
        let sizes = self.scaled(total)?;
        let mut notes = Vec::new();
        if sizes != self {
            notes.push(format!("{total} examples split in proportion: {sizes}"));
        }
        Ok(SplitPlan { total, sizes, notes })
    }

    /// A file of `lines` examples, named `origin`: `n` of them (None: these sizes' total, or the
    /// whole file when it is smaller), in these proportions. A file too small to split says how
    /// many lines it needs.
    pub fn plan_file(self, n: Option<usize>, lines: usize, origin: &str) -> Result<SplitPlan> {
        self.check(n)?;
        let total = match n {
            Some(n) if n > lines => {
                return Err(Error::Input(format!("{origin}: {n} examples were asked for, but the file has {lines}")))
            }
            Some(n) => n,
            None => lines.min(self.total()),
        };
        let sizes = self.scaled(total).map_err(|e| match e {
            Error::Input(msg) => Error::Input(format!("{origin} has {lines} example line(s): {msg}")),
            e => e,
        })?;
        let mut notes = Vec::new();
        if n.is_none() && lines < self.total() {
            notes.push(format!("{origin} has {lines} examples, fewer than the {} asked for: split in proportion as {sizes}", self.total()));
        } else if sizes != self {
            notes.push(format!("{total} examples split in proportion: {sizes}"));
        }
        if total < lines {
            notes.push(format!("{total} of the {lines} examples of {origin} are used (a larger n uses more)"));
        }
        Ok(SplitPlan { total, sizes, notes })
    }
}

/// A task's examples, cut into the three splits.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    pub patching: Vec<Example>,
    pub discovery: Vec<Example>,
    pub test: Vec<Example>,
}

impl Splits {
    /// Shuffles `examples` with `seed` and takes the three splits from the front; examples beyond
    /// `sizes.total()` are left out. Fails when there are fewer examples than the sizes ask for or
    /// when two examples share a prompt.
    pub fn new(mut examples: Vec<Example>, sizes: SplitSizes, seed: u64) -> Result<Splits> {
        if sizes.test == 0 {
            return Err(Error::Input("the test split cannot be empty: every reported number comes from it".into()));
        }
        if examples.len() < sizes.total() {
            return Err(Error::Input(format!(
                "{} examples cannot fill splits of {sizes} ({} in all)",
                examples.len(),
                sizes.total()
            )));
        }
        check_distinct(&[("examples", &examples)])?;
        Rng::stream(seed, 100).shuffle(&mut examples);
        examples.truncate(sizes.total());
        let test = examples.split_off(sizes.patching + sizes.discovery);
        let discovery = examples.split_off(sizes.patching);
        Ok(Splits { patching: examples, discovery, test })
    }

    /// Splits given as they are (e.g. three files, in file order). The test split must not be
    /// empty, and no prompt may appear twice.
    pub fn from_parts(patching: Vec<Example>, discovery: Vec<Example>, test: Vec<Example>) -> Result<Splits> {
        if test.is_empty() {
            return Err(Error::Input("the test split cannot be empty: every reported number comes from it".into()));
        }
        check_distinct(&[("patching", &patching), ("discovery", &discovery), ("test", &test)])?;
        Ok(Splits { patching, discovery, test })
    }

    /// Three files' tasks as the three splits, in file order. They must score alike (all with a
    /// distractor or all without) and share no prompt. The task returned holds every example, under
    /// the test file's name.
    pub fn from_tasks(patching: Task, discovery: Task, test: Task) -> Result<(Task, Splits)> {
        for other in [&patching, &discovery] {
            if other.metric != test.metric {
                return Err(Error::Input(format!(
                    "the split files score differently: {} has metric {}, {} has {} (give \"wrong\" in all three or in none)",
                    other.name,
                    other.metric.key(),
                    test.name,
                    test.metric.key()
                )));
            }
        }
        // "t.jsonl: line 7", so that messages say which file.
        let named = |t: Task| -> Vec<Example> {
            t.examples.into_iter().map(|e| Example { source: format!("{}: {}", t.name, e.source), ..e }).collect()
        };
        let mut task = Task { examples: vec![], name: test.name.clone(), years: test.years.clone(), filters: test.filters.clone(), ..test };
        let splits = Splits::from_parts(named(patching), named(discovery), named(test))?;
        task.examples = [&splits.patching, &splits.discovery, &splits.test].into_iter().flatten().cloned().collect();
        Ok((task, splits))
    }

    pub fn sizes(&self) -> SplitSizes {
        SplitSizes { patching: self.patching.len(), discovery: self.discovery.len(), test: self.test.len() }
    }
}

/// No prompt (token ids) appears twice, within or across the named parts.
fn check_distinct(parts: &[(&str, &[Example])]) -> Result<()> {
    let mut seen: HashMap<&[u32], (&str, &str)> = HashMap::new();
    for (name, part) in parts {
        for e in part.iter() {
            if let Some((first_part, first_src)) = seen.insert(&e.prompt, (name, &e.source)) {
                let where_ = if first_part == *name { format!("twice in {name}") } else { format!("in both {first_part} and {name}") };
                return Err(Error::Input(format!(
                    "the same prompt appears {where_} ({first_src}; {}): splits must not overlap",
                    e.source
                )));
            }
        }
    }
    Ok(())
}
