//! The command line: every command and flag with its help text. Parsed once, then turned into
//! the configuration's highest layer ([`Flags`]) by each command's `flags`; the commands
//! resolve their typed settings from the loaded [`crate::config::Config`], never from here.

use crate::config::{ActionSpec, Flags, Signal, defaults, validate_fifo_command};
use clap::{Args, Parser, Subcommand, ValueHint};
use std::path::PathBuf;
use std::time::Duration;

/// Reload a Python web app in a VM or container the instant its code changes on the host.
#[derive(Debug, Parser)]
#[command(name = "touchwire", version, about, max_term_width = 100)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the configuration comes from: options of every command that reads it, shown after the
/// command's own under [`COMMON_HEADING`]. Commands that read none (`demo`, `hooks`,
/// `completions`) do not take them, so neither their help nor their completion offers them.
#[derive(Debug, Args)]
#[command(next_help_heading = COMMON_HEADING)]
pub struct Files {
    /// Read this config file instead of the repository's .touchwire.json [env: TOUCHWIRE_CONFIG]
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
    /// File holding the shared token [env: TOUCHWIRE_TOKEN_FILE]
    #[arg(long, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub token_file: Option<PathBuf>,
}

impl Files {
    /// The layer these options make: the config file and the token file.
    pub fn flags(&self) -> Flags {
        Flags { config: self.config.clone(), token_file: self.token_file.clone(), ..Flags::default() }
    }
}

/// The options of every command that reads the configuration and reports events (`listen`,
/// `send`, `watch`, `status`): [`Files`] and how much to say. Flattened last, so that they
/// follow the command's own options under [`COMMON_HEADING`].
#[derive(Debug, Args)]
#[command(next_help_heading = COMMON_HEADING)]
pub struct Global {
    /// Where the configuration comes from.
    #[command(flatten)]
    pub files: Files,
    /// Say more (repeat for even more)
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Say nothing but errors (watch also prints the reload after one: editors clear its problem then)
    #[arg(short, long, conflicts_with = "verbose")]
    pub quiet: bool,
}

impl Global {
    /// The layer these options make: the config file and the token file.
    pub fn flags(&self) -> Flags {
        self.files.flags()
    }

    /// Where the command's events go, as `-v`, `-q` and its `--json` say.
    pub fn log(&self, json: &Json) -> crate::output::Log {
        crate::output::Log { json: json.json, quiet: self.quiet, verbose: self.verbose }
    }
}

/// The guests a host command talks to, and how long it waits for each (`send`, `watch`, `status`).
#[derive(Debug, Args)]
pub struct Guests {
    /// Guest address HOST[:PORT], port 9001 when not given ([IPv6]:PORT); repeat to reach
    /// several guests at once [env: TOUCHWIRE_TO] [default: "remote" in the config, else
    /// 127.0.0.1:9001]
    #[arg(long = "to", value_name = "ADDR", value_parser = remote_address, value_hint = ValueHint::Other)]
    pub to: Vec<String>,
    /// Give up on a guest that has not answered within this time (a ready check that `send
    /// --wait` waits for takes the time it needs) [default: "timeout_ms" in the config, else
    /// 1000; with `send --hook`: "hook_timeout_ms" in the config, else 500]
    #[arg(long, value_name = "MS", value_parser = nonzero_ms, value_hint = ValueHint::Other)]
    pub timeout: Option<u64>,
}

impl Guests {
    /// Adds these options to `flags`.
    fn onto(&self, flags: Flags) -> Flags {
        Flags { remotes: self.to.clone(), timeout_ms: self.timeout, ..flags }
    }
}

/// What the commands that send triggers (`send`, `watch`) take besides their own options, in
/// this order in their help.
#[derive(Debug, Args)]
pub struct Sending {
    /// The guests and how long to wait for them.
    #[command(flatten)]
    pub guests: Guests,
    /// Target to reload [default: the guest's default target]
    #[arg(long, value_name = "NAME", value_hint = ValueHint::Other)]
    pub target: Option<String>,
    /// Machine-readable output.
    #[command(flatten)]
    pub json: Json,
    /// The configuration and how much to say.
    #[command(flatten)]
    pub global: Global,
}

