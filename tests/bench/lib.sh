# shellcheck shell=bash
# Shared plumbing of the benchmark scripts, sourced by them (not run):
# a root check, a RAM-backed loop device, FUSE and kernel mounts, child
# processes with time limits, and one cleanup on exit that undoes all of it.
#
#   . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#   bench_require_root
#   bench_setup kaiofs-bench          # work directory + EXIT/INT/TERM traps
#   bench_ram_device 2G               # sets BENCH_IMG and BENCH_DEV, written once
#   bench_run 60 fio ...              # child with a time limit (124: timed out)
#   bench_fuse_start MNT LOG CMD...   # FUSE daemon in the foreground (-f) of a child
#   bench_fuse_stop                   # fusermount3 -u, then the daemon's exit status
#   bench_kernel_mount DEV MNT [mount args] / bench_kernel_umount
#
# The work directory is also the current directory from bench_setup on, so
# fio state files never land in the repository.

BENCH_TMP=""
BENCH_IMG=""
BENCH_DEV=""
BENCH_CHILD=""
BENCH_FUSE_MNT=""
BENCH_FUSE_PID=""
BENCH_KERNEL_MNT=""

bench_log() { printf '==> %s\n' "$*" >&2; }
bench_die() { printf '%s: %s\n' "${0##*/}" "$*" >&2; exit 1; }

# bench_check_systems SYSTEM...: each is one of raw ext4 fuse2fs kaiofs
# (its aio engine) kaiofs-uring (its io_uring engine) fusenull, and what it
# needs is installed or built ($KAIOFS, $KAIOFS_STAT for kaiofs; $FUSE_NULL
# for fusenull).
bench_check_systems() {
    local s f
    for s in "$@"; do
        case $s in
            raw | ext4) ;;
            fuse2fs) command -v fuse2fs >/dev/null || bench_die "fuse2fs not installed (apt-get install fuse2fs)" ;;
            kaiofs | kaiofs-uring)
                for f in "$KAIOFS" "$KAIOFS_STAT"; do
                    [ -x "$f" ] || bench_die "missing $f (build first: tests/run build)"
                done ;;
            fusenull) [ -x "${FUSE_NULL:-}" ] || bench_die "missing ${FUSE_NULL:-fuse-null} (build first: tests/run build)" ;;
            *) bench_die "unknown system '$s' (raw ext4 fuse2fs kaiofs kaiofs-uring fusenull)" ;;
        esac
    done
}

bench_require_root() {
    [ "$(id -u)" -eq 0 ] || bench_die "run as root (needs losetup and mounts)"
}

