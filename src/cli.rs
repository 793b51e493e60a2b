//! The command line: every command and flag with its help text. Parsed once, then turned into settings.

use clap::{Args, Parser, Subcommand, ValueHint};
use std::path::PathBuf;

/// Reload a Python web app in a VM or container the instant its code changes on the host.
#[derive(Debug, Parser)]
#[command(name = "touchwire", version, about, max_term_width = 100)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes, shown after the command's own under [`GLOBAL_HEADING`].
/// `demo` and `completions`, which have no use for them, flatten this struct themselves and hide
/// it (`hide_global`), so clap does not add the visible copies.
#[derive(Debug, Args)]
#[command(next_help_heading = GLOBAL_HEADING)]
pub struct Global {
    /// Read this config file instead of the repository's .touchwire.json [env: TOUCHWIRE_CONFIG]
    #[arg(long, global = true, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub config: Option<PathBuf>,
    /// File holding the shared token [env: TOUCHWIRE_TOKEN_FILE]
    #[arg(long, global = true, value_name = "FILE", value_hint = ValueHint::FilePath)]
    pub token_file: Option<PathBuf>,
    /// Say more (repeat for even more)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Say nothing but errors (watch also prints the reload after one: editors clear its problem then)
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

/// The help heading of [`Global`]'s options.
pub const GLOBAL_HEADING: &str = "Global options";

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
    #[arg(long, value_name = "NAME", value_hint = ValueHint::Other, default_value = crate::config::DEFAULT_TARGET_NAME)]
    pub target: String,
    /// Action: advance this file's mtime (for uWSGI touch-reload)
    #[arg(long, value_name = "PATH", group = "action")]
    pub touch: Option<PathBuf>,
    /// Action: write a command to this uWSGI master FIFO
    #[arg(long, value_name = "PATH", group = "action")]
    pub fifo: Option<PathBuf>,
    /// Command written to the FIFO: r (graceful reload), c (chain reload), ...
    #[arg(long, value_name = "CMD", value_hint = ValueHint::Other, requires = "fifo", default_value = crate::config::DEFAULT_FIFO_COMMAND)]
    pub fifo_command: String,
    /// Do not poke uWSGI's master after the FIFO command (slower reloads)
    #[arg(long, requires = "fifo")]
    pub no_poke: bool,
    /// With --pidfile: the signal it sends (HUP, USR1, TERM, ...) [default: HUP]
    #[arg(long, value_name = "SIG", value_hint = ValueHint::Other, requires = "pidfile")]
    pub signal: Option<String>,
    /// Action: signal the process whose pid this file holds (the signal is --signal's)
    #[arg(long, value_name = "PATH", group = "action")]
    pub pidfile: Option<PathBuf>,
    /// Action: run this program with its arguments, no shell (put it last)
    #[arg(long, value_name = "CMD", num_args = 1.., allow_hyphen_values = true, group = "action")]
    pub exec: Option<Vec<String>>,
    /// Kill an --exec program that runs longer than this
    #[arg(long, value_name = "MS", value_parser = ms, value_hint = ValueHint::Other, requires = "exec", default_value_t = 10_000)]
    pub exec_timeout: u64,
    /// Coalescing window per target: triggers within it cost one more action at its end
    /// [default: "settle_ms" in the config, else 200]
    #[arg(long, value_name = "MS", value_parser = ms, value_hint = ValueHint::Other)]
    pub settle: Option<u64>,
    /// Allow binding a non-loopback address without a token (anyone who can reach it can reload)
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Most connections served at once; more get an error line and are closed
    #[arg(long, value_name = "N", value_hint = ValueHint::Other, default_value_t = 128)]
    pub max_connections: usize,
    /// Close a connection that sends no complete request for this long
    #[arg(long, value_name = "MS", value_parser = ms, value_hint = ValueHint::Other, default_value_t = 10_000)]
    pub read_timeout: u64,
    /// Print events as JSON lines on stdout
    #[arg(long)]
    pub json: bool,
}