impl Sending {
    /// Adds these options to `flags`.
    fn onto(&self, flags: Flags) -> Flags {
        self.guests.onto(flags)
    }

    /// Where the command's events go.
    pub fn log(&self) -> crate::output::Log {
        self.global.log(&self.json)
    }
}

/// Machine-readable output (`listen`, `send`, `watch`).
#[derive(Debug, Args)]
pub struct Json {
    /// Print events and results as JSON lines on stdout, one object each
    #[arg(long)]
    pub json: bool,
}

/// The help heading of [`Global`]'s options.
pub const COMMON_HEADING: &str = "Common options";

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Guest: listen for triggers and run the target's action for each authenticated one
    Listen(ListenArgs),
    /// Host: send one trigger and wait for every guest's acknowledgement
    Send(SendArgs),
    /// Host: watch the git work tree and send a trigger for each burst of relevant changes
    Watch(WatchArgs),
    /// Both sides on loopback in one process, on a sample repository: the one-command try-out
    Demo(DemoArgs),
    /// Host: install, remove or show the git hooks that reload after checkout, merge and rebase
    Hooks(HooksArgs),
    /// Host: write .touchwire.json and a fresh token for this repository
    Init(InitArgs),
    /// Show the configuration, where each value came from, and ping every remote
    Status(StatusArgs),
    /// Print a shell completion script
    Completions(CompletionsArgs),
}

/// `touchwire listen`.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address to bind, HOST[:PORT], port 9001 when not given (0 picks a free one; the bound
    /// address is printed first) [default: "listen" in the config, else 127.0.0.1:9001]
    #[arg(long, value_name = "ADDR", value_parser = bind_address, value_hint = ValueHint::Other)]
    pub addr: Option<String>,
    /// Name of the target defined by the action flags below
    #[arg(long, value_name = "NAME", value_hint = ValueHint::Other, default_value = defaults::TARGET_NAME)]
    pub target: String,
    /// Action: advance this file's mtime (for uWSGI touch-reload)
    #[arg(long, value_name = "PATH", group = "action")]
    pub touch: Option<PathBuf>,
    /// Action: write a command to this uWSGI master FIFO
    #[arg(long, value_name = "PATH", group = "action")]
    pub fifo: Option<PathBuf>,
    /// Command written to the FIFO: r (graceful reload), c (chain reload), ...
    #[arg(long, value_name = "CMD", value_hint = ValueHint::Other, requires = "fifo", default_value = defaults::FIFO_COMMAND, value_parser = fifo_command)]
    pub fifo_command: String,
    /// Do not poke uWSGI's master after the FIFO command (slower reloads)
    #[arg(long, requires = "fifo")]
    pub no_poke: bool,
    /// With --pidfile: the signal it sends (HUP, USR1, TERM, ...) [default: HUP]
    #[arg(long, value_name = "SIG", value_hint = ValueHint::Other, requires = "pidfile")]
    pub signal: Option<Signal>,
    /// Action: signal the process whose pid this file holds (the signal is --signal's)
    #[arg(long, value_name = "PATH", group = "action")]
    pub pidfile: Option<PathBuf>,
    /// Action: run this program with its arguments, no shell (put it last)
    #[arg(long, value_name = "CMD", num_args = 1.., allow_hyphen_values = true, group = "action")]
    pub exec: Option<Vec<String>>,
    /// Kill an --exec program that runs longer than this
    #[arg(long, value_name = "MS", value_parser = ms, value_hint = ValueHint::Other, requires = "exec", default_value_t = defaults::EXEC_TIMEOUT_MS)]
    pub exec_timeout: u64,
    /// Coalescing window per target: triggers within it cost one more action at its end
    /// [default: "settle_ms" in the config, else 200]
    #[arg(long, value_name = "MS", value_parser = ms, value_hint = ValueHint::Other)]
    pub settle: Option<u64>,
    /// Allow binding a non-loopback address without a token (anyone who can reach it can reload)
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Most connections served at once; more get an error line and are closed [default:
    /// "max_connections" in the config, else 128]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..), value_hint = ValueHint::Other)]
    pub max_connections: Option<u32>,
    /// Close a connection that sends no complete request for this long [default:
    /// "read_timeout_ms" in the config, else 10000]
    #[arg(long, value_name = "MS", value_parser = nonzero_ms, value_hint = ValueHint::Other)]
    pub read_timeout: Option<u64>,
    /// Machine-readable output.
    #[command(flatten)]
    pub json: Json,
    /// The configuration and how much to say.
    #[command(flatten)]
    pub global: Global,
}

