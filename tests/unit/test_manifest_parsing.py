"""Pure-logic tests of the ground-truth parsers (in addition to the kernel tests)."""

from sample_cores.manifest import (parse_buddyinfo, parse_hidden, parse_kv, parse_log, parse_lost_objects, parse_owned,
                                   parse_parked, parse_slabinfo)


def test_parse_meminfo_and_vmstat():
    assert parse_kv("MemTotal:         981464 kB\nHugePages_Total:       0\n") == {
        "MemTotal": 981464, "HugePages_Total": 0}
    assert parse_kv("nr_free_pages 174001\nnr_zone_inactive_anon 12\n")["nr_free_pages"] == 174001


def test_parse_buddyinfo():
    rows = parse_buddyinfo("Node 0, zone      DMA      1      0      1 \n"
                           "Node 0, zone    DMA32    117     75     48\n")
    assert rows == [{"node": 0, "zone": "DMA", "free_blocks": [1, 0, 1]},
                    {"node": 0, "zone": "DMA32", "free_blocks": [117, 75, 48]}]


def test_parse_slabinfo():
    text = ("slabinfo - version: 2.1\n# name <active_objs> ...\n"
            "dentry             28077  28077    192   21    1 : tunables    0    0    0 : slabdata   1337   1337      0\n")
    assert parse_slabinfo(text)["dentry"] == {"active_objs": 28077, "num_objs": 28077, "objsize": 192,
                                              "objperslab": 21, "pagesperslab": 1}


def test_parse_log_ground_truth():
    leaks, decoys = parse_log(
        "[    5.56] fake_i40e: leaked pfn=13917 order=1 refcount=65533 ring=eth2/1\n"
        "[    5.57] vmct_workload: decoy kind=large_kmalloc pfn=15104 order=8 refcount=1\n"
        "[    5.57] vmct_workload: leaked pfn=15201 order=0 refcount=1 ring=-\n")
    assert leaks == [{"pfn": 13917, "order": 1, "refcount": 65533, "ring": "eth2/1"},
                     {"pfn": 15201, "order": 0, "refcount": 1, "ring": "-"}]
    assert decoys == [{"kind": "large_kmalloc", "pfn": 15104, "order": 8, "refcount": 1}]


def test_parse_parked_pages():
    parked = parse_parked(
        "[    5.58] fake_i40e: parked pfn=20001 order=1 refcount=1 kind=skb ring=eth2/1\n"
        "[    5.58] fake_i40e: parked pfn=20002 order=0 refcount=1 kind=xdp-tx ring=eth2/0\n")
    assert parked == [{"pfn": 20001, "order": 1, "refcount": 1, "kind": "skb", "ring": "eth2/1"},
                      {"pfn": 20002, "order": 0, "refcount": 1, "kind": "xdp-tx", "ring": "eth2/0"}]


def test_parse_owned_pages_and_runs():
    owned = parse_owned("[    6.01] vmct_shapes: owned pfn=300 kind=lru-list\n"
                        "[    6.02] vmct_cma: owned pfn=4096 pages=3 kind=cma-coherent\n")
    assert owned == [{"pfn": 300, "kind": "lru-list"}, {"pfn": 4096, "kind": "cma-coherent"},
                     {"pfn": 4097, "kind": "cma-coherent"}, {"pfn": 4098, "kind": "cma-coherent"}]


def test_parse_lost_objects_and_the_pages_they_hide():
    text = ("[   40.10] vmct_slabfill: lost shape=list objects=1000\n"
            "[   41.20] vmct_slabfill: hidden pfn=81234 holder=ffff888101234500\n"
            "[   41.21] vmct_shapes: hidden pfn=900 holder=ffff888100000040\n"
            "[   41.30] vmct_slabfill: lost shape=pages objects=100\n")
    assert parse_lost_objects(text) == {"list": 1000, "pages": 100}
    assert parse_hidden(text) == [{"pfn": 81234, "holder": 0xffff888101234500},
                                  {"pfn": 900, "holder": 0xffff888100000040}]
