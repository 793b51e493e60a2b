//! A real guest over a real shared folder, as Lima and Colima give one: a network namespace
//! "guest" joined by a veth pair to a namespace "host"; in the host namespace an sshd of our own
//! (Debian's openssh-server: its own config, host key and authorized_keys in a scratch
//! directory, never the machine's /etc/ssh, and never a running sshd), and in the guest
//! namespace `sshfs` mounting the host's work tree with sshfs's default attribute caching. The
//! guest sees the host's bytes, eventually, and never an inotify event for a host-side edit.
//!
//! Used by tests/realapp.rs (`#[path]`) and benches/realapp.rs, so it depends on nothing else in
//! tests/util and returns errors instead of panicking. Needs root, iproute2, util-linux
//! (`nsenter`), openssh-server and openssh-client, sshfs and fuse3.
//!
//! Processes are started in the root mount namespace (`nsenter --net`, not `ip netns exec`,
//! which gives each command a mount namespace of its own), so the sshfs mount is seen by every
//! command run "in the guest". Every child leads its own process group and is ended with it, by
//! its PID, when the [`Guest`] drops: first the commands started with [`Guest::spawn`] (newest
//! first), then the mount (`fusermount3 -u`), sshfs, sshd, and the namespaces. Every wait has a
//! deadline. Only the two namespace addresses are contacted.
#![allow(dead_code)]

use anyhow::{Context, Result, anyhow, bail};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The host's address on the veth pair (in the host namespace); sshd listens here.
pub const HOST_ADDR: &str = "10.214.0.1";
/// The guest's address on the veth pair (in the guest namespace); its servers listen here.
pub const GUEST_ADDR: &str = "10.214.0.2";
/// sshd's port in the host namespace.
pub const SSH_PORT: u16 = 2222;
/// Deadline for sshd to listen and for the mount to appear.
const START: Duration = Duration::from_secs(20);

/// The tools the guest needs, each with the Debian package that brings it.
pub const TOOLS: [(&str, &str); 6] = [
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("sshd", "openssh-server"),
    ("ssh-keygen", "openssh-client"),
    ("sshfs", "sshfs"),
    ("fusermount3", "fuse3"),
];

/// Whether `tool` is an executable on PATH or in /usr/sbin (sshd lives there).
pub fn have(tool: &str) -> bool {
    which(tool).is_some()
}

/// The path of `tool` on PATH, or in /usr/sbin and /sbin.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// The packages whose tools are missing, for a skip message or an install hint.
pub fn missing_packages() -> Vec<&'static str> {
    let mut missing: Vec<&str> = TOOLS.iter().filter(|(tool, _)| !have(tool)).map(|(_, package)| *package).collect();
    if !Path::new("/dev/fuse").exists() {
        missing.push("/dev/fuse (FUSE in the kernel)");
    }
    missing.dedup();
    missing
}

/// How the guest mounts the host's tree.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// sshfs's cache of attributes and directory entries (`dir_cache`), on by default in sshfs and
    /// in Lima: a file's size and mtime are served from it for up to `cache_timeout` seconds.
    pub cache: bool,
    /// sshfs's `dcache_timeout` (its default: 20 s).
    pub cache_timeout: u32,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions { cache: true, cache_timeout: 20 }
    }
}

impl MountOptions {
    /// The sshfs `-o` list, without the ssh options.
    pub fn sshfs_options(&self) -> String {
        format!("dir_cache={},dcache_timeout={}", if self.cache { "yes" } else { "no" }, self.cache_timeout)
    }
}

