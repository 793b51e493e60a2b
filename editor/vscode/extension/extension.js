// touchwire for VS Code: runs `touchwire watch --json` in each folder that has a .touchwire.json,
// and shows what its JSON events say: the last reload in the status bar, a reload that failed
// as a problem at its file and line, the watcher's own lines in the "touchwire" output channel.
// Plain JavaScript on VS Code's API and Node's standard library: nothing to build or install.
'use strict';

const vscode = require('vscode');
const childProcess = require('child_process');
const fs = require('fs');
const path = require('path');

/** How long a save's spinner waits for an outcome before the status goes back to what it was:
 * a save the watcher finds irrelevant (ignored by git) has none, and touchwire's default ready
 * check gives up after 30 s. */
const SPIN_FALLBACK_MS = 35000;
/** How long `touchwire send --wait` may take before it is stopped (its own timeouts come first). */
const SEND_LIMIT_MS = 120000;
/** How long a watcher has to send what it holds and exit when asked to stop. */
const STOP_GRACE_MS = 3000;

let output;
let status;
let diagnostics;
/** Folder path -> its watcher ({ child, root, stopping }). */
const watchers = new Map();
/** Remote -> the problems its last failed reload left ([{ uri, diagnostic }]). */
const problems = new Map();
/** File (real path) -> when the watcher last reported an outcome naming it (ms since the epoch). */
const answered = new Map();
/** The status shown before a spinner, put back if no outcome comes. */
let settled = { text: 'touchwire', tooltip: undefined, colour: undefined };
let spinTimer;

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
    vscode.workspace.onDidSaveTextDocument(saved),
    vscode.workspace.onDidChangeWorkspaceFolders((change) => {
      change.removed.forEach((folder) => stop(folder.uri.fsPath));
      change.added.forEach((folder) => start(folder.uri.fsPath));
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
  const watcher = { child, root: dir, stopping: false, exited: false };
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
    watcher.exited = true;
    if (watchers.get(dir) === watcher) {
      watchers.delete(dir);
    }
    output.appendLine(`cannot run ${bin}: ${err.message}; set touchwire.path to the program's full path`);
    show({ text: 'touchwire: not running', tooltip: `cannot run ${bin}: ${err.message}`, colour: 'error' });
  });
  child.on('exit', (code, signal) => {
    watcher.exited = true;
    if (watchers.get(dir) === watcher) {
      watchers.delete(dir);
    }
    if (!watcher.stopping) {
      const why = signal ? `killed by ${signal}` : `exited with status ${code}`;
      output.appendLine(`touchwire watch ${why} (touchwire: Restart Watcher starts it again)`);
      show({ text: 'touchwire: watch stopped', tooltip: `touchwire watch ${why}: see the output`, colour: 'error' });
    }
  });
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

/** One event of `touchwire watch --json` (src/outcome.rs and src/watch/cycle.rs name them). */
function watchEvent(watcher, event) {
  switch (event.event) {
    case 'sending':
      // The work tree's root: the guest's traceback paths are found in it.
      watcher.root = event.root || watcher.root;
      break;
    case 'ready':
      show({ text: 'touchwire: watching', tooltip: `watching ${event.dirs} directories in ${event.root}` });
      break;
    case 'reloading':
      spin();
      break;
    case 'trigger':
    case 'not_ready':
    case 'reload_failed':
    case 'undelivered':
      for (const file of event.files || []) {
        answered.set(path.join(watcher.root, file), event.time * 1000);
      }
      outcome(event, watcher.root);
      break;
    default:
      // connected, disconnected, catching_up, error...: their human lines are in the output.
      break;
  }
}

/** A save of a file the watcher may send: the spinner shows until the outcome. VS Code may
 * say the file was saved after the watcher has answered (a guest that refused at once): then
 * the outcome, newer than the file, stays. */
