"""touchwire_warm: a warm uWSGI master (or gunicorn arbiter) for fast reloads.

With ``lazy-apps = true`` each uWSGI worker imports the app itself, so a chain
reload (``c`` on the master FIFO) replaces the workers one by one with new code.
Each new worker then pays for importing the whole app again, third-party
packages included (Django, Wagtail: about 1.6 s of a reload). This module,
imported once in the master before it forks any worker, imports every module
the app uses that lies outside the work tree. A worker forked from that master
finds them in ``sys.modules`` already and imports only the project's own code.

It never imports the project's code into the master: a new worker would
inherit the old version and serve it. And it never leaves a half-done import
there. So:

* each import is tried first in a fork of the master (``os.fork``): only
  imports that succeeded there, from the very same state, run in the master.
  A failing import rolled back in place is not enough: measured on Wagtail, a
  package kept a class of a module that was rolled back, and every worker
  then failed to load the app ("metaclass conflict");
* while it imports, a finder at the front of ``sys.meta_path`` refuses
  (``ImportError``) any module whose file lies in the work tree, before that
  module's code runs; an import that needed one is refused (logged);
* an import that fails is left out and logged, never fatal; so is one that
  survives a failing import inside it (``try: import x / except``): in the
  workers, with the project's settings, ``x`` would import;
* should an import in the master still fail or pull in the project (an
  import that is not the same twice), what it added to ``sys.modules`` is
  removed again (logged);
* when it is done, the finder is removed and the import caches are cleared,
  so the workers import the project as usual.

Which modules? The app is imported once in a child Python process (the same
interpreter as the master, with the master's ``sys.path`` and working
directory), which reports every module it ended up with and the file each one
came from. A list recorded by the workers was the other choice; it is empty on
the first start and stale after a dependency changes, while the child is
always right, at the cost of importing the app once more when the master
starts (with chain reloads the master starts once per session).

Use in uWSGI (``touchwire init --uwsgi`` prints these lines)::

    [uwsgi]
    master = true
    lazy-apps = true
    env = TOUCHWIRE_WARM_ROOT=/srv/app
    shared-pyimport = /srv/app/.git/touchwire/touchwire_warm.py

``shared-pyimport`` runs in the master, before the workers are forked, even
with lazy-apps (checked with uWSGI 2.0.21: its module is imported once, in the
master's pid); ``pyimport`` runs in each worker, too late. A path (with a
``/``) is imported from that file, so no ``python-path`` is needed.

Use in gunicorn (``touchwire init --gunicorn`` prints it): a ``gunicorn.conf.py``
whose ``on_starting(server)`` hook loads this file and calls
``warm(root=..., app=server.app.app_uri)``; gunicorn forks its workers from the
arbiter, at start and again on every HUP.

Settings, from the environment (in uWSGI: ``env = NAME=VALUE`` lines):

``TOUCHWIRE_WARM_ROOT``
    The work tree, as the guest sees it. Default: the nearest directory above
    the current one holding ``.git``, else the current directory (uWSGI's
    ``chdir``).
``TOUCHWIRE_WARM_APP``
    What the workers import: a module (``mysite.wsgi``, ``app:application``)
    or a file (``app.py``). Default under uWSGI: its ``module``, ``wsgi``,
    ``wsgi-file`` or ``file`` option.
``TOUCHWIRE_WARM_PYTHON``
    The Python that lists the app's modules. Default: ``sys.executable`` when
    it is a Python (gunicorn), else ``bin/python3`` of ``sys.prefix`` (the
    virtualenv given by uWSGI's ``home``/``virtualenv``) or of
    ``sys.base_prefix`` (inside uWSGI ``sys.executable`` is uWSGI itself).
``TOUCHWIRE_WARM_MODULES``
    A comma-separated list to import instead of asking a child process.
``TOUCHWIRE_WARM_SKIP``
    Comma-separated module names never imported in the master, with their
    submodules: a package that starts a thread or opens a connection when
    imported is unsafe to import before a fork.
``TOUCHWIRE_WARM_BUDGET_S``
    How long the imports may take before warming stops, the rest left to the
    workers (default 10). Each import that fails costs a trial in a fork; a
    Django project has hundreds (its models need the project's settings).
``TOUCHWIRE_WARM_OFF``
    Set to 1 to turn it off without editing the ini.

A module lies "in the work tree" when its file is under the root and not
inside an installed tree there (a virtualenv in the work tree: ``sys.prefix``,
or a ``site-packages``/``dist-packages`` directory).

Lines go to stderr (uWSGI's log), prefixed ``touchwire_warm``. They never
contain the words a ready check takes for a failed reload ("Traceback", a
lone ``File "...", line N``).
"""