bench_is_mounted() {
    awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# bench_wait_exit PID SECONDS: bounded wait for a child to exit; returns its
# exit status, or 124 if it is still running after SECONDS.
bench_wait_exit() {
    local pid=$1 limit=$2 i
    for ((i = 0; i < limit * 20; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -0 "$pid" 2>/dev/null && return 124
    wait "$pid"
}

# bench_stop PID: TERM, then KILL; never blocks for long (a process stuck on
# a dead FUSE connection only goes away once the daemon is gone).
bench_stop() {
    local pid=$1
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null
    bench_wait_exit "$pid" 10 && return 0
    kill -KILL "$pid" 2>/dev/null
    bench_wait_exit "$pid" 5 || true
}

# bench_run LIMIT CMD...: run CMD with a time limit (SIGTERM after LIMIT
# seconds, SIGKILL 10 s later) as a background child, polled so that a
# signal reaches the traps at once. Returns CMD's status; 124 or 137 means it
# ran out of time. A process that even SIGKILL cannot end is blocked in the
# kernel on a FUSE daemon that no longer answers: 20 s after the limit the
# daemon of the current FUSE mount is killed, which aborts the connection and
# so fails the stuck requests.
bench_run() {
    local limit=$1 rc=0 end
    shift
    timeout -k 10 "$limit" "$@" </dev/null &
    BENCH_CHILD=$!
    end=$((SECONDS + limit + 20))
    while kill -0 "$BENCH_CHILD" 2>/dev/null; do
        if [ "$SECONDS" -ge "$end" ]; then
            echo "'$*' is still running $((limit + 20))s after its start, blocked in the kernel" >&2
            bench_fuse_kill
            bench_wait_exit "$BENCH_CHILD" 30 >/dev/null 2>&1 || true
            kill -0 "$BENCH_CHILD" 2>/dev/null && { echo "... and it is still there" >&2; break; }
        fi
        sleep 0.05
    done
    if kill -0 "$BENCH_CHILD" 2>/dev/null; then
        rc=137
    else
        wait "$BENCH_CHILD" || rc=$?
    fi
    BENCH_CHILD=""
    [ "$rc" -ne 0 ] || [ "$end" -gt "$SECONDS" ] || rc=137
    return "$rc"
}

# bench_fuse_kill: SIGKILL for the FUSE daemon; the kernel then aborts the
# connection (requests fail with ENOTCONN). The mount stays until
# bench_fuse_stop or bench_fuse_abort.
bench_fuse_kill() {
    [ -n "$BENCH_FUSE_PID" ] && kill -0 "$BENCH_FUSE_PID" 2>/dev/null || return 0
    echo "killing the FUSE daemon (pid $BENCH_FUSE_PID) of $BENCH_FUSE_MNT" >&2
    kill -KILL "$BENCH_FUSE_PID" 2>/dev/null
    bench_wait_exit "$BENCH_FUSE_PID" 10 >/dev/null 2>&1 || true
}

# bench_fuse_start MNT LOG CMD...: start a FUSE daemon that stays in the
# foreground (CMD includes -f), with stdout and stderr in LOG, and poll
# /proc/self/mountinfo until MNT is mounted. Fails if the daemon exits first
# or the mount does not show up within 30 s.
bench_fuse_start() {
    local mnt=$1 log=$2 i
    shift 2
    [ -z "$BENCH_FUSE_PID" ] || bench_die "bench_fuse_start: a FUSE daemon is already running"
    "$@" </dev/null >"$log" 2>&1 &
    BENCH_FUSE_PID=$!
    BENCH_FUSE_MNT=$mnt
    for ((i = 0; i < 600; i++)); do
        bench_is_mounted "$mnt" && return 0
        kill -0 "$BENCH_FUSE_PID" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$BENCH_FUSE_PID" 2>/dev/null; then
        echo "timed out waiting for the mount of $mnt ($*)" >&2
    else
        echo "the daemon exited before mounting $mnt ($*):" >&2
    fi
    cat "$log" >&2
    bench_fuse_abort
    return 1
}

# bench_fuse_stop [SECONDS]: unmount with fusermount3 -u and wait (bounded)
# for the daemon; returns its exit status (124: it did not exit in time, it
# was then killed). A failing fusermount3 -u is followed by -uz.
bench_fuse_stop() {
    local limit=${1:-120} rc=0
    if bench_is_mounted "$BENCH_FUSE_MNT" && ! fusermount3 -u "$BENCH_FUSE_MNT"; then
        echo "fusermount3 -u $BENCH_FUSE_MNT failed; detaching it lazily" >&2
        fusermount3 -uz "$BENCH_FUSE_MNT" || true
        rc=1
    fi
    if [ -n "$BENCH_FUSE_PID" ]; then
        local st=0
        bench_wait_exit "$BENCH_FUSE_PID" "$limit" || st=$?
        if [ "$st" -eq 124 ]; then
            echo "the FUSE daemon (pid $BENCH_FUSE_PID) did not exit within ${limit}s; killing it" >&2
            bench_stop "$BENCH_FUSE_PID"
        fi
        [ "$rc" -ne 0 ] || rc=$st
    fi
    BENCH_FUSE_PID=""
    BENCH_FUSE_MNT=""
    return "$rc"
}

# bench_fuse_abort: tear a FUSE mount down whatever state it is in.
bench_fuse_abort() {
    if [ -n "$BENCH_FUSE_MNT" ] && bench_is_mounted "$BENCH_FUSE_MNT"; then
        fusermount3 -u "$BENCH_FUSE_MNT" 2>/dev/null || fusermount3 -uz "$BENCH_FUSE_MNT" || true
    fi
    if [ -n "$BENCH_FUSE_PID" ]; then
        bench_wait_exit "$BENCH_FUSE_PID" 10 >/dev/null 2>&1 || bench_stop "$BENCH_FUSE_PID"
    fi
    BENCH_FUSE_PID=""
    BENCH_FUSE_MNT=""
}

bench_kernel_mount() {
    local dev=$1 mnt=$2
    shift 2
    mount "$@" "$dev" "$mnt" || return 1
    BENCH_KERNEL_MNT=$mnt
}

bench_kernel_umount() {
    [ -n "$BENCH_KERNEL_MNT" ] || return 0
    local rc=0
    if bench_is_mounted "$BENCH_KERNEL_MNT" && ! umount "$BENCH_KERNEL_MNT"; then
        umount -l "$BENCH_KERNEL_MNT" || true
        rc=1
    fi
    BENCH_KERNEL_MNT=""
    return "$rc"
}

# bench_ram_device SIZE: a file in /dev/shm with every page allocated and
# written once, on a loop device with direct I/O (so the loop driver adds no
# page cache).
bench_ram_device() {
    local size=$1 dio
    BENCH_IMG=$(mktemp "/dev/shm/${BENCH_PREFIX:-kaiofs-bench}.XXXXXX.img")
    fallocate -l "$size" "$BENCH_IMG"
    BENCH_DEV=$(losetup --find --show --direct-io=on "$BENCH_IMG")
    dio=$(losetup --list --noheadings --output DIO "$BENCH_DEV" | tr -d ' ')
    [ "$dio" = 1 ] || echo "warning: $BENCH_DEV does not use direct I/O (DIO=$dio)" >&2
    bench_log "writing all of $BENCH_DEV once"
    bench_ram_fill || bench_die "could not write $BENCH_DEV"
}

# bench_ram_fill: write the whole RAM-backed device once. tmpfs serves the
# first write of a page several times slower than later writes (1 MiB direct
# writes through the loop device: about 0.4 GB/s on first touch, 1.6 GB/s
# after), which would make whichever job first writes a region look slow.
bench_ram_fill() {
    local mib
    mib=$(($(blockdev --getsize64 "$BENCH_DEV") >> 20))
    bench_run 600 dd if=/dev/zero of="$BENCH_DEV" bs=1M count="$mib" oflag=direct status=none
}

bench_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    bench_stop "$BENCH_CHILD"
    bench_fuse_abort
    bench_kernel_umount
    # A child stuck on the FUSE connection could only finish now.
    [ -n "$BENCH_CHILD" ] && { bench_wait_exit "$BENCH_CHILD" 10 >/dev/null 2>&1 || true; }
    [ -n "$BENCH_DEV" ] && { losetup -d "$BENCH_DEV" || true; }
    [ -n "$BENCH_IMG" ] && rm -f "$BENCH_IMG"
    cd /
    [ -n "$BENCH_TMP" ] && rm -rf "$BENCH_TMP"
    exit "$rc"
}

# bench_setup PREFIX: work directory /tmp/PREFIX.XXXXXX (removed on exit,
# also the current directory from now on) and the traps.
bench_setup() {
    BENCH_PREFIX=$1
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    BENCH_TMP=$(mktemp -d "/tmp/$BENCH_PREFIX.XXXXXX")
    cd "$BENCH_TMP" || exit 1
}
