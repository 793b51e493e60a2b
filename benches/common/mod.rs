//! Helpers shared by the benches (`send`, `watch`, `uwsgi`, `ready`), included from each with `mod common;`.
//!
//! - **children**: [`Guard`], a child killed and reaped when dropped, by its PID ([`Kill::Pid`]) or with its whole
//!   process group ([`Kill::Group`], which the Ctrl-C handler of [`install_interrupt_handler`] kills too);
//!   [`output_of`] runs a short command to completion; [`Lines`] follows a child's output line by line;
//! - **waiting**: [`wait_until`] polls a check until a deadline;
//! - **the machine**: [`cpu_model`], [`logical_cpus`], [`kernel`], [`load_average`], [`first_line`];
//! - **numbers**: [`quantile`] and [`Samples`] (milliseconds), [`mb`], [`vm_kb`] (`/proc/PID/status`);
//! - **the network**: [`free_port`].
//!
//! Not every bench uses every helper, hence `dead_code` is allowed here.

#![allow(dead_code)]

use anyhow::{Context, Result, anyhow, bail};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};
use wait_timeout::ChildExt;

// ---------------------------------------------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------------------------------------------

/// Process groups of the [`Kill::Group`] children not yet reaped: the Ctrl-C handler kills them.
static LIVE: Mutex<Vec<i32>> = Mutex::new(Vec::new());
/// Set by Ctrl-C: loops stop, no new child starts, and the normal error path cleans up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn live() -> std::sync::MutexGuard<'static, Vec<i32>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Installs the Ctrl-C handler: it kills every live process group and makes [`check_interrupted`] fail.
pub fn install_interrupt_handler() {
    if let Err(err) = ctrlc::set_handler(on_interrupt) {
        eprintln!("bench: cannot install the Ctrl-C handler ({err}); an interrupted run may leave children behind");
    }
}

fn on_interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
    for &group in live().iter() {
        kill_group(group);
    }
    eprintln!("bench: interrupted: children killed, cleaning up");
}

/// Whether Ctrl-C was pressed.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails once Ctrl-C was pressed; called in every loop.
pub fn check_interrupted() -> Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// SIGKILL to the process group `group`: the group of a child spawned as its leader and not yet reaped.
fn kill_group(group: i32) {
    // SAFETY: kill(2) takes no pointers. The id is that of a child of ours that leads its own group and has not
    // been reaped (reaping removes it from LIVE first), so the group id cannot have been reused.
    unsafe {
        libc::kill(-group, libc::SIGKILL);
    }
}

/// How a [`Guard`] kills its child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// The child alone, by its PID ([`Child::kill`]).
    Pid,
    /// The child started as the leader of its own process group, killed with its whole group (its PID is the
    /// group's id: uWSGI's workers, a shell's pipeline), also by the Ctrl-C handler.
    Group,
}

/// A child killed (see [`Kill`]) and reaped when dropped, on error paths too. Killing a child already reaped
/// does nothing.
pub struct Guard {
    pub child: Child,
    /// Whether the child's group is still in [`LIVE`], to be killed on drop.
    group: bool,
}

impl Guard {
    /// Spawns `cmd`; fails once Ctrl-C was pressed.
    pub fn spawn(cmd: &mut Command, what: &str, kill: Kill) -> Result<Guard> {
        check_interrupted()?;
        if kill == Kill::Pid {
            let child = cmd.spawn().with_context(|| format!("cannot start {what}"))?;
            return Ok(Guard { child, group: false });
        }
        cmd.process_group(0);
        let mut live = live();
        let child = cmd.spawn().with_context(|| format!("cannot start {what}"))?;
        live.push(child.id() as i32);
        Ok(Guard { child, group: true })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits at most `limit` for the child's exit; a child still running then is left to [`Drop`].
    pub fn wait_for(&mut self, limit: Duration, what: &str) -> Result<ExitStatus> {
        match self.child.wait_timeout(limit).with_context(|| format!("cannot wait for {what}"))? {
            None => bail!("{what} still running after {} s (killed)", limit.as_secs()),
            Some(status) => {
                self.forget();
                Ok(status)
            }
        }
    }

    /// Takes a reaped child's group out of [`LIVE`]: its id may be reused.
    fn forget(&mut self) {
        if self.group {
            let pid = self.child.id() as i32;
            live().retain(|&group| group != pid);
            self.group = false;
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.group {
            let pid = self.child.id() as i32;
            live().retain(|&group| group != pid);
            kill_group(pid);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a short command to completion (at most `limit`); returns its status, and its stdout and stderr together.
pub fn output_of(mut cmd: Command, what: &str, limit: Duration, kill: Kill) -> Result<(ExitStatus, String)> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = Guard::spawn(&mut cmd, what, kill)?;
    // Read in threads while it runs: a full pipe would stop it, and a child that hangs is killed on return.
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = read_all(Box::new(child.child.stdout.take().context("no stdout pipe")?));
    let stderr = read_all(Box::new(child.child.stderr.take().context("no stderr pipe")?));
    let status = child.wait_for(limit, what)?;
    let mut text = stdout.join().unwrap_or_default();
    text.push_str(&stderr.join().unwrap_or_default());
    Ok((status, text))
}

/// A line of a child's output, as `T`, with the instant the bench read it.
pub type Stamped<T> = (Instant, T);

/// A thread reading a child's output: each line `parse` accepts goes into a channel with the [`Instant`] it
/// arrived.
pub struct Lines<T>(mpsc::Receiver<Stamped<T>>);

impl<T: Send + 'static> Lines<T> {
    pub fn follow(pipe: impl Read + Send + 'static, parse: impl Fn(String) -> Option<T> + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(pipe).split(b'\n').map_while(Result::ok) {
                let arrived = Instant::now();
                if let Some(item) = parse(String::from_utf8_lossy(&line).into_owned())
                    && tx.send((arrived, item)).is_err()
                {
                    break;
                }
            }
        });
        Lines(rx)
    }

