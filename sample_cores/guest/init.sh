#!/bin/bash
# PID 1 of a sample-core guest.  The root filesystem is the host's, read-only
# over 9p; the job (what to load, what to run) comes from the writable
# "vmctout" share that the host mounts for this run.
#
# Stages, told to the host on the console as "VMCT-<STAGE>" lines:
#   setup -> READY (host dumps memory over QMP) | LIVE-DONE | CRASHING
# A kdump capture kernel boots the same initramfs; it sees /proc/vmcore and
# writes the kdump-compressed dump instead.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t devtmpfs dev /dev
exec < /dev/console > /dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t debugfs debugfs /sys/kernel/debug     # the test modules' truth records (vmct_truth.h)
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/shm /dev/pts && mount -t tmpfs shm /dev/shm && mount -t devpts devpts /dev/pts
OUT=/vmct       # the run's share, mounted by the initramfs
say() { echo "VMCT-$*" > /dev/console; }
die() { say "FAILED $*"; sleep 2; echo b > /proc/sysrq-trigger; }

# shellcheck source=/dev/null
. "$OUT/job.env" || die "no job.env"
# host paths the run needs that lie under a directory the guest hides (the
# tmpfs mounts above; /mnt, /media): bound back from the host's root
for path in "${HOST_PATHS[@]}"; do
    mkdir -p "$path" && mount --bind "/.host$path" "$path" || die "cannot bind $path"
