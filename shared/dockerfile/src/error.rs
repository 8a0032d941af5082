//! The crate's error type.

/// Everything that can go wrong parsing a Dockerfile or expanding its words.
///
/// Every error found while parsing a Dockerfile names the line (1-based) and, where there is
/// one, the instruction, e.g. `line 3: COPY: requires at least two arguments`.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The Dockerfile holds no instruction at all (empty, or only comments and blank lines).
    #[error("line {line}: file with no instructions")]
    NoInstructions {
        /// The number of lines read.
        line: usize,
    },
    /// A parser directive (`# escape=`, `# syntax=`) is invalid or repeated.
    #[error("line {line}: parser directive: {message}")]
    Directive {
        /// The line of the directive.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An instruction's keyword is not one Dockerfiles know.
    #[error("line {line}: unknown instruction: {instruction}")]
    UnknownInstruction {
        /// The first line of the instruction.
        line: usize,
        /// The keyword as written, upper-cased.
        instruction: String,
    },
    /// An instruction is malformed.
    #[error("line {line}: {instruction}: {message}")]
    Instruction {
        /// The first line of the instruction.
        line: usize,
        /// The instruction's keyword, upper-cased (`COPY`, `ENV`, ...).
        instruction: String,
        /// What is wrong.
        message: String,
    },
    /// Variable expansion of a word failed (bad substitution, unterminated quote, `${X:?}`...).
    #[error("failed to process {word:?}: {message}")]
    Expand {
        /// The word being expanded.
        word: String,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    pub(crate) fn instruction(line: usize, keyword: &str, message: impl Into<String>) -> Error {
        Error::Instruction {
            line,
            instruction: keyword.to_uppercase(),
            message: message.into(),
        }
    }
}
