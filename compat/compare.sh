#!/usr/bin/env bash
# compare.sh: run the same etcdctl commands against a 3-member etcd v3.7.3 cluster and a
# 3-member Ordo cluster on loopback, and diff the outputs.
#
# Usage: compat/compare.sh [-o REPORT.md] [-k]
#   -o FILE  also write a markdown report (every case, match or not, and each diff)
#   -k       keep the temporary directory (binaries, data dirs, logs, raw and normalised outputs)
#
# Both clusters are started with identical flags (names infra1..3, one --initial-cluster-token,
# the default --heartbeat-interval/--election-timeout, separate data dirs, 127.0.0.1 on free
# ports picked by trying to bind), one after the other. Every command is run with Ordo's
# "ordo ctl", which is etcdctl v3.7.3, so only the servers differ. Outputs are normalised by
# compat/normalise.pl (ids, terms, raft indexes, leader, ports, sizes, durations) and diffed
# per case. Exit status: 0 when every case matches, 1 when some differ, 2 on setup failure.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
report=
report_arg=
keep=0
while getopts "o:k" opt; do
	case $opt in
	o) report=$OPTARG report_arg=$OPTARG ;;
	k) keep=1 ;;
	*) sed -n '2,8p' "$0" >&2; exit 2 ;;
	esac
