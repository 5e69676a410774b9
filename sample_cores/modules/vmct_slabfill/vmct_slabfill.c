// SPDX-License-Identifier: GPL-2.0
/*
 * vmct_slabfill: slab filled the way a busy host's dentry, inode and
 * connection caches fill it -- many small objects in a cache of their own,
 * linked in the shapes real kernel structures have -- for the benchmarks of
 * kernel memory at scale (benchmarks/slab_bench.py).
 *
 * Every object is 128 bytes from the cache "vmct_obj" (a constructor keeps
 * SLUB from merging it with kmalloc-128).  Each shape takes the MB its
 * parameter names:
 *
 *  - list_mb: one long singly linked list, each object naming the start of
 *    the next, its head in .bss -- the deepest graph there is: a chain of
 *    16.7 M objects in 2 GB;
 *  - hash_mb: a hash table of short chains (hlist, four objects a bucket on
 *    average), its bucket array kvcalloc'd (vmalloc once it is large); the
 *    links name the hlist_node inside each object, not its start;
 *  - tree_mb: a red-black tree keyed by insertion order, its root in .bss;
 *    the links name the rb_node inside each object, and the parent word
 *    carries the colour in its low bit;
 *  - pages_mb: objects on a list_head, each holding a page it filled (a
 *    driver's per-buffer records).
 *
 * With lose=N (default 1000) each shape loses N of its objects the way a
 * leak loses them, the objects still allocated: the list is cut N objects
 * before its end; the chains of the first buckets are dropped; N tree nodes
 * are erased; N page records (100 at most) are unlinked -- their pages are
 * then held only by lost objects.  The module says so, one line per shape
 * ("vmct_slabfill: lost shape=<s> objects=<n>") and one per page held only
 * by a lost record ("vmct_slabfill: hidden pfn=<pfn> holder=<address>").
 */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/mm.h>
#include <linux/list.h>
#include <linux/rbtree.h>
#include <linux/hash.h>
#include <linux/sched.h>
#include <linux/log2.h>

static unsigned long list_mb, hash_mb, tree_mb, pages_mb;
static unsigned long lose = 1000;
module_param(list_mb, ulong, 0444);
module_param(hash_mb, ulong, 0444);
module_param(tree_mb, ulong, 0444);
module_param(pages_mb, ulong, 0444);
module_param(lose, ulong, 0444);
MODULE_PARM_DESC(lose, "objects each shape loses (default 1000)");

#define OBJ_SIZE 128
/* page records lost at most: each is a line in the kernel log (128 KiB) */
#define HIDDEN_MAX 100UL

struct fill_obj {
	unsigned long key;                      /* not a pointer */
	union {
		struct fill_obj *next;          /* list: the start of the next object */
		struct hlist_node hash;         /* hash: links into other objects' nodes */
		struct rb_node rb;              /* tree */
		struct list_head records;       /* pages */
	};
	struct page *page;                      /* pages: the page this record holds */
	unsigned long payload[(OBJ_SIZE - 48) / sizeof(unsigned long)];
};

static struct kmem_cache *cache;
static struct fill_obj *list_head;
static struct hlist_head *buckets;
static unsigned int bucket_bits;
static struct rb_root tree = RB_ROOT;
static LIST_HEAD(records);

static void ctor(void *p)
{
	memset(p, 0, OBJ_SIZE);
}

static struct fill_obj *new_obj(unsigned long key)
{
	struct fill_obj *o = kmem_cache_alloc(cache, GFP_KERNEL);

	if (o) {
		o->key = key;
		o->payload[0] = key * 2654435761u;
	}
	if (!(key & 0xffff))
		cond_resched();
	return o;
}

static unsigned long objects_in(unsigned long mb)
{
	return (mb << 20) / OBJ_SIZE;
}

static int fill_list(unsigned long n)
{
	struct fill_obj *o, *cut;
	unsigned long i;

	for (i = 0; i < n; i++) {
		o = new_obj(i);
		if (!o)
			return -ENOMEM;
		o->next = list_head;
		list_head = o;
	}
	if (lose && n > lose) {
		/* the list runs from the newest object: cut it lose objects before its end */
		for (cut = list_head, i = 1; i < n - lose; i++)
			cut = cut->next;
		cut->next = NULL;
		pr_info("vmct_slabfill: lost shape=list objects=%lu\n", lose);
	}
	return 0;
}

