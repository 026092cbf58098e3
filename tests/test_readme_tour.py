"""README's reading tour names files with their length ("`minicnn/tensor.py` (≈410 lines)");
a reader plans an afternoon by those numbers, so each file must be as short as the tour
says (10% of slack), and every file the tour names must exist."""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
CLAIM = re.compile(r"`([\w/.]+\.py)` \(≈(\d+)")


def tour():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## A reading tour")
    return text[start:text.index("\n## ", start + 1)]


def test_every_file_the_tour_names_exists():
    named = set(re.findall(r"`((?:minicnn|architectures|benchmarks)/[\w/.]*)`", tour()))
    assert len(named) > 30
    # "minicnn/cli" names the command line whether it is a module or a package
    missing = sorted(path for path in named
                     if not ((ROOT / path).exists() or (ROOT / f"{path}.py").exists()))
    assert not missing, f"the reading tour names files that do not exist: {missing}"


def test_every_file_is_as_short_as_the_tour_claims():
    claims = CLAIM.findall(tour())
    assert len(claims) > 30
    wrong = []
    for path, claimed in claims:
        lines = len((ROOT / path).read_text(encoding="utf-8").splitlines())
        if not 0.5 * int(claimed) <= lines <= 1.1 * int(claimed):
            wrong.append(f"{path}: the tour says ≈{claimed} lines, it has {lines}")
    assert not wrong, "; ".join(wrong)