impl ListenArgs {
    /// The layer these options make over `global`'s; a target the action flags define replaces
    /// the configured ones.
    pub fn flags(&self) -> Flags {
        Flags {
            listen: self.addr.clone(),
            target: self.action().map(|action| (self.target.clone(), action)),
            settle_ms: self.settle,
            max_connections: self.max_connections.map(|n| n as usize),
            read_timeout_ms: self.read_timeout,
            ..self.global.flags()
        }
    }

    /// The action `--touch`, `--fifo`, `--pidfile` or `--exec` defines, if any.
    fn action(&self) -> Option<ActionSpec> {
        if let Some(path) = &self.touch {
            return Some(ActionSpec::Touch { path: path.clone() });
        }
        if let Some(path) = &self.fifo {
            let command = self.fifo_command.clone();
            return Some(ActionSpec::Fifo { path: path.clone(), command, poke: !self.no_poke });
        }
        if let Some(pidfile) = &self.pidfile {
            let signal = self.signal.unwrap_or(Signal { name: defaults::SIGNAL });
            return Some(ActionSpec::Signal { pidfile: pidfile.clone(), signal });
        }
        let argv = self.exec.clone()?;
        Some(ActionSpec::Exec { argv, timeout: Duration::from_millis(self.exec_timeout) })
    }
}

/// `touchwire send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Why: shown in the guest's log [default: "save" with --path, else "manual"]
    #[arg(long, value_name = "TEXT", value_hint = ValueHint::Other)]
    pub reason: Option<String>,
    /// Send only if a relevant file differs between these two git revisions
    #[arg(long, value_names = ["OLD", "NEW"], value_hint = ValueHint::Other, num_args = 2, conflicts_with = "paths")]
    pub changed_between: Option<Vec<String>>,
    /// Read "OLD NEW" revision pairs from stdin (git's post-rewrite hook); send only if a relevant file differs
    #[arg(long, conflicts_with_all = ["paths", "changed_between"])]
    pub rewritten: bool,
    /// Wait for the guest's ready check: print "reloaded APP in N ms", or the failure and the log's excerpt (exit 1)
    #[arg(long, conflicts_with = "hook")]
    pub wait: bool,
    /// Run as a git hook: use hook_timeout_ms, and report failures in one line without failing git (exit 0)
    #[arg(long)]
    pub hook: bool,
    /// Changed file: send only if it is relevant (git-tracked or not ignored, watched extension); repeatable
    #[arg(long = "path", value_name = "FILE")]
    pub paths: Vec<PathBuf>,
    /// The guests, the target, the output, the configuration.
    #[command(flatten)]
    pub sending: Sending,
}

impl SendArgs {
    /// The layer these options make.
    pub fn flags(&self) -> Flags {
        self.sending.onto(self.sending.global.flags())
    }
}