static int fill_hash(unsigned long n)
{
	struct fill_obj *o;
	unsigned long i, lost = 0, b;

	bucket_bits = max(1, ilog2(n / 4 ?: 1));
	buckets = kvcalloc(1UL << bucket_bits, sizeof(*buckets), GFP_KERNEL);
	if (!buckets)
		return -ENOMEM;
	for (i = 0; i < n; i++) {
		o = new_obj(i);
		if (!o)
			return -ENOMEM;
		hlist_add_head(&o->hash, &buckets[hash_long(i, bucket_bits)]);
	}
	for (b = 0; lose && lost < lose && b < (1UL << bucket_bits); b++) {
		struct hlist_node *node;

		for (node = buckets[b].first; node; node = node->next)
			lost++;
		buckets[b].first = NULL;       /* the chain's objects stay allocated */
	}
	if (lost)
		pr_info("vmct_slabfill: lost shape=hash objects=%lu\n", lost);
	return 0;
}

static int fill_tree(unsigned long n)
{
	struct rb_node *last = NULL, **link = &tree.rb_node;
	struct fill_obj *o;
	unsigned long i, lost = 0;

	for (i = 0; i < n; i++) {
		o = new_obj(i);
		if (!o)
			return -ENOMEM;
		/* keys grow: the new node is the right child of the rightmost one,
		 * and stays the rightmost (the largest key) whatever rotations follow */
		rb_link_node(&o->rb, last, link);
		rb_insert_color(&o->rb, &tree);
		last = &o->rb;
		link = &o->rb.rb_right;
	}
	if (lose && n > 2 * lose) {
		struct rb_node *node = rb_first(&tree), *next;

		/* every other node from the first: erased, still allocated */
		for (i = 0; node && lost < lose; i++, node = next) {
			next = rb_next(node);
			if (i & 1) {
				rb_erase(node, &tree);
				lost++;
			}
		}
		pr_info("vmct_slabfill: lost shape=tree objects=%lu\n", lost);
	}
	return 0;
}

static int fill_pages(unsigned long n)
{
	struct fill_obj *o, *tmp;
	unsigned long i, lost = 0;

	for (i = 0; i < n; i++) {
		o = new_obj(i);
		if (!o)
			return -ENOMEM;
		o->page = alloc_page(GFP_KERNEL);
		if (!o->page) {
			kmem_cache_free(cache, o);
			return -ENOMEM;
		}
		memset(page_address(o->page), 0x5a, PAGE_SIZE);
		list_add_tail(&o->records, &records);
	}
	list_for_each_entry_safe(o, tmp, &records, records) {
		if (lost >= min(lose, HIDDEN_MAX) || lost * 2 + 2 > n)
			break;
		/* unlinked with its links left as they were, as a lost record keeps them */
		__list_del_entry(&o->records);
		pr_info("vmct_slabfill: hidden pfn=%lu holder=%px\n", page_to_pfn(o->page), o);
		lost++;
	}
	if (lost)
		pr_info("vmct_slabfill: lost shape=pages objects=%lu\n", lost);
	return 0;
}

static int __init slabfill_init(void)
{
	int err;

	cache = kmem_cache_create("vmct_obj", OBJ_SIZE, 0, 0, ctor);
	if (!cache)
		return -ENOMEM;
	err = fill_list(objects_in(list_mb));
	err = err ?: fill_hash(objects_in(hash_mb));
	err = err ?: fill_tree(objects_in(tree_mb));
	err = err ?: fill_pages((pages_mb << 20) >> PAGE_SHIFT);
	pr_info("vmct_slabfill: filled list=%lu hash=%lu tree=%lu pages=%lu objects, err %d\n",
		objects_in(list_mb), objects_in(hash_mb), objects_in(tree_mb), (pages_mb << 20) >> PAGE_SHIFT, err);
	return err;
}

static void __exit slabfill_exit(void)
{
	/* test guests never unload it: the objects stay (this reads the globals,
	 * so that the compiler keeps the stores to them) */
	pr_info("vmct_slabfill: unloading with %p %p %p\n", list_head, buckets, tree.rb_node);
}

module_init(slabfill_init);
module_exit(slabfill_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmcore-tools sample cores: slab filled with lists, hash chains, trees and page records");
