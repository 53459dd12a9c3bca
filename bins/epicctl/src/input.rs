//! Errors about input files, shared by the subcommands that read them.

use std::error::Error;
use std::fmt;
use std::path::{Path, PathBuf};

/// A problem with one input file: names the file, then says what is wrong.
#[derive(Debug)]
pub struct FileProblem {
    path: PathBuf,
    message: String,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl Error for FileProblem {}

/// A boxed [`FileProblem`] for `path`.
pub fn problem(path: &Path, message: impl fmt::Display) -> Box<dyn Error> {
    Box::new(FileProblem {
        path: path.to_owned(),
        message: message.to_string(),
    })
}
