"""Makes the image's root filesystem from a Debian tree that debootstrap built: only the files
of the packages ferroserve needs at run time (Python, numpy and what they depend on, by
Debian's own dependency records), their compiled bytecode, /usr/local (where pip installed the
ferroserve wheel), and a non-root user. Debian's tools (dpkg, apt, perl) stay behind, as do
manuals, translations and docs (but not the copyright files).

    python3 rootfs.py BUILD_TREE OUT_DIR PACKAGE...

Prints the packages it took, one per line.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

# Dependencies that are there to install and configure packages, not to run them.
LEFT_BEHIND = {
    "dpkg",
    "debconf",
    "install-info",
    "tar",
    "perl",
    "perl-base",
    "perl-modules-5.36",
    "libperl5.36",
    "mailcap",
    "mime-support",
    "python3-pkg-resources",
}
# Files no model server needs: manuals, translations, test suites, build tools (numpy's f2py
# and distutils), Python's offline docs, and glibc's iconv modules (neither Python nor
# ferroserve converts character sets through iconv).
SKIPPED = re.compile(
    r"^/usr/share/(man|locale|info|lintian)/"
    r"|^/usr/share/doc/.*(?<!/copyright)$"
    r"|/dist-packages/numpy/(.*/)?tests(/|$)"
    r"|/dist-packages/numpy/(f2py|distutils)(/|$)"
    r"|^/usr/lib/python3\.\d+/(test|pydoc_data)(/|$)"
    r"|^/usr/lib/x86_64-linux-gnu/gconv(/|$)"
)
USER = "ferroserve"
UID = 1000


def installed_packages(tree: Path) -> dict[str, dict[str, str]]:
    """Installed packages of the tree's dpkg database: name -> fields."""
    packages: dict[str, dict[str, str]] = {}
    text = (tree / "var/lib/dpkg/status").read_text()
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and key:
                fields[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed"):
            packages[fields["Package"]] = fields
    return packages


def closure(packages: dict[str, dict[str, str]], roots: list[str]) -> list[str]:
    """The roots and every package they depend on (Depends, Pre-Depends), choosing the first
    installed alternative of each dependency."""
    providers: dict[str, str] = {}
    for name, fields in packages.items():
        for provided in fields.get("Provides", "").split(","):
            provided = re.sub(r"\(.*?\)", "", provided).strip()
            if provided:
                providers.setdefault(provided, name)
    seen: set[str] = set()
    pending = list(roots)
    while pending:
        name = pending.pop()
        if name in seen or name in LEFT_BEHIND:
            continue
        if name not in packages:
            raise SystemExit(f"rootfs.py: package {name} is not installed in the build tree")
        seen.add(name)
        depends = ", ".join(packages[name].get(k, "") for k in ("Pre-Depends", "Depends"))
        for dependency in filter(None, (d.strip() for d in depends.split(","))):
            for alternative in dependency.split("|"):
                dep = re.sub(r"\(.*?\)|:any|:amd64", "", alternative).strip()
                dep = dep if dep in packages else providers.get(dep, "")
                if dep:
                    pending.append(dep)
                    break
    return sorted(seen)


def package_files(tree: Path, name: str) -> list[str]:
    info = tree / "var/lib/dpkg/info"
    for candidate in (info / f"{name}.list", info / f"{name}:amd64.list"):
        if candidate.is_file():
            return candidate.read_text().splitlines()
    raise SystemExit(f"rootfs.py: no file list for {name}")


def copy_entry(tree: Path, out: Path, path: str) -> None:
    """Copies one path of the tree (a directory is made, not copied whole), keeping links."""
    source = tree / path.lstrip("/")
    target = out / path.lstrip("/")
    if os.path.lexists(target) or not os.path.lexists(source):
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    mode = os.lstat(source).st_mode
    if stat.S_ISDIR(mode):
        target.mkdir(mode=stat.S_IMODE(mode))
    else:
        shutil.copy2(source, target, follow_symlinks=False)


def main() -> None:
    tree, out, roots = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # The merged-/usr links (/bin -> usr/bin...) first, so that package paths land in /usr.
    for top in tree.iterdir():
        if top.is_symlink():
            os.symlink(os.readlink(top), out / top.name)
            (out / top.name).resolve().mkdir(parents=True, exist_ok=True)
    packages = installed_packages(tree)
    chosen = closure(packages, roots)
    directories: list[str] = []
    for name in chosen:
        for path in package_files(tree, name):
            if SKIPPED.search(path):
                continue
            copy_entry(tree, out, path)
            if (tree / path.lstrip("/")).is_dir():
                directories.append(path)
    # Debian compiles Python packages at install time; the bytecode is in no file list.
    for path in directories:
        cache = tree / path.lstrip("/") / "__pycache__"
        if cache.is_dir() and not (out / path.lstrip("/") / "__pycache__").exists():
            shutil.copytree(cache, out / path.lstrip("/") / "__pycache__", symlinks=True)
    # Alternatives (e.g. which BLAS is numpy's libblas.so.3): update-alternatives made the
    # links, so they are in no file list. Kept where what they point at came along.
    alternatives = tree / "etc/alternatives"
    (out / "etc/alternatives").mkdir(parents=True, exist_ok=True)
    kept = set()
    for link in alternatives.iterdir():
        if link.is_symlink() and os.path.lexists(out / os.readlink(link).lstrip("/")):
            os.symlink(os.readlink(link), out / "etc/alternatives" / link.name)
            kept.add(f"/etc/alternatives/{link.name}")
    for top in ("usr/bin", "usr/lib"):
        for root, _dirs, files in os.walk(tree / top):
            for f in files:
                source = Path(root) / f
                if source.is_symlink() and os.readlink(source) in kept:
                    copy_entry(tree, out, "/" + str(source.relative_to(tree)))
    # What pip installed: the ferroserve package and binary, and whatever else the build put there.
    shutil.copytree(tree / "usr/local", out / "usr/local", symlinks=True, dirs_exist_ok=True)
    etc = out / "etc"
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"{USER}:x:{UID}:{UID}:ferroserve:/home/{USER}:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\n{USER}:x:{UID}:\nnogroup:x:65534:\n")
    for d, mode in (("tmp", 0o1777), ("root", 0o700), (f"home/{USER}", 0o755)):
        (out / d).mkdir(parents=True, exist_ok=True)
        os.chmod(out / d, mode)
    os.chown(out / "home" / USER, UID, UID)
    subprocess.run(["ldconfig", "-r", str(out)], check=True)
    print("\n".join(chosen))


if __name__ == "__main__":
    main()
