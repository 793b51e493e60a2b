//! Every built-in default, defined here once. The help texts state them in words (clap cannot
//! print a default that a config file may override); `tests` in `cli` checks that each help
//! text names the value defined here.

use std::time::Duration;

/// The port of an address given without one, on both ends (the wire protocol's).
pub const PORT: u16 = crate::protocol::DEFAULT_PORT;
/// The guest `send`, `watch` and `status` talk to, and the address `listen` binds.
pub const HOST: &str = "127.0.0.1";
/// The target defined by `listen`'s action flags, and the built-in target.
pub const TARGET_NAME: &str = "app";
/// The built-in target's file (uWSGI's `touch-reload`), a guest path.
pub const TOUCH_FILE: &str = "/tmp/touchwire-app.reload";
/// Extensions of relevant files.
pub const EXTENSIONS: &[&str] = &["py"];
/// Quiet time that ends a burst on the host.
pub const DEBOUNCE_MS: u64 = 30;
/// Coalescing window per target on the guest.
pub const SETTLE_MS: u64 = 200;
/// How long a git hook waits for the guests.
pub const HOOK_TIMEOUT_MS: u64 = 500;
/// How long `send`, `watch` and `status` wait for a guest's answer.
pub const TIMEOUT_MS: u64 = 1000;
/// The interval of `watch --poll` given without one.
pub const POLL_MS: u64 = 1000;
/// Most connections a receiver serves at once.
pub const MAX_CONNECTIONS: usize = 128;
/// How long a receiver waits for a complete request line.
pub const READ_TIMEOUT_MS: u64 = 10_000;
/// The command a `fifo` target writes: uWSGI's graceful reload.
pub const FIFO_COMMAND: &str = "r";
/// The signal a `pidfile` target sends.
pub const SIGNAL: &str = "HUP";
/// The timeout of an `exec` action.
pub const EXEC_TIMEOUT_MS: u64 = 10_000;
/// [`EXEC_TIMEOUT_MS`] as a duration.
pub const EXEC_TIMEOUT: Duration = Duration::from_millis(EXEC_TIMEOUT_MS);
/// The port `watch --livereload` serves on, given without one (LiveReload's own).
pub const LIVERELOAD_PORT: u16 = 35729;
/// The address the LiveReload server binds.
pub const LIVERELOAD_BIND: &str = "127.0.0.1";
/// Extensions of files the browser loads as they are.
pub const LIVERELOAD_ASSETS: &[&str] = &["css"];
/// The longest any duration setting may be: an hour is far beyond any sensible timeout or
/// window, and keeps every instant computed from one far from overflowing.
pub const MAX_MS: u64 = 3_600_000;

/// `HOST:PORT`, the default remote and listen address.
pub fn address() -> String {
    format!("{HOST}:{PORT}")
}
