//! The reference's error type.

/// A problem or input the reference refuses. Library code never panics on user input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// An argument is inconsistent or out of range.
    InvalidArgument {
        /// Which argument.
        what: &'static str,
        /// What was expected.
        expected: String,
        /// What was given.
        got: String,
    },
    /// A valid request the reference does not implement.
    Unsupported(String),
}

impl Error {
    pub(crate) fn invalid(
        what: &'static str,
        expected: impl Into<String>,
        got: impl ToString,
    ) -> Self {
        Error::InvalidArgument {
            what,
            expected: expected.into(),
            got: got.to_string(),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::InvalidArgument {
                what,
                expected,
                got,
            } => {
                write!(
                    f,
                    "invalid argument `{what}`: expected {expected}, got {got}"
                )
            }
            Error::Unsupported(s) => write!(f, "unsupported: {s}"),
        }
    }
}

impl std::error::Error for Error {}