/// `touchwire watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Watch the whole git work tree holding this directory [default: the current directory]
    #[arg(value_parser = work_tree_dir, value_hint = ValueHint::DirPath)]
    pub dir: Option<PathBuf>,
    /// Extensions of relevant files, comma-separated [default: "extensions" in the config, else py]
    #[arg(long, value_name = "EXT", value_hint = ValueHint::Other, value_delimiter = ',')]
    pub ext: Vec<String>,
    /// Quiet time that ends a burst of changes [default: "debounce_ms" in the config, else 30]
    #[arg(long, value_name = "MS", value_parser = ms, value_hint = ValueHint::Other)]
    pub debounce: Option<u64>,
    /// Poll every MS (1000 when given alone) instead of using the OS's file events [default:
    /// "poll_ms" in the config, else the OS's events]
    #[arg(long, value_name = "MS", value_parser = nonzero_ms, value_hint = ValueHint::Other, num_args = 0..=1, default_missing_value = "1000", require_equals = true)]
    pub poll: Option<u64>,
    /// Only files git tracks are relevant, not untracked ones [default: "tracked_only" in the
    /// config, else untracked ones too]
    #[arg(long, overrides_with = "no_tracked_only")]
    pub tracked_only: bool,
    /// Untracked files that git does not ignore are relevant too, whatever the config says
    #[arg(long, overrides_with = "tracked_only")]
    pub no_tracked_only: bool,
    /// Serve LiveReload (protocol 7) and /livereload.js on PORT (35729 when given alone): browser
    /// pages reload once the app is back, or show the failure
    #[arg(long, value_name = "PORT", value_hint = ValueHint::Other, num_args = 0..=1, default_missing_value = "35729", require_equals = true)]
    pub livereload: Option<u16>,
    /// Address the LiveReload server binds (0.0.0.0 lets browsers on other machines connect)
    #[arg(long, value_name = "HOST", value_hint = ValueHint::Other, default_value = defaults::LIVERELOAD_BIND, requires = "livereload")]
    pub livereload_bind: String,
    /// Extensions of files the browser loads as they are: applied in the page, never sent to the
    /// guest (css in place, others by a page reload) [default: css]
    #[arg(long, value_name = "EXT", value_hint = ValueHint::Other, value_delimiter = ',', requires = "livereload")]
    pub livereload_assets: Vec<String>,
    /// Hosts of pages that may follow saves beyond this machine's, private networks' (192.168.x.x,
    /// *.test, *.local) and browser extensions': HOST[:PORT], "*.SUFFIX", "null" (a page opened
    /// from a file), "*" (any)
    #[arg(long, value_name = "HOST", value_hint = ValueHint::Other, value_delimiter = ',', requires = "livereload")]
    pub livereload_origin: Vec<String>,
    /// The guests, the target, the output, the configuration.
    #[command(flatten)]
    pub sending: Sending,
}

impl WatchArgs {
    /// The layer these options make.
    pub fn flags(&self) -> Flags {
        let flags = Flags {
            extensions: self.ext.clone(),
            debounce_ms: self.debounce,
            poll_ms: self.poll,
            tracked_only: match (self.tracked_only, self.no_tracked_only) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            ..self.sending.global.flags()
        };
        self.sending.onto(flags)
    }
}

/// `touchwire hooks`.
#[derive(Debug, Args)]
pub struct HooksArgs {
    /// What to do with the hooks
    #[command(subcommand)]
    pub action: HooksAction,
    /// Repository [default: the one holding the current directory]
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath, global = true)]
    pub repo: Option<PathBuf>,
}

/// `touchwire hooks` actions.
#[derive(Debug, Subcommand)]
pub enum HooksAction {
    /// Write post-checkout, post-merge and post-rewrite into the hooks directory (existing hooks keep running)
    Install,
    /// Remove what install added and put back the hooks that were there
    Uninstall,
    /// Say, per hook, whether ours is installed, chained to another, or missing
    Status,
}

