"""Unit tests of touchwire_warm on a fake project: a work tree with the project's modules,
and "third-party" packages in a directory outside it (one that imports fine, one that
fails, one that imports a module of the work tree). Run: python3 -m unittest discover -s guest
(tests/fast_setup.rs does, with the Python uWSGI's plugin uses)."""

import io
import os
import sys
import tempfile
import textwrap
import unittest
from contextlib import redirect_stderr

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import touchwire_warm as warm  # noqa: E402  (after the path it lives on)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as file:
        file.write(textwrap.dedent(text))


class FakeProject(unittest.TestCase):
    """Each test gets fresh module names (a counter), so the test process's sys.modules
    never carries one test's imports into the next."""

    counter = 0

    def setUp(self):
        FakeProject.counter += 1
        n = self.n = FakeProject.counter
        self.scratch = tempfile.TemporaryDirectory()
        base = self.scratch.name
        self.root = os.path.join(base, "project")
        self.site = os.path.join(base, "site-libs")
        write(os.path.join(self.root, ".git", "HEAD"), "ref: refs/heads/main\n")
        # The project's module leaves a mark when its code runs.
        self.ran = os.path.join(base, "proj-ran")
        write(os.path.join(self.root, "proj%d.py" % n), "open(%r, 'a').close()\nVERSION = 'v0'\n" % self.ran)
        write(os.path.join(self.root, "app%d.py" % n), """\
            import good%d, proj%d
            def application(env, start):
                return [proj%d.VERSION.encode()]
            """ % (n, n, n))
        write(os.path.join(self.site, "good%d" % n, "__init__.py"), "from . import part\n")
        write(os.path.join(self.site, "good%d" % n, "part.py"), "NAME = 'good'\n")
        write(os.path.join(self.site, "bad%d" % n, "__init__.py"), "from . import first\nraise RuntimeError('no config')\n")
        write(os.path.join(self.site, "bad%d" % n, "first.py"), "X = 1\n")
        write(os.path.join(self.site, "sneaky%d" % n, "__init__.py"), "import proj%d\n" % n)
        write(os.path.join(self.site, "byfile%d" % n, "__init__.py"), """\
            import importlib.util, os, sys
            spec = importlib.util.spec_from_file_location("proj%d", os.path.join(%r, "proj%d.py"))
            module = importlib.util.module_from_spec(spec)
            sys.modules["proj%d"] = module
            spec.loader.exec_module(module)
            """ % (n, self.root, n, n))
        write(os.path.join(self.site, "optional%d" % n, "__init__.py"), """\
            try:
                import proj%d as settings
            except ImportError:
                settings = None
            """ % n)
        # Survives a failing import inside it: in a worker (settings configured) it would not.
        write(os.path.join(self.site, "tolerant%d" % n, "__init__.py"), """\
            try:
                import bad%d as backend
            except Exception:
                backend = None
            """ % n)
        # A dependency that is simply not installed is the same in the master and the workers.
        write(os.path.join(self.site, "optdep%d" % n, "__init__.py"), """\
            try:
                import not_installed_anywhere_%d
            except ImportError:
                pass
            """ % n)
        # A registry that stays, and a package that registers in it, then fails.
        write(os.path.join(self.site, "registry%d" % n, "__init__.py"), "ENTRIES = []\n")
        write(os.path.join(self.site, "registers%d" % n, "__init__.py"), """\
            import registry%d
            registry%d.ENTRIES.append("half done")
            raise RuntimeError("then fails")
            """ % (n, n))
        # A package whose __init__ imports its submodules, then reads the project's settings
        # (willow: its optimizers look at django.conf.settings), and survives the refusal.
        write(os.path.join(self.site, "ring%d" % n, "__init__.py"), """\
            from . import a, b
            try:
                import proj%d
            except ImportError:
                pass
            """ % n)
        write(os.path.join(self.site, "ring%d" % n, "a.py"), "A = 1\n")
        write(os.path.join(self.site, "ring%d" % n, "b.py"), "B = 1\n")
        write(os.path.join(self.site, "crash%d" % n, "__init__.py"), "import os\nos._exit(3)\n")
        write(os.path.join(self.site, "hang%d" % n, "__init__.py"), "import time\ntime.sleep(30)\n")
        self.saved_path = list(sys.path)
        sys.path[:0] = [self.root, self.site]
        self.saved_meta = list(sys.meta_path)
        self.tree = warm.Tree(self.root)

    def tearDown(self):
        sys.path[:] = self.saved_path
        for name in list(sys.modules):
            stem = name.split(".")[0].rstrip("0123456789")
            if stem in ("good", "bad", "sneaky", "byfile", "optional", "proj", "app", "tolerant", "optdep", "registry", "registers", "crash", "hang", "broken", "ring"):
                sys.modules.pop(name, None)
        self.scratch.cleanup()

    def names(self, *stems):
        return ["%s%d" % (stem, self.n) for stem in stems]

    def run_quietly(self, names):
        err = io.StringIO()
        with redirect_stderr(err):
            report = warm.import_all(names, self.tree)
        return report, err.getvalue()

    def test_a_third_party_package_is_imported_with_its_submodules(self):
        good, = self.names("good")
        report, _ = self.run_quietly([good])
        self.assertIn(good, sys.modules)
        self.assertIn(good + ".part", report.imported)
        self.assertEqual(report.failed, [])
        self.assertEqual(report.refused, [])

    def test_a_failing_import_is_rolled_back_and_logged_never_fatal(self):
        bad, good = self.names("bad", "good")
        report, err = self.run_quietly([bad, good])
        self.assertNotIn(bad, sys.modules)
        self.assertNotIn(bad + ".first", sys.modules, "what the failed import added is removed too")
        self.assertEqual(report.failed, [bad])
        self.assertIn("left out %s (RuntimeError: no config)" % bad, err)
        self.assertIn(good, sys.modules, "the next module is still imported")

    def test_a_package_that_imports_the_project_is_refused_before_the_project_runs(self):
        sneaky, proj = self.names("sneaky", "proj")
        report, err = self.run_quietly([sneaky])
        self.assertNotIn(sneaky, sys.modules)
        self.assertNotIn(proj, sys.modules)
        self.assertEqual(report.refused, [sneaky])
        self.assertIn("refused %s: it imports the project's %s" % (sneaky, proj), err)
        self.assertFalse(os.path.exists(self.ran), "the project's code never ran in the master")

    def test_a_project_module_loaded_by_path_is_removed_again(self):
        byfile, proj = self.names("byfile", "proj")
        report, err = self.run_quietly([byfile])
        self.assertNotIn(byfile, sys.modules)
        self.assertNotIn(proj, sys.modules)
        self.assertEqual(report.refused, [byfile])
        self.assertIn("refused %s" % byfile, err)

    def test_a_package_that_falls_back_when_the_project_is_refused_is_refused_too(self):
        optional, = self.names("optional")
        report, _ = self.run_quietly([optional])
        self.assertNotIn(optional, sys.modules, "it would keep settings = None in every worker")
        self.assertEqual(report.refused, [optional])

    def test_a_package_that_survives_a_failing_import_inside_it_is_left_out(self):
        tolerant, bad = self.names("tolerant", "bad")
        report, err = self.run_quietly([tolerant])
        self.assertNotIn(tolerant, sys.modules, "it would keep backend = None in every worker")
        self.assertEqual(report.failed, [tolerant])
        self.assertIn("left out %s (an import inside it failed: %s (RuntimeError: no config))" % (tolerant, bad), err)

    def test_a_dependency_that_is_not_installed_does_not_stop_a_package(self):
        optdep, = self.names("optdep")
        report, _ = self.run_quietly([optdep])
        self.assertIn(optdep, sys.modules)
        self.assertEqual(report.failed, [])

    def test_a_failing_import_leaves_nothing_behind_in_modules_that_stay(self):
        registry, registers = self.names("registry", "registers")
        report, _ = self.run_quietly([registry, registers])
        self.assertEqual(report.failed, [registers])
        self.assertEqual(sys.modules[registry].ENTRIES, [], "it failed in the trial copy, not here")

    def test_an_import_that_kills_its_process_or_hangs_is_left_out_and_the_rest_imported(self):
        crash, hang, good = self.names("crash", "hang", "good")
        saved = warm.MODULE_TIMEOUT_S
        warm.MODULE_TIMEOUT_S = 1
        try:
            report, err = self.run_quietly([crash, hang, good])
        finally:
            warm.MODULE_TIMEOUT_S = saved
        self.assertEqual(report.failed, [crash, hang])
        self.assertIn("left out %s (the trial process died importing it)" % crash, err)
        self.assertIn("left out %s (its import took longer than 1 s)" % hang, err)
        self.assertIn(good, sys.modules)

    def test_each_module_is_given_up_once_even_when_siblings_bring_it_back(self):
        # As a child lists them: a package lands in sys.modules after its submodules. Each
        # sibling's trial imports the package, is refused, and completes the other sibling:
        # tried again, they took turns until the budget ran out (measured on Wagtail: 10 s,
        # 260 trials, 410 of 1,563 modules imported).
        a, b, ring, good = ["ring%d.a" % self.n, "ring%d.b" % self.n] + self.names("ring", "good")
        trials = []
        real = warm._trial

        def counted(names, tree, refuser):
            trials.append(names[0])
            return real(names, tree, refuser)

        warm._trial = counted
        try:
            err = io.StringIO()
            with redirect_stderr(err):
                report = warm.import_all([a, b, ring, good], self.tree, budget_s=5)
        finally:
            warm._trial = real
        self.assertLessEqual(len(trials), 4, trials)
        self.assertNotIn("stopped after", err.getvalue())
        self.assertEqual(sorted(report.refused), sorted([a, b, ring]))
        self.assertIn(good, sys.modules, "the modules after them are still imported")
        self.assertFalse(os.path.exists(self.ran), "the project's code never ran in the master")

    def test_warming_stops_at_its_time_budget(self):
        good, = self.names("good")
        err = io.StringIO()
        with redirect_stderr(err):
            report = warm.import_all([good], self.tree, budget_s=0)
        self.assertNotIn(good, sys.modules)
        self.assertEqual(report.imported, [])
        self.assertIn("stopped after 0 s", err.getvalue())

    def test_the_project_is_never_imported_even_when_named(self):
        proj, = self.names("proj")
        report, _ = self.run_quietly([proj])
        self.assertNotIn(proj, sys.modules)
        self.assertEqual(report.imported, [])
        self.assertFalse(os.path.exists(self.ran))

    def test_afterwards_the_project_imports_as_usual(self):
        sneaky, proj = self.names("sneaky", "proj")
        self.run_quietly([sneaky])
        self.assertEqual(sys.meta_path, self.saved_meta, "the refusing finder is gone")
        __import__(proj)
        self.assertEqual(sys.modules[proj].VERSION, "v0")

    def test_a_rolled_back_submodule_is_no_attribute_of_its_package(self):
        good, = self.names("good")
        __import__(good)
        write(os.path.join(self.site, good, "broken.py"), "raise ValueError('x')\n")
        report, _ = self.run_quietly([good + ".broken"])
        self.assertEqual(report.failed, [good + ".broken"])
        self.assertFalse(hasattr(sys.modules[good], "broken"))

    def test_skip_leaves_a_package_and_its_submodules_out(self):
        good, = self.names("good")
        with redirect_stderr(io.StringIO()):
            report = warm.import_all([good, good + ".part"], self.tree, skip=[good])
        self.assertNotIn(good, sys.modules)
        self.assertEqual(report.imported, [])

    def test_the_child_lists_the_app_s_modules_with_their_files(self):
        app, good, proj = self.names("app", "good", "proj")
        cwd = os.getcwd()
        os.chdir(self.root)
        try:
            with redirect_stderr(io.StringIO()):
                listed = dict((name, paths) for name, paths in warm.list_modules(app, sys.executable))
        finally:
            os.chdir(cwd)
        self.assertIn(good + ".part", listed)
        self.assertTrue(self.tree.owns(listed[proj][0]))
        self.assertFalse(self.tree.owns(listed[good][0]))
        self.assertNotIn(good, sys.modules, "listing imports nothing here")

    def test_warm_imports_what_the_app_uses_outside_the_tree_and_nothing_inside(self):
        app, good, proj = self.names("app", "good", "proj")
        err = io.StringIO()
        with redirect_stderr(err):
            report = warm.warm(root=self.root, app=os.path.join(self.root, app + ".py"), python=sys.executable)
        self.assertIn(good, sys.modules)
        self.assertNotIn(proj, sys.modules)
        self.assertNotIn(app, sys.modules)
        self.assertIn(good, report.packages())
        self.assertIn("packages: %s" % good, err.getvalue())

    def test_an_app_that_fails_to_import_still_warms_what_it_reached(self):
        n = self.n
        write(os.path.join(self.root, "broken%d.py" % n), "import good%d\nraise SyntaxError('oops')\n" % n)
        err = io.StringIO()
        with redirect_stderr(err):
            warm.warm(root=self.root, app=os.path.join(self.root, "broken%d.py" % n), python=sys.executable)
        self.assertIn("good%d" % n, sys.modules)
        self.assertIn("stopped early (SyntaxError: oops)", err.getvalue())
        self.assertNotIn("Traceback", err.getvalue())

    def test_no_python_to_list_with_is_logged_not_raised(self):
        err = io.StringIO()
        with redirect_stderr(err):
            report = warm.warm(root=self.root, app="x.py", python=os.path.join(self.root, "no-python"))
        self.assertEqual(report.imported, [])
        self.assertIn("cannot run", err.getvalue())


class TreeRules(unittest.TestCase):
    def test_a_virtualenv_inside_the_work_tree_is_not_the_project(self):
        with tempfile.TemporaryDirectory() as root:
            tree = warm.Tree(root)
            self.assertTrue(tree.owns(os.path.join(root, "mysite", "views.py")))
            self.assertFalse(tree.owns(os.path.join(root, ".venv", "lib", "python3.11", "site-packages", "django", "__init__.py")))
            self.assertFalse(tree.owns(os.path.join(root, "venv", "lib", "python3", "dist-packages", "x.py")))
            self.assertFalse(tree.owns(root + "-other/x.py"), "a sibling with the same prefix is outside")
            self.assertFalse(tree.owns(None))

    def test_a_root_below_the_prefix_stays_the_project(self):
        tree = warm.Tree(os.path.join(sys.prefix, "src", "app"))
        self.assertTrue(tree.owns(os.path.join(sys.prefix, "src", "app", "views.py")))


if __name__ == "__main__":
    unittest.main()