import builtins
import importlib
import importlib.abc
import importlib.util
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback

#: Most modules imported from a child's list (a Wagtail project has about 1,700).
MOST_MODULES = 20000
#: Most lines of failed or refused imports logged one by one; the rest are counted.
MOST_LINES = 20
#: How long the child may take to import the app.
CHILD_TIMEOUT_S = 120
#: How long one module's trial import may take.
MODULE_TIMEOUT_S = 30
#: How long warming may take, by default, before it stops (the master waits for it).
DEFAULT_BUDGET_S = 10
#: Longest error message quoted in the log.
MOST_CHARS = 160


def log(line):
    """Writes one line to stderr (uWSGI's log), never raising."""
    try:
        sys.stderr.write("touchwire_warm[pid %d]: %s\n" % (os.getpid(), line))
        sys.stderr.flush()
    except (OSError, ValueError):
        # A closed log must not stop the master.
        pass


def _real(path):
    return os.path.realpath(os.path.abspath(path))


def _under(path, directory):
    """Whether `path` is `directory` or lies below it (both real paths)."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


class Tree:
    """The work tree: tells the project's files from everything else."""

    def __init__(self, root):
        self.root = _real(root)
        # A virtualenv inside the work tree holds third-party code; the prefixes
        # only count when they lie below the root (a root under /usr stays the
        # project's).
        prefixes = {_real(p) for p in (sys.prefix, sys.exec_prefix, sys.base_prefix)}
        self.installed = sorted(p for p in prefixes if p != self.root and _under(p, self.root))

    def owns(self, path):
        """Whether the file or directory `path` is the project's own code."""
        if not path:
            return False
        path = _real(path)
        if not _under(path, self.root):
            return False
        if any(_under(path, p) for p in self.installed):
            return False
        parts = path[len(self.root):].split(os.sep)
        return "site-packages" not in parts and "dist-packages" not in parts

    def owns_module(self, module):
        """Whether `module` (a module object) was loaded from the work tree."""
        paths = []
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            paths.append(file)
        search = getattr(module, "__path__", None)
        if file is None and search is not None:
            # A namespace package has no file, only its directories.
            try:
                paths.extend(p for p in list(search) if isinstance(p, str))
            except TypeError:
                pass
        return any(self.owns(p) for p in paths)


class Refuser(importlib.abc.MetaPathFinder):
    """Refuses to import a module from the work tree, before its code runs."""

    def __init__(self, tree):
        self.tree = tree
        self.refused = []

    def find_spec(self, fullname, path=None, target=None):
        """Finds `fullname` with the finders after this one; raises ImportError when it
        lies in the work tree, else returns what they found."""
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is None:
                continue
            places = [spec.origin] if spec.has_location else []
            places.extend(spec.submodule_search_locations or [])
            if any(isinstance(p, str) and self.tree.owns(p) for p in places):
                self.refused.append(fullname)
                raise ImportError(
                    "touchwire_warm: %s is the project's (in %s): not imported in the master"
                    % (fullname, self.tree.root),
                    name=fullname,
                )
            return spec
        return None


