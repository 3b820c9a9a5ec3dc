"""setup.cfg: what `pip install -e '.[bench]'` installs is all the benchmarks import."""
import ast
import configparser
import importlib.metadata
import os
import re
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def requirement_names(*sections):
    parser = configparser.ConfigParser()
    parser.read(os.path.join(REPO, "setup.cfg"))
    lines = parser["options"]["install_requires"].splitlines()
    for extra in sections:
        lines += parser["options.extras_require"][extra].splitlines()
    return {re.split(r"[\[<>=!~ ]", line.strip())[0].lower().replace("_", "-")
            for line in lines if line.strip() and not line.strip().startswith("#")}


def imported_modules(path):
    tree = ast.parse(open(path).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module.split(".")[0]


def test_bench_extra_provides_every_module_the_benchmarks_import():
    provided = requirement_names("bench")
    distributions = importlib.metadata.packages_distributions()
    benchmarks = os.path.join(REPO, "benchmarks")
    for name in sorted(os.listdir(benchmarks)):
        if not name.endswith(".py"):
            continue
        for module in set(imported_modules(os.path.join(benchmarks, name))):
            if module in sys.stdlib_module_names or module in ("userservice", "benchmarks"):
                continue
            owners = {owner.lower().replace("_", "-") for owner in distributions.get(module, ())}
            # a module whose distribution is not installed here is taken to share its name
            owners = owners or {module.lower().replace("_", "-")}
            # a module may come with a dependency of a listed requirement (werkzeug with flask)
            required_by_listed = {requirement for owner in owners for requirement in provided
                                  if owner in dependencies_of(requirement)}
            assert owners & provided or required_by_listed, "%s imports %s, which no requirement brings" % (
                name, module)


def dependencies_of(distribution, seen=None):
    """The names of a distribution's requirements, recursively."""
    seen = set() if seen is None else seen
    try:
        requires = importlib.metadata.requires(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return seen
    for requirement in requires:
        if "extra ==" in requirement:
            continue
        name = re.split(r"[\[<>=!~ ;(]", requirement)[0].lower().replace("_", "-")
        if name not in seen:
            seen.add(name)
            dependencies_of(name, seen)
    return seen
