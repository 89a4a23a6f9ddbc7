//! The one error type of the crate.
use std::fmt;

/// Everything that can go wrong, reported before anything is launched where possible.
#[derive(Clone, Debug, PartialEq)]
pub enum Error {
    /// A GPU runtime library could not be opened.
    LibraryNotFound {
        /// `"CUDA"` or `"HIP"`.
        api: &'static str,
        /// The library names that were tried.
        tried: Vec<String>,
    },
    /// A runtime call failed.
    Driver {
        /// `"CUDA"` or `"HIP"`.
        api: &'static str,
        /// The call, e.g. `"cuModuleLoadData"`.
        call: &'static str,
        /// The runtime's error code.
        code: i32,
        /// The runtime's name for the code, when it has one.
        name: String,
    },
    /// No usable device was found.
    NoDevice {
        /// Why each runtime was not usable.
        reason: String,
    },
    /// An argument is invalid.
    InvalidArgument {
        /// Which argument.
        what: String,
        /// What was expected.
        expected: String,
        /// What was given.
        got: String,
    },
    /// The combination is valid but not supported (head dim, dtype, device architecture, …).
    Unsupported {
        /// Why.
        reason: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(
        what: impl Into<String>,
        expected: impl Into<String>,
        got: impl fmt::Display,
    ) -> Self {
        Error::InvalidArgument {
            what: what.into(),
            expected: expected.into(),
            got: got.to_string(),
        }
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(reason: impl Into<String>) -> Self {
        Error::Unsupported {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::LibraryNotFound { api, tried } => {
                write!(
                    f,
                    "{api} runtime library not found (tried: {})",
                    tried.join(", ")
                )
            }
            Error::Driver {
                api,
                call,
                code,
                name,
            } => {
                write!(f, "{api} call {call} failed with {code} ({name})")
            }
            Error::NoDevice { reason } => write!(f, "no usable GPU: {reason}"),
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
            Error::Unsupported { reason } => write!(f, "unsupported: {reason}"),
        }
    }
}

impl std::error::Error for Error {}
