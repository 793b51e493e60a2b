// touchwire for VS Code: runs `touchwire watch --json` in each folder that has a .touchwire.json,
// and shows what its JSON events say: the last reload in the status bar, a reload that failed
// as a problem at its file and line, the watcher's own lines in the "touchwire" output channel.
// Plain JavaScript on VS Code's API and Node's standard library: nothing to build or install.
'use strict';

const vscode = require('vscode');
const childProcess = require('child_process');
const fs = require('fs');
const path = require('path');

/** How long `touchwire send --wait` may take before it is stopped (its own timeouts come first). */
const SEND_LIMIT_MS = 120000;
/** Longer than any reload with its ready check takes (a check's timeout is at most minutes). */
const STALE_S = 300;
/** How long a watcher has to send what it holds and exit when asked to stop. */
const STOP_GRACE_MS = 3000;

let output;
let status;
let diagnostics;
/** Folder path -> its watcher ({ child, dir, root, remotes, pending, stopping, exited }). */
const watchers = new Map();
/** Remote -> the problems its last failed reload left ([{ uri, diagnostic }]). */
const problems = new Map();
/** How many `touchwire send` the Reload guest command runs: the spinner shows while one does
 * (no watcher event tells of them: the command itself is the trigger). */
let sends = 0;
/** The last settled status: shown once no reload is under way. */
let settled = { text: 'touchwire', tooltip: undefined, colour: undefined };

/** Called by VS Code on the first folder with a .touchwire.json, or on a touchwire command. */
function activate(context) {
  output = vscode.window.createOutputChannel('touchwire');
  diagnostics = vscode.languages.createDiagnosticCollection('touchwire');
  status = vscode.window.createStatusBarItem('touchwire.status', vscode.StatusBarAlignment.Left, 0);
  status.name = 'touchwire';
  status.command = 'touchwire.showOutput';
  context.subscriptions.push(output, diagnostics, status);
  context.subscriptions.push(
    vscode.commands.registerCommand('touchwire.showOutput', () => output.show(true)),
    vscode.commands.registerCommand('touchwire.reload', reloadGuest),
    vscode.commands.registerCommand('touchwire.restart', restartAll),
    vscode.workspace.onDidChangeWorkspaceFolders((change) => {
      change.removed.forEach((folder) => stop(folder.uri.fsPath));
      change.added.forEach((folder) => start(folder.uri.fsPath));
      // A removed folder's reloads under way are no longer awaited.
      show(settled);
    }),
    vscode.workspace.onDidChangeConfiguration((change) => {
      if (change.affectsConfiguration('touchwire.path')) {
        restartAll();
      }
    }),
  );
  for (const folder of vscode.workspace.workspaceFolders || []) {
    start(folder.uri.fsPath);
  }
}

/** Called by VS Code on shutdown or disable: every watcher is stopped, and waited for (bounded). */
function deactivate() {
  return Promise.all([...watchers.keys()].map(stop));
}

/** The touchwire program from the settings. */
function program() {
  return vscode.workspace.getConfiguration('touchwire').get('path') || 'touchwire';
}

function configured(dir) {
  return fs.existsSync(path.join(dir, '.touchwire.json'));
}