    /// The first line for which `wanted` holds, within `limit`; the others on the way are dropped.
    pub fn wait_for(&self, limit: Duration, wanted: impl Fn(&T) -> bool) -> Option<Stamped<T>> {
        let deadline = Instant::now() + limit;
        loop {
            let (at, item) = self.0.recv_timeout(deadline.checked_duration_since(Instant::now())?).ok()?;
            if wanted(&item) {
                return Some((at, item));
            }
        }
    }

    /// The next line within `limit`.
    pub fn next(&self, limit: Duration) -> Result<Stamped<T>, RecvTimeoutError> {
        self.0.recv_timeout(limit)
    }

    /// Every line already arrived.
    pub fn drain(&self) -> Vec<Stamped<T>> {
        self.0.try_iter().collect()
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------------------------

/// Calls `check` every `every` until it returns `true`; fails with `what` once `limit` has passed, or with the
/// first error of `check`, or once Ctrl-C was pressed.
pub fn wait_until(limit: Duration, every: Duration, what: &str, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !check()? {
        check_interrupted()?;
        if Instant::now() > deadline {
            bail!("{what}");
        }
        thread::sleep(every);
    }
    Ok(())
}

/// A free loopback port: bound to port 0, read back, released.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

// ---------------------------------------------------------------------------------------------------------------
// The machine
// ---------------------------------------------------------------------------------------------------------------

/// The CPU's model name from `/proc/cpuinfo`, or `unknown`.
pub fn cpu_model() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split_once(':'));
    cpu.map_or_else(|| "unknown".into(), |(_, name)| name.trim().to_string())
}

/// Logical CPUs available to the bench (0 when unknown).
pub fn logical_cpus() -> usize {
    thread::available_parallelism().map_or(0, |n| n.get())
}

/// A `/proc` or `/sys` file's content, trimmed; empty when unreadable.
pub fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path).unwrap_or_default().trim().to_string()
}

/// The kernel release, from `/proc/sys/kernel/osrelease`.
pub fn kernel() -> String {
    read_trimmed("/proc/sys/kernel/osrelease")
}

/// The first three fields of `/proc/loadavg`: other work on the machine shows here.
pub fn load_average() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace().take(3).collect::<Vec<_>>().join(", ")
}

/// The first line of what `program ARGS` prints (stdout, then stderr), whatever its exit status.
pub fn first_line(program: &str, args: &[&str], limit: Duration, kill: Kill) -> Result<String> {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let (_, text) = output_of(cmd, program, limit, kill)?;
    Ok(text.lines().next().unwrap_or("").trim().to_string())
}

/// `date -u` as `YYYY-MM-DD HH:MM UTC`.
pub fn date(limit: Duration, kill: Kill) -> Result<String> {
    first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"], limit, kill)
}

// ---------------------------------------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------------------------------------

/// The `p` quantile (0 to 1) of `values`, linearly interpolated between the nearest samples; NaN without values.
pub fn quantile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let Some(last) = sorted.len().checked_sub(1) else { return f64::NAN };
    let rank = p * last as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

/// Timings in milliseconds.
#[derive(Debug, Default)]
pub struct Samples {
    pub ms: Vec<f64>,
}

impl Samples {
    pub fn push(&mut self, took: Duration) {
        self.ms.push(took.as_secs_f64() * 1000.0);
    }

    /// The `p` quantile (0 to 1); see [`quantile`].
    pub fn quantile(&self, p: f64) -> f64 {
        quantile(&self.ms, p)
    }

    pub fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    pub fn min(&self) -> f64 {
        self.ms.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn len(&self) -> usize {
        self.ms.len()
    }
}

/// kB as `N.N MB`.
pub fn mb(kb: u64) -> String {
    format!("{:.1} MB", kb as f64 / 1024.0)
}

/// A kB field of `/proc/PID/status`, such as `VmRSS:` or `VmHWM:`.
pub fn vm_kb(pid: u32, field: &str) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).context("cannot read /proc/PID/status")?;
    let line = status.lines().find(|l| l.starts_with(field)).ok_or_else(|| anyhow!("no {field} in status"))?;
    let kb = line.trim_start_matches(field).trim().trim_end_matches("kB").trim();
    kb.parse().with_context(|| format!("unreadable {line:?}"))
}