/// `touchwire demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// After the script (which always plays on its own sample), watch this git work tree live
    /// instead of the sample; checked before the script starts
    #[arg(value_parser = work_tree_dir, value_hint = ValueHint::DirPath)]
    pub dir: Option<PathBuf>,
    /// End after the script instead of watching live (not with DIR, which only the live part watches)
    #[arg(long)]
    pub once: bool,
}

/// `touchwire init`.
#[derive(Debug, Args)]
#[command(mut_arg("config", |a| a.requires("token")), mut_arg("token_file", |a| a.requires("token")))]
pub struct InitArgs {
    /// Repository to set up [default: the one holding the current directory]
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub repo: Option<PathBuf>,
    /// Guest address written as "remote", HOST[:PORT], port 9001 when not given
    #[arg(long = "to", value_name = "ADDR", default_value_t = defaults::address(), value_parser = remote_address, value_hint = ValueHint::Other)]
    pub to: String,
    /// File the guest's default target touches (its directory must exist in the guest)
    #[arg(long, value_name = "PATH", default_value = defaults::TOUCH_FILE)]
    pub touch: PathBuf,
    /// Overwrite an existing .touchwire.json
    #[arg(long)]
    pub force: bool,
    /// Only install an editor integration (VS Code tasks merged into .vscode/tasks.json; the Vim
    /// plugin; the Emacs mode), leaving .touchwire.json and the token as they are
    #[arg(long, value_enum, value_name = "EDITOR", conflicts_with = "systemd_unit")]
    pub editor: Option<Editor>,
    /// Guest: print a systemd unit that runs `touchwire listen` from the current directory (the
    /// shared folder), and nothing else
    #[arg(long)]
    pub systemd_unit: bool,
    /// With --systemd-unit: the user the service runs as (the app's user)
    #[arg(long, value_name = "NAME", value_hint = ValueHint::Username, requires = "systemd_unit")]
    pub user: Option<String>,
    /// Print uWSGI's fast-reload lines on stdout (lazy-apps, skip-atexit-teardown, a warm master,
    /// chain reload `c` over its master FIFO, logto) and the matching target on stderr; writes the
    /// warm-master helper. .touchwire.json and the token are left as they are
    #[arg(long, conflicts_with_all = ["systemd_unit", "editor", "gunicorn"])]
    pub uwsgi: bool,
    /// Only create the token the committed .touchwire.json names (its token_file, else
    /// .git/touchwire/token), as a fresh clone needs; an existing one is kept. Host and guest
    /// share it through the shared folder: restart the guest's listen after
    #[arg(long, conflicts_with_all = ["systemd_unit", "editor", "gunicorn", "uwsgi", "force"])]
    pub token: bool,
    /// Print a gunicorn.conf.py on stdout whose on_starting hook warms the arbiter (every HUP
    /// forks new workers from it) and the matching target on stderr; writes the helper
    #[arg(long, conflicts_with_all = ["systemd_unit", "editor"])]
    pub gunicorn: bool,
    /// With --uwsgi/--gunicorn: where the guest sees this work tree (default: the same path, as
    /// Lima and Colima mount it)
    #[arg(long, value_name = "DIR")]
    pub guest_root: Option<String>,
    /// With --uwsgi/--gunicorn: where to write the warm-master helper (default:
    /// touchwire_warm.py next to the token, inside the git directory, so it reaches the guest
    /// with the shared folder)
    #[arg(long, value_name = "PATH")]
    pub helper: Option<PathBuf>,
    /// With --uwsgi: the master FIFO, as the guest sees it
    #[arg(long, value_name = "PATH", default_value = "/tmp/touchwire-uwsgi.fifo")]
    pub fifo: String,
    /// With --uwsgi: the master's log file (touchwire reads the end of a chain reload there)
    #[arg(long, value_name = "PATH", default_value = "/tmp/touchwire-uwsgi.log")]
    pub logto: String,
    /// With --gunicorn: the arbiter's pidfile, as the guest sees it
    #[arg(long, value_name = "PATH", default_value = "/tmp/touchwire-gunicorn.pid")]
    pub pidfile: String,
    /// The configuration `--token` reads (the other uses of init read none, so they refuse it).
    #[command(flatten)]
    pub files: Files,
}