done
# and the links among them, (link, target) pairs: a path given through a link
for ((i = 0; i < ${#HOST_LINKS[@]}; i += 2)); do
    link=${HOST_LINKS[i]}
    [ -e "$link" ] || { mkdir -p "$(dirname "$link")" && ln -s "${HOST_LINKS[i + 1]}" "$link"; } \
        || die "cannot link $link"
done
exec >> "$OUT/guest.log" 2>&1

if [ -e /proc/vmcore ]; then
    say "CAPTURE $(uname -r)"
    modprobe -d "$KROOT" virtio_blk 2>/dev/null
    "${MAKEDUMPFILE[@]}" -c -d 31 /proc/vmcore "$OUT/vmcore.kdump.tmp" && mv "$OUT/vmcore.kdump.tmp" "$OUT/vmcore.kdump"
    say "CAPTURED rc=$?"
    sync
    echo b > /proc/sysrq-trigger
fi

say "BOOTED $(uname -r)"
hostname vmct-guest
ip link set lo up
load() { for m in "$@"; do modprobe -d "$KROOT" "$m" 2>/dev/null || echo "modprobe $m: not available"; done; }
load qemu_fw_cfg virtio_net e1000e virtio_blk ext4 veth ${KERNEL_MODULES[@]+"${KERNEL_MODULES[@]}"}
# a module named in INSMOD_MEMCG is loaded from a memory cgroup of its own
# (cgroup v2), which its page cache and shmem pages are charged to
memcg_of() {
    [ "$1" = - ] && return 0
    if [ ! -e /sys/fs/cgroup/cgroup.subtree_control ]; then
        mount -t cgroup2 none /sys/fs/cgroup && echo +memory > /sys/fs/cgroup/cgroup.subtree_control \
            || die "no memory cgroup"
    fi
    mkdir -p "/sys/fs/cgroup/vmct-$1" && echo "$BASHPID" > "/sys/fs/cgroup/vmct-$1/cgroup.procs"
}
for i in "${!INSMOD[@]}"; do
    # shellcheck disable=SC2086
    ( memcg_of "${INSMOD_MEMCG[$i]}" && exec insmod "${INSMOD[$i]}" ${INSMOD_PARAMS[$i]} ) \
        || die "insmod ${INSMOD[$i]}"
done
# igb after the test modules, so fake_i40e's net device is eth2 whether or
# not this QEMU emulates igb; the rest of the Intel family binds no device
# here but brings its debug info, for the walkers' layout checks
load igb ixgbe ixgbevf ice iavf igc
udevadm settle 2>/dev/null || sleep 1
# a bond over the net devices of the drivers named (an active-backup bond
# takes its first slave's address; a slave that cannot change its address
# needs fail_over_mac=active)
if [ ${#BOND_DRIVERS[@]} -gt 0 ]; then
    load bonding
    ip link add bond0 type bond mode active-backup fail_over_mac active || die "bond0"
    for dev in /sys/class/net/*; do
        driver=$(basename "$(readlink "$dev/device/driver" 2>/dev/null)" 2>/dev/null)
        for want in "${BOND_DRIVERS[@]}"; do
            if [ "$driver" = "$want" ]; then
                ip link set "${dev##*/}" down && ip link set "${dev##*/}" master bond0 || die "enslave ${dev##*/}"
            fi
        done
    done
    ip link set bond0 up
fi
# a kernel loaded for kexec (what kexec -l leaves in memory until a reboot)
if [ -n "$KEXEC_LOAD" ]; then
    kexec -l "$VMLINUZ" --initrd="$INITRD" --append="$CAPTURE_CMDLINE" || die "kexec -l"
fi

"$PYTHON" "$GUEST_DIR/workload.py" --out "$OUT" --disk /dev/vda "${WORKLOAD_ARGS[@]}" > "$OUT/workload.log" 2>&1 &
for _ in $(seq 600); do [ -e /run/vmct-workload-ready ] && break; sleep 0.5; done
[ -e /run/vmct-workload-ready ] || die "workload did not become ready"
# vmct_shapes' last plants, once the workload is ready, because more I/O or
# receive work would undo them.  First a page the disk read into, then lost,
# that an idle blk-mq request (and on 7.3 a cached bio) still names, and a
# page an interrupt handler filled, then lost, whose address stays on that
# CPU's interrupt stack, and a page lost after it left the LRU, which a dead
# slot of a per-CPU LRU batch still names, and a page a freed per-cpu
# allocation still names: before the ground truth is copied, which records
# the pages as lost.
shapes=/sys/module/vmct_shapes/parameters
if [ -e $shapes/idle_request ] && [ -b /dev/vda ]; then
    echo /dev/vda > $shapes/idle_request || echo "idle_request: failed"
fi
if [ -e $shapes/irq_stack ]; then
    echo 1 > $shapes/irq_stack || echo "irq_stack: failed"
fi
if [ -e $shapes/lru_batch ]; then
    echo 1 > $shapes/lru_batch || echo "lru_batch: failed"
fi
if [ -e $shapes/percpu_freed ]; then
    echo 1 > $shapes/percpu_freed || echo "percpu_freed: failed"
fi

dmesg > "$OUT/dmesg.txt"
"$PYTHON" "$GUEST_DIR/capture.py" "$OUT" "$MODE" || die "capture"

# Then, for a dump only, an skb on the defer list of a CPU held from
# receiving until the dump (it never returns): after the ground truth, since
# a CPU held with bottom halves off also holds back RCU's grace periods, and
# whatever is freed through RCU from then on (exiting processes' page
# tables, slab objects) stays allocated.  Its log line joins dmesg.txt.
defer_skb_last() {
    [ -e $shapes/defer_skbs ] || return 0
    echo 1 > $shapes/defer_skbs 2>/dev/null || { echo "defer_skbs: not on this kernel"; return 0; }
    dmesg > "$OUT/dmesg.txt"
}

case "$MODE" in
dump)
    sync
    defer_skb_last
    sync
    say "READY"
    while :; do sleep 3600; done
    ;;
kdump)
    # kexec-tools writes the capture kernel's ELF header itself and takes the
    # kernel image's virtual start from /proc/kallsyms' _text.  A kernel
    # without CONFIG_KALLSYMS_ALL lists only [_stext, _etext] there (Debian's
    # arm64 6.1, which has no kexec_file_load either), and kexec-tools then
    # describes the image with garbage: no makedumpfile reads its symbols
    # from /proc/vmcore.  /proc/iomem's "Kernel code" starts at _stext, so
    # _stext stands in for _text where it is missing.
    if ! grep -q ' _text$' /proc/kallsyms; then
        { sed -n 's/ _stext$/ _text/p' /proc/kallsyms; cat /proc/kallsyms; } > /run/kallsyms
        mount --bind /run/kallsyms /proc/kallsyms || die "kallsyms"
    fi
    kexec -p "$VMLINUZ" --initrd="$INITRD" --append="$CAPTURE_CMDLINE" || die "kexec -p"
    defer_skb_last
    say "CRASHING"
    sync
    echo c > /proc/sysrq-trigger
    ;;
live)
    say "LIVE-START"
    (cd "$LIVE_CWD" && bash -c "$LIVE_CMD") > "$OUT/live.stdout" 2> "$OUT/live.stderr"
    echo $? > "$OUT/live.rc"
    sync
    say "LIVE-DONE"
    sleep 1     # let the serial console drain, or the host may never see LIVE-DONE
    echo b > /proc/sysrq-trigger
    ;;
esac
die "unknown mode $MODE"