done
if [[ -n $report && $report != /* ]]; then report=$PWD/$report; fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ordo-compat.XXXXXX")
pids=()

log() { printf '%s\n' "$*" >&2; }

stop_all() {
	local pid
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	local deadline=$((SECONDS + 15))
	for pid in "${pids[@]}"; do
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
		wait "$pid" 2>/dev/null || true
	done
	pids=()
}

cleanup() {
	local rc=$?
	stop_all
	if ((keep)); then log "kept $tmp"; else rm -rf "$tmp"; fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { log "compare.sh: $*"; exit 2; }

# ---------------------------------------------------------------------------------------------
# build

mkdir -p "$tmp/bin"
log "building ordo"
(cd "$root" && go build -o "$tmp/bin/ordo" ./cmd/ordo) || die "building ordo failed"
log "building etcd v3.7.3 (compat/etcd)"
(cd "$here/etcd" && go build -mod=readonly -o "$tmp/bin/etcd" .) || die "building etcd failed"
ctl=("$tmp/bin/ordo" ctl)
ctl_version=$("${ctl[@]}" version | sed -n 1p)
etcd_version=$("$tmp/bin/etcd" --version | sed -n 1p)
ordo_version=$("$tmp/bin/ordo" --version | sed -n 1p)

# ---------------------------------------------------------------------------------------------
# free ports: random ports below Linux's ephemeral range, each checked by binding it

used_ports=()
pick_ports() {
	perl -MIO::Socket::INET -e '
		my ($n, @skip) = @ARGV; my %seen = map { $_ => 1 } @skip; my @out; my $tries = 0;
		while (@out < $n && $tries++ < 10000) {
			my $p = 10000 + int(rand(22000));
			next if $seen{$p}++;
			my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", LocalPort => $p,
				Proto => "tcp", Listen => 1) or next;
			close $s; push @out, $p;
		}
		die "no free ports\n" if @out < $n;
		print "@out\n";' "$1" "${used_ports[@]}"
}

# ---------------------------------------------------------------------------------------------
# clusters

# start_cluster KIND BINARY: starts infra1..3 and sets endpoints, ep[1..3], and KIND/map.
start_cluster() {
	local kind=$1 bin=$2 dir=$tmp/$1 i
	mkdir -p "$dir"
	local ports
	read -r -a ports <<<"$(pick_ports 6)" || die "no free ports"
	used_ports+=("${ports[@]}")
	local -a cp pp
	for i in 1 2 3; do
		cp[i]=${ports[2 * i - 2]}
		pp[i]=${ports[2 * i - 1]}
	done
	local initial="infra1=http://127.0.0.1:${pp[1]},infra2=http://127.0.0.1:${pp[2]},infra3=http://127.0.0.1:${pp[3]}"
	: >"$dir/map"
	for i in 1 2 3; do
		echo "port ${cp[i]} client:infra$i" >>"$dir/map"
		echo "port ${pp[i]} peer:infra$i" >>"$dir/map"
		ep[i]=127.0.0.1:${cp[i]}
		"$bin" --name "infra$i" --data-dir "$dir/infra$i.data" \
			--listen-client-urls "http://127.0.0.1:${cp[i]}" --advertise-client-urls "http://127.0.0.1:${cp[i]}" \
			--listen-peer-urls "http://127.0.0.1:${pp[i]}" --initial-advertise-peer-urls "http://127.0.0.1:${pp[i]}" \
			--initial-cluster "$initial" --initial-cluster-token compat-cluster --initial-cluster-state new \
			--heartbeat-interval 100 --election-timeout 1000 \
			>"$dir/infra$i.log" 2>&1 </dev/null &
		pids+=($!)
		eval "pid_${kind}_$i=$!"
	done
	endpoints="${ep[1]},${ep[2]},${ep[3]}"

	# every member logs "ready to serve client requests"
	local deadline=$((SECONDS + 60)) pid
	for i in 1 2 3; do
		eval "pid=\$pid_${kind}_$i"
		until grep -q "ready to serve client requests" "$dir/infra$i.log"; do
			kill -0 "$pid" 2>/dev/null || { tail -20 "$dir/infra$i.log" >&2; die "$kind infra$i exited"; }
			((SECONDS < deadline)) || { tail -20 "$dir/infra$i.log" >&2; die "$kind infra$i not ready in 60s"; }
			sleep 0.1
		done
	done
	# every member answers a linearizable read (so it knows the leader and is caught up)
	for i in 1 2 3; do
		until timeout 10 "${ctl[@]}" --endpoints="${ep[i]}" --command-timeout=2s get compat-warmup >/dev/null 2>&1; do
			((SECONDS < deadline)) || die "$kind infra$i does not serve reads"
			sleep 0.2
		done
	done
	# member ids, for the normaliser
	local ml
	ml=$(timeout 10 "${ctl[@]}" --endpoints="$endpoints" member list -w json) || die "$kind: member list failed"
	perl -MJSON::PP -e '
		my $j = JSON::PP->new->allow_bignum->decode(join "", <STDIN>);
		print "id $_->{ID} $_->{name}\n" for @{ $j->{members} };' <<<"$ml" >>"$dir/map"
	log "$kind cluster ready: $endpoints"
}

# ---------------------------------------------------------------------------------------------
# cases

# inputs for txn and large puts
mkdir -p "$tmp/in"
: >"$tmp/in/empty"
printf 'value("txn-a") = "1"\n\nput txn-b 2\nget txn-a\n\nput txn-c 3\n\n' >"$tmp/in/txn-success"
printf 'value("txn-a") = "2"\n\nput txn-b 22\n\nput txn-c 33\nget txn-c\n\n' >"$tmp/in/txn-fail"
printf 'mod("txn-a") > "0"\ncreate("txn-b") > "0"\nversion("txn-a") = "1"\n\ndel txn-c\nget txn --prefix\n\nput never 1\n\n' >"$tmp/in/txn-multi"
printf '\nput txn-d 4\n\n\n' >"$tmp/in/txn-nocmp"
printf 'version("missing") = "0"\nvalue("missing") != "x"\n\nput yes 1\n\nput no 1\n\n' >"$tmp/in/txn-missing"
{
	echo
	for i in $(seq 0 11); do printf 'put s%02d v%02d\n' "$i" $((11 - i)); done
	printf '\n\n'
} >"$tmp/in/txn-12"
printf '\nput dup 1\nput dup 2\n\n\n' >"$tmp/in/txn-dup"
printf 'value("txn-a") = "1"\n\nget foo --rev=3\n\n\n' >"$tmp/in/txn-compacted"
printf 'value("txn-a") = "1"\n\nput txn-e 5 --lease=1234\n\n\n' >"$tmp/in/txn-lease"
head -c $((2 * 1024 * 1024)) /dev/zero | tr '\0' 'x' >"$tmp/in/2MiB"
head -c $((1536 * 1024 + 1)) /dev/zero | tr '\0' 'y' >"$tmp/in/1.5MiB+1"
head -c $((1024 * 1024)) /dev/zero | tr '\0' 'z' >"$tmp/in/1MiB"

# Each case: c NAME [in=FILE] [norm=MODE] [xm] -- ctl-args...
#   in=FILE   standard input (default empty)
#   norm=MODE normalise.pl mode (plain, members, leases, health)
#   xm        expected to be missing in Ordo for now
# In ctl-args, {EPS} is all three client endpoints and {EP1}..{EP3} one each. Commands run with
# --endpoints={EPS} unless they set --endpoints themselves. "check NAME" runs check_NAME.
cases() {
	c member-list norm=members -- member list
	c member-list-table norm=members -- member list -w table
	c member-list-json norm=members -- member list -w json
	c member-list-json-hex norm=members -- member list -w json --hex
	c member-list-fields norm=members -- member list -w fields
	c member-list-simple norm=members -- member list -w simple
	check cluster-invariants

	c put-foo -- put foo bar
	c put-prev-kv -- put foo bar2 --prev-kv
	c put-prev-kv-json -- put foo bar3 --prev-kv -w json
	c put-fields -- put foo bar4 -w fields
	c get-foo -- get foo
	c get-foo-json -- get foo -w json
	c get-foo-json-hex -- get foo -w json --hex
	c get-foo-fields -- get foo -w fields
	c get-foo-value-only -- get foo --print-value-only
	c get-missing -- get nokey
	c get-missing-json -- get nokey -w json

	c put-k3 -- put k3 v2
	c put-k1 -- put k1 v3
	c put-k2 -- put k2 v1
	c put-k1-again -- put k1 v0
	c put-k2-again -- put k2 v9
	c put-k2-third -- put k2 v5
	c put-k3-again -- put k3 v4
	c get-prefix -- get --prefix k
	c get-prefix-json -- get k --prefix -w json
	c get-prefix-all -- get --prefix ''
	c get-range -- get k1 k3
	c get-rev2 -- get foo --rev=2
	c get-rev3-json -- get foo --rev=3 -w json
	c get-prefix-rev8 -- get --prefix k --rev=8
	c get-rev1 -- get foo --rev=1
	c get-limit -- get --limit 2 --prefix k
	c get-limit-json -- get --limit 2 --prefix k -w json
	c get-limit-fields -- get --limit 2 --prefix k -w fields
	local t o
	for t in CREATE MODIFY VERSION VALUE KEY; do
		for o in ASCEND DESCEND; do
			c "get-sort-$t-$o" -- get --prefix k --sort-by=$t --order=$o
		done
	done
	c get-sort-value-desc-limit-json -- get --prefix k --sort-by=VALUE --order=DESCEND --limit 2 -w json
	c get-sort-modify-noorder -- get --prefix k --sort-by=MODIFY
	c get-order-descend-only -- get --prefix k --order=DESCEND
	c get-keys-only -- get --prefix k --keys-only
	c get-keys-only-json -- get --prefix k --keys-only -w json
	c get-count-only-simple -- get --prefix k --count-only
	c get-count-only-fields -- get --prefix k --count-only -w fields
	c get-count-only-json -- get --prefix k --count-only -w json
	c get-from-key -- get --from-key k2
	c get-from-key-empty -- get --from-key ''
	c get-from-key-limit-json -- get --from-key k1 --limit 1 -w json
	c get-min-mod-rev -- get --prefix k --min-mod-rev=10
	c get-max-create-rev -- get --prefix k --max-create-rev=7
	c get-serializable -- get --prefix k --consistency=s
	c get-stream -- get --prefix k --stream
	c get-stream-limit-json -- get --prefix k --stream --limit 2 -w json
	c get-stream-count-fields -- get --prefix k --stream --count-only -w fields
	c get-stream-sort -- get --prefix k --stream --sort-by=VALUE
	c get-stream-min-mod-rev -- get --prefix k --stream --min-mod-rev=10
	c get-stream-sort-value-ascend -- get --prefix k --stream --sort-by=VALUE --order=ASCEND
	c get-stream-sort-key-descend -- get --prefix k --stream --sort-by=KEY --order=DESCEND
	c txn-put-12-keys in=txn-12 -- txn
	c get-sort-value-limit-noorder -- get --prefix s --sort-by=VALUE --limit 2
	c get-sort-value-limit-ascend -- get --prefix s --sort-by=VALUE --order=ASCEND --limit 2
	c get-stream-12-sort-value -- get --prefix s --stream --sort-by=VALUE
	c get-stream-12-sort-version-limit -- get --prefix s --stream --sort-by=VERSION --limit 5 -w json
	c get-stream-12-limit-json -- get --prefix s --stream --limit 11 -w json

	c get-empty-key -- get ''
	c get-future-rev -- get foo --rev=1000
	c put-empty-key -- put '' bar
	c put-unknown-lease -- put foo bar --lease=1234
	c put-ignore-value-missing -- put nokey --ignore-value
	c put-ignore-lease-missing -- put nokey val --ignore-lease
	c put-ignore-value -- put foo --ignore-value
	c put-ignore-lease -- put foo bar5 --ignore-lease
	c put-2MiB in=2MiB -- put big
	c put-1.5MiB+1 in=1.5MiB+1 -- put big
	c put-1MiB in=1MiB -- put medium
	c get-1MiB-keys-only -- get medium --keys-only -w json
	c get-after-big-puts -- get --prefix '' --keys-only

	c put-txn-a -- put txn-a 1
	c txn-success in=txn-success -- txn
	c txn-fail-json in=txn-fail -- txn -w json
	c txn-multi-fields in=txn-multi -- txn -w fields
	c txn-no-compares in=txn-nocmp -- txn
	c txn-missing-key in=txn-missing -- txn
	c txn-duplicate-put in=txn-dup -- txn
	c txn-unknown-lease in=txn-lease -- txn

	c del-foo -- del foo
	c del-foo-again -- del foo
	c del-prev-kv -- del --prev-kv k1
	c put-d1 -- put d1 a
	c put-d2 -- put d2 b
	c put-d3 -- put d3 c
	c del-prefix-json -- del --prefix d -w json
	c put-e1 -- put e1 a
	c put-e2 -- put e2 b
	c del-prefix-prev-kv-fields -- del --prev-kv --prefix e -w fields
	c del-from-key -- del --from-key txn-b
	c del-range-none -- del nokey nokez --range
	c del-empty-key -- del ''
	c get-all-json -- get --prefix '' -w json

	c compaction-5 -- compaction 5
	c get-compacted -- get foo --rev=3
	c get-at-compact-rev -- get foo --rev=5
	c compaction-5-again -- compaction 5
	c compaction-3 -- compaction 3
	c compaction-future -- compaction 100000
	c compaction-physical-8 -- compaction --physical 8
	c get-prefix-compacted -- get --prefix k --rev=7
	c get-prefix-at-8-json -- get --prefix k --rev=8 -w json
	c txn-get-compacted in=txn-compacted -- txn
	c compaction-physical-current -- compaction --physical 30 -w fields
	c get-all-after-compaction -- get --prefix ''

	c endpoint-status -- endpoint status
	c endpoint-status-table -- endpoint status -w table
	c endpoint-status-json -- endpoint status -w json
	c endpoint-status-fields -- endpoint status -w fields
	c endpoint-status-cluster-table norm=members -- endpoint status --cluster -w table
	check status-invariants
	c endpoint-health norm=health -- endpoint health
	c endpoint-health-table norm=health -- endpoint health -w table
	c endpoint-health-json norm=health -- endpoint health -w json
	c endpoint-health-cluster norm=health -- endpoint health --cluster
	c endpoint-hashkv-table -- endpoint hashkv -w table
	c alarm-list -- alarm list

	c lease-grant xm -- lease grant 60
	c lease-list xm norm=leases -- lease list
	c lease-timetolive xm -- lease timetolive 1234
}

# check functions: print facts that must hold on both clusters but can't be diffed directly

check_cluster-invariants() {
	timeout 60 "${ctl[@]}" --endpoints="$endpoints" member list -w json | perl -MJSON::PP -e '
		my $j = JSON::PP->new->allow_bignum->decode(join "", <STDIN>);
		my @ids = map { $_->{ID} } @{ $j->{members} };
		my %d = map { ("$_" => 1) } @ids;
		my $sorted = join(",", @ids) eq join(",", sort { $a <=> $b } @ids) ? "yes" : "no";
		print "members: ", scalar(@ids), "\n";
		print "distinct member ids: ", scalar(keys %d), "\n";
		print "member list in ascending id order: $sorted\n";
		print "header member_id is a member: ", ($d{ $j->{header}{member_id} } ? "yes" : "no"), "\n";'
}

check_status-invariants() {
	local i out=
	for i in 1 2 3; do
		out+=$(timeout 60 "${ctl[@]}" --endpoints="${ep[i]}" endpoint status -w json)$'\n'
	done
	perl -MJSON::PP -e '
		my $js = JSON::PP->new->allow_bignum;
		my (%leader, %cluster, %rev, %term, $leaders, $n);
		for my $line (grep { /\S/ } <STDIN>) {
			for my $e (@{ $js->decode($line) }) {
				my $s = $e->{Status}; $n++;
				$leader{ $s->{leader} }++; $cluster{ $s->{header}{cluster_id} }++;
				$rev{ $s->{header}{revision} }++; $term{ $s->{raftTerm} }++;
				$leaders++ if $s->{leader} == $s->{header}{member_id};
				print "raft index >= applied index: ", ($s->{raftIndex} >= $s->{raftAppliedIndex} ? "yes" : "no"), "\n";
				print "db size in use <= db size: ", ($s->{dbSizeInUse} <= $s->{dbSize} ? "yes" : "no"), "\n";
			}
		}
		print "endpoints: $n\n";
		print "members that are leader: ", ($leaders // 0), "\n";
		print "distinct leader ids reported: ", scalar(keys %leader), "\n";
		print "distinct cluster ids: ", scalar(keys %cluster), "\n";
		print "distinct header revisions: ", scalar(keys %rev), "\n";
		print "distinct raft terms: ", scalar(keys %term), "\n";' <<<"$out"
}

# ---------------------------------------------------------------------------------------------
# running

names=()
declare -A xm_case=()

run_cases() {
	local kind=$1 dir=$tmp/$1/out
	mkdir -p "$dir"
	n=0
	c() {
		local name=$1 in=$tmp/in/empty norm=plain
		shift
		while [[ $1 != -- ]]; do
			case $1 in
			in=*) in=$tmp/in/${1#in=} ;;
			norm=*) norm=${1#norm=} ;;
			xm) xm_case[$name]=1 ;;
			*) die "case $name: bad option $1" ;;
			esac
			shift
		done
		shift
		local -a args=()
		local a has_ep=0
		for a in "$@"; do
			a=${a//\{EPS\}/$endpoints}
			a=${a//\{EP1\}/${ep[1]}}
			a=${a//\{EP2\}/${ep[2]}}
			a=${a//\{EP3\}/${ep[3]}}
			[[ $a == --endpoints=* ]] && has_ep=1
			args+=("$a")
		done
		((has_ep)) || args=(--endpoints="$endpoints" "${args[@]}")
		local title="ctl $(quote "$@")"
		[[ $in == "$tmp/in/empty" ]] || title+=" < ${in##*/}"
		record "$kind" "$name" "$norm" "$title" timeout 60 "${ctl[@]}" "${args[@]}" <"$in"
	}
	check() {
		record "$kind" "$1" plain "check $1" "check_$1" </dev/null
	}
	cases
}