def _roll_back(before):
    """Removes from sys.modules what was added since `before` (a set of names), and the
    attributes that bound those submodules on packages that stay."""
    added = [name for name in list(sys.modules) if name not in before]
    for name in added:
        module = sys.modules.pop(name, None)
        parent, _, child = name.rpartition(".")
        if parent and parent in before and parent in sys.modules:
            if getattr(sys.modules[parent], child, None) is module:
                try:
                    delattr(sys.modules[parent], child)
                except (AttributeError, TypeError):
                    pass
    return added


def _skipped(name, skip):
    return any(name == s or name.startswith(s + ".") for s in skip)


class Report:
    """What warm() did, for the log and for tests."""

    def __init__(self):
        self.imported = []
        self.failed = []
        self.refused = []
        self.ms = 0

    def packages(self):
        """The top-level packages imported that are not part of Python itself."""
        stdlib = getattr(sys, "stdlib_module_names", frozenset())
        tops = []
        for name in self.imported:
            top = name.partition(".")[0]
            if top not in stdlib and top not in tops and not top.startswith("_"):
                tops.append(top)
        return tops


def _describe(err):
    """One short line for an exception: its type and the first line of its message."""
    text = (str(err).splitlines() or [""])[0]
    if len(text) > MOST_CHARS:
        text = text[:MOST_CHARS] + "..."
    # Never the word a ready check takes for a failed reload.
    return ("%s: %s" % (type(err).__name__, text)).replace("Traceback", "trace")


def _try_in_order(names, tree, refuser, progress):
    """In the trial copy: imports `names` in order, writing a line to `progress` for each one
    that is fine, until one is not. Returns the verdict on that one, (kind, why, the modules
    that were running when it failed, the modules it had imported), or None."""
    failures = []
    real_import = builtins.__import__

    def watching_import(*args, **kwargs):
        # A failure that a module catches (try: import x / except ...) leaves it working in a
        # way the worker's own import would not: with settings configured, x would import.
        # A module that is simply not installed is the same everywhere, and no failure.
        try:
            return real_import(*args, **kwargs)
        except ModuleNotFoundError:
            raise
        except BaseException as err:
            failures.append("%s (%s)" % (args[0] if args else "?", _describe(err)))
            raise

    builtins.__import__ = watching_import
    for name in names:
        if name not in sys.modules:
            before = set(sys.modules)
            failures.clear()
            refuser.refused = []
            chain = [name]
            try:
                importlib.import_module(name)
                error = None
            except (Exception, SystemExit) as err:  # any failure of third-party code
                error = _describe(err)
                # The modules still running when it failed fail on their own too: skipped.
                for frame, _ in traceback.walk_tb(err.__traceback__):
                    if frame.f_code.co_name == "<module>":
                        chain.append(frame.f_globals.get("__name__"))
            project = [m for m in list(sys.modules) if m not in before and tree.owns_module(sys.modules[m])]
            if project or refuser.refused:
                verdict = ("refused", ", ".join(project or refuser.refused))
            elif error:
                verdict = ("failed", error)
            elif failures:
                verdict = ("failed", "an import inside it failed: " + failures[0])
            else:
                verdict = None
            if verdict:
                # What it had imported completely before failing is worth trying on its own,
                # next: otherwise every later trial would import it again.
                done = [
                    m for m in list(sys.modules)
                    if m not in before and m not in chain and not tree.owns_module(sys.modules[m])
                    # A submodule whose package failed is left behind, and cannot import alone.
                    and (m.rpartition(".")[0] or m) in sys.modules
                ]
                return verdict + (sorted(set(c for c in chain if c)), done)
        progress(name)
    return None