/** Starts `touchwire watch --json` in `dir`, if it has a .touchwire.json and no watcher yet. */
function start(dir) {
  if (watchers.has(dir) || !configured(dir)) {
    return;
  }
  const bin = program();
  output.appendLine(`$ ${bin} watch --json   (in ${dir})`);
  const child = childProcess.spawn(bin, ['watch', '--json'], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  // pending: remote -> each trigger sent to it and not answered yet ([{ files: Set, time }]).
  const watcher = { child, dir, root: dir, remotes: [], pending: new Map(), stopping: false, exited: false };
  watchers.set(dir, watcher);
  show({ text: '$(sync~spin) touchwire: starting', tooltip: `${bin} watch --json in ${dir}` });
  lines(child.stdout, (line) => {
    const event = parse(line);
    if (event === undefined) {
      output.appendLine(line);
    } else {
      watchEvent(watcher, event);
    }
  });
  lines(child.stderr, (line) => output.appendLine(line));
  child.on('error', (err) => {
    // Spawning failed (ENOENT: not installed, or not on the PATH VS Code has).
    gone(watcher);
    output.appendLine(`cannot run ${bin}: ${err.message}; set touchwire.path to the program's full path`);
    show({ text: 'touchwire: not running', tooltip: `cannot run ${bin}: ${err.message}`, colour: 'error' });
  });
  child.on('exit', (code, signal) => {
    gone(watcher);
    if (!watcher.stopping) {
      const why = signal ? `killed by ${signal}` : `exited with status ${code}`;
      output.appendLine(`touchwire watch ${why} (touchwire: Restart Watcher starts it again)`);
      show({ text: 'touchwire: watch stopped', tooltip: `touchwire watch ${why}: see the output`, colour: 'error' });
    }
  });
}

/** A watcher that exited: it is no longer one of the folder's, and waits for no outcome. */
function gone(watcher) {
  watcher.exited = true;
  watcher.pending.clear();
  if (watchers.get(watcher.dir) === watcher) {
    watchers.delete(watcher.dir);
  }
}

/** Stops the watcher of `dir`: SIGTERM (it sends what it still holds, then exits), then SIGKILL
 * after STOP_GRACE_MS. Resolves once it has exited. */
function stop(dir) {
  const watcher = watchers.get(dir);
  watchers.delete(dir);
  if (!watcher || watcher.exited) {
    return Promise.resolve();
  }
  watcher.stopping = true;
  return new Promise((resolve) => {
    const killer = setTimeout(() => watcher.child.kill('SIGKILL'), STOP_GRACE_MS);
    watcher.child.once('exit', () => {
      clearTimeout(killer);
      resolve();
    });
    watcher.child.kill('SIGTERM');
  });
}

async function restartAll() {
  const dirs = (vscode.workspace.workspaceFolders || []).map((folder) => folder.uri.fsPath);
  await Promise.all([...watchers.keys()].map(stop));
  dirs.forEach(start);
}

/** Calls `each` with every line `stream` gives. */
function lines(stream, each) {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk) => {
    const parts = (rest + chunk).split('\n');
    rest = parts.pop();
    parts.forEach((line) => each(line.replace(/\r$/, '')));
  });
  stream.on('end', () => {
    if (rest) {
      each(rest);
    }
  });
}

/** A JSON event line, or undefined. */
function parse(line) {
  try {
    const event = JSON.parse(line);
    return event && typeof event.event === 'string' ? event : undefined;
  } catch (_) {
    return undefined;
  }
}

/** One event of `touchwire watch --json` (src/watch/start.rs, src/outcome.rs and
 * src/watch/cycle.rs name them). */
function watchEvent(watcher, event) {
  switch (event.event) {
    case 'sending':
      // The work tree's root (the failures' files are relative to it) and the remotes each
      // trigger goes to (each answers it with an outcome of its own).
      watcher.root = event.root || watcher.root;
      watcher.remotes = Array.isArray(event.remotes) ? event.remotes : [];
      break;
    case 'ready':
      show({ text: 'touchwire: watching', tooltip: `watching ${event.dirs} directories in ${event.root}` });
      break;
    case 'triggered':
      // A trigger going out to the guests, whoever changed the files (not the ignored ones:
      // the watcher sends none for them). The spinner shows until every remote answered it.
      for (const remote of watcher.remotes) {
        const list = watcher.pending.get(remote) || [];
        list.push({ files: new Set(event.files || []), time: seconds(event, Date.now() / 1000) });
        watcher.pending.set(remote, list);
      }
      show(settled);
      break;
    case 'trigger':
    case 'not_ready':
    case 'reload_failed':
    case 'undelivered':
      answered(watcher, event);
      outcome(event, watcher.root);
      break;
    default:
      // connected, disconnected, catching_up, reloading (the round's first line, printed with
      // its outcome), error...: their human lines are in the output.
      break;
  }
}

/** Forgets the triggers that `event`, an outcome at one remote, answers there. touchwire says
 * how many (`triggers`: those that queued while the guest was slow go out as one; a catch-up of
 * owed files answers none), and a remote answers its triggers in the order they went out. */