function saved(document) {
  if (document.uri.scheme !== 'file') {
    return;
  }
  const file = document.uri.fsPath;
  for (const [dir, watcher] of watchers) {
    if (!watcher.exited && inside(file, dir) && extensions(dir).includes(path.extname(file).slice(1))) {
      let real = file;
      let written = 0;
      try {
        real = fs.realpathSync(file);
        written = fs.statSync(real).mtimeMs;
      } catch (_) {
        // Gone already: its deletion is a change of its own.
      }
      if (!(answered.get(real) >= written)) {
        spin();
      }
      return;
    }
  }
}

function inside(file, dir) {
  const rel = path.relative(dir, file);
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
}

/** The extensions the folder's .touchwire.json names (touchwire's default: py). */
function extensions(dir) {
  try {
    const config = JSON.parse(fs.readFileSync(path.join(dir, '.touchwire.json'), 'utf8'));
    if (Array.isArray(config.extensions)) {
      return config.extensions;
    }
  } catch (_) {
    // Unreadable here: touchwire itself reports what is wrong with it.
  }
  return ['py'];
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
    if (event.merged) {
      // Folded into a reload under way, whose own outcome says how it went.
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

/** What failed and where: a failed ready check's traceback names the file and line; an action
 * that failed says why. */
function describe(event, root) {
  if (event.ready && event.ready.ok === false) {
    const excerpt = event.ready.error || '';
    const place = failurePlace(excerpt, root);
    let message = place.last || `not back after ${event.ready.ms} ms`;
    if (place.guest && !place.file) {
      // A file not in this work tree (a library on the guest): said, on the first file saved.
      message += ` (at ${place.guest} on the guest)`;
    }
    return { file: place.file, line: place.line, message };
  }
  return { message: event.error || 'the reload failed without saying why' };
}

/** Where a Python traceback says the failure is (its last `File "…", line N`) and what failed
 * (the exception line after that frame's source lines, else the excerpt's last line), as
 * touchwire's own lines say it (src/outcome.rs, failure_place). */
function failurePlace(excerpt, root) {
  const lines = excerpt.split('\n');
  let frame = -1;
  for (let i = lines.length - 1; i >= 0; i -= 1) {
    if (lines[i].trimStart().startsWith('File "')) {
      frame = i;
      break;
    }
  }
  const place = {};
  if (frame >= 0) {
    const match = /^File "([^"]+)", line (\d+)/.exec(lines[frame].trim());
    if (match) {
      place.guest = `${match[1]}:${match[2]}`;
      place.file = hostPath(match[1], root);
      place.line = place.file ? Number(match[2]) : undefined;
    }
  }
  const after = frame >= 0 ? lines.slice(frame + 1).find((l) => !l.startsWith(' ') && l.trim() !== '') : undefined;
  const last = after || lines.slice().reverse().find((l) => l.trim() !== '') || '';
  place.last = last.trim();
  return place;
}

/** The guest's path as a path here: the longest tail of it that names a file in `root`
 * (/vagrant/app/views.py is ROOT/app/views.py), else undefined (a file of the guest's only). */
function hostPath(file, root) {
  const parts = file.split('/').filter((part) => part !== '');
  for (let start = 0; start < parts.length; start += 1) {
    const candidate = path.join(root, ...parts.slice(start));
    try {
      if (fs.statSync(candidate).isFile()) {
        return candidate;
      }
    } catch (_) {
      // Not here; try a shorter tail.
    }
  }
  return undefined;
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

/** Shows a settled status: `colour` is 'error', 'warning' or undefined. */
function show(state) {
  clearTimeout(spinTimer);
  spinTimer = undefined;
  settled = state;
  paint(state);
}

/** The spinner while a reload is under way; the settled status comes back if no outcome does. */
function spin() {
  clearTimeout(spinTimer);
  paint({ text: '$(sync~spin) touchwire: reloading', tooltip: 'waiting for the guest to answer' });
  spinTimer = setTimeout(() => paint(settled), SPIN_FALLBACK_MS);
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
  spin();
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
    const done = (why) => {
      clearTimeout(limit);
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
