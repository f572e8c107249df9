"""Where cargo put muster's release executables.

Cargo decides where a build goes (`CARGO_TARGET_DIR`, `build.target-dir` in a
`.cargo/config.toml`, `--target` triples), so nothing here guesses
`target/release`: it runs `cargo build --release --message-format=json` and
reads the `executable` of each compiler artifact. Up to date, that is a no-op
of a fraction of a second.

Used by scripts/setup.sh (which exports the paths), the end-to-end tests'
conftest and the benchmarks (when MUSTER_BIN is not already set).

    python3 scripts/artifacts.py            # builds, prints NAME=PATH lines
    python3 scripts/artifacts.py muster     # prints just that path
"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build(quiet=True):
    """Builds the release binaries and examples; returns {name: executable}
    (the binary `muster`, and each example by its name, e.g. `library`)."""
    cmd = ["cargo", "build", "--release", "--bins", "--examples",
           "--message-format=json-render-diagnostics"]
    if quiet:
        cmd.append("--quiet")
    proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"cargo build failed (exit {proc.returncode}): see the messages above")
    found = {}
    for line in proc.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") == "compiler-artifact" and msg.get("executable"):
            found[msg["target"]["name"]] = msg["executable"]
    if "muster" not in found:
        raise SystemExit("cargo build reported no `muster` executable")
    return found


def main(argv):
    found = build(quiet="--verbose" not in argv)
    names = [a for a in argv if not a.startswith("--")]
    if names:
        for name in names:
            if name not in found:
                raise SystemExit(f"no executable named {name!r} in the build")
            print(found[name])
    else:
        for name, path in sorted(found.items()):
            print(f"{name}={path}")


if __name__ == "__main__":
    main(sys.argv[1:])
