"""Every file of the assimp test-model corpus that sharpit claims to read (Debian/Ubuntu package
``assimp-testmodels``, installed by ``.ci/run``) loads or fails with the expected sharpit error.

The expected outcome of each file is in ``tests/data/assimp_corpus_expected.json`` (keyed by path
relative to the corpus root): ``loaded`` with its face count and whether it is textured, or the
name of the :mod:`sharpit.errors` class it raises. No file may raise anything else. Nothing is
excluded: the whole selection (about 100 files, the largest 2 MB) loads in a few seconds.

After an intended change of behaviour, regenerate the table and review its diff::

    .venv/bin/python tests/test_mesh_corpus.py --write
"""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from sharpit.errors import SharpItError
from sharpit.mesh_io import READ_FORMATS, load_mesh

TABLE = Path(__file__).parent / "data" / "assimp_corpus_expected.json"
#: Where the package puts the models (Debian 12 / Ubuntu); SHARPIT_ASSIMP_MODELS overrides.
CANDIDATES = ("/usr/share/assimp/models", "/usr/share/assimp-testmodels", "/usr/share/doc/assimp-testmodels/models")


def _root():
    for candidate in filter(None, (os.environ.get("SHARPIT_ASSIMP_MODELS"), *CANDIDATES)):
        if Path(candidate).is_dir():
            return Path(candidate)
    return None


ROOT = _root()
DATA = json.loads(TABLE.read_text())
needs_corpus = pytest.mark.skipif(ROOT is None, reason="the assimp test models are not installed "
                                                       "(apt-get install assimp-testmodels; .ci/run does)")


def _have_dracopy() -> bool:
    try:
        import DracoPy  # noqa: F401
    except ImportError:
        return False
    return True


def _claimed_files(root: Path):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in READ_FORMATS)


def outcome(path: Path) -> dict:
    """What loading ``path`` gives, in the table's terms."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # notes such as ignored texture transforms are not outcomes
        try:
            mesh = load_mesh(path)
        except SharpItError as exc:
            assert str(path) in str(exc) or (exc.__class__.__name__ == "AssetNotFoundError"), str(exc)
            return {"outcome": type(exc).__name__}
    return {"outcome": "loaded", "faces": mesh.num_faces, "texture": mesh.has_texture}


def _expected(name: str) -> dict:
    expected = dict(DATA["files"][name])
    if name in DATA["needs_dracopy"] and not _have_dracopy():
        expected = {"outcome": "UnsupportedFormatError"}
    return expected


@needs_corpus
@pytest.mark.parametrize("name", sorted(DATA["files"]))
def test_corpus_file_outcome(name):
    path = ROOT / name
    if not path.is_file():
        pytest.skip(f"{name} is not in this version of the corpus")
    expected = _expected(name)
    got = outcome(path)     # any exception other than a SharpItError fails the test here
    if name in DATA["needs_dracopy"] and got["outcome"] == "loaded":
        got.pop("faces")    # Draco's face count depends on the decoder's version
        expected.pop("faces", None)
    assert got == expected


@needs_corpus
def test_table_covers_the_installed_corpus():
    """Each claimed file of the corpus is in the table (and the table has no others), so a
    newly readable or newly failing file shows; only for the package version the table was made with."""
    if shutil.which("dpkg-query"):
        version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "assimp-testmodels"],
                                 capture_output=True, text=True).stdout.strip()
        if version and version != DATA["package_version"]:
            pytest.skip(f"assimp-testmodels {version} installed; the table is for {DATA['package_version']}")
    assert _claimed_files(ROOT) == sorted(DATA["files"])


def _write_table():
    files = {name: outcome(ROOT / name) for name in _claimed_files(ROOT)}
    version = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "assimp-testmodels"],
                             capture_output=True, text=True).stdout.strip()
    table = {"corpus": f"Debian package assimp-testmodels, {ROOT}", "package_version": version,
             "needs_dracopy": DATA["needs_dracopy"], "files": files}
    lines = [f"  {json.dumps(name)}: {json.dumps(value)}" for name, value in files.items()]
    head = json.dumps({k: v for k, v in table.items() if k != "files"}, indent=1)[:-2]
    TABLE.write_text(head + ',\n "files": {\n' + ",\n".join(lines) + "\n }\n}\n")
    counts = {}
    for value in files.values():
        counts[value["outcome"]] = counts.get(value["outcome"], 0) + 1
    print(f"wrote {TABLE}: {len(files)} files, {counts}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"] or ROOT is None:
        sys.exit("usage: python tests/test_mesh_corpus.py --write   (needs the corpus installed)")
    _write_table()
