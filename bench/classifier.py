"""Classifier microbenchmark: 100k rules over 50 distinct masks.

Prints build time, lookup rate for hits and misses (tuple-space search), the cost of the first
hit on a rule (dependency scan + cache_match) and of later hits (cached), memory per rule, and —
as the peer measured in the same run — a linear scan over the same rules, the naive classifier.

    python bench/classifier.py [--rules 100000] [--masks 50] [--lookups 200000] [--seed 1]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ovs_sriov_proxy.rules.classifier import Classifier  # noqa: E402
from ovs_sriov_proxy.rules.fields import FIELDS, pack  # noqa: E402
from ovs_sriov_proxy.rules.flowparse import parse_flow  # noqa: E402
from ovs_sriov_proxy.rules.model import FlowRule, Match, Output  # noqa: E402

# Field groups a rule may test (with prerequisites built in), from which 50 masks are drawn.
PREFIXES = (8, 16, 24, 32)


def make_masks(count: int, rng: random.Random) -> list[dict[str, int]]:
    masks: list[dict[str, int]] = []
    seen: set[int] = set()
    while len(masks) < count:
        fields: dict[str, int] = {"eth_type": 0xFFFF}
        if rng.random() < 0.5:
            fields["in_port"] = 0xFFFFFFFF
        if rng.random() < 0.3:
            fields["eth_dst"] = 0xFFFFFFFFFFFF
        if rng.random() < 0.6:
            fields["ipv4_src"] = (0xFFFFFFFF << (32 - rng.choice(PREFIXES))) & 0xFFFFFFFF
        if rng.random() < 0.6:
            fields["ipv4_dst"] = (0xFFFFFFFF << (32 - rng.choice(PREFIXES))) & 0xFFFFFFFF
        if rng.random() < 0.5:
            fields["ip_proto"] = 0xFF
            fields[rng.choice(("udp_dst", "tcp_dst"))] = 0xFFFF
        key = pack(fields)
        if len(fields) > 1 and key not in seen:
            seen.add(key)
            masks.append(fields)
    return masks


def random_packet(rng: random.Random) -> dict[str, int]:
    proto = rng.choice((6, 17))
    port_field = "tcp_dst" if proto == 6 else "udp_dst"
    return {
        "in_port": rng.randrange(1, 64), "eth_dst": rng.randrange(1 << 8), "eth_type": 0x0800,
        "ip_proto": proto, "ipv4_src": 0x0A000000 | rng.randrange(1 << 16),
        "ipv4_dst": 0x0A000000 | rng.randrange(1 << 16), port_field: rng.randrange(1, 1024),
    }


def make_rules(count: int, masks: list[dict[str, int]], rng: random.Random) -> list[FlowRule]:
    rules = []
    for i in range(count):
        mask = masks[i % len(masks)]
        sample = random_packet(rng)
        if "tcp_dst" in mask:
            sample["ip_proto"], sample["tcp_dst"] = 6, sample.pop("udp_dst", sample.get("tcp_dst", 1))
        if "udp_dst" in mask:
            sample["ip_proto"], sample["udp_dst"] = 17, sample.pop("tcp_dst", sample.get("udp_dst", 1))
        fields = {name: (sample.get(name, 0), m) for name, m in mask.items()}
        rules.append(FlowRule(Match.from_fields(fields), (Output(1 + i % 8),),
                              priority=rng.randrange(1, 1000)))
    return rules


def hypervisor_scenario(vms: int, flows_per_vm: int, rng: random.Random) -> None:
    """What narrowing costs on a bridge shaped like br-int: per-VM rules (VF port -> uplink,
    VM MAC -> its VF) under a few protocol rules that rank above them (SIP to an appliance,
    SSH dropped, DNS to a resolver port). Compares the flows narrowing installs for the traffic
    with what a cover set (CacheFlow) would: each rule hit plus a cover per higher overlapping rule."""
    rules = [parse_flow("priority=300,udp,tp_dst=5060 actions=output:4000"),
             parse_flow("priority=300,tcp,tp_dst=22 actions=drop"),
             parse_flow("priority=250,udp,tp_dst=53 actions=output:4001")]
    for vm in range(vms):
        mac = f"fa:16:3e:00:{vm >> 8:02x}:{vm & 0xFF:02x}"
        rules.append(parse_flow(f"priority=100,in_port={vm + 2} actions=output:1"))
        rules.append(parse_flow(f"priority=100,in_port=1,dl_dst={mac} actions=output:{vm + 2}"))
    classifier = Classifier()
    for rule_id, rule in enumerate(rules, start=1):
        classifier.add(rule_id, rule)
    flows_installed: set[tuple[int, Match]] = set()
    rules_hit: set[int] = set()
    packets = 0
    for vm in range(vms):
        for _ in range(flows_per_vm):
            proto = rng.choice((6, 17))
            dport = rng.choice((53, 80, 443, 5060, 22, 123, rng.randrange(1024, 65535)))
            fields = {"eth_type": 0x0800, "ip_proto": proto, "ipv4_src": 0x0A000000 | vm,
                      "ipv4_dst": rng.randrange(1 << 32),
                      ("udp_dst" if proto == 17 else "tcp_dst"): dport}
            for direction in ("out", "in"):
                if direction == "out":
                    key = pack({**fields, "in_port": vm + 2, "eth_src": 0xFA163E000000 | vm})
                else:
                    key = pack({**fields, "in_port": 1, "eth_dst": 0xFA163E000000 | vm})
                hit = classifier.lookup(key)
                packets += 1
                if hit is not None:
                    rules_hit.add(hit[0])
                    flows_installed.add((hit[0], classifier.cache_match(hit[0], key)))
    cover: set[FlowRule] = set()
    for rule_id in rules_hit:
        cover.add(classifier.get(rule_id))  # type: ignore[arg-type]
        cover.update(classifier.overlapping_above(rule_id))
    print(f"hypervisor-shaped rules: {len(rules)} rules ({vms} VMs), {packets} new flows of traffic")
    print(f"  narrowed flows     {len(flows_installed)} installed for {len(rules_hit)} rules hit")
    print(f"  cover set          {len(cover)} flows (rules hit + a cover per higher overlapping rule)")


def rate(count: int, seconds: float) -> str:
    return f"{count / seconds:,.0f}/s ({seconds / count * 1e6:.2f} µs each)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=100_000)
    parser.add_argument("--masks", type=int, default=50)
    parser.add_argument("--lookups", type=int, default=200_000)
    parser.add_argument("--linear-lookups", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--vms", type=int, default=200)
    parser.add_argument("--flows-per-vm", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    masks = make_masks(args.masks, rng)
    rules = make_rules(args.rules, masks, rng)

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    started = time.perf_counter()
    classifier = Classifier()
    for rule_id, rule in enumerate(rules, start=1):
        classifier.add(rule_id, rule)
    build = time.perf_counter() - started
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    classifier_bytes = sum(s.size_diff for s in after.compare_to(before, "filename"))

    keys = [pack(random_packet(rng)) for _ in range(args.lookups)]
    # Half the probes are built from rules so that they hit.
    for i in range(0, len(keys), 2):
        r = rules[rng.randrange(len(rules))]
        keys[i] = r.match.value | (keys[i] & ~r.match.mask & ((1 << 600) - 1))
    started = time.perf_counter()
    hits = sum(1 for key in keys if classifier.lookup(key) is not None)
    lookup = time.perf_counter() - started

    hit_keys = [(k, classifier.lookup(k)) for k in keys[:20_000:2]]
    hit_keys = [(k, h[0]) for k, h in hit_keys if h is not None][:5000]
    started = time.perf_counter()
    for key, rule_id in hit_keys:
        classifier.cache_match(rule_id, key)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for key, rule_id in hit_keys:
        classifier.cache_match(rule_id, key)
    again = time.perf_counter() - started
    narrowed = sum(1 for key, rid in hit_keys if classifier.cache_match(rid, key) != classifier.get(rid).match)
    # What narrowing costs on the bridge: distinct flows installed vs distinct rules hit.
    distinct_flows = {(rid, classifier.cache_match(rid, key)) for key, rid in hit_keys}
    distinct_rules = {rid for _, rid in hit_keys}

    linear = list(enumerate(rules, start=1))
    probe = keys[: args.linear_lookups]
    started = time.perf_counter()
    for key in probe:
        best = None
        for rule_id, rule in linear:
            if key & rule.match.mask == rule.match.value and (best is None or rule.priority > best[1].priority):
                best = (rule_id, rule)
    linear_time = time.perf_counter() - started

    print(f"classifier: {args.rules:,} rules over {len(classifier._subtables)} masks "
          f"(fields: {len(FIELDS)}, key bits: {sum(f.bits for f in FIELDS.values())})")
    print(f"  build              {build:.2f} s ({rate(args.rules, build)})")
    print(f"  memory             {classifier_bytes / args.rules:.0f} bytes per rule in the classifier")
    print(f"  lookup             {rate(len(keys), lookup)}; {hits / len(keys):.0%} hits")
    print(f"  first cache_match  {rate(len(hit_keys), first)} (dependency scan, {narrowed} of "
          f"{len(hit_keys)} narrowed)")
    print(f"  later cache_match  {rate(len(hit_keys), again)} (dependencies cached)")
    print(f"  bridge flows       {len(distinct_flows)} flows for {len(distinct_rules)} rules hit by "
          f"{len(hit_keys)} packets ({len(distinct_flows) / len(distinct_rules):.2f} per rule)")
    print(f"  peer: linear scan  {rate(len(probe), linear_time)}")
    print(f"  speedup vs linear  {(linear_time / len(probe)) / (lookup / len(keys)):,.0f}x")
    hypervisor_scenario(args.vms, args.flows_per_vm, random.Random(args.seed))


if __name__ == "__main__":
    main()