/// A child that leads its own process group, with its output in a log file.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    /// Whether it still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What it wrote so far.
    pub fn said(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM to its group (uWSGI with `--die-on-term` takes its workers with it), up to
    /// `grace` to exit, then SIGKILL to the group; reaped.
    pub fn stop(&mut self, grace: Duration) {
        if self.alive() {
            signal_group(&mut self.child, libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline && self.alive() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // The group may outlive its leader (workers): kill it while the leader is not yet reaped.
        signal_group(&mut self.child, libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `signal` to the process group led by `child`, unless `child` has been reaped (its id reused).
fn signal_group(child: &mut Child, signal: libc::c_int) {
    // try_wait reaps an exited leader; a zombie leader keeps the group id from being reused.
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) takes no pointers; the id is that of our own unreaped child, which leads its group.
        unsafe { libc::kill(-pid, signal) };
    }
}

/// Two network namespaces, sshd in one, the sshfs mount of the other; see the module's doc.
pub struct Guest {
    /// Removed on drop, unless the mount could not be undone (then its files are the host's).
    scratch: Option<tempfile::TempDir>,
    dir: PathBuf,
    pub host_ns: String,
    pub guest_ns: String,
    /// The host's directory the guest sees.
    pub shared: PathBuf,
    /// Where the guest sees it (a path in the same file system tree, of the sshfs mount).
    pub mount: PathBuf,
    pub options: MountOptions,
    procs: Vec<Proc>,
    sshfs: Option<Proc>,
    sshd: Option<Proc>,
    mounted: bool,
    namespaces: Vec<String>,
}

static SERIAL: AtomicUsize = AtomicUsize::new(0);

/// Runs a short command to completion (at most 20 s); fails with its output unless it succeeded.
pub fn run(mut cmd: Command, what: &str) -> Result<String> {
    let scratch = tempfile::tempfile().context("cannot create a scratch file")?;
    cmd.stdin(Stdio::null()).stdout(scratch.try_clone()?).stderr(scratch.try_clone()?);
    let mut child = cmd.spawn().with_context(|| format!("cannot start {what}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{what}: still running after 20 s (killed)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let mut text = String::new();
    let mut scratch = scratch;
    std::io::Seek::rewind(&mut scratch)?;
    scratch.read_to_string(&mut text)?;
    if !status.success() {
        bail!("{what} failed ({status}): {}", text.trim());
    }
    Ok(text)
}

fn ip(args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    run(cmd, &format!("ip {}", args.join(" ")))
}

impl Guest {
    /// Builds the namespaces, starts sshd in the host one and mounts `shared` in the guest one.
    /// `tag` (a few characters) tells apart the guests of one process in interface names.
    pub fn start(tag: &str, shared: &Path, options: MountOptions) -> Result<Guest> {
        let missing = missing_packages();
        if !missing.is_empty() {
            bail!("missing: {} (scripts/test installs them)", missing.join(", "));
        }
        let scratch =
            tempfile::Builder::new().prefix("touchwire-guest").tempdir().context("cannot create a scratch dir")?;
        let dir = scratch.path().to_path_buf();
        let shared = shared.canonicalize().with_context(|| format!("no shared directory {}", shared.display()))?;
        let id = format!("{}{tag}{}", std::process::id(), SERIAL.fetch_add(1, Ordering::SeqCst));
        let mut guest = Guest {
            scratch: Some(scratch),
            mount: dir.join("mnt"),
            dir,
            host_ns: format!("twr-host-{id}"),
            guest_ns: format!("twr-guest-{id}"),
            shared,
            options,
            procs: Vec::new(),
            sshfs: None,
            sshd: None,
            mounted: false,
            namespaces: Vec::new(),
        };
        guest.network(&id)?;
        guest.sshd()?;
        guest.sshfs()?;
        Ok(guest)
    }

    fn network(&mut self, id: &str) -> Result<()> {
        // Interface names are at most 15 bytes.
        let short: String = id.chars().rev().take(11).collect::<Vec<_>>().into_iter().rev().collect();
        let (veth_host, veth_guest) = (format!("twrh{short}"), format!("twrg{short}"));
        for ns in [self.host_ns.clone(), self.guest_ns.clone()] {
            ip(&["netns", "add", &ns])?;
            self.namespaces.push(ns);
        }
        ip(&[
            "-n",
            &self.host_ns,
            "link",
            "add",
            &veth_host,
            "type",
            "veth",
            "peer",
            "name",
            &veth_guest,
            "netns",
            &self.guest_ns,
        ])?;
        for (ns, dev, addr) in [(&self.host_ns, &veth_host, HOST_ADDR), (&self.guest_ns, &veth_guest, GUEST_ADDR)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/30"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    fn sshd(&mut self) -> Result<()> {
        let ssh = self.dir.join("ssh");
        fs::create_dir_all(&ssh)?;
        for key in ["host_ed25519", "id_ed25519"] {
            let mut keygen = Command::new("ssh-keygen");
            keygen.args(["-q", "-t", "ed25519", "-N", "", "-C", "touchwire-test", "-f"]).arg(ssh.join(key));
            run(keygen, "ssh-keygen")?;
        }
        fs::copy(ssh.join("id_ed25519.pub"), ssh.join("authorized_keys")).context("cannot write authorized_keys")?;
        let config = format!(
            "# touchwire's test sshd: its own keys, nothing of /etc/ssh.\n\
             ListenAddress {HOST_ADDR}:{SSH_PORT}\n\
             HostKey {host_key}\n\
             AuthorizedKeysFile {authorized}\n\
             PidFile none\n\
             StrictModes no\n\
             UsePAM no\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             X11Forwarding no\n\
             AllowTcpForwarding no\n\
             PrintMotd no\n\
             LogLevel ERROR\n\
             Subsystem sftp internal-sftp\n",
            host_key = ssh.join("host_ed25519").display(),
            authorized = ssh.join("authorized_keys").display(),
        );
        fs::write(ssh.join("sshd_config"), config)?;
        // Debian's sshd needs its privilege separation directory (compiled in); the service makes it at boot.
        if !Path::new("/run/sshd").exists() {
            fs::create_dir_all("/run/sshd").context("cannot create /run/sshd")?;
        }
        let sshd = which("sshd").ok_or_else(|| anyhow!("no sshd (apt-get install openssh-server)"))?;
        let mut cmd = self.host(sshd.to_string_lossy().as_ref());
        cmd.args(["-D", "-e", "-f"]).arg(ssh.join("sshd_config"));
        let mut proc = self.start_proc("sshd", cmd)?;
        let addr: SocketAddr = format!("{HOST_ADDR}:{SSH_PORT}").parse()?;
        let deadline = Instant::now() + START;
        loop {
            if self.in_host(move || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok())? {
                break;
            }
            if !proc.alive() || Instant::now() > deadline {
                let said = proc.said();
                proc.stop(Duration::ZERO);
                bail!("sshd never listened on {addr}: {said}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.sshd = Some(proc);
        Ok(())
    }

    fn sshfs(&mut self) -> Result<()> {
        fs::create_dir_all(&self.mount)?;
        let key = self.dir.join("ssh/id_ed25519");
        let mut cmd = self.guest("sshfs");
        cmd.arg(format!("root@{HOST_ADDR}:{}", self.shared.display())).arg(&self.mount);
        // As Lima mounts: the default caches; ssh without the machine's ssh config or known hosts.
        cmd.args(["-f", "-F", "/dev/null", "-p", &SSH_PORT.to_string(), "-o", &self.options.sshfs_options()]);
        cmd.args(["-o", "StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,BatchMode=yes,LogLevel=ERROR"]);
        cmd.args(["-o", "ConnectTimeout=5,ServerAliveInterval=5,ServerAliveCountMax=3"]);
        cmd.arg("-o").arg(format!("IdentityFile={},IdentitiesOnly=yes", key.display()));
        let mut proc = self.start_proc("sshfs", cmd)?;
        let deadline = Instant::now() + START;
        while !is_mounted(&self.mount) {
            if !proc.alive() || Instant::now() > deadline {
                let said = proc.said();
                proc.stop(Duration::ZERO);
                bail!("sshfs never mounted {}: {said}", self.mount.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.mounted = true;
        self.sshfs = Some(proc);
        Ok(())
    }

    /// `program` to run in the host namespace (the root mount namespace, so the same files).
    pub fn host(&self, program: &str) -> Command {
        in_ns(&self.host_ns, program)
    }

    /// `program` to run in the guest namespace.
    pub fn guest(&self, program: &str) -> Command {
        in_ns(&self.guest_ns, program)
    }

    /// The scratch directory's `name`: a guest-local path (FIFOs, pidfiles, logs).
    pub fn local(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Where the guest sees the host's `path` (a path under [`Guest::shared`]).
    pub fn guest_path(&self, path: &Path) -> Result<PathBuf> {
        let rel = path.strip_prefix(&self.shared).with_context(|| format!("{} is not shared", path.display()))?;
        Ok(self.mount.join(rel))
    }

    fn start_proc(&self, name: &str, mut cmd: Command) -> Result<Proc> {
        let log = self.dir.join(format!("{name}.log"));
        let file = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).process_group(0);
        let child = cmd.spawn().with_context(|| format!("cannot start {name}"))?;
        Ok(Proc { name: name.to_string(), child, log })
    }

    /// Starts a long-running command (its output in the log `name`), ended when the guest drops
    /// or on [`Guest::stop`].
    pub fn spawn(&mut self, name: &str, cmd: Command) -> Result<&mut Proc> {
        if self.procs.iter().any(|p| p.name == name) {
            bail!("a process named {name} runs already");
        }
        let proc = self.start_proc(name, cmd)?;
        self.procs.push(proc);
        Ok(self.procs.last_mut().expect("just pushed"))
    }

    /// The process started as `name`.
    pub fn proc(&mut self, name: &str) -> Option<&mut Proc> {
        self.procs.iter_mut().find(|p| p.name == name)
    }

    /// What the process `name` wrote so far (also after it was stopped).
    pub fn said(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Stops the process `name` (SIGTERM to its group, then SIGKILL after `grace`).
    pub fn stop(&mut self, name: &str, grace: Duration) {
        if let Some(index) = self.procs.iter().position(|p| p.name == name) {
            let mut proc = self.procs.remove(index);
            proc.stop(grace);
        }
    }

    /// Runs `f` on a thread of its own in the host namespace (sockets it opens live there).
    pub fn in_host<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let ns = File::open(format!("/run/netns/{}", self.host_ns)).context("cannot open the host namespace")?;
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    enter(&ns)?;
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow!("a thread in the host namespace panicked"))?
        })
    }

    /// Moves the calling thread into the host namespace: threads it starts afterwards live there too.
    pub fn enter_host(&self) -> Result<()> {
        let ns = File::open(format!("/run/netns/{}", self.host_ns)).context("cannot open the host namespace")?;
        enter(&ns)
    }

    /// `GET path` of the guest's `port`, from the host namespace: the status and the body.
    pub fn get(&self, port: u16, path: &str, timeout: Duration) -> Result<(u16, String)> {
        let addr: SocketAddr = format!("{GUEST_ADDR}:{port}").parse()?;
        self.in_host(|| http_get(addr, path, timeout))?
    }
}

fn enter(ns: &File) -> Result<()> {
    // SAFETY: setns(2) on a descriptor we hold open; it changes only this thread's network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error()).context("cannot enter the network namespace");
    }
    Ok(())
}

fn in_ns(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}")).arg("--").arg(program).stdin(Stdio::null());
    cmd
}

/// Whether `mount` is a FUSE sshfs mount point (from /proc/self/mountinfo).
pub fn is_mounted(mount: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mount.to_string_lossy();
    info.lines().any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let point = fields.get(4).copied().unwrap_or("");
        let fstype = line.split(" - ").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap_or("");
        point == want && fstype == "fuse.sshfs"
    })
}

/// `GET path` over HTTP/1.0, one connection: the status and the body. Call it from a thread in
/// the namespace that reaches `addr`.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut bytes = Vec::new();
    stream.take(1 << 20).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("no end of headers in {text:?}"))?;
    let status = head.lines().next().unwrap_or("");
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad status {status:?}"))?;
    Ok((code, body.to_string()))
}

impl Drop for Guest {
    fn drop(&mut self) {
        while let Some(mut proc) = self.procs.pop() {
            proc.stop(Duration::from_secs(5));
        }
        if self.mounted {
            let mut unmounted = false;
            for args in [&["-u"][..], &["-uz"]] {
                let mut cmd = Command::new("fusermount3");
                cmd.args(args).arg(&self.mount);
                if run(cmd, "fusermount3 -u").is_ok() {
                    unmounted = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            if !unmounted {
                eprintln!("guest: cannot unmount {}: `fusermount3 -uz {}`", self.mount.display(), self.mount.display());
                // Never remove the scratch directory through a live mount: that would delete the host's files.
                if let Some(scratch) = self.scratch.take() {
                    let _ = scratch.keep();
                }
            }
        }
        for proc in [self.sshfs.take(), self.sshd.take()].into_iter().flatten() {
            let mut proc = proc;
            proc.stop(Duration::from_secs(3));
        }
        for ns in &self.namespaces {
            if let Err(err) = ip(&["netns", "del", ns]) {
                eprintln!("guest: cannot delete network namespace {ns} ({err:#}): `ip netns del {ns}`");
            }
        }
    }
}
