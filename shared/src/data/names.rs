//! The one error of reading a name from a command line or a file (a modality, a label
//! convention, a loss, a blending).

/// A name that is none of those known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} '{given}' (expected {expected})")]
pub struct UnknownName {
    /// What was being named ("modality", "loss", ...).
    pub what: &'static str,
    pub given: String,
    /// The names known, as a phrase ("dice or dice-bce").
    pub expected: &'static str,
}

impl UnknownName {
    pub fn new(what: &'static str, given: &str, expected: &'static str) -> Self {
        UnknownName {
            what,
            given: given.to_string(),
            expected,
        }
    }
}
