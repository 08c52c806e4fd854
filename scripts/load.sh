#!/usr/bin/env bash
# Load test: two release shmimage servers on one segment, wrk reading from both while curl
# keeps uploading to both.
#
# Usage: scripts/load.sh [SECONDS]            (default 30)
#
#   CONNECTIONS=8   wrk connections per target (4 targets: /image.png and /api/segment of
#                   each server)
#   THREADS=1       wrk threads per target
#
# What it does:
#   1. cargo build --release, then starts target/release/shmimage twice with --port 0 and
#      --segment load<PID>, reading each server's port from its startup line;
#   2. writes two BMP test images (640x480 and 1920x1080, random pixels; bash and head only)
#      and uploads the small one;
#   3. for SECONDS, runs wrk against GET /image.png and GET /api/segment of both servers (four
#      wrk processes at once) while a curl loop uploads both images in turn to both servers;
#   4. prints wrk's reports, the uploads by HTTP status, and each server's peak RSS (VmHWM);
#   5. stops both servers with SIGTERM (also on Ctrl-C or failure) and removes its files.
#
# Needs wrk (Debian: apt-get install wrk) and curl. Servers log to a temporary folder; a
# server that fails to start has its log printed.
set -euo pipefail

seconds=${1:-30}
connections=${CONNECTIONS:-8}
threads=${THREADS:-1}
cd "$(dirname "$0")/.."

for tool in wrk curl; do
    if ! command -v "$tool" >/dev/null; then
        echo "load.sh: $tool is missing; install it (Debian: apt-get install $tool)" >&2
        exit 1
    fi
done

cargo build --release --quiet
binary=${CARGO_TARGET_DIR:-target}/release/shmimage
segment=load$$
work=$(mktemp -d)
pids=()

cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT

# start_server NAME: starts a server, waits for its startup line, sets $port to its port.
start_server() {
    local name=$1 line=""
    "$binary" --port 0 --segment "$segment" >"$work/$name.out" 2>"$work/$name.log" &
    pids+=($!)
    for _ in $(seq 100); do
        line=$(head -n 1 "$work/$name.out" 2>/dev/null || true)
        [[ -n $line ]] && break
        sleep 0.1
    done
    port=$(sed -n 's|^listening on http://[^:]*:\([0-9]*\) .*|\1|p' <<<"$line")
    if [[ -z $port ]]; then
        echo "load.sh: server $name did not start; its log:" >&2
        cat "$work/$name.log" >&2
        exit 1
    fi
}

# le32 N: N as four little-endian bytes, as printf escapes.
le32() {
    printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 & 255)) $(($1 >> 8 & 255)) \
        $(($1 >> 16 & 255)) $(($1 >> 24 & 255))
}

# bmp WIDTH HEIGHT FILE: a 24-bit BMP of random pixels (WIDTH * 3 must be a multiple of 4).
bmp() {
    local width=$1 height=$2 file=$3 size=$(($1 * $2 * 3))
    {
        printf "BM$(le32 $((54 + size)))\\x00\\x00\\x00\\x00$(le32 54)"
        printf "$(le32 40)$(le32 "$width")$(le32 "$height")\\x01\\x00\\x18\\x00"
        printf "$(le32 0)$(le32 "$size")$(le32 2835)$(le32 2835)$(le32 0)$(le32 0)"
        head -c "$size" /dev/urandom
    } >"$file"
}

start_server a
port_a=$port
start_server b
port_b=$port
echo "servers: http://127.0.0.1:$port_a and http://127.0.0.1:$port_b, segment \"$segment\""
bmp 640 480 "$work/small.bmp"
bmp 1920 1080 "$work/large.bmp"
curl -sS -f -o /dev/null -F "image=@$work/small.bmp" "http://127.0.0.1:$port_a/image"

end=$((SECONDS + seconds))
(
    turn=0
    while ((SECONDS < end)); do
        port=$port_a image=small
        ((turn % 2)) && port=$port_b
        ((turn % 4 >= 2)) && image=large
        curl -s -o /dev/null -w '%{http_code}\n' -F "image=@$work/$image.bmp" \
            "http://127.0.0.1:$port/image" || echo "000"
        turn=$((turn + 1))
    done >"$work/uploads.txt"
) &
uploader=$!

wrk_pids=()
for port in "$port_a" "$port_b"; do
    for path in /image.png /api/segment; do
        wrk -t "$threads" -c "$connections" -d "${seconds}s" --latency \
            "http://127.0.0.1:$port$path" >"$work/wrk-$port-${path//\//_}.txt" 2>&1 &
        wrk_pids+=($!)
    done
done
for pid in "${wrk_pids[@]}"; do
    wait "$pid"
done
wait "$uploader"

echo
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)"
echo "command: wrk -t $threads -c $connections -d ${seconds}s --latency URL (4 at once)"
for report in "$work"/wrk-*.txt; do
    echo
    cat "$report"
done
echo
echo "uploads by status (curl -F image=@FILE, small and 1920x1080 BMPs in turn):"
sort "$work/uploads.txt" | uniq -c
echo "uploads per second: $(awk -v s="$seconds" 'END { printf "%.1f", NR / s }' "$work/uploads.txt")"
for name in a b; do
    index=$([[ $name == a ]] && echo 0 || echo 1)
    echo "server $name peak RSS: $(grep VmHWM "/proc/${pids[$index]}/status" | awk '{print $2, $3}')"
done
