//! Zero ablation values by width, uploaded once per forward and shared by every mix that needs
//! them (rather than once per mix).

use crate::backend::Backend;
use crate::{HostTensor, Result};

pub(crate) struct Zeros<B: Backend>(Vec<(usize, B::Tensor)>);

impl<B: Backend> Zeros<B> {
    pub(crate) fn new() -> Self {
        Zeros(Vec::new())
    }

    /// `[1, width]` of zeros.
    pub(crate) fn get(&mut self, be: &B, width: usize) -> Result<B::Tensor> {
        if let Some((_, t)) = self.0.iter().find(|(w, _)| *w == width) {
            return Ok(t.clone());
        }
        let t = be.upload(&HostTensor::zeros(vec![1, width]))?;
        self.0.push((width, t.clone()));
        Ok(t)
    }
}