function answered(watcher, event) {
  const list = watcher.pending.get(event.remote) || [];
  if (typeof event.triggers === 'number') {
    list.splice(0, event.triggers);
  } else {
    // An older touchwire does not say: forget those sent before this outcome (its time less its
    // round trip, 1 ms of slack for rounding) whose files it names. Never waited for in vain,
    // though a trigger still waiting for its ready check may end early with a later one.
    const files = new Set(event.files || []);
    const sent = seconds(event, Infinity) - (typeof event.ms === 'number' ? event.ms / 1000 : 0) + 0.001;
    const answers = (trigger) => trigger.time <= sent && [...trigger.files].every((file) => files.has(file));
    list.splice(0, list.length, ...list.filter((trigger) => !answers(trigger)));
  }
  if (list.length > 0) {
    watcher.pending.set(event.remote, list);
  } else {
    watcher.pending.delete(event.remote);
  }
}

/** When touchwire printed `event` (seconds since the epoch), else `missing`. */
function seconds(event, missing) {
  return typeof event.time === 'number' ? event.time : missing;
}

/** Whether a reload is under way: a trigger some remote has not answered, or a Reload guest. */
function busy() {
  // A trigger older than any reload can take is not waited for: its outcome's line was lost
  // (touchwire drops a line it cannot write at once rather than block a reload).
  const oldest = Date.now() / 1000 - STALE_S;
  for (const watcher of watchers.values()) {
    for (const [remote, list] of watcher.pending) {
      const fresh = list.filter((trigger) => trigger.time >= oldest);
      if (fresh.length > 0) {
        watcher.pending.set(remote, fresh);
      } else {
        watcher.pending.delete(remote);
      }
    }
  }
  return sends > 0 || [...watchers.values()].some((watcher) => watcher.pending.size > 0);
}

/** Shows one outcome at one remote (watch's trigger/not_ready/reload_failed/undelivered, send's
 * sent/failed): the status bar, and the problems of that remote. */
function outcome(event, root) {
  const remote = event.remote || '?';
  const target = event.target || 'app';
  if (event.delivered === false) {
    show({ text: 'touchwire: not delivered', tooltip: `${remote}: ${event.error}`, colour: 'warning' });
    return;
  }
  if (event.ok) {
    if (event.merged && !event.ready) {
      // Folded into a reload under way, whose own outcome says how it went. (A merged trigger
      // that waited has the ready check of that reload: it is back, as touchwire says.)
      show({ text: `touchwire: merged into a reload of ${target} under way`, tooltip: remote });
      return;
    }
    setProblems(remote, []);
    const back = event.ready && event.ready.ok;
    const ms = Math.round(back ? event.ready.ms : event.ms);
    const how = back ? 'the app answered its ready check' : 'the action was done (no ready check)';
    show({ text: `touchwire: reloaded ${target} in ${ms} ms`, tooltip: `${target} on ${remote}: ${how}` });
    return;
  }
  const failure = describe(event, root);
  const files = event.files || [];
  const file = failure.file || (files.length > 0 ? path.resolve(root, files[0]) : undefined);
  const found = [];
  if (file) {
    const line = Math.max((failure.line || 1) - 1, 0);
    const range = new vscode.Range(line, 0, line, Number.MAX_SAFE_INTEGER);
    const diagnostic = new vscode.Diagnostic(range, failure.message, vscode.DiagnosticSeverity.Error);
    diagnostic.source = 'touchwire';
    found.push({ uri: vscode.Uri.file(file), diagnostic });
  }
  setProblems(remote, found);
  show({ text: 'touchwire: reload failed', tooltip: `${target} on ${remote}: ${failure.message}`, colour: 'error' });
}

/** What failed and where, as touchwire says it: a failed ready check's `failure` has the
 * exception and, when the guest's traceback names one, the file and line of its last frame; an
 * action that failed says why in `error`. */
function describe(event, root) {
  const failure = event.failure || {};
  const notBack = event.ready && event.ready.ok === false ? `not back after ${event.ready.ms} ms` : undefined;
  const message = failure.message || event.error || notBack || 'the reload failed without saying why';
  if (typeof failure.file !== 'string') {
    return { message };
  }
  // A file of the work tree is named relative to it; any other path is the guest's own (a
  // library there, or a name such as "<frozen ...>"), which may be relative too: only a file
  // that is here gets the problem.
  const here = path.resolve(root, failure.file);
  if (!path.isAbsolute(failure.file) && isFile(here)) {
    return { file: here, line: failure.line, message };
  }
  return { message: `${message} (at ${failure.file}:${failure.line} on the guest)` };
}

