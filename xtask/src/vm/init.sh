#!/bin/busybox sh
# PID 1 of the covobs test VM, run by busybox from the initramfs (see xtask/src/vm/mod.rs).
#
# Stage 1 (/init in the initramfs) mounts the host's root filesystem (9p tag "hostroot",
# read-only) at /newroot, puts writable tmpfs on its /tmp, /var/tmp, /run and /dev/shm, the
# run's control directory (9p tag "covobs_ctl", writable) on /run/covobs-vm and the output
# share (9p tag "covobs_share", writable) at the path the host gave, plus proc, sysfs,
# devtmpfs, devpts, debugfs, tracefs, bpffs and cgroup2; copies busybox and itself to
# /newroot/run/covobs-init and switch_roots there: a real root switch, not a chroot, because
# the kernel refuses user namespaces to chrooted callers.
# Stage 2 (this script again, argument "stage2") runs the host-written /run/covobs-vm/cmd.sh
# with stdout and stderr on the virtio serial ports "covobs.stdout" and "covobs.stderr",
# writes its exit status to /run/covobs-vm/status and reboots, which ends QEMU (-no-reboot).
# Messages of this script and of the kernel go to the console (ttyS0).
NINEP=trans=virtio,version=9p2000.L,msize=262144
HERE=/run/covobs-init
CTL=/run/covobs-vm

say() { echo "covobs-vm: $*"; }
finish() {
    sync
    reboot -f
    # If reboot returned, exiting PID 1 panics the kernel, and panic=-1 reboots too.
    exit 1
}
die() {
    say "FAILED: $*"
    finish
}
uptime_s() { cut -d' ' -f1 /proc/uptime; }

stage1() {
    /bin/busybox --install -s /bin
    export PATH=/bin
    R=/newroot
    mount -t proc proc /proc || die "mount /proc"
    mount -t sysfs sysfs /sys || die "mount /sys"
    mount -t devtmpfs devtmpfs /dev || die "mount /dev"
    say "init at $(uptime_s) s"

    mount -t 9p -o "$NINEP,ro,cache=loose" hostroot $R ||
        die "cannot mount the host's root (9p tag hostroot)"
    for d in tmp var/tmp; do
        mount -t tmpfs -o mode=1777 tmpfs "$R/$d" || die "tmpfs on /$d"
    done
    mount -t tmpfs -o mode=755 tmpfs $R/run || die "tmpfs on /run"
    mkdir -p $R$CTL $R$HERE || die "mkdir in /run"
    mount -t 9p -o "$NINEP,cache=none" covobs_ctl $R$CTL || die "cannot mount covobs_ctl"
    [ -r $R$CTL/params ] || die "no params in the control share"
    # Sets COVOBS_SHARE (guest path of the output share) and COVOBS_WORKSPACE (the checkout,
    # mounted at its host path: under /tmp or /run the tmpfs above would hide it). The
    # workspace goes first: the output share may be inside it.
    . $R$CTL/params
    if [ -n "${COVOBS_WORKSPACE:-}" ]; then
        mkdir -p "$R$COVOBS_WORKSPACE" 2>/dev/null
        mount -t 9p -o "$NINEP,ro,cache=loose" covobs_ws "$R$COVOBS_WORKSPACE" ||
            die "cannot mount the workspace at $COVOBS_WORKSPACE"
    fi
    if [ -n "${COVOBS_SHARE:-}" ]; then
        mkdir -p "$R$COVOBS_SHARE" 2>/dev/null
        mount -t 9p -o "$NINEP,cache=none" covobs_share "$R$COVOBS_SHARE" ||
            die "cannot mount the output share at $COVOBS_SHARE"
    fi

    mount -t proc proc $R/proc || die "proc"
    mount -t sysfs sysfs $R/sys || die "sysfs"
    mount -t devtmpfs devtmpfs $R/dev || die "devtmpfs"
    mkdir -p $R/dev/pts $R/dev/shm
    mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $R/dev/pts || die "devpts"
    mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm || die "tmpfs on /dev/shm"
    mount -t debugfs debugfs $R/sys/kernel/debug || die "debugfs"
    mount -t tracefs tracefs $R/sys/kernel/tracing || die "tracefs"
    mount -t bpf bpf $R/sys/fs/bpf || die "bpffs"
    mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || die "cgroup2"

    cp /bin/busybox /init $R$HERE/ || die "copying busybox to $HERE"
    umount /dev /sys /proc
    exec switch_root $R $HERE/busybox sh $HERE/init stage2
    die "switch_root failed"
}

stage2() {
    $HERE/busybox mkdir -p $HERE/bin && $HERE/busybox --install -s $HERE/bin || die "busybox"
    export PATH=$HERE/bin
    hostname covobs-vm
    ip link set lo up || say "warning: cannot bring up lo"

    # The port names arrive from QEMU asynchronously: wait for them a little.
    OUT= ERR= tries=0
    while [ -z "$OUT" ] || [ -z "$ERR" ]; do
        for p in /sys/class/virtio-ports/*; do
            case "$(cat "$p/name" 2>/dev/null)" in
            covobs.stdout) OUT=/dev/${p##*/} ;;
            covobs.stderr) ERR=/dev/${p##*/} ;;
            esac
        done
        tries=$((tries + 1))
        [ $tries -le 100 ] || die "virtio ports covobs.stdout/covobs.stderr not found"
        [ -n "$OUT" ] && [ -n "$ERR" ] || sleep 0.05
    done

    say "run at $(uptime_s) s"
    env -i /bin/sh $CTL/cmd.sh </dev/null >"$OUT" 2>"$ERR"
    status=$?
    say "exit $status at $(uptime_s) s"
    { echo "$status" >$CTL/status.tmp && mv $CTL/status.tmp $CTL/status; } ||
        say "cannot write the exit status to the control share"
    finish
}

if [ "${1:-}" = stage2 ]; then
    stage2
else
    stage1
fi
