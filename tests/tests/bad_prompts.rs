//! Prompts a model can't take: each is refused with a message that names the problem.

use carve_core::circuit::Masks;
use carve_core::model::load::load_path;
use carve_core::model::{Batch, ForwardArgs, Model};
use carve_tests::*;

fn err(prompts: &[Vec<u32>]) -> String {
    let m = load_path(&fixture("tiny-gpt2")).unwrap();
    Batch::new(prompts, &m.config).unwrap_err().to_string()
}

#[test]
fn token_id_past_vocab() {
    let e = err(&[vec![1, 2, 512]]);
    assert!(e.contains("token id 512") && e.contains("vocabulary size 512"), "{e}");
}

#[test]
fn empty_prompt() {
    let e = err(&[vec![1, 2], vec![]]);
    assert!(e.contains("prompt 1 is empty"), "{e}");
}

#[test]
fn no_prompts() {
    assert!(err(&[]).contains("no prompts"));
}

#[test]
fn prompt_longer_than_context() {
    let e = err(&[vec![3; 65]]);
    assert!(e.contains("65 tokens") && e.contains("context of 64"), "{e}");
}

#[test]
fn masks_of_the_wrong_shape() {
    let m = load_path(&fixture("tiny-gpt2")).unwrap();
    let be = cpu();
    let model = Model::upload(&be, m.config.clone(), &m.weights).unwrap();
    let batch = Batch::new(&[vec![1, 2, 3]], &m.config).unwrap();
    let masks = Masks::ones(&[4, 3], &[256, 256]);
    let e = model.forward(&be, &batch, &ForwardArgs { masks: Some(&masks), ..ForwardArgs::default() }).err().unwrap();
    assert!(e.to_string().contains("masks do not fit"), "{e}");
}