function isFile(file) {
  try {
    return fs.statSync(file).isFile();
  } catch (_) {
    return false;
  }
}

/** Replaces `remote`'s problems with `found`, and shows every remote's. */
function setProblems(remote, found) {
  if (found.length === 0) {
    problems.delete(remote);
  } else {
    problems.set(remote, found);
  }
  const byFile = new Map();
  for (const { uri, diagnostic } of [...problems.values()].flat()) {
    const key = uri.toString();
    byFile.set(key, { uri, list: [...(byFile.has(key) ? byFile.get(key).list : []), diagnostic] });
  }
  diagnostics.clear();
  for (const { uri, list } of byFile.values()) {
    diagnostics.set(uri, list);
  }
}

/** Shows a settled status (`colour` is 'error', 'warning' or undefined): at once, or once the
 * reloads under way are answered, the spinner showing until then. */
function show(state) {
  settled = state;
  if (busy()) {
    paint({ text: '$(sync~spin) touchwire: reloading', tooltip: 'waiting for the guest to answer' });
  } else {
    paint(state);
  }
}

function paint({ text, tooltip, colour }) {
  status.text = text;
  status.tooltip = tooltip ? `${tooltip}\n(click for the touchwire output)` : 'click for the touchwire output';
  status.backgroundColor = colour ? new vscode.ThemeColor(`statusBarItem.${colour}Background`) : undefined;
  status.show();
}

/** "touchwire: Reload guest": `touchwire send --wait --json` in the folder (the active file's,
 * else the first with a .touchwire.json), shown as the watcher's outcomes are. */
function reloadGuest() {
  const folders = (vscode.workspace.workspaceFolders || []).map((folder) => folder.uri.fsPath);
  const active = vscode.window.activeTextEditor && vscode.window.activeTextEditor.document.uri;
  const own = active && vscode.workspace.getWorkspaceFolder(active);
  const dir = own && configured(own.uri.fsPath) ? own.uri.fsPath : folders.find(configured);
  if (!dir) {
    vscode.window.showWarningMessage('touchwire: no open folder has a .touchwire.json (touchwire init writes one)');
    return Promise.resolve();
  }
  const root = watchers.has(dir) ? watchers.get(dir).root : dir;
  const bin = program();
  const args = ['send', '--wait', '--json', '--reason', 'vscode'];
  output.appendLine(`$ ${bin} ${args.join(' ')}   (in ${dir})`);
  sends += 1;
  show(settled);
  return new Promise((resolve) => {
    const child = childProcess.spawn(bin, args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    const limit = setTimeout(() => child.kill('SIGKILL'), SEND_LIMIT_MS);
    let events = 0;
    let lastError = '';
    lines(child.stdout, (line) => {
      const event = parse(line);
      if (event && (event.event === 'sent' || event.event === 'failed')) {
        events += 1;
        outcome(event, root);
      } else {
        output.appendLine(line);
      }
    });
    lines(child.stderr, (line) => {
      output.appendLine(line);
      if (line.trim() !== '') {
        lastError = line.trim();
      }
    });
    let finished = false;
    const done = (why) => {
      // Once: a program that cannot be spawned may report both an error and a close.
      if (finished) {
        return;
      }
      finished = true;
      clearTimeout(limit);
      sends -= 1;
      show(settled);
      if (why) {
        // No outcome at all: touchwire could not run, or refused (a bad .touchwire.json).
        show({ text: 'touchwire: reload failed', tooltip: why, colour: 'error' });
        vscode.window.showErrorMessage(why);
      }
      resolve();
    };
    child.on('error', (err) => done(`cannot run ${bin}: ${err.message}; set touchwire.path to its full path`));
    child.on('close', (code, signal) => {
      if (events > 0) {
        done();
      } else if (code === 0) {
        show({ text: 'touchwire: nothing sent', tooltip: lastError || 'touchwire send printed no outcome' });
        done();
      } else {
        done(lastError || `touchwire send ${signal ? `killed by ${signal}` : `exited with status ${code}`}`);
      }
    });
  });
}

module.exports = { activate, deactivate };
