#!/usr/bin/env perl
# normalise.pl MAPFILE MODE < raw > normalised
#
# Rewrites one etcdctl transcript (see compare.sh) so that the outputs of two clusters can be
# diffed: values that legitimately differ between two clusters (cluster and member ids, raft
# terms and indexes, which member leads, ports, db sizes, durations, timestamps) become
# placeholders. MAPFILE has lines "port N LABEL" and "id DECIMAL NAME" for the cluster the
# transcript came from. MODE is one of:
#   plain    nothing more
#   members  member list: rows and members are put in name order (etcd orders them by id, and
#            ids differ between the two clusters)
#   leases   lease list: lease ids replaced
#   health   endpoint health: lines, table rows and JSON entries sorted (etcdctl prints them in
#            completion order), durations replaced
use strict;
use warnings;
use JSON::PP;
use utf8;
use open qw(:std :encoding(UTF-8));

my ($mapfile, $mode) = @ARGV;
$mode //= 'plain';

my (%port, %id);
open(my $mf, '<', $mapfile) or die "normalise.pl: $mapfile: $!\n";
while (<$mf>) {
    chomp;
    my @f = split ' ';
    next unless @f == 3;
    if ($f[0] eq 'port') { $port{$f[1]} = $f[2] }
    elsif ($f[0] eq 'id') {
        $id{$f[1]} = $f[2];
        # hex form, as etcdctl prints member ids in tables and with --hex
        $id{ dec2hex($f[1]) } = $f[2];
    }
}
close $mf;

sub dec2hex {
    my ($d) = @_;
    require Math::BigInt;
    my $h = Math::BigInt->new($d)->as_hex;
    $h =~ s/^0x//;
    return $h;
}

my @lines = <STDIN>;
chomp @lines;

# Columns of "endpoint status" (table and simple output) that depend on sizes, raft progress or
# which member leads: db size, in use, percentage not in use, is leader, raft term, raft index,
# raft applied index.
my %status_cols = map { $_ => 1 } (4, 5, 6, 8, 10, 11, 12);