/// Editors with a shipped integration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Editor {
    /// Visual Studio Code
    Vscode,
    /// Vim and Neovim
    Vim,
    /// GNU Emacs
    Emacs,
}

/// `touchwire status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The guests to ping and how long to wait for them.
    #[command(flatten)]
    pub guests: Guests,
    /// The configuration and how much to say.
    #[command(flatten)]
    pub global: Global,
}

impl StatusArgs {
    /// The layer these options make.
    pub fn flags(&self) -> Flags {
        self.guests.onto(self.global.flags())
    }
}

/// `touchwire completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// Shell to print the completion script for
    pub shell: clap_complete::Shell,
}

/// `--to`: checked, and written in full with its port (`guest` is `guest:9001`), so every
/// message names the port tried. A mistake is clap's usage error (exit 2) with the fix.
fn remote_address(text: &str) -> Result<String, String> {
    crate::config::remote_address(text)
}

/// `--addr`: checked and written in full, as [`remote_address`], port 0 allowed.
fn bind_address(text: &str) -> Result<String, String> {
    crate::config::bind_address(text)
}

/// A duration flag in ms, at most [`defaults::MAX_MS`] (an hour). The error says what to
/// write (clap's own says "invalid digit found in string").
fn ms(text: &str) -> Result<u64, String> {
    let ms: u64 = text.trim().parse().map_err(|_| "expected a number of milliseconds, such as 200".to_string())?;
    if ms > defaults::MAX_MS {
        return Err(format!("{ms} ms is longer than an hour: at most {}", defaults::MAX_MS));
    }
    Ok(ms)
}

/// `DIR` of `watch` and `demo`: a directory in a git work tree (which is what is watched), made
/// canonical. Checked here, so a mistake is clap's usage error (exit 2) before anything starts.
fn work_tree_dir(text: &str) -> Result<PathBuf, String> {
    let dir = std::path::Path::new(text);
    let why = match std::fs::metadata(dir) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => "there is no such directory".to_string(),
        Err(err) => err.to_string(),
        Ok(meta) if !meta.is_dir() => "it is not a directory".to_string(),
        Ok(_) => match git2::Repository::discover(dir) {
            Err(err) if err.code() == git2::ErrorCode::NotFound => {
                "it is not inside a git repository (touchwire watches a git work tree)".to_string()
            }
            Err(err) => format!("cannot open its git repository: {}", err.message()),
            Ok(repo) if repo.workdir().is_none() => "it is in a bare repository, which has no work tree".to_string(),
            Ok(_) => return dir.canonicalize().map_err(|err| format!("cannot watch {text}: {err}")),
        },
    };
    Err(format!("cannot watch {text}: {why}"))
}

/// `--fifo-command`: uWSGI master FIFO commands.
fn fifo_command(text: &str) -> Result<String, String> {
    validate_fifo_command(text).map(|()| text.to_string())
}