/// `touchwire send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Guest address HOST[:PORT], port 9001 when not given ([IPv6]:PORT); repeat to reach
    /// several guests at once [env: TOUCHWIRE_TO] [default: "remote" in the config, else
    /// 127.0.0.1:9001]
    #[arg(long = "to", value_name = "ADDR", value_parser = remote_address, value_hint = ValueHint::Other)]
    pub to: Vec<String>,
    /// Target to reload [default: the guest's default target]
    #[arg(long, value_name = "NAME", value_hint = ValueHint::Other)]
    pub target: Option<String>,
    /// Why: shown in the guest's log [default: "save" with --path, else "manual"]
    #[arg(long, value_name = "TEXT", value_hint = ValueHint::Other)]
    pub reason: Option<String>,
    /// Give up on a guest that has not answered within this time (with --wait, its ready check takes the time it needs) [default: 1000, with --hook "hook_timeout_ms" in the config, else 500]
    #[arg(long, value_name = "MS", value_parser = ms, value_hint = ValueHint::Other)]
    pub timeout: Option<u64>,
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
    /// Print the result per guest as a JSON line on stdout
    #[arg(long)]
    pub json: bool,
}

/// `touchwire watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Watch the whole git work tree holding this directory [default: the current directory]
    pub dir: Option<PathBuf>,
    /// Guest address HOST[:PORT], port 9001 when not given ([IPv6]:PORT); repeat to reach
    /// several guests at once [env: TOUCHWIRE_TO] [default: "remote" in the config, else
    /// 127.0.0.1:9001]
    #[arg(long = "to", value_name = "ADDR", value_parser = remote_address, value_hint = ValueHint::Other)]
    pub to: Vec<String>,
    /// Target to reload [default: the guest's default target]
    #[arg(long, value_name = "NAME", value_hint = ValueHint::Other)]
    pub target: Option<String>,
    /// Extensions of relevant files, comma-separated [default: "extensions" in the config, else py]
    #[arg(long, value_name = "EXT", value_hint = ValueHint::Other, value_delimiter = ',')]
    pub ext: Vec<String>,
    /// Quiet time that ends a burst of changes [default: "debounce_ms" in the config, else 30]
    #[arg(long, value_name = "MS", value_parser = ms, value_hint = ValueHint::Other)]
    pub debounce: Option<u64>,
    /// Poll every MS (1000 when not given) instead of using the OS's file events
    #[arg(long, value_name = "MS", value_parser = ms, value_hint = ValueHint::Other, num_args = 0..=1, default_missing_value = "1000", require_equals = true)]
    pub poll: Option<u64>,
    /// Only files git tracks are relevant, not untracked ones
    #[arg(long)]
    pub tracked_only: bool,
    /// Give up on a guest that has not answered within this time
    #[arg(long, value_name = "MS", value_parser = ms, value_hint = ValueHint::Other, default_value_t = 1000)]
    pub timeout: u64,
    /// Print events as JSON lines on stdout
    #[arg(long)]
    pub json: bool,
    /// Serve LiveReload (protocol 7) and /livereload.js on PORT (35729 when given alone): browser
    /// pages reload once the app is back, or show the failure
    #[arg(long, value_name = "PORT", value_hint = ValueHint::Other, num_args = 0..=1, default_missing_value = "35729", require_equals = true)]
    pub livereload: Option<u16>,
    /// Address the LiveReload server binds (0.0.0.0 lets browsers on other machines connect)
    #[arg(long, value_name = "HOST", value_hint = ValueHint::Other, default_value = "127.0.0.1", requires = "livereload")]
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
#[command(mut_args(hide_global))]
pub struct DemoArgs {
    /// After the script (which always plays on its own sample), watch this git work tree live
    /// instead of the sample; checked before the script starts
    pub dir: Option<PathBuf>,
    /// End after the script instead of watching live (not with DIR, which only the live part watches)
    #[arg(long)]
    pub once: bool,
    /// The global options, which the demo does not use; last, so their heading does not cover the options above (its sample has its own config and token).
    #[command(flatten)]
    pub unused: Global,
}

