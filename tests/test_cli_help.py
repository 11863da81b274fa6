"""Every command line's --help explains every option and says its default."""
import re
import subprocess
import sys

import pytest

from pipeline_repo import REPO

SCRIPTS = sorted(p.stem for p in (REPO / "scripts").glob("*.py") if p.stem != "__init__")


def options(help_text: str) -> dict[str, str]:
    """option -> its help text, from argparse's layout (an option line, then indented lines)."""
    found, current = {}, None
    for line in help_text.splitlines():
        m = re.match(r"^  (-{1,2}[\w-]+)(?:[ ,][^ ].*?)?(?:\s{2,}(.*))?$", line)
        if m:
            current = m.group(1)
            found[current] = m.group(2) or ""
        elif current and line.startswith(" " * 10):
            found[current] += " " + line.strip()
        elif not line.strip() or not line.startswith(" "):
            current = None
    return found


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_option_is_explained_with_its_default(script):
    r = subprocess.run([sys.executable, "-m", f"scripts.{script}", "--help"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    opts = {k: v for k, v in options(r.stdout).items() if k not in ("-h", "--help")}
    assert opts, r.stdout
    for option, text in opts.items():
        assert text.strip(), f"scripts/{script}.py {option}: no help text"
    parser_defaults = re.findall(r"\(default: ([^)]*)\)", r.stdout)
    assert "None" not in parser_defaults, f"scripts/{script}.py --help shows a default of None"
