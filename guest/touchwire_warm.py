"""touchwire_warm: a warm uWSGI master (or gunicorn arbiter) for fast reloads.

With ``lazy-apps = true`` each uWSGI worker imports the app itself, so a chain
reload (``c`` on the master FIFO) replaces the workers one by one with new code.
Each new worker then pays for importing the whole app again, third-party
packages included (Django, Wagtail: about 1.6 s of a reload). This module,
imported once in the master before it forks any worker, imports every module
the app uses that lies outside the work tree. A worker forked from that master
finds them in ``sys.modules`` already and imports only the project's own code.

It never imports the project's code into the master: a new worker would
inherit the old version and serve it. So:

* while it imports, a finder at the front of ``sys.meta_path`` refuses
  (``ImportError``) any module whose file lies in the work tree, before that
  module's code runs;
* after each import, any module from the work tree found in ``sys.modules``
  anyway (loaded by path, past the finders) is removed again, and so is
  everything that import added (logged as "refused");
* an import that fails is rolled back the same way and logged, never fatal;
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
``TOUCHWIRE_WARM_OFF``
    Set to 1 to turn it off without editing the ini.

A module lies "in the work tree" when its file is under the root and not
inside an installed tree there (a virtualenv in the work tree: ``sys.prefix``,
or a ``site-packages``/``dist-packages`` directory).

Lines go to stderr (uWSGI's log), prefixed ``touchwire_warm``. They never
contain the words a ready check takes for a failed reload ("Traceback", a
lone ``File "...", line N``).
"""

import importlib
import importlib.abc
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time

#: Most modules imported from a child's list (a Wagtail project has about 1,700).
MOST_MODULES = 20000
#: Most lines of failed or refused imports logged one by one; the rest are counted.
MOST_LINES = 20
#: How long the child may take to import the app.
CHILD_TIMEOUT_S = 120


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


def import_all(names, tree, skip=()):
    """Imports `names` in order, each one rolled back when it fails or pulls in a module
    from the work tree. Returns a Report; never raises for an import."""
    report = Report()
    start = time.monotonic()
    refuser = Refuser(tree)
    sys.meta_path.insert(0, refuser)
    lines = 0
    try:
        for name in list(names)[:MOST_MODULES]:
            if name in sys.modules or name == "__main__" or _skipped(name, skip):
                continue
            before = set(sys.modules)
            refuser.refused = []
            try:
                importlib.import_module(name)
                error = None
            except (Exception, SystemExit) as err:  # any failure of third-party code
                error = "%s: %s" % (type(err).__name__, str(err).splitlines()[0] if str(err) else "")
            project = [m for m in list(sys.modules) if m not in before and tree.owns_module(sys.modules[m])]
            if error is None and not project and not refuser.refused:
                report.imported.extend(m for m in list(sys.modules) if m not in before)
                continue
            _roll_back(before)
            if project or refuser.refused:
                report.refused.append(name)
                why = "refused %s: it imports the project's %s" % (name, ", ".join(project or refuser.refused))
            else:
                report.failed.append(name)
                why = "left out %s (its import failed: %s)" % (name, error.replace("Traceback", "trace"))
            lines += 1
            if lines <= MOST_LINES:
                log(why)
    finally:
        sys.meta_path[:] = [f for f in sys.meta_path if f is not refuser]
        # Directory listings cached while warming must not hide a file saved later.
        importlib.invalidate_caches()
    if lines > MOST_LINES:
        log("... and %d more left out or refused" % (lines - MOST_LINES))
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
