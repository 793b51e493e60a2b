//! `--help` and the completion scripts, from the real binary: each command's own flags come before
//! the common ones (under their own heading), defaults are shown, commands that read no
//! configuration neither list nor complete nor take them, completion offers no file names for
//! values that are not paths, and a bad duration asks for milliseconds.
#![cfg(unix)]

mod util;

use util::Env;

const GLOBAL_HEADING: &str = "\nCommon options:\n";
const GLOBAL_FLAGS: [&str; 4] = ["--config", "--token-file", "--verbose", "--quiet"];

/// The long flags of the flag lines in a piece of help (a line whose text starts with `-`), in order.
fn long_flags(help: &str) -> Vec<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .filter_map(|line| {
            let column = line.split("  ").next()?;
            let long = column.split([',', ' ', '[', '=', '.']).find(|word| word.starts_with("--"))?;
            Some(long.to_string())
        })
        .collect()
}

/// `touchwire [COMMAND] --help`, split at the global heading: (the command's part, the global part).
fn help_parts(env: &Env, command: &str) -> (String, String) {
    let run = env.run(&[command, "--help"].into_iter().filter(|arg| !arg.is_empty()).collect::<Vec<_>>());
    run.expect_code(0);
    let (own, global) = run
        .stdout
        .split_once(GLOBAL_HEADING)
        .unwrap_or_else(|| panic!("{command} --help has no {GLOBAL_HEADING:?} heading:\n{}", run.stdout));
    (own.to_string(), global.to_string())
}

#[test]
fn each_command_lists_its_own_flags_then_the_global_ones() {
    let env = Env::new();
    for (command, own_flags) in [
        ("listen", &["--addr", "--target", "--touch", "--fifo", "--fifo-command", "--settle", "--json"][..]),
        ("watch", &["--to", "--target", "--ext", "--debounce", "--poll", "--timeout", "--livereload"][..]),
        ("send", &["--to", "--target", "--reason", "--timeout", "--wait", "--path", "--json"][..]),
        ("status", &["--to", "--timeout"][..]),
    ] {
        let (own, global) = help_parts(&env, command);
        let own = long_flags(&own);
        let global = long_flags(&global);
        for flag in own_flags {
            assert!(own.iter().any(|f| f == flag), "{command}: {flag} not among the command's flags {own:?}");
        }
        for flag in GLOBAL_FLAGS {
            assert!(!own.contains(&flag.to_string()), "{command}: {flag} listed before the global heading: {own:?}");
        }
        assert_eq!(global, GLOBAL_FLAGS, "{command}: the global heading lists exactly the global flags");
    }
}

#[test]
fn commands_that_read_no_configuration_neither_list_nor_complete_nor_take_the_common_flags() {
    let env = Env::new();
    for command in ["demo", "completions", "hooks", ""] {
        let run = env.run(&[command, "--help"].into_iter().filter(|arg| !arg.is_empty()).collect::<Vec<_>>());
        run.expect_code(0);
        assert!(!run.stdout.contains("Common options"), "{command}:\n{}", run.stdout);
        let flags = long_flags(&run.stdout);
        for flag in GLOBAL_FLAGS {
            assert!(!flags.contains(&flag.to_string()), "{command} lists {flag}:\n{}", run.stdout);
        }
        assert!(flags.contains(&"--help".to_string()), "{command}: {flags:?}");
    }
    // A flag that would do nothing is refused the way clap refuses any unknown one.
    env.run(&["hooks", "status", "--config", "x.json"]).expect_code(2).expect_stderr("unexpected argument '--config'");
    env.run(&["demo", "-q", "--once"]).expect_code(2).expect_stderr("unexpected argument '-q'");
    // init reads the configuration only for --token, and lists just the files.
    let (_, common) = help_parts(&env, "init");
    assert_eq!(long_flags(&common), ["--config", "--token-file"]);
    env.run(&["init", "--config", "x.json"])
        .expect_code(2)
        .expect_stderr("required arguments were not provided:\n  --token");
    // The zsh script (which offers hidden options too) has no common flag for them.
    let run = env.run(&["completions", "zsh"]);
    run.expect_code(0);
    for command in ["(demo)", "(completions)", "(hooks)"] {
        let start = run.stdout.find(command).unwrap_or_else(|| panic!("zsh: no case {command}"));
        let block = &run.stdout[start..start + run.stdout[start..].find(";;").unwrap_or(0)];
        for flag in GLOBAL_FLAGS {
            assert!(!block.contains(&format!("'{flag}")), "zsh offers {flag} for {command}:\n{block}");
        }
    }
}

