#!/usr/bin/env bash
# Idempotent, cached setup of the healthd IPVS test VM on Debian 12 (run as root).
#
#   tests/vm/setup.sh            # install what is missing; a warm run takes ~1 s
#
# Environment:
#   HEALTHD_VM_HOME   cache directory (default /var/cache/healthd-vm)
#   HEALTHD_VM_KPKG   kernel package to use (default: what linux-image-amd64 depends on)
#
# Results, under $HEALTHD_VM_HOME:
#   kernel/                      the kernel package extracted with dpkg -x (+ depmod)
#   kernel/boot/vmlinux-KVER     uncompressed ELF kernel (PVH boot, no decompression)
#   kernel/.package              "PACKAGE VERSION" of the extracted kernel
#   vng/                         venv with virtme-ng
# See tests/vm/README.md.
set -euo pipefail

HEALTHD_VM_HOME=${HEALTHD_VM_HOME:-/var/cache/healthd-vm}
VNG_VERSION=1.42
APT_PACKAGES=(
    qemu-system-x86 kmod ipvsadm busybox-static iproute2 procps nftables curl
    python3 python3-venv file binutils ca-certificates
)
export DEBIAN_FRONTEND=noninteractive

KERNEL_DIR=$HEALTHD_VM_HOME/kernel
VNG_DIR=$HEALTHD_VM_HOME/vng
APT_UPDATED=0

die() {
    echo "setup.sh: error: $*" >&2
    exit 1
}

# step NAME FUNCTION: run FUNCTION (in this shell, so that errexit applies and `die` exits)
# and print one line with its duration and the RESULT it set. Tool output goes to stderr.
RESULT=
step() {
    local name=$1 fn=$2 start
    start=$EPOCHREALTIME
    RESULT=
    "$fn"
    printf 'setup: %-8s %6.2f s  %s\n' "$name" "$(elapsed "$start")" "$RESULT"
}

elapsed() { awk -v a="$EPOCHREALTIME" -v b="$1" 'BEGIN { printf "%.2f", a - b }'; }

apt_update_once() {
    if [[ $APT_UPDATED == 0 ]]; then
        apt-get update -q >&2
        APT_UPDATED=1
    fi
}

