//! `touchwire send`: one explicit trigger to every remote in parallel, waiting for each acknowledgement.

use crate::cli::SendArgs;
use crate::client::{Credentials, fan_out, remote_error};
use crate::config::{Config, Source};
use crate::outcome::{Command, Input, render};
use crate::output::Log;
use crate::protocol::{ErrorCode, Op, Request, escape_remote};
use crate::relevance::Filter;
use anyhow::{Context, Result, anyhow};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Sends one reload; fails (exit 1) if any remote did not acknowledge it. As a git hook
/// (`--hook`) it reports failures but never fails.
pub fn command(args: SendArgs) -> Result<()> {
    let hook = args.hook;
    match send(args) {
        Err(err) if hook => {
            eprintln!("touchwire: {err:#}");
            Ok(())
        }
        result => result,
    }
}

fn send(args: SendArgs) -> Result<()> {
    let log = args.sending.log();
    // With --path, configuration comes from the file's own repository: an editor may run us from anywhere.
    let cwd = match args.paths.first() {
        Some(path) => parent_dir(path)?,
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    let config = Config::load(&args.flags(), &cwd)?;
    let files = match changed_files(&args, &config, log)? {
        Some(files) if files.is_empty() => {
            log.debug("no relevant file changed: nothing to send");
            return Ok(());
        }
        files => files.unwrap_or_default(),
    };
    let remotes = config.remotes_required()?;
    let credentials = Credentials::of(&config)?;
    let timeout = timeout(&config, args.hook);
    let reason = args.reason.clone().unwrap_or_else(|| if files.is_empty() { "manual" } else { "save" }.into());
    let target = args.sending.target.clone();
    let request =
        Request { op: Some(Op::Reload), target, reason: Some(reason), files, wait: args.wait, ..Request::default() };
    let started = std::time::Instant::now();
    let results = fan_out(&remotes, &credentials, &request, timeout);
    // An answer that is an error reply arrives without its own round trip: this bounds it.
    let answered = started.elapsed();
    let root = work_tree(&config.cwd);
    let mut failures = Vec::new();
    for (remote, result) in remotes.iter().zip(results) {
        // The guest took the trigger and said how it went: a `not_ready` answer is the same
        // result as an ok reply whose ready check failed (the action ran; the app is not back),
        // and `action_failed` is its action's own failure. Neither is an undelivered trigger.
        let taken = |code: ErrorCode| matches!(code, ErrorCode::NotReady | ErrorCode::ActionFailed);
        let result = match result {
            Err(err) => match remote_error(&err).filter(|r| taken(r.code)).map(|r| r.reply.clone()) {
                Some(reply) => Ok((reply, answered)),
                None => Err(err),
            },
            ok => ok,
        };
        let error = result.as_ref().err().map(|err| format!("{err:#}"));
        let rendered = render(&Input {
            command: Command::Send { wait: args.wait },
            remote,
            files: &request.files,
            result: match (&result, &error) {
                (Ok((reply, rtt)), _) => Ok((reply, *rtt)),
                (Err(_), error) => Err(error.as_deref().unwrap_or_default()),
            },
            target: request.target.as_deref(),
            root: root.as_deref(),
        });
        match result {
            Err(err) => {
                log.record(rendered.event, rendered.fields);
                // The error itself is what the command fails with: it may be a usage error (exit 2).
                failures.push(err);
            }
            Ok(_) if rendered.kind.failed() => {
                log.record(rendered.event, rendered.fields);
                // The excerpt first, then one line that says it all: an editor shows the
                // last line and keeps the rest in its message history.
                for line in &rendered.excerpt {
                    eprintln!("{line}");
                }
                failures.push(anyhow!("{}", rendered.line));
            }
            Ok(_) => log.event(rendered.event, &rendered.line, rendered.fields),
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 if remotes.len() == 1 => Err(failures.remove(0)),
        n => {
            for err in &failures {
                eprintln!("touchwire: {}", escape_remote(&format!("{err:#}")));
            }
            Err(anyhow!("{n} of {} remotes failed", remotes.len()))
        }
    }
}

/// How long to wait for each guest: `--timeout`, else for a git hook `hook_timeout_ms` (a hook
/// must not hold git up), else the configured timeout.
fn timeout(config: &Config, hook: bool) -> Duration {
    let ms = match (hook, &config.timeout_ms.source) {
        (true, source) if *source != Source::Flag => config.hook_timeout_ms.value,
        _ => config.timeout_ms.value,
    };
    Duration::from_millis(ms)
}

/// The work tree holding `dir`, to name a failing file by its path here.
fn work_tree(dir: &Path) -> Option<PathBuf> {
    git2::Repository::discover(dir).ok()?.workdir().map(Path::to_path_buf)
}

/// The directory holding `path` (which may be deleted already, with its directory), made
/// absolute and canonical as far as it exists: its repository is found from there, and its
/// name compares with the work tree's.
fn parent_dir(path: &Path) -> Result<PathBuf> {
    let absolute = std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    let parent = absolute.parent().unwrap_or(Path::new("/"));
    let mut existing = parent;
    let mut missing = Vec::new();
    while existing.canonicalize().is_err() {
        let (Some(up), Some(name)) = (existing.parent(), existing.file_name()) else { break };
        missing.push(name);
        existing = up;
    }
    let mut dir = existing.canonicalize().unwrap_or_else(|_| existing.to_path_buf());
    dir.extend(missing.iter().rev());
    Ok(dir)
}

/// The deepest directory of `dir` that exists, where git can look for a repository.
fn existing_ancestor(dir: &Path) -> &Path {
    dir.ancestors().find(|d| d.is_dir()).unwrap_or(dir)
}

/// The relevant files the trigger is about, when the command line asks to filter (`--path`,
/// `--changed-between`, `--rewritten`); `None` when it does not, and the trigger goes regardless.
fn changed_files(args: &SendArgs, config: &Config, log: Log) -> Result<Option<Vec<String>>> {
    if !args.paths.is_empty() {
        return relevant_files(&args.paths, config, log).map(Some);
    }
    let pairs = match (&args.changed_between, args.rewritten) {
        (Some(pair), _) => vec![(pair[0].clone(), pair[1].clone())],
        (None, true) => read_pairs(std::io::stdin().lock())?,
        (None, false) => return Ok(None),
    };
    let filter = Filter::open(&config.cwd, &config.extensions.value, config.tracked_only.value)?;
    let mut files = Vec::new();
    for (old, new) in pairs {
        files.extend(filter.changed_between(&old, &new)?);
    }
    files.sort();
    files.dedup();
    Ok(Some(files))
}

/// "OLD NEW [extra]" lines, as git's post-rewrite hook gets them on stdin.
fn read_pairs(input: impl std::io::BufRead) -> Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    // Bounded: a rebase of a million commits is not a thing.
    for line in input.lines().take(1_000_000) {
        let line = line.context("cannot read revision pairs from stdin")?;
        let mut words = line.split_whitespace();
        if let (Some(old), Some(new)) = (words.next(), words.next()) {
            pairs.push((old.to_string(), new.to_string()));
        }
    }
    Ok(pairs)
}

/// The relevant ones among `paths`, relative to their work tree; says why each other one is left out (with -v).
fn relevant_files(paths: &[PathBuf], config: &Config, log: Log) -> Result<Vec<String>> {
    let Some(first) = paths.first() else { return Ok(Vec::new()) };
    let first_dir = parent_dir(first)?;
    let start = existing_ancestor(&first_dir);
    let filter = match Filter::open(start, &config.extensions.value, config.tracked_only.value) {
        Ok(filter) => filter,
        Err(err) => {
            // An editor hook fires on every save, in a repository or not: outside one, nothing is relevant.
            let outside = matches!(git2::Repository::discover(start), Err(e) if e.code() == git2::ErrorCode::NotFound);
            let why = match outside {
                true => {
                    format!("it is outside any git work tree (there is no repository in or above {})", start.display())
                }
                false => format!("{err:#}"),
            };
            for path in paths {
                log.debug(&format!("not sending for {}: {why}", path.display()));
            }
            return Ok(Vec::new());
        }
    };
    let mut files = Vec::new();
    for path in paths {
        let dir = parent_dir(path)?;
        let name = path.file_name().map(|n| dir.join(n)).unwrap_or(dir);
        let why = match filter.relative(&name) {
            None => Some(format!("it is outside the work tree {}", filter.workdir().display())),
            Some(rel) => match filter.why_irrelevant(&rel) {
                None => {
                    files.push(rel);
                    None
                }
                Some(why) => Some(why),
            },
        };
        if let Some(why) = why {
            log.debug(&format!("not sending for {}: {why}", path.display()));
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Flags;

    #[test]
    fn a_hook_waits_hook_timeout_ms_unless_a_flag_says() {
        let file = Path::new("/p/.touchwire.json");
        let mut config = Config::from_file_text(r#"{"hook_timeout_ms": 300}"#, file).unwrap();
        assert_eq!(timeout(&config, false), Duration::from_millis(1000));
        assert_eq!(timeout(&config, true), Duration::from_millis(300));
        config.apply_flags(&Flags { timeout_ms: Some(70), ..Flags::default() });
        assert_eq!(
            (timeout(&config, false), timeout(&config, true)),
            (Duration::from_millis(70), Duration::from_millis(70))
        );
    }

    #[test]
    fn rewrite_pairs_are_read_line_by_line() {
        let input = "aaa bbb\nccc ddd extra\n\nlonely\n";
        let pairs = super::read_pairs(input.as_bytes()).unwrap();
        assert_eq!(pairs, vec![("aaa".into(), "bbb".into()), ("ccc".into(), "ddd".into())]);
    }
}
