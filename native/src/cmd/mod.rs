pub mod bench;
pub mod eval;
pub mod info;
pub mod logits;
pub mod tasks;