step_apt() {
    local missing=() pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        if [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null) != "ii " ]]; then
            missing+=("$pkg")
        fi
    done
    if ((${#missing[@]} == 0)); then
        RESULT="cached (${#APT_PACKAGES[@]} packages present)"
        return
    fi
    apt_update_once
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    RESULT="installed: ${missing[*]}"
}

# Print the kernel package name: $HEALTHD_VM_KPKG or the dependency of linux-image-amd64.
resolve_kernel_package() {
    if [[ -n ${HEALTHD_VM_KPKG:-} ]]; then
        echo "$HEALTHD_VM_KPKG"
        return
    fi
    apt-cache depends linux-image-amd64 2>/dev/null |
        awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }' || true
}

step_kernel() {
    local pkg current="" tmp deb kver
    [[ -f $KERNEL_DIR/.package ]] && read -r current _ <"$KERNEL_DIR/.package"
    pkg=$(resolve_kernel_package)
    if [[ -z $pkg && -z $current ]]; then
        # A fresh box may have no apt lists at all.
        apt_update_once
        pkg=$(resolve_kernel_package)
    fi
    if [[ -n $current && (-z $pkg || $pkg == "$current") ]]; then
        RESULT="cached ($(cat "$KERNEL_DIR/.package"))"
        return
    fi
    [[ -n $pkg ]] || die "cannot resolve the dependency of linux-image-amd64"
    tmp=$(mktemp -d)
    # apt-get download runs as the _apt user: let it write into the directory.
    chmod 0755 "$tmp"
    if id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
    if ! (cd "$tmp" && apt-get download -q "$pkg" >&2); then
        apt_update_once
        (cd "$tmp" && apt-get download -q "$pkg" >&2)
    fi
    deb=$(echo "$tmp"/*.deb)
    [[ -f $deb ]] || die "apt-get download $pkg produced no .deb"
    rm -rf "$KERNEL_DIR"
    mkdir -p "$KERNEL_DIR"
    dpkg -x "$deb" "$KERNEL_DIR"
    kver=$(basename "$(echo "$KERNEL_DIR"/lib/modules/*)")
    [[ -f $KERNEL_DIR/boot/vmlinuz-$kver ]] || die "no boot/vmlinuz-$kver in $deb"
    depmod -b "$KERNEL_DIR" "$kver"
    dpkg-deb -f "$deb" Package Version | awk '{ v[NR] = $2 } END { print v[1], v[2] }' \
        >"$KERNEL_DIR/.package"
    rm -rf "$tmp"
    RESULT="extracted $pkg ($kver)"
}

# The bzImage is XZ-compressed; decompressing it under TCG costs ~7 s per boot. The kernel
# has CONFIG_PVH, so qemu can boot the ELF vmlinux directly.
step_vmlinux() {
    local vmlinuz vmlinux
    vmlinuz=$(echo "$KERNEL_DIR"/boot/vmlinuz-*)
    [[ -f $vmlinuz ]] || die "no vmlinuz in $KERNEL_DIR/boot"
    vmlinux=${vmlinuz/vmlinuz-/vmlinux-}
    if [[ -f $vmlinux ]]; then
        RESULT="cached ($vmlinux)"
        return
    fi
    /usr/bin/python3 - "$vmlinuz" "$vmlinux" <<'EOF'
import lzma
import os
import struct
import sys

src, dst = sys.argv[1], sys.argv[2]
data = open(src, "rb").read()
if data[0x202:0x206] != b"HdrS":
    sys.exit(f"{src}: not a bzImage")
setup_sects = data[0x1F1] or 4
payload_offset, payload_length = struct.unpack_from("<II", data, 0x248)
start = (setup_sects + 1) * 512 + payload_offset
payload = data[start : start + payload_length]
if not payload.startswith(b"\xfd7zXZ\x00"):
    sys.exit(f"{src}: payload is not XZ (magic {payload[:6]!r})")
elf = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload)
if elf[:4] != b"\x7fELF" or elf[4] != 2:
    sys.exit("decompressed payload is not a 64-bit ELF")


def has_pvh_note(elf: bytes) -> bool:
    """Look for XEN_ELFNOTE_PHYS32_ENTRY (type 18, owner "Xen") in the PT_NOTE segments."""
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", elf, phoff + i * phentsize
        )
        if p_type != 4:  # PT_NOTE
            continue
        pos, end = p_offset, p_offset + p_filesz
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from("<III", elf, pos)
            name = elf[pos + 12 : pos + 12 + namesz].rstrip(b"\0")
            if name == b"Xen" and ntype == 18:
                return True
            pos += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return False


if not has_pvh_note(elf):
    sys.exit("vmlinux has no PVH entry note: qemu cannot boot it directly")
tmp = dst + ".tmp"
with open(tmp, "wb") as f:
    f.write(elf)
os.replace(tmp, dst)
EOF
    [[ $(file -b "$vmlinux") == ELF* ]] || die "$vmlinux is not an ELF file"
    RESULT="extracted $vmlinux ($(($(stat -c %s "$vmlinux") / 1048576)) MiB)"
}

step_vng() {
    local marker=$VNG_DIR/.virtme-ng-$VNG_VERSION
    if [[ -f $marker && -x $VNG_DIR/bin/vng ]]; then
        RESULT="cached (virtme-ng $VNG_VERSION)"
        return
    fi
    rm -rf "$VNG_DIR"
    /usr/bin/python3 -m venv "$VNG_DIR"
    "$VNG_DIR/bin/pip" install -q --disable-pip-version-check "virtme-ng==$VNG_VERSION" >&2
    touch "$marker"
    RESULT="installed virtme-ng $VNG_VERSION in $VNG_DIR"
}

main() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    mkdir -p "$HEALTHD_VM_HOME"
    local start=$EPOCHREALTIME
    step apt step_apt
    step kernel step_kernel
    step vmlinux step_vmlinux
    step vng step_vng
    printf 'setup: %-8s %6.2f s  %s\n' total "$(elapsed "$start")" \
        "HEALTHD_VM_HOME=$HEALTHD_VM_HOME"
}

main "$@"
