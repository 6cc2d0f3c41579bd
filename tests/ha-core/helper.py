"""Helpers for `cargo xtask ha-test`, run with the Home Assistant venv's
Python (so Core's own YAML loader, `annotatedyaml`, and the Supervisor's
backup library, `securetar`, are the real ones).

  helper.py expect SECRETS.yaml OUT.json NAMES.json VALUES.yaml
      what Core's loader makes of a secrets.yaml: {name: [type, value]};
      its names in order; the probe's `values:` lines (`vI: !secret NAME`)
  helper.py compare EXPECTED.json ACTUAL.json NAMES.json [NAME JSON]...
      ACTUAL (the probe's record, keyed v0, v1, ... in the order of NAMES)
      must equal EXPECTED, type for type and value for value, with the
      overrides given
  helper.py backup CONFIG OUT.tar
      a backup of CONFIG made the way the Supervisor makes one
      (supervisor/homeassistant/module.py: an inner "homeassistant.tar.gz"
      written with securetar's atomic_contents_add, arcname "data")
  helper.py scan OUT.tar NEEDLES.json LINK_TARGET EXPECTED.json
      the backup holds secrets.yaml as a symlink to LINK_TARGET and none
      of the needles (UTF-8 strings, and every string value of EXPECTED
      with "HKT" in it) anywhere in its bytes, compressed or not
"""

import gzip
import io
import json
import os
import sys
import tarfile
from pathlib import Path, PurePath


def encode(value):
    import math
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", str(value)]
    if isinstance(value, float):
        return ["float", "nan" if math.isnan(value) else repr(value)]
    if value is None:
        return ["null", None]
    if isinstance(value, str):
        return ["str", str(value)]
    return ["other", repr(type(value))]


def expect(src, out, names_out, values_out):
    from homeassistant.util.yaml import load_yaml
    data = load_yaml(src)
    with open(out, "w", encoding="utf-8") as f:
        json.dump({k: encode(v) for k, v in data.items()}, f)
    with open(names_out, "w", encoding="utf-8") as f:
        json.dump(list(data), f)
    with open(values_out, "w", encoding="utf-8") as f:
        for i, name in enumerate(data):
            # JSON's string escapes are YAML double-quoted escapes.
            f.write(f"    v{i}: !secret {json.dumps(name)}\n")


def compare(expected_path, actual_path, names_path, overrides):
    expected = json.load(open(expected_path, encoding="utf-8"))
    actual = json.load(open(actual_path, encoding="utf-8"))
    names = json.load(open(names_path, encoding="utf-8"))
    for name, value in zip(overrides[::2], overrides[1::2]):
        expected[name] = json.loads(value)
    bad = []
    if len(actual) != len(names):
        bad.append(f"{len(actual)} values recorded, {len(names)} expected")
    for i, name in enumerate(names):
        want, got = expected.get(name), actual.get(f"v{i}")
        if want != got:
            bad.append(f"{name!r}: Core resolved {got!r}, expected {want!r}")
    for line in bad:
        print("MISMATCH " + line, file=sys.stderr)
    print(f"{len(names) - len(bad)} of {len(names)} values byte- and type-exact")
    return 1 if bad else 0


def backup(config, out):
    from securetar import SecureTarFile, atomic_contents_add

    # The Supervisor's exclusions for the Core folder (its defaults).
    excluded = ["__pycache__/*", ".DS_Store", ".HA_RESTORE", "*.db-shm",
                "*.log.*", "*.log", "backups/*.tar", "tmp_backups/*.tar",
                "tmp_backups/*", "*.db-wal", "tts/*", ".cloud/*"]

    def is_excluded(path: PurePath) -> bool:
        return any(path.full_match(f"data/{p}") if hasattr(path, "full_match")
                   else path.match(f"data/{p}") for p in excluded)

    outer = SecureTarFile(Path(out), "w", gzip=False)
    with outer:
        with outer.create_inner_tar("./homeassistant.tar.gz", gzip=True) as inner:
            atomic_contents_add(inner, Path(config), file_filter=is_excluded, arcname="data")


def scan(tar_path, needles_path, link_target, expected_path):
    needles = [n.encode() for n in json.load(open(needles_path, encoding="utf-8"))]
    expected = json.load(open(expected_path, encoding="utf-8"))
    needles += [v.encode() for t, v in expected.values() if t == "str" and "HKT" in v]
    with tarfile.open(tar_path) as outer:
        member = next(m for m in outer.getmembers() if m.name.endswith("homeassistant.tar.gz"))
        raw = outer.extractfile(member).read()
    data = gzip.decompress(raw)
    found = [n.decode() for n in needles if n in data or n in raw]
    links = {}
    files = 0
    with tarfile.open(fileobj=io.BytesIO(data)) as inner:
        for m in inner.getmembers():
            if m.issym():
                links[m.name] = m.linkname
            elif m.isfile():
                files += 1
    ok = True
    if links.get("data/secrets.yaml") != link_target:
        print(f"secrets.yaml in the backup: {links.get('data/secrets.yaml')!r}, "
              f"expected a symlink to {link_target}", file=sys.stderr)
        ok = False
    if found:
        print(f"PLAINTEXT IN THE BACKUP: {len(found)} secret values", file=sys.stderr)
        ok = False
    print(f"backup: {files} files, secrets.yaml a symlink to {links.get('data/secrets.yaml')}, "
          f"{len(needles)} secret values searched, {len(found)} found")
    return 0 if ok else 1


def main(argv):
    cmd, args = argv[1], argv[2:]
    if cmd == "expect":
        return expect(*args) or 0
    if cmd == "compare":
        return compare(args[0], args[1], args[2], args[3:])
    if cmd == "backup":
        return backup(*args) or 0
    if cmd == "scan":
        return scan(*args)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
