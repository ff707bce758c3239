pub mod bench;
pub mod eval;
pub mod extract;
pub mod info;
pub mod link;
pub mod logits;
pub mod run;
pub mod tasks;
