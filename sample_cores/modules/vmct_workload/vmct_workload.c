// SPDX-License-Identifier: GPL-2.0
/*
 * vmct_workload: kernel-side allocations that a page census must attribute
 * correctly and that a leak detector must NOT report.
 *
 *  - large kmalloc: above KMALLOC_MAX_CACHE_SIZE SLUB hands out plain
 *    compound pages with no slab marker (before 6.15): the classic false
 *    positive of a page-leak detector;
 *  - vmalloc areas (with this module as vm_struct.caller);
 *  - page_frag users: a private page_frag_cache and the per-CPU
 *    netdev_alloc_cache, both order-3 compound pages with many references;
 *  - sleeping kernel threads (kernel stacks);
 *  - an alloc_pages_exact() buffer of three pages held from a heap object:
 *    only its first page is pointed to, and its tail pages are order-0,
 *    refcount-1 pages that nothing references.
 *
 * Every allocation stays referenced from this module's .bss, directly or
 * through a kmalloc'd holder, so a conservative reference scan finds it.
 * Their PFNs are reported on the log ("vmct_workload: decoy kind=...
 * pfn=...") so tests know where they are.
 *
 * With split_leak=1 the module also plants one leak, the case struct page
 * cannot tell from an alloc_pages_exact() run: an order-1 block is split
 * into two order-0 pages, a heap object keeps the first page's address, and
 * the second -- never used, refcount 1 -- is lost ("vmct_workload: leaked
 * pfn=...", recorded by vmct_truth.h).
 *
 * With exact_pair=1 it also holds a two-page alloc_pages_exact() buffer from
 * a heap object (decoy kind=exact_pair): by struct page alone its second
 * page looks like that lost page; the allocating stacks of page_owner tell
 * them apart.
 */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/mm.h>
#include <linux/skbuff.h>
#include <linux/gfp.h>
#include "vmct_truth.h"

#define NR_LARGE 8
#define NR_FRAGS 64
#define NR_THREADS 4

static void *large[NR_LARGE + 1];
static void *vbuf;
static void *frags[NR_FRAGS];
static void *netdev_frags[NR_FRAGS];
static struct page_frag_cache frag_cache;
static struct task_struct *threads[NR_THREADS];

/* what a driver keeps of an alloc_pages_exact() buffer: its start and size */
struct exact_holder {
	void *buf;
	size_t size;
};
static struct exact_holder *exact, *single, *pair;

static int split_leak;
module_param(split_leak, int, 0444);
static int exact_pair;
module_param(exact_pair, int, 0444);

static void report(const char *kind, const void *addr)
{
	struct page *page = virt_to_head_page(addr);

	pr_info("vmct_workload: decoy kind=%s pfn=%lu order=%u refcount=%d\n", kind,
		page_to_pfn(page), compound_order(page), page_ref_count(page));
}

static int sleeper(void *unused)
{
	while (!kthread_should_stop())
		msleep_interruptible(1000);
	return 0;
}

static void plant_split_leak(void)
{
	struct page *pair = alloc_pages(GFP_KERNEL, 1);

	if (!pair)
		return;
	split_page(pair, 1);
	single = kmalloc(sizeof(*single), GFP_KERNEL);
	if (!single) {
		__free_page(pair);
		__free_page(pair + 1);
		return;
	}
	single->buf = page_address(pair);
	single->size = PAGE_SIZE;
	memset(single->buf, 0x3c, PAGE_SIZE);
	vmct_truth_leak(page_to_pfn(pair + 1), 0, page_ref_count(pair + 1), "-", ~0u);
}

/* an alloc_pages_exact() buffer of @pages pages, held from a kmalloc'd holder */
static struct exact_holder *hold_exact(const char *kind, int pages)
{
	struct exact_holder *h = kmalloc(sizeof(*h), GFP_KERNEL);
	int i;

	if (!h)
		return NULL;
	h->size = pages * PAGE_SIZE;
	h->buf = alloc_pages_exact(h->size, GFP_KERNEL);
	if (!h->buf) {
		kfree(h);
		return NULL;
	}
	memset(h->buf, 0x3c, h->size);
	for (i = 0; i < pages; i++)
		report(kind, h->buf + i * PAGE_SIZE);
	return h;
}

static void free_exact(struct exact_holder *h)
{
	if (h)
		free_pages_exact(h->buf, h->size);
	kfree(h);
}

static int __init vmct_init(void)
{
	int i;

	vmct_truth_init();
	for (i = 0; i < NR_LARGE; i++) {
		large[i] = kmalloc(64 * 1024, GFP_KERNEL);	/* order-4 */
		if (large[i]) {
			memset(large[i], 0x5a, 64 * 1024);
			report("large_kmalloc", large[i]);
		}
	}
	large[NR_LARGE] = kmalloc(1024 * 1024, GFP_KERNEL);	/* order-8 */
	if (large[NR_LARGE])
		report("large_kmalloc", large[NR_LARGE]);

	vbuf = vmalloc(8 * 1024 * 1024);
	if (vbuf)
		memset(vbuf, 0xa5, 8 * 1024 * 1024);

	for (i = 0; i < NR_FRAGS; i++) {
		frags[i] = page_frag_alloc(&frag_cache, 1500, GFP_KERNEL);
		netdev_frags[i] = netdev_alloc_frag(1500);
	}
	if (frags[0])
		report("page_frag", frags[0]);
	if (netdev_frags[0])
		report("netdev_frag", netdev_frags[0]);

	for (i = 0; i < NR_THREADS; i++)
		threads[i] = kthread_run(sleeper, NULL, "vmct_sleeper/%d", i);

	exact = hold_exact("exact_run", 3);
	if (exact_pair)
		pair = hold_exact("exact_pair", 2);
	if (split_leak)
		plant_split_leak();
	pr_info("vmct_workload: ready\n");
	return 0;
}

static void __exit vmct_exit(void)
{
	int i;

	for (i = 0; i < NR_THREADS; i++)
		if (!IS_ERR_OR_NULL(threads[i]))
			kthread_stop(threads[i]);
	for (i = 0; i < NR_FRAGS; i++) {
		if (frags[i])
			page_frag_free(frags[i]);
		if (netdev_frags[i])
			skb_free_frag(netdev_frags[i]);
	}
#ifdef HAVE_PAGE_FRAG_CACHE_DRAIN
	page_frag_cache_drain(&frag_cache);
#else
	if (frag_cache.va)
		__page_frag_cache_drain(virt_to_head_page(frag_cache.va), frag_cache.pagecnt_bias);
#endif
	vfree(vbuf);
	free_exact(exact);
	free_exact(pair);
	if (single)
		free_page((unsigned long)single->buf);
	kfree(single);
	for (i = 0; i <= NR_LARGE; i++)
		kfree(large[i]);
	vmct_truth_exit();
}

module_init(vmct_init);
module_exit(vmct_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmcore-tools test module: allocations that look like leaks but are not, and one that is (split_leak=1)");
