//! One error type for the core: every message names the problem and, where there is one, the file.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A model or data file that is malformed: truncated, a lying header, a bad quant type...
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    /// A tensor that the architecture needs is not in the files.
    #[error("missing tensor `{name}` (looked in {path})")]
    MissingTensor { name: String, path: PathBuf },
    #[error("unsupported model: {0}")]
    Unsupported(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("backend: {0}")]
    Backend(String),
    /// NaN or ±inf out of a forward, with where it first appeared.
    #[error("the model computed NaN or infinite values: {0}")]
    NonFinite(String),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format { path: path.into(), msg: msg.into() }
    }
}

/// "a string", "a number", … for messages about a JSON value of the wrong type.
pub fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
