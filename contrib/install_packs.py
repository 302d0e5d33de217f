"""Install every pack in contrib/ into the running Python, editable, without dependencies.

    python3 contrib/install_packs.py

listferry itself must be installed already (the packs depend on it). tox runs this
before the tests, so the packs' own tests run beside the host's.
"""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def packs() -> list[Path]:
    return sorted(p for p in HERE.iterdir() if (p / "setup.cfg").exists())


def main() -> None:
    args = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
    for pack in packs():
        args += ["-e", str(pack)]
    subprocess.run(args, check=True)


if __name__ == "__main__":
    main()
