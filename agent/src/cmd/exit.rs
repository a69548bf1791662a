//! Exit codes and the failure every command can end in.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | runtime failure (see the message) |
//! | 2 | configuration error (file, line and key in the message) |
//! | 3 | another agent holds the data directory |
//! | 4 | the agent is not running (control socket unreachable) |
//! | 5 | the running agent refused the command |
//! | 6 | a test build was pointed at a non-loopback WhatsApp endpoint |

pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILURE: i32 = 1;
pub const EXIT_CONFIG: i32 = 2;
pub const EXIT_LOCKED: i32 = 3;
pub const EXIT_NOT_RUNNING: i32 = 4;
pub const EXIT_REFUSED: i32 = 5;
pub const EXIT_INSECURE_ENDPOINT: i32 = 6;

/// Why a command failed: what to tell the operator (an `anyhow` chain,
/// printed once as `outlet-agent: context: cause`) and the exit code that
/// tells scripts and systemd which kind of failure it was.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            error: anyhow::Error::msg(message.into()),
        }
    }
}

/// What every command returns; [`crate::cmd::main`] turns it into the exit
/// code.
pub type CmdResult = Result<(), Failure>;

/// Attaches an exit code (and, with [`OrExit::or_exit_with`], a context) to
/// any error. The error's own text is kept as one message: the project's
/// errors already include their causes, so a chain would repeat them.
pub trait OrExit<T> {
    fn or_exit(self, code: i32) -> Result<T, Failure>;
    fn or_exit_with(self, code: i32, context: &str) -> Result<T, Failure>;
}

impl<T, E: std::fmt::Display> OrExit<T> for Result<T, E> {
    fn or_exit(self, code: i32) -> Result<T, Failure> {
        self.map_err(|e| Failure::new(code, e.to_string()))
    }

    fn or_exit_with(self, code: i32, context: &str) -> Result<T, Failure> {
        self.map_err(|e| Failure {
            code,
            error: anyhow::Error::msg(e.to_string()).context(context.to_string()),
        })
    }
}

/// Prints a failure and gives its exit code.
pub fn exit_code(result: CmdResult) -> i32 {
    match result {
        Ok(()) => EXIT_OK,
        Err(failure) => {
            eprintln!("outlet-agent: {:#}", failure.error);
            failure.code
        }
    }
}