def _trial(names, tree, refuser):
    """Tries `names` in a fork of this process, so that a failing import never leaves half its
    work here (a package that caches a class of a module rolled back, a registry that keeps an
    entry: measured on Wagtail, workers then failed to load the app). Returns (n, verdict): the
    first n names import cleanly from this very state; verdict is (kind, why, running, done)
    for the next one (see _try_in_order), or None when all did. Raises OSError when no fork can be made."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the trial copy: never returns
        status = 0
        try:
            os.close(read_end)
            quiet = os.open(os.devnull, os.O_WRONLY)
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            out = os.fdopen(write_end, "w", buffering=1)
            verdict = _try_in_order(names, tree, refuser, lambda name: out.write("+\n"))
            out.write("=%s\n" % json.dumps(verdict))
            out.flush()
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(write_end)
    fine, verdict, ended = 0, None, False
    buffer = b""
    try:
        while not ended:  # bounded: each wait gets a line, the end, or the module timeout
            ready, _, _ = select.select([read_end], [], [], MODULE_TIMEOUT_S)
            if not ready:
                verdict = ("failed", "its import took longer than %d s" % MODULE_TIMEOUT_S, [], [])
                break
            chunk = os.read(read_end, 65536)
            if not chunk:
                verdict = ("failed", "the trial process died importing it", [], [])
                break
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line == b"+":
                    fine += 1
                elif line.startswith(b"="):
                    found = json.loads(line[1:].decode())
                    verdict, ended = (tuple(found) if found else None), True
    finally:
        os.close(read_end)
        if not ended:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        try:
            os.waitpid(pid, 0)
        except OSError:
            pass
    return fine, verdict


def _import_here(name, tree, refuser, report):
    """Imports `name` for real, after its trial; rolls it back should it fail or pull in the
    project after all (a module whose import is not the same twice). Returns an error line."""
    if name in sys.modules:
        return None
    before = set(sys.modules)
    refuser.refused = []
    try:
        importlib.import_module(name)
        error = None
    except (Exception, SystemExit) as err:  # any failure of third-party code
        error = _describe(err)
    project = [m for m in list(sys.modules) if m not in before and tree.owns_module(sys.modules[m])]
    if error is None and not project and not refuser.refused:
        report.imported.extend(m for m in list(sys.modules) if m not in before)
        return None
    _roll_back(before)
    if project or refuser.refused:
        report.refused.append(name)
        return "refused %s: it imports the project's %s" % (name, ", ".join(project or refuser.refused))
    report.failed.append(name)
    return "left out %s (it passed its trial, then failed: %s)" % (name, error)


def import_all(names, tree, skip=(), budget_s=None):
    """Imports `names` in order, except those that fail, pull in a module from the work tree,
    or survive a failing import inside them: each is tried first in a fork (see _trial), so
    this process only runs imports known to succeed. A name that failed with an ImportError is
    tried once more at the end (some import only after their package). Returns a Report; never raises for an
    import."""
    report = Report()
    start = time.monotonic()
    if budget_s is None:
        try:
            budget_s = float(os.environ.get("TOUCHWIRE_WARM_BUDGET_S", DEFAULT_BUDGET_S))
        except ValueError:
            budget_s = DEFAULT_BUDGET_S
    refuser = Refuser(tree)
    sys.meta_path.insert(0, refuser)
    said = []
    out_of_time = False
    # Names with a verdict are never tried again in this pass: a module that another one
    # imported completely before failing comes back through `done`, and two modules that
    # import each other (willow.image, willow.registry) would take turns until the budget ran out.
    given_up = set()
    try:
        todo = [n for n in list(names)[:MOST_MODULES] if n != "__main__" and not _skipped(n, skip)]
        for last_pass in (False, True):
            failed_now = []
            # Bounded: each round takes at least one name off the list.
            while todo:
                if time.monotonic() - start >= budget_s:
                    # Each failure costs a trial; a Django project has hundreds (models
                    # need settings). What is imported stays; the workers import the rest.
                    out_of_time = True
                    break
                todo = [n for n in todo if n not in sys.modules]
                if not todo:
                    break
                fine, verdict = _trial(todo, tree, refuser)
                for name in todo[:fine]:
                    why = _import_here(name, tree, refuser, report)
                    if why:
                        said.append(why)
                if verdict is None:
                    break
                kind, why, running, done = verdict
                name = todo[fine]
                skipped = set(running) | {name}
                given_up |= skipped
                if kind == "refused":
                    report.refused.append(name)
                    said.append("refused %s: it imports the project's %s" % (name, why))
                elif not last_pass and why.startswith("ImportError"):
                    # Often a circular import, met because a submodule came before its package.
                    failed_now.extend(n for n in todo if n in skipped)
                else:
                    report.failed.extend(n for n in todo if n in skipped)
                    said.append("left out %s (%s)" % (", ".join(n for n in todo if n in skipped), why))
                # A submodule cannot import without its package: not worth a try.
                first = [n for n in done if n not in given_up and not any(_skipped(n, [s]) for s in skipped)]
                moved = set(first)
                todo = first + [n for n in todo[fine + 1:] if n not in given_up and n not in moved]
            todo = [] if out_of_time else failed_now
            given_up -= set(failed_now)
    except OSError as err:
        said.append("stopped warming: cannot try imports in a fork (%s)" % err)
    finally:
        sys.meta_path[:] = [f for f in sys.meta_path if f is not refuser]
        # Directory listings cached while warming must not hide a file saved later.
        importlib.invalidate_caches()
    for why in said[:MOST_LINES]:
        log(why)
    if len(said) > MOST_LINES:
        log("... and %d more left out or refused" % (len(said) - MOST_LINES))
    if out_of_time:
        log("stopped after %g s (TOUCHWIRE_WARM_BUDGET_S): the workers import the rest" % budget_s)
    report.ms = int((time.monotonic() - start) * 1000)
    return report


def find_python():
    """The Python that lists the app's modules: see TOUCHWIRE_WARM_PYTHON."""
    configured = os.environ.get("TOUCHWIRE_WARM_PYTHON")
    if configured:
        return configured
    if os.path.basename(sys.executable or "").startswith("python"):
        return sys.executable
    version = "python%d.%d" % sys.version_info[:2]
    for prefix in (sys.prefix, sys.base_prefix):
        for name in (version, "python3", "python"):
            candidate = os.path.join(prefix, "bin", name)
            if os.access(candidate, os.X_OK):
                return candidate
    return None


