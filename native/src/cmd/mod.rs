pub mod bench;
pub mod info;
pub mod logits;