# quote ARGS...: the arguments as a shell would need them, on one line
quote() {
	local out
	printf -v out '%q ' "$@"
	printf '%s' "${out% }"
}

# record KIND NAME NORM TITLE command...: runs the command, writes its transcript and the
# normalised transcript.
record() {
	local kind=$1 name=$2 norm=$3 title=$4 dir=$tmp/$1/out rc
	shift 4
	n=$((n + 1))
	local base
	base=$(printf '%s/%03d-%s' "$dir" "$n" "$name")
	[[ $kind == etcd ]] && names+=("$(printf '%03d-%s' "$n" "$name")")
	set +e
	"$@" >"$base.stdout" 2>"$base.stderr"
	rc=$?
	set -e
	{
		printf '$ %s\n' "$title"
		echo "--- stdout"
		cat "$base.stdout"
		echo "--- stderr"
		cat "$base.stderr"
		echo "--- exit $rc"
	} >"$base.raw"
	perl "$here/normalise.pl" "$tmp/$kind/map" "$norm" <"$base.raw" >"$base.norm"
}

stop_cluster() { stop_all; }

declare -a ep
start_cluster etcd "$tmp/bin/etcd"
run_cases etcd
stop_cluster
start_cluster ordo "$tmp/bin/ordo"
run_cases ordo
stop_cluster