#[test]
fn defaults_and_wording_are_in_the_help() {
    let env = Env::new();
    let text_of = |command: &str, flag: &str| {
        let run = env.run(&[command, "--help"]);
        run.expect_code(0);
        // The flag's line and its continuation lines, up to the next flag's line.
        let mut lines = run.stdout.lines().skip_while(|line| !line.trim_start().starts_with(&format!("{flag} ")));
        let first = lines.next().unwrap_or_else(|| panic!("{command}: no {flag}:\n{}", run.stdout));
        let rest = lines.take_while(|line| !line.trim_start().starts_with('-') && !line.trim().is_empty());
        std::iter::once(first).chain(rest).flat_map(str::split_whitespace).collect::<Vec<_>>().join(" ")
    };
    let settle = text_of("listen", "--settle");
    assert!(settle.contains("[default:") && settle.contains("200"), "--settle: {settle}");
    let signal = text_of("listen", "--signal");
    assert!(!signal.starts_with("--signal <SIG> Action"), "--signal is not an action on its own: {signal}");
    assert!(signal.contains("pidfile") && signal.contains("[default: HUP]"), "--signal: {signal}");
    let debounce = text_of("watch", "--debounce");
    assert!(debounce.contains("[default:") && debounce.contains("30"), "--debounce: {debounce}");
    let run = env.run(&["watch", "--help"]);
    let help = run.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(help.contains("[DIR] Watch the whole git work tree holding this directory"), "{help}");
}

#[test]
fn completion_offers_no_file_names_for_the_fifo_command() {
    let env = Env::new();
    let run = env.run(&["completions", "bash"]);
    run.expect_code(0);
    let case = |flag: &str| {
        let start = run.stdout.find(&format!("{flag})")).unwrap_or_else(|| panic!("no case for {flag}"));
        let block = &run.stdout[start..];
        block[..block.find(";;").unwrap_or(block.len())].to_string()
    };
    assert!(case("--fifo").contains("compgen -f"), "--fifo is a path: {}", case("--fifo"));
    for flag in ["--fifo-command", "--signal", "--addr", "--settle", "--target"] {
        assert!(!case(flag).contains("compgen -f"), "bash offers files for {flag}: {}", case(flag));
    }

    let run = env.run(&["completions", "zsh"]);
    run.expect_code(0);
    let line = run.stdout.lines().find(|line| line.contains("'--fifo-command=")).expect("zsh: no --fifo-command");
    assert!(line.trim_end().ends_with(":CMD:' \\"), "zsh offers something for --fifo-command: {line}");
}

#[test]
fn a_bad_duration_asks_for_milliseconds() {
    let env = Env::new();
    for argv in [&["listen", "--settle", "fast", "--touch", "/tmp/x"][..], &["watch", "--debounce", "1s"][..]] {
        let run = env.run(argv);
        run.expect_code(2).expect_stderr("a number of milliseconds, such as 200");
        assert!(!run.stderr.contains("invalid digit"), "{argv:?}: {}", run.stderr);
    }
    env.run(&["listen", "--settle", "3600001", "--touch", "/tmp/x"])
        .expect_code(2)
        .expect_stderr("longer than an hour");
}