for (@lines) {
    # ports: 127.0.0.1:PORT -> 127.0.0.1:<client:infra1>
    s/(127\.0\.0\.1|localhost):(\d+)\b/exists $port{$2} ? "$1:<$port{$2}>" : "$1:<port?>"/ge;
    # client-side log lines
    s/"ts":"[^"]*"/"ts":"<ts>"/g;
    s/0x[0-9a-f]{6,}/0x<ptr>/g;
    s/"caller":"[^"]*"/"caller":"<caller>"/g;
    # which member a client request went to depends on the balancer, not on the server
    s/Peer\{Addr: '127\.0\.0\.1:<client:infra\d>'/Peer{Addr: '127.0.0.1:<client:any>'/g;

    # response headers (json, json --hex, fields)
    # (zero values are kept: a header that is not filled in must stay visible)
    s/"cluster_id":("?)([0-9a-f]+)\1/$2 eq '0' ? "\"cluster_id\":$1$2$1" : '"cluster_id":"<cluster-id>"'/ge;
    s/"member_id":("?)([0-9a-f]+)\1/$2 eq '0' ? "\"member_id\":$1$2$1" : '"member_id":"<member-id>"'/ge;
    s/"raft_term":[1-9]\d*/"raft_term":"<term>"/g;
    s/^"ClusterID" : (?!0$)\S+$/"ClusterID" : <cluster-id>/;
    s/^"MemberID" : (?!0$)\S+$/"MemberID" : <member-id>/;
    s/^"RaftTerm" : [1-9]\d*$/"RaftTerm" : <term>/;

    # endpoint status (json, fields)
    s/"(dbSize|dbSizeInUse|raftIndex|raftTerm|raftAppliedIndex)":\d+/"$1":"<$1>"/g;
    s/"leader":\d+/"leader":"<leader>"/g;
    s/^"(DBSize|DBSizeInUse|RaftIndex|RaftAppliedIndex|Leader)" : \d+$/"$1" : <$1>/;

    # endpoint status (table, simple): by column
    if (/^[|│]/ && /127\.0\.0\.1:<client:/) {
        my $sep = substr($_, 0, 1);
        my @c = split /\Q$sep\E/, $_, -1;    # leading and trailing empty fields
        if (@c >= 17) {
            $c[$_ + 1] = ' <x> ' for keys %status_cols;
        }
        $_ = join $sep, @c;
    } elsif (/^127\.0\.0\.1:<client:[^,]*, / && (my @c = split /, /, $_, -1) >= 16) {
        for my $i (keys %status_cols) { $c[$i] = '<x>' }
        $_ = join ', ', @c;
    }

    # lease ids are random
    s/^lease [0-9a-f]{16} granted/lease <lease-id> granted/;
    s/^[0-9a-f]{16}$/<lease-id>/ if $mode eq 'leases';

    # member ids that remain (member list, endpoint status ID column, --hex): id -> name
    s/\b([0-9a-f]{1,20})\b/exists $id{$1} ? "<id:$id{$1}>" : $1/ge;
    s/":<id:([^>]*)>/":"<id:$1>"/g;    # keep JSON valid

    # tables: column widths follow the content, which the rules above changed
    if (/^[|+│┌├└]/) {
        s/ +/ /g;
        s/-+/-/g if /^\+/;
        s/─+/─/g if /^[┌├└]/;
    }
}

if ($mode eq 'health') {
    for (@lines) {
        s/took = \S+/took = <dur>/;
        s/"took":"[^"]*"/"took":"<dur>"/g;
        s/([|│]) [0-9.]+(h|m|s|ms|µs|us|ns)+ ([|│])/$1 <dur> $3/g;
        if (/^\[\{/) {
            my $j = eval { JSON::PP->new->decode($_) };
            $_ = JSON::PP->new->canonical->encode([sort { $a->{endpoint} cmp $b->{endpoint} } @$j]) if $j;
        }
    }
    @lines = sort_rows(@lines);
} elsif ($mode eq 'members') {
    for (@lines) {
        if (/^\{.*"members":/) {
            my $j = eval { JSON::PP->new->decode($_) };
            if ($j) {
                $j->{members} = [sort { ($a->{name} // '') cmp ($b->{name} // '') } @{ $j->{members} }];
                $_ = JSON::PP->new->canonical->encode($j);
            }
        }
    }
    @lines = sort_rows(@lines);
    @lines = sort_field_blocks(@lines);
}

print "$_\n" for @lines;

# sort_rows sorts each run of consecutive "row" lines: table body rows and simple-output lines
# that name an endpoint or a member, and client log lines.
sub sort_rows {
    my @in = @_;
    my (@out, @run);
    my $is_row = sub {
        my ($l) = @_;
        return 1 if $l =~ /^[|│] .*(<client:|<id:)/;
        return 1 if $l =~ /^(http:\/\/)?127\.0\.0\.1:<client:/;
        return 1 if $l =~ /^<id:[^>]*>, /;
        return 1 if $l =~ /^\{"level":/;    # client log lines of concurrent requests
        return 1 if $l =~ /^(http:\/\/)?127\.0\.0\.1:<client:[^>]*> is (un)?healthy/;
        return 0;
    };
    for my $l (@in) {
        if ($is_row->($l)) { push @run, $l; next }
        push @out, sort @run;
        @run = ();
        push @out, $l;
    }
    push @out, sort @run;
    return @out;
}

# sort_field_blocks sorts the per-member blocks of "member list -w fields" (each starts with
# "ID" : and ends with an empty line).
sub sort_field_blocks {
    my @in = @_;
    my (@out, @blocks, $cur);
    for my $l (@in) {
        if ($l =~ /^"ID" : /) { $cur = [$l]; next }
        if ($cur) {
            push @$cur, $l;
            if ($l eq '') { push @blocks, join("\n", @$cur); $cur = undef }
            next;
        }
        if (@blocks) { push @out, sort @blocks; @blocks = () }
        push @out, $l;
    }
    push @out, join("\n", @$cur) if $cur;
    push @out, sort @blocks;
    return map { split /\n/, $_, -1 } @out;
}