# ---------------------------------------------------------------------------------------------
# comparing

matched=() differed=()
summary=$tmp/summary.md
diffs=$tmp/diffs.md
: >"$diffs"
{
	echo "| # | case | command | result |"
	echo "|---|------|---------|--------|"
} >"$summary"
for base in "${names[@]}"; do
	name=${base#*-}
	e=$tmp/etcd/out/$base.norm
	o=$tmp/ordo/out/$base.norm
	title=$(head -1 "$e" | sed 's/^\$ //; s/|/\\|/g')
	if [[ ! -f $o ]]; then
		result="missing in Ordo run"
		differed+=("$name")
	elif cmp -s "$e" "$o"; then
		result="match"
		matched+=("$name")
	else
		result="DIFFERS"
		[[ -n ${xm_case[$name]:-} ]] && result="DIFFERS (expected-missing)"
		differed+=("$name")
		{
			echo "#### ${base%%-*} $name: \`$title\`"
			[[ -n ${xm_case[$name]:-} ]] && echo "Expected-missing in Ordo for now."
			echo '```diff'
			diff -u --label etcd --label ordo "$e" "$o" || true
			echo '```'
			echo
		} >>"$diffs"
	fi
	echo "| ${base%%-*} | $name | \`$title\` | $result |" >>"$summary"
done

{
	echo "## Run"
	echo
	echo "- command: \`compat/compare.sh${report_arg:+ -o $report_arg}\` (from the repository root)"
	echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "- client: etcdctl ${ctl_version##* } (\`ordo ctl\`); servers: etcd ${etcd_version##* }, Ordo ${ordo_version##* }"
	echo "- Ordo commit: $(cd "$root" && git rev-parse --short HEAD 2>/dev/null || echo unknown)$(cd "$root" && git diff --quiet HEAD -- . ':!compat' 2>/dev/null || echo ' (work tree has changes)')"
	echo "- cases: ${#names[@]}; match: ${#matched[@]}; differ: ${#differed[@]}"
	echo
	cat "$summary"
	echo
	if [[ -s $diffs ]]; then
		echo "### Differences"
		echo
		cat "$diffs"
	fi
} >"$tmp/report.md"

# An existing report keeps what is above the marker line (notes written by hand).
marker='<!-- everything below is written by compat/compare.sh -->'
if [[ -n $report ]]; then
	{
		if [[ -f $report ]] && grep -qxF "$marker" "$report"; then
			awk -v m="$marker" '{ print } $0 == m { exit }' "$report"
		else
			echo "# etcdctl against etcd v3.7.3 and Ordo"
			echo
			echo "$marker"
		fi
		echo
		cat "$tmp/report.md"
	} >"$tmp/report.full"
	cp "$tmp/report.full" "$report"
fi
log "cases: ${#names[@]}; match: ${#matched[@]}; differ: ${#differed[@]}"
if ((${#differed[@]})); then
	log "differ: ${differed[*]}"
	cat "$diffs"
	exit 1
fi