/// An interval or a timeout that 0 would make meaningless (poll without pause, close at once).
fn nonzero_ms(text: &str) -> Result<u64, String> {
    match ms(text)? {
        0 => Err("0 ms would not pause at all: give at least 1".into()),
        ms => Ok(ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn exec_takes_the_rest_of_the_line() {
        let cli = Cli::try_parse_from(["touchwire", "listen", "--exec", "sh", "-c", "exit 3"]).unwrap();
        let Command::Listen(args) = cli.command else { panic!() };
        assert_eq!(args.exec.unwrap(), vec!["sh", "-c", "exit 3"]);
    }

    #[test]
    fn livereload_takes_an_optional_port() {
        let watch = |args: &[&str]| match Cli::try_parse_from(args).map(|cli| cli.command) {
            Ok(Command::Watch(args)) => Some(args.livereload),
            _ => None,
        };
        assert_eq!(watch(&["touchwire", "watch"]), Some(None));
        assert_eq!(watch(&["touchwire", "watch", "--livereload"]), Some(Some(35729)));
        assert_eq!(watch(&["touchwire", "watch", "--livereload=0"]), Some(Some(0)));
        assert_eq!(watch(&["touchwire", "watch", "--livereload-assets", "css"]), None, "needs --livereload");
    }

    #[test]
    fn addresses_are_checked_and_completed_by_the_parser() {
        let cli = Cli::try_parse_from(["touchwire", "send", "--to", "::1", "--to", "guest:7000"]).unwrap();
        let Command::Send(args) = cli.command else { panic!() };
        assert_eq!(args.sending.guests.to, vec!["[::1]:9001", "guest:7000"]);
        let cli = Cli::try_parse_from(["touchwire", "listen", "--addr", "127.0.0.1"]).unwrap();
        let Command::Listen(args) = cli.command else { panic!() };
        assert_eq!(args.addr.as_deref(), Some("127.0.0.1:9001"));
        for argv in [["send", "--to", "host:99999"], ["status", "--to", ""], ["listen", "--addr", "::1:9101"]] {
            let err = Cli::try_parse_from(std::iter::once("touchwire").chain(argv)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
        }
    }

    #[test]
    fn commands_that_read_no_configuration_take_no_common_options() {
        for argv in [&["demo", "--config", "c.json"][..], &["completions", "bash", "-q"], &["hooks", "status", "-v"]] {
            let err = Cli::try_parse_from(std::iter::once("touchwire").chain(argv.iter().copied())).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument, "{argv:?}: {err}");
        }
        let cli = Cli::try_parse_from(["touchwire", "send", "-vv", "--config", "c.json"]).unwrap();
        let Command::Send(args) = cli.command else { panic!() };
        assert_eq!((args.sending.global.verbose, args.flags().config), (2, Some(PathBuf::from("c.json"))));
        let cli = Cli::try_parse_from(["touchwire", "init", "--token", "--config", "c.json"]).unwrap();
        let Command::Init(args) = cli.command else { panic!() };
        assert_eq!(args.files.flags().config, Some(PathBuf::from("c.json")));
        let err = Cli::try_parse_from(["touchwire", "init", "--config", "c.json"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument, "only --token reads it: {err}");
    }

    /// The help text of `command`'s `--flag`.
    fn help_of(command: &str, flag: &str) -> String {
        let mut cli = Cli::command();
        cli.build();
        let sub = cli.find_subcommand(command).unwrap_or_else(|| panic!("no command {command}"));
        let arg = sub.get_arguments().find(|a| a.get_long() == Some(flag)).unwrap_or_else(|| panic!("no --{flag}"));
        arg.get_help().map(|h| h.to_string().replace('\n', " ")).unwrap_or_default()
    }

    #[test]
    fn every_help_states_the_default_defined_in_config_defaults() {
        use defaults::*;
        let in_config =
            |key: &str, value: &dyn std::fmt::Display| format!("[default: \"{key}\" in the config, else {value}");
        let cases: Vec<(&str, &str, String)> = vec![
            ("send", "to", in_config("remote", &address())),
            ("watch", "to", in_config("remote", &address())),
            ("status", "to", in_config("remote", &address())),
            ("listen", "addr", in_config("listen", &address())),
            ("send", "timeout", in_config("timeout_ms", &TIMEOUT_MS)),
            ("send", "timeout", format!("\"hook_timeout_ms\" in the config, else {HOOK_TIMEOUT_MS}]")),
            ("watch", "debounce", in_config("debounce_ms", &DEBOUNCE_MS)),
            ("watch", "ext", in_config("extensions", &EXTENSIONS.join(","))),
            ("watch", "poll", format!("Poll every MS ({POLL_MS} when given alone)")),
            ("watch", "livereload", format!("({LIVERELOAD_PORT} when given alone)")),
            ("watch", "livereload-assets", format!("[default: {}]", LIVERELOAD_ASSETS.join(","))),
            ("listen", "settle", in_config("settle_ms", &SETTLE_MS)),
            ("listen", "max-connections", in_config("max_connections", &MAX_CONNECTIONS)),
            ("listen", "read-timeout", in_config("read_timeout_ms", &READ_TIMEOUT_MS)),
            ("listen", "signal", format!("[default: {SIGNAL}]")),
        ];
        for (command, flag, says) in cases {
            let help = help_of(command, flag);
            assert!(help.contains(&says), "{command} --{flag}: {help:?} does not say {says:?}");
        }
        // The flags clap gives a default to take it from the same place.
        let parsed = Cli::try_parse_from(["touchwire", "watch", "--poll", "--livereload"]).unwrap();
        let Command::Watch(args) = parsed.command else { panic!() };
        assert_eq!(
            (args.poll, args.livereload, args.livereload_bind.as_str()),
            (Some(POLL_MS), Some(LIVERELOAD_PORT), LIVERELOAD_BIND)
        );
        let parsed = Cli::try_parse_from(["touchwire", "init"]).unwrap();
        let Command::Init(args) = parsed.command else { panic!() };
        assert_eq!((args.to, args.touch), (address(), PathBuf::from(TOUCH_FILE)));
    }

    #[test]
    fn the_shared_options_are_declared_once_and_build_the_flag_layer() {
        let cli = Cli::try_parse_from([
            "touchwire",
            "watch",
            "--config",
            "c.json",
            "--to",
            "g",
            "--timeout",
            "70",
            "--poll=5",
            "--tracked-only",
            "--target",
            "web",
        ])
        .unwrap();
        let Command::Watch(args) = cli.command else { panic!() };
        let flags = args.flags();
        assert_eq!(flags.remotes, vec!["g:9001"]);
        assert_eq!((flags.timeout_ms, flags.poll_ms, flags.tracked_only), (Some(70), Some(5), Some(true)));
        assert_eq!(flags.config, Some(PathBuf::from("c.json")));
        assert_eq!(args.sending.target.as_deref(), Some("web"));
        let cli = Cli::try_parse_from([
            "touchwire",
            "listen",
            "--pidfile",
            "/run/g.pid",
            "--target",
            "web",
            "--max-connections",
            "3",
        ])
        .unwrap();
        let Command::Listen(args) = cli.command else { panic!() };
        let flags = args.flags();
        let (name, action) = flags.target.unwrap();
        assert_eq!((name.as_str(), action.to_string().as_str()), ("web", "signal HUP to pid in /run/g.pid"));
        assert_eq!(flags.max_connections, Some(3));
        for argv in [
            &["listen", "--max-connections", "0"][..],
            &["listen", "--read-timeout", "0"],
            &["watch", "--poll=0"],
            &["listen", "--fifo", "f", "--fifo-command", "r;x"],
            &["listen", "--pidfile", "p", "--signal", "BOOM"],
        ] {
            let err = Cli::try_parse_from(std::iter::once("touchwire").chain(argv.iter().copied())).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}: {err}");
        }
    }

    #[test]
    fn durations_are_milliseconds_up_to_an_hour() {
        assert_eq!(ms("200"), Ok(200));
        assert_eq!(ms("3600000"), Ok(defaults::MAX_MS));
        assert!(ms("fast").unwrap_err().contains("a number of milliseconds, such as 200"));
        assert!(ms("-1").is_err());
        assert!(ms("3600001").unwrap_err().contains("longer than an hour"));
    }

    #[test]
    fn one_action_at_a_time() {
        assert!(Cli::try_parse_from(["touchwire", "listen", "--touch", "a", "--fifo", "b"]).is_err());
    }
}