/// `touchwire init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// Repository to set up [default: the one holding the current directory]
    #[arg(long, value_name = "DIR", value_hint = ValueHint::DirPath)]
    pub repo: Option<PathBuf>,
    /// Guest address written as "remote", HOST[:PORT], port 9001 when not given
    #[arg(long = "to", value_name = "ADDR", default_value = "127.0.0.1:9001", value_parser = remote_address, value_hint = ValueHint::Other)]
    pub to: String,
    /// File the guest's default target touches (its directory must exist in the guest)
    #[arg(long, value_name = "PATH", default_value = "/tmp/touchwire-app.reload")]
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
    /// Guest address HOST[:PORT] to ping instead of the configured remotes, port 9001 when not
    /// given; repeatable
    #[arg(long = "to", value_name = "ADDR", value_parser = remote_address, value_hint = ValueHint::Other)]
    pub to: Vec<String>,
    /// Give up on a guest that has not answered within this time
    #[arg(long, value_name = "MS", value_parser = ms, value_hint = ValueHint::Other, default_value_t = 1000)]
    pub timeout: u64,
}

/// `touchwire completions`.
#[derive(Debug, Args)]
#[command(mut_args(hide_global))]
pub struct CompletionsArgs {
    /// Shell to print the completion script for
    pub shell: clap_complete::Shell,
    /// The global options, which printing a script does not use.
    #[command(flatten)]
    pub unused: Global,
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

/// A duration flag in ms, at most [`crate::config::MAX_MS`] (an hour). The error says what to
/// write (clap's own says "invalid digit found in string").
fn ms(text: &str) -> Result<u64, String> {
    let ms: u64 = text.trim().parse().map_err(|_| "expected a number of milliseconds, such as 200".to_string())?;
    if ms > crate::config::MAX_MS {
        return Err(format!("{ms} ms is longer than an hour: at most {}", crate::config::MAX_MS));
    }
    Ok(ms)
}

/// Hides [`Global`]'s options (and leaves the others) in a command that flattens it but does not
/// use it (`#[command(mut_args(hide_global))]`).
fn hide_global(arg: clap::Arg) -> clap::Arg {
    let global = arg.get_help_heading() == Some(GLOBAL_HEADING);
    arg.hide(global)
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
        assert_eq!(args.to, vec!["[::1]:9001", "guest:7000"]);
        let cli = Cli::try_parse_from(["touchwire", "listen", "--addr", "127.0.0.1"]).unwrap();
        let Command::Listen(args) = cli.command else { panic!() };
        assert_eq!(args.addr.as_deref(), Some("127.0.0.1:9001"));
        for argv in [["send", "--to", "host:99999"], ["status", "--to", ""], ["listen", "--addr", "::1:9101"]] {
            let err = Cli::try_parse_from(std::iter::once("touchwire").chain(argv)).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
        }
    }

    #[test]
    fn hidden_global_options_still_reach_the_global_struct() {
        let cli = Cli::try_parse_from(["touchwire", "demo", "-vv", "--config", "c.json", "--once"]).unwrap();
        assert_eq!(cli.global.verbose, 2);
        assert_eq!(cli.global.config, Some(PathBuf::from("c.json")));
        let cli = Cli::try_parse_from(["touchwire", "-q", "completions", "bash"]).unwrap();
        assert!(cli.global.quiet);
    }

    #[test]
    fn durations_are_milliseconds_up_to_an_hour() {
        assert_eq!(ms("200"), Ok(200));
        assert_eq!(ms("3600000"), Ok(crate::config::MAX_MS));
        assert!(ms("fast").unwrap_err().contains("a number of milliseconds, such as 200"));
        assert!(ms("-1").is_err());
        assert!(ms("3600001").unwrap_err().contains("longer than an hour"));
    }

    #[test]
    fn one_action_at_a_time() {
        assert!(Cli::try_parse_from(["touchwire", "listen", "--touch", "a", "--fifo", "b"]).is_err());
    }
}
