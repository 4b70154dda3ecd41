"""scripts/find_python.sh, scripts/stack.sh and scripts/bootstrap.sh: the interpreter and the pinned
stack they pick, and the clear errors when there is none.

Runs on either stack: the interpreters and the glibc version are stand-ins (a script that reports a
chosen Python version through the running interpreter; a fake `getconf`), never the machine's own.
"""
import os
import re
import shutil
import subprocess
import sys

from tests.conftest import REPO_ROOT

SCRIPTS = os.path.join(REPO_ROOT, "scripts")


def fake_python(path, minor):
    """An executable at `path` that runs `-c CODE` as Python 3.`minor` would report itself."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stub = f"import sys; sys.version_info = (3, {minor}, 0, 'final', 0); exec(sys.argv[1])"
    path.write_text(f'#!/bin/sh\n[ "$1" = -c ] || exit 9\nexec {sys.executable} -c "{stub}" "$2"\n')
    path.chmod(0o755)
    return path


# What the scripts call besides bash builtins: the only programs on the PATH the tests give them, so
# that no interpreter of the machine's (/usr/bin/python3.11 on Debian 12) is found.
TOOLS = ("awk", "bash", "cat", "cut", "dirname", "head", "ls", "mkdir", "rm", "sha256sum", "sort", "tail")


def fake_glibc(tmp_path, version):
    """The only PATH directory: the tools above, and a `getconf GNU_LIBC_VERSION` that answers
    `glibc <version>`."""
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    for tool in TOOLS:
        if not (bin_dir / tool).exists():
            os.symlink(shutil.which(tool), bin_dir / tool)
    getconf = bin_dir / "getconf"
    getconf.write_text(f'#!/bin/sh\necho "glibc {version}"\n')
    getconf.chmod(0o755)
    return str(bin_dir)


def run(script, tmp_path, env, *args, glibc="2.36"):
    clean = {"PATH": fake_glibc(tmp_path, glibc), "HOME": str(tmp_path),
             "PYENV_ROOT": str(tmp_path / "no-pyenv")}
    return subprocess.run([shutil.which("bash"), os.path.join(SCRIPTS, script), *args], capture_output=True,
                          text=True, env={**clean, **env}, timeout=60)


def pyenv_with(tmp_path, *minors):
    root = tmp_path / "pyenv"
    for minor in minors:
        fake_python(root / "versions" / f"3.{minor}.99" / "bin" / f"python3.{minor}", minor)
    return str(root)


def test_explicit_python_must_be_the_wanted_version(tmp_path):
    result = run("find_python.sh", tmp_path, {"PYTHON": "/bin/false"})
    assert result.returncode == 1 and "PYTHON=/bin/false is not a working Python 3.10" in \
        result.stderr
    py311 = str(fake_python(tmp_path / "py" / "python", 11))
    assert run("find_python.sh", tmp_path, {"PYTHON": py311}).returncode == 1
    result = run("find_python.sh", tmp_path, {"PYTHON": py311}, "3.11")
    assert result.returncode == 0 and result.stdout.strip() == py311


def test_found_under_a_pyenv_root(tmp_path):
    root = pyenv_with(tmp_path, 10, 11)
    for want in ("3.10", "3.11"):
        result = run("find_python.sh", tmp_path, {"PYENV_ROOT": root}, want)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{root}/versions/{want}.99/bin/python{want}"


def test_clear_error_when_no_3_10_exists(tmp_path):
    result = run("find_python.sh", tmp_path, {})
    assert result.returncode == 1
    assert "no Python 3.10 found" in result.stderr and "PYTHON=" in result.stderr


def test_stack_picked_from_glibc_and_the_pythons_found(tmp_path):
    both = pyenv_with(tmp_path, 10, 11)
    picks = {(glibc, root): run("stack.sh", tmp_path, {"PYENV_ROOT": root}, glibc=glibc).stdout.strip()
             for glibc in ("2.36", "2.38", "2.41") for root in (both, pyenv_with(tmp_path / "b", 10))}
    assert picks == {("2.36", both): "1.16", ("2.38", both): "1.21", ("2.41", both): "1.21",
                     ("2.36", str(tmp_path / "b" / "pyenv")): "1.16",
                     ("2.38", str(tmp_path / "b" / "pyenv")): "1.16",
                     ("2.41", str(tmp_path / "b" / "pyenv")): "1.16"}
    # Only a 3.11 on an old glibc: neither stack runs here; the message says what would.
    result = run("stack.sh", tmp_path, {"PYENV_ROOT": pyenv_with(tmp_path / "c", 11)}, glibc="2.36")
    assert result.returncode == 1 and not result.stdout
    for needed in ("glibc 2.36", "glibc >= 2.38", "scripts/debian13_root.sh", "pyenv install 3.11",
                   "pyenv install 3.10"):
        assert needed in result.stderr, needed


def test_stack_named_by_stack_or_by_python(tmp_path):
    root = pyenv_with(tmp_path, 10, 11)
    assert run("stack.sh", tmp_path, {"PYENV_ROOT": root, "STACK": "1.16"}, glibc="2.41").stdout == "1.16\n"
    assert run("stack.sh", tmp_path, {"PYENV_ROOT": root, "STACK": "1.21"}, glibc="2.41").stdout == "1.21\n"
    py310 = str(fake_python(tmp_path / "p10" / "python", 10))
    assert run("stack.sh", tmp_path, {"PYTHON": py310}, glibc="2.41").stdout == "1.16\n"
    py311 = str(fake_python(tmp_path / "p11" / "python", 11))
    assert run("stack.sh", tmp_path, {"PYTHON": py311}, glibc="2.41").stdout == "1.21\n"


def test_stack_refusals_say_why(tmp_path):
    root = pyenv_with(tmp_path, 10, 11)
    old = run("stack.sh", tmp_path, {"PYENV_ROOT": root, "STACK": "1.21"}, glibc="2.36")
    assert old.returncode == 1 and "glibc >= 2.38" in old.stderr and \
        "scripts/debian13_root.sh make test STACK=1.21" in old.stderr
    bad = run("stack.sh", tmp_path, {"PYENV_ROOT": root, "STACK": "1.17"}, glibc="2.41")
    assert bad.returncode == 1 and "STACK=1.17 is not a pinned stack" in bad.stderr
    for minor in (12, 13):
        py = str(fake_python(tmp_path / f"p{minor}" / "python", minor))
        newer = run("stack.sh", tmp_path, {"PYTHON": py}, glibc="2.41")
        assert newer.returncode == 1 and f"Python 3.{minor}: not supported" in newer.stderr
        assert "kfp" in newer.stderr
    # Only a 3.12 on PATH (Ubuntu 24.04): what to install, and why the 3.12 does not do.
    fake_python(tmp_path / "fakebin" / "python3.12", 12)
    only_312 = run("stack.sh", tmp_path, {}, glibc="2.41")
    os.unlink(tmp_path / "fakebin" / "python3.12")
    assert only_312.returncode == 1 and "pyenv install 3.11" in only_312.stderr
    assert "python3.12 is Python 3.12: not supported" in only_312.stderr
    missing = run("stack.sh", tmp_path, {"STACK": "1.21"}, glibc="2.41")
    assert missing.returncode == 1 and "no Python 3.11 found" in missing.stderr


def test_bootstrap_installs_once_and_again_only_when_its_inputs_change(tmp_path):
    """scripts/bootstrap.sh with a stand-in venv interpreter that records its calls, per stack:
    each stack has its own venv and constraints file, and a change to one reinstalls that one only."""
    repo = tmp_path / "repo"
    shutil.copytree(SCRIPTS, repo / "scripts")
    for name in ("constraints.txt", "constraints-1.21.txt", "setup.py"):
        shutil.copy(os.path.join(REPO_ROOT, name), repo / name)
    calls = tmp_path / "calls.log"
    for venv in (".venv", ".venv-1.21"):
        venv_python = repo / venv / "bin" / "python"
        venv_python.parent.mkdir(parents=True)
        venv_python.write_text(f'#!/bin/sh\necho "{venv} $*" >> {calls}\nexit 0\n')
        venv_python.chmod(0o755)
    pythons = {"1.16": str(fake_python(tmp_path / "p10" / "python", 10)),
               "1.21": str(fake_python(tmp_path / "p11" / "python", 11))}

    def bootstrap(stack):
        result = subprocess.run([shutil.which("bash"), str(repo / "scripts" / "bootstrap.sh")],
                                capture_output=True, text=True, timeout=60,
                                env={"PATH": fake_glibc(tmp_path, "2.41"),
                                     "HOME": str(tmp_path), "PYTHON": pythons[stack]})
        assert result.returncode == 0, result.stderr
        lines = calls.read_text().splitlines() if calls.exists() else []
        calls.unlink(missing_ok=True)
        installs = [line for line in lines if "-m pip install" in line]
        constraints = "constraints.txt" if stack == "1.16" else "constraints-1.21.txt"
        assert all(line.startswith(".venv " if stack == "1.16" else ".venv-1.21 ") for line in lines)
        assert all(f"-c {constraints} " in line for line in installs[1:])
        # 1.21: the viewer's plugin, which declares numpy < 2, at its pin without dependencies.
        extras = "dev,kfp,viewer" if stack == "1.16" else "dev,kfp"
        assert installs[1:2] == [] or installs[1].endswith(f"-e .[{extras}]")
        if stack == "1.21" and installs:
            assert installs[2].endswith("--no-deps tensorboard-plugin-fairness-indicators")
        return len(installs)

    counts = {"1.16": 2, "1.21": 3}           # pip itself, the project (and the plugin)
    for stack in ("1.16", "1.21"):
        assert bootstrap(stack) == counts[stack]
        assert bootstrap(stack) == 0          # nothing changed: no install
    with open(repo / "constraints-1.21.txt", "a") as f:
        f.write("\n# a changed pin\n")
    assert bootstrap("1.16") == 0
    assert bootstrap("1.21") == 3
    assert bootstrap("1.21") == 0


# The two pinned stacks as every installer must see them: TFX version, Python, constraints file.
STACKS = {"1.16": ("1.16.0", "3.10", "constraints.txt"), "1.21": ("1.21.0", "3.11", "constraints-1.21.txt")}


def pins(name):
    from packaging.utils import canonicalize_name

    with open(os.path.join(REPO_ROOT, name)) as f:
        lines = [line.split("#")[0].strip() for line in f]
    return {canonicalize_name(line.split("==")[0]): line.split("==")[1] for line in lines if "==" in line}


def setup_kwargs(monkeypatch):
    import runpy

    import setuptools

    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(REPO_ROOT)
    runpy.run_path(os.path.join(REPO_ROOT, "setup.py"))
    return captured


def test_each_constraints_file_satisfies_setup_py_on_its_python(monkeypatch):
    """Every requirement setup.py declares for a stack's Python (its environment markers) is pinned
    in that stack's constraints file, at a version the requirement allows; tfx at the stack's."""
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name

    kwargs = setup_kwargs(monkeypatch)
    declared = kwargs["install_requires"] + [r for extra in ("kfp", "dev", "viewer")
                                              for r in kwargs["extras_require"][extra]]
    for tfx, python, constraints in STACKS.values():
        pinned = pins(constraints)
        assert pinned["tfx"] == tfx, constraints
        assert python in SpecifierSet(kwargs["python_requires"])
        for requirement in map(Requirement, declared):
            if requirement.marker and not requirement.marker.evaluate({"python_version": python}):
                continue
            name = canonicalize_name(requirement.name)
            assert name in pinned, (constraints, requirement)
            assert requirement.specifier.contains(pinned[name], prereleases=True), \
                (constraints, str(requirement), pinned[name])
    for newer in ("3.12", "3.13", "3.9"):
        assert newer not in SpecifierSet(kwargs["python_requires"])


def test_dockerfile_and_bootstrap_use_each_stacks_constraints_and_python():
    """The image builds on tensorflow/tfx:1.21.0 by default, 1.16.0 by build argument, each with its
    stack's constraints file and Python; scripts/bootstrap.sh maps the stacks the same way, and the
    Makefile uses the venv bootstrap.sh fills."""
    import re

    with open(os.path.join(REPO_ROOT, "Dockerfile")) as f:
        dockerfile = f.read()
    assert "ARG TFX_VERSION=1.21.0\n" in dockerfile
    assert "FROM tensorflow/tfx:${TFX_VERSION}\n" in dockerfile
    image = {m[0]: (m[0], m[2], m[1]) for m in
             re.findall(r"(\d+\.\d+\.\d+)\) constraints=(\S+) python=(\S+) ;;", dockerfile)}
    assert image == {tfx: (tfx, python, constraints) for tfx, python, constraints in STACKS.values()}
    with open(os.path.join(SCRIPTS, "bootstrap.sh")) as f:
        bootstrap = f.read()
    mapped = re.findall(r"(\d+\.\d+)\) want=(\S+); constraints=(\S+); +default_venv=(\S+) ;;", bootstrap)
    assert {stack: (STACKS[stack][0], want, constraints) for stack, want, constraints, _ in mapped} == STACKS
    # The Makefile runs the tools from the venv bootstrap.sh fills for the same STACK.
    for stack, _, _, venv in mapped:
        make = subprocess.run(["make", "-n", "-s", "lint", f"STACK={stack}"], cwd=REPO_ROOT,
                              capture_output=True, text=True, timeout=60)
        assert f"\n{venv}/bin/ruff check .\n" in "\n" + make.stdout, make.stdout


def debian13_root(tmp_path, script, env=None):
    """Runs bash `script` after sourcing scripts/debian13_root.sh (which then only defines functions)."""
    return subprocess.run([shutil.which("bash"), "-c", f"source {SCRIPTS}/debian13_root.sh; {script}"],
                          capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ["PATH"], "HOME": str(tmp_path), **(env or {})})


def test_debian13_root_mounts_the_local_directories_the_pip_settings_name(tmp_path):
    for folder in ("wheels", "more", "mirror/simple"):
        (tmp_path / folder).mkdir(parents=True)
    conf = tmp_path / ".config" / "pip" / "pip.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text(f"[global]\nfind-links = {tmp_path}/wheels\ncert = {tmp_path}/wheels/ca.pem\n"
                    f"extra-index-url = file://{tmp_path}/mirror/simple https://pypi.invalid/simple "
                    f"file://{tmp_path}/gone/simple\n")
    result = debian13_root(tmp_path, "pip_local_dirs", {"PIP_FIND_LINKS": f"{tmp_path}/more"})
    assert result.returncode == 0, result.stderr
    ours = [line for line in result.stdout.split() if line.startswith(str(tmp_path))]
    # A file:// index's parent (where its files are), find-links as named; not the missing one.
    assert ours == [str(tmp_path / "mirror"), str(tmp_path / "more"), str(tmp_path / "wheels")]


def test_debian13_root_is_rebuilt_unless_its_stamp_names_the_current_recipe(tmp_path):
    root = tmp_path / "debian13"
    env = {"FFEM_DEBIAN13_ROOT": str(root)}
    check = "root_complete && echo complete || echo incomplete"
    root.mkdir()
    assert debian13_root(tmp_path, check, env).stdout == "incomplete\n"      # a build cut short
    (root / ".ffem-debian13-complete").write_text("recipe 0\n")
    assert debian13_root(tmp_path, check, env).stdout == "incomplete\n"      # an older recipe
    recipe = debian13_root(tmp_path, 'echo "recipe $ROOT_RECIPE"', env).stdout
    (root / ".ffem-debian13-complete").write_text(recipe)
    assert debian13_root(tmp_path, check, env).stdout == "complete\n"


def test_debian13_root_without_a_command_prints_its_usage(tmp_path):
    result = subprocess.run([shutil.which("bash"), os.path.join(SCRIPTS, "debian13_root.sh")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "usage: scripts/debian13_root.sh CMD..." in result.stderr


def ci_run(tmp_path, glibc, make_status=0):
    """.ci/run in a copy of the checkout's scripts, with stand-ins for `make` and the Debian 13 root
    that record their arguments and working directory: (the calls as (directory, command), in any
    order since the suites run at the same time; the exit status; the checkout)."""
    checkout = tmp_path / "checkout"
    (checkout / ".ci").mkdir(parents=True)
    (checkout / "scripts").mkdir()
    (checkout / ".venv").mkdir()             # a venv of this checkout: not copied
    shutil.copy(os.path.join(REPO_ROOT, ".ci", "run"), checkout / ".ci" / "run")
    for script in ("stack.sh", "find_python.sh"):
        shutil.copy(os.path.join(SCRIPTS, script), checkout / "scripts" / script)
    log = tmp_path / "calls"
    root = checkout / "scripts" / "debian13_root.sh"
    # Each records where it ran, what that directory holds (.ci/run, a .venv) and its arguments.
    seen = '$(pwd)|$([ -f .ci/run ] && echo ci)$([ -e .venv ] && echo +venv)'
    root.write_text(f'#!/bin/sh\necho "{seen}|root $*" >> {log}\n')
    bin_dir = fake_glibc(tmp_path, glibc)
    for tool in ("date", "env", "mktemp", "mkdir", "rm", "tar", "cat", "grep"):
        if not os.path.exists(os.path.join(bin_dir, tool)):
            os.symlink(shutil.which(tool), os.path.join(bin_dir, tool))
    make = tmp_path / "fakebin" / "make"
    make.write_text(f'#!/bin/sh\necho "{seen}|make $*" >> {log}\nexit {make_status}\n')
    for stub in (root, make):
        stub.chmod(0o755)
    result = subprocess.run([shutil.which("bash"), str(checkout / ".ci" / "run")], capture_output=True,
                            text=True, timeout=60,
                            env={"PATH": bin_dir, "HOME": str(tmp_path), "TMPDIR": str(tmp_path),
                                 "PYENV_ROOT": pyenv_with(tmp_path, 10, 11)})
    calls = [line.split("|", 2) for line in (log.read_text().splitlines() if log.exists() else [])]
    return calls, result, checkout


def check_the_two_suites(calls, checkout, here, other):
    """`here` ran in the checkout and `other` in a copy of it (without the venv), each with its own
    pytest directory outside both; returns the two commands without that argument."""
    by_place = {}
    for directory, holds, command in calls:
        command, basetemp = re.fullmatch(r"(.*) PYTEST_ARGS=--basetemp=(\S+)", command).groups()
        assert not basetemp.startswith(str(checkout)) and not basetemp.startswith(directory)
        in_checkout = directory == str(checkout)
        assert holds == ("ci+venv" if in_checkout else "ci")     # the copy: files, no venv
        by_place[in_checkout] = (command, basetemp)
    assert by_place[True][1] != by_place[False][1]
    assert (by_place[True][0], by_place[False][0]) == (here, other)


def test_ci_runs_the_suite_on_this_machines_stack_and_on_the_other_in_the_root_where_needed(tmp_path):
    calls, result, checkout = ci_run(tmp_path, "2.36")   # Debian 12: 1.16 here, 1.21 in the root
    assert result.returncode == 0, result.stderr
    check_the_two_suites(calls, checkout, "make test STACK=1.16", "root make test STACK=1.21")
    assert "ci: both stacks passed" in result.stderr
    assert not any(name.startswith("ffem-ci.") for name in os.listdir(tmp_path))   # removed


def test_ci_runs_the_other_stack_directly_where_this_machine_can(tmp_path):
    calls, result, checkout = ci_run(tmp_path, "2.41")   # Debian 13: 1.21 here, 1.16 beside it
    assert result.returncode == 0, result.stderr
    check_the_two_suites(calls, checkout, "make test STACK=1.21", "make test STACK=1.16")


def test_ci_runs_both_suites_and_fails_when_one_fails(tmp_path):
    calls, result, checkout = ci_run(tmp_path, "2.36", make_status=1)
    check_the_two_suites(calls, checkout, "make test STACK=1.16", "root make test STACK=1.21")
    assert result.returncode == 1 and "TFX 1.16 stack exit 1, TFX 1.21 stack exit 0" in result.stderr
    assert "ci: TFX 1.16 stack (this machine): exit 1 after" in result.stdout


def test_debian13_root_gets_the_machines_hosts_file_and_ca_bundle(tmp_path):
    """The root resolves the machine's own name (Beam's runner advertises its control service
    under it) and trusts the same CAs: both files are copied in on every run."""
    root = tmp_path / "root"
    result = debian13_root(tmp_path, f"copy_host_settings {root}")
    assert result.returncode == 0, result.stderr
    for f in ("/etc/hosts", "/etc/ssl/certs/ca-certificates.crt"):
        if os.path.exists(f):
            with open(f, "rb") as host, open(f"{root}{f}", "rb") as inside:
                assert inside.read() == host.read(), f


def _chromium_script(tmp_path, uid, chromium, sudo=False):
    """scripts/chromium.sh with stand-ins for id, apt-get, sudo and chromium on its PATH; returns
    (result, the apt-get calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    log = tmp_path / "calls"
    stubs = {"id": f"echo {uid}", "apt-get": f'echo "apt-get $*" >> {log}',
             "sudo": 'if [ "$1" = -n ] && [ "$2" = true ]; then exit 0; fi; shift; "$@"'
             if sudo else "exit 1"}
    if chromium:
        stubs["chromium"] = "exit 0"
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    if not chromium:
        # apt-get "installs" chromium: later lookups find it.
        (bin_dir / "apt-get").write_text(
            f'#!/bin/bash\necho "apt-get $*" >> {log}\n'
            f'if [ "$1" = install ]; then printf "#!/bin/bash\\n" > {bin_dir}/chromium; '
            f'/bin/chmod +x {bin_dir}/chromium; fi\n')
    result = subprocess.run(["/bin/bash", os.path.join(REPO_ROOT, "scripts", "chromium.sh")],
                            capture_output=True, text=True, timeout=60,
                            env={"PATH": str(bin_dir)})
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def test_chromium_setup_installs_as_root_only_when_missing_and_never_fails(tmp_path):
    result, calls = _chromium_script(tmp_path / "present", 0, chromium=True)
    assert result.returncode == 0 and calls == []                 # present: nothing to do
    result, calls = _chromium_script(tmp_path / "root", 0, chromium=False)
    assert result.returncode == 0, result.stderr
    assert [c.split()[:2] for c in calls] == [["apt-get", "update"], ["apt-get", "install"]]
    assert calls[1].split()[-1] == "chromium" and "installed" in result.stderr
    result, calls = _chromium_script(tmp_path / "sudo", 1000, chromium=False, sudo=True)
    assert result.returncode == 0 and len(calls) == 2              # through passwordless sudo
    result, calls = _chromium_script(tmp_path / "user", 1000, chromium=False)
    assert result.returncode == 0 and calls == [] and "will skip" in result.stderr
    # CI does not let the browser check skip: .ci/run requires it (tests/test_shipped_model.py).
    with open(os.path.join(REPO_ROOT, ".ci", "run")) as f:
        assert "\nexport FFEM_REQUIRE_CHROMIUM=1\n" in f.read()