def list_modules(app, python, timeout=CHILD_TIMEOUT_S):
    """Imports `app` in a child `python` with this process's sys.path and working
    directory; returns the names of the modules it loaded, in the order it loaded them,
    with their files: [(name, [path, ...]), ...]. A failed import still lists what it
    loaded before the failure (logged)."""
    with tempfile.TemporaryDirectory(prefix="touchwire-warm-") as scratch:
        out = os.path.join(scratch, "modules.json")
        request = json.dumps({"app": app, "path": sys.path, "cwd": os.getcwd(), "out": out})
        try:
            child = subprocess.run(
                [python, os.path.abspath(__file__), "--list-modules"],
                input=request.encode(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as err:
            log("cannot run %s to list the app's modules (%s)" % (python, err))
            return []
        try:
            with open(out, encoding="utf-8") as file:
                result = json.load(file)
        except (OSError, ValueError):
            result = {}
        if result.get("version") != list(sys.version_info[:2]):
            log("%s is Python %s, this is %d.%d: its list may not fit" % (python, result.get("version"), *sys.version_info[:2]))
        if result.get("error"):
            # The app's own failure: the workers will report it. Its last line is enough here.
            log("the app's trial import stopped early (%s); warming what it reached" % result["error"])
        elif child.returncode != 0:
            tail = child.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            log("the child listing the app's modules exited with %d (%s)" % (child.returncode, tail[0]))
        return [(name, paths) for name, paths in result.get("modules", [])]


def _child_main():
    """In the child: import the app as the workers do, and write what got loaded."""
    request = json.loads(sys.stdin.read())
    # This file's own directory comes first on sys.path when run as a script: not the app's.
    sys.path[:] = request["path"]
    os.chdir(request["cwd"])
    result = {"version": list(sys.version_info[:2]), "modules": [], "error": None}
    try:
        app = request["app"]
        if app.endswith(".py") or os.sep in app:
            spec = importlib.util.spec_from_file_location("touchwire_warm_app", app)
            if spec is None or spec.loader is None:
                raise ImportError("cannot load %s" % app)
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(app.partition(":")[0])
    except BaseException as err:  # the app's failure, whatever it is, ends the listing
        result["error"] = "%s: %s" % (type(err).__name__, (str(err).splitlines() or [""])[0])
    finally:
        for name, module in list(sys.modules.items()):
            paths = []
            file = getattr(module, "__file__", None)
            if isinstance(file, str):
                paths.append(file)
            elif getattr(module, "__path__", None) is not None:
                try:
                    paths.extend(p for p in list(module.__path__) if isinstance(p, str))
                except TypeError:
                    pass
            result["modules"].append([name, paths])
        with open(request["out"], "w", encoding="utf-8") as file:
            json.dump(result, file)


def default_root():
    """The nearest directory above the current one that holds .git, else the current one."""
    here = os.getcwd()
    directory = here
    for _ in range(64):  # bounded: a path has fewer components
        if os.path.exists(os.path.join(directory, ".git")):
            return directory
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return here


def _uwsgi_app():
    """The app uWSGI's options name, if this runs inside uWSGI."""
    try:
        import uwsgi  # only inside uWSGI
    except ImportError:
        return None
    for key in ("module", "wsgi", "wsgi-file", "file"):
        value = uwsgi.opt.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, str):
            return value
    return None


def warm(root=None, app=None, python=None, modules=None, skip=None):
    """Imports into this process every module `app` uses outside the work tree `root`.
    Arguments left out come from the environment (see the module's doc). Returns a
    Report, or None when there was nothing to do; never raises."""
    try:
        root = root or os.environ.get("TOUCHWIRE_WARM_ROOT") or default_root()
        tree = Tree(root)
        if skip is None:
            skip = [s.strip() for s in os.environ.get("TOUCHWIRE_WARM_SKIP", "").split(",") if s.strip()]
        if modules is None and os.environ.get("TOUCHWIRE_WARM_MODULES"):
            modules = [m.strip() for m in os.environ["TOUCHWIRE_WARM_MODULES"].split(",") if m.strip()]
        if modules is None:
            app = app or os.environ.get("TOUCHWIRE_WARM_APP") or _uwsgi_app()
            if not app:
                log("no app to warm: set TOUCHWIRE_WARM_APP (a module or a .py file)")
                return None
            python = python or find_python()
            if not python:
                log("no Python found to list the app's modules: set TOUCHWIRE_WARM_PYTHON")
                return None
            listed = list_modules(app, python)
            modules = [name for name, paths in listed if not any(tree.owns(p) for p in paths)]
        report = import_all(modules, tree, skip)
        tops = report.packages()
        shown = ", ".join(tops[:40]) + (" and %d more" % (len(tops) - 40) if len(tops) > 40 else "")
        log(
            "imported %d modules from outside %s in %d ms (%d left out, %d refused); packages: %s"
            % (len(report.imported), tree.root, report.ms, len(report.failed), len(report.refused), shown or "none")
        )
        return report
    except Exception as err:  # the helper must never stop the master
        log("gave up warming (%s: %s)" % (type(err).__name__, err))
        return None


def _in_uwsgi_master():
    try:
        import uwsgi  # only inside uWSGI
    except ImportError:
        return None
    return uwsgi.worker_id() == 0


if __name__ == "__main__" and sys.argv[1:] == ["--list-modules"]:
    _child_main()
elif __name__ != "__main__" and os.environ.get("TOUCHWIRE_WARM_OFF") != "1":
    _master = _in_uwsgi_master()
    if _master:
        warm()
    elif _master is False:
        log("imported in a worker, where it cannot help: use shared-pyimport, not pyimport")
