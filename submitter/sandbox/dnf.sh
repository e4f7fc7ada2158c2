#!/bin/sh
# `dnf` on a simulated host: it stands in for Amazon Linux 2023's, whose repository the sandbox does not reach.
# `dnf install [-y] [-q] [--installroot=DIR] PACKAGE...` installs from a local repository only, the directory
# /var/cache/submitter-dnf: a package is a subdirectory named after it whose files are laid over the root
# (awscli-2: the AWS CLI the image build cached, as /opt/awscli + /usr/bin/aws). A package the repository does
# not have fails as dnf fails ("No match for argument"); no repository at all fails as an unreachable one does.
# `--downloadonly --downloaddir=DIR` writes each package as DIR/NAME.rpm (a tar of its files, standing in for an
# RPM) instead of installing it; a PATH.rpm argument installs that file, and with `--disablerepo=*` only such
# files are installed, the repository never read (the boot's warm-cache install). Nothing else of dnf is offered.
# docs/sandbox.md, "The host image".
set -u

root=""
command=""
packages=""
files=""
download=""
norepo=""
for arg in "$@"; do
    case "$arg" in
        --installroot=*) root="${arg#--installroot=}" ;;
        --downloaddir=*) download="${arg#--downloaddir=}" ;;
        --disablerepo=\*) norepo=1 ;;
        -*) ;;  # -y, -q, --downloadonly, --setopt=...: nothing to ask, nothing to print but errors
        */*.rpm) files="$files $arg" ;;
        *) if [ -z "$command" ]; then command="$arg"; else packages="$packages $arg"; fi ;;
    esac
done
repo="$root/var/cache/submitter-dnf"
installed="$root/var/lib/submitter-dnf"

if [ "$command" != install ] || [ -z "$packages$files" ]; then
    echo "dnf (sandbox stand-in): only 'dnf install PACKAGE...' is offered here" >&2
    exit 1
fi
if [ -n "$packages" ] && [ -z "$norepo" ] && [ ! -d "$repo" ]; then
    # What dnf says when the instance cannot reach its repository (no route, no endpoint, mirror down).
    echo "Error: Failed to download metadata for repo 'amazonlinux': Cannot download repomd.xml: Cannot download repodata/repomd.xml: All mirrors were tried" >&2
    exit 1
fi
missing=""
for package in $packages; do  # with every repository disabled, no package name matches
    { [ -z "$norepo" ] && [ -d "$repo/$package" ]; } || missing="$missing $package"
done
if [ -n "$missing" ]; then
    for package in $missing; do
        echo "No match for argument: $package" >&2
    done
    echo "Error: Unable to find a match:$missing" >&2
    exit 1
fi
mkdir -p "$installed"
for package in $packages; do
    if [ -e "$installed/$package" ]; then
        echo "Package $package is already installed."
        continue
    fi
    if [ -n "$download" ]; then
        if ! { mkdir -p "$download" && tar -C "$repo/$package" -cf "$download/$package.rpm" .; }; then
            echo "Error: Error downloading packages: $package" >&2
            exit 1
        fi
        continue
    fi
    cp -a "$repo/$package/." "${root:-/}" || { echo "Error: Transaction failed: $package" >&2; exit 1; }
    touch "$installed/$package"
done
[ -n "$download" ] && { echo "The downloaded packages were saved in cache."; exit 0; }
for file in $files; do
    package=$(basename "$file" .rpm)
    [ -f "$file" ] || { echo "Error: Can not load RPM file: $file." >&2; exit 1; }
    if [ -e "$installed/$package" ]; then
        echo "Package $package is already installed."
        continue
    fi
    tar -C "${root:-/}" -xf "$file" || { echo "Error: Transaction failed: $package" >&2; exit 1; }
    touch "$installed/$package"
done
exit 0
