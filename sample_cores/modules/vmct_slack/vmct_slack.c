// SPDX-License-Identifier: GPL-2.0
/*
 * vmct_slack: pages whose only pointer is a stale copy in bytes of an
 * allocated slab object that its user never wrote: the unused tail of a
 * kmalloc() object, and the padding of a slot.
 *
 * kmalloc() serves a request from the smallest size class that fits it: a
 * 100-byte request gets a kmalloc-128 object, and its last 28 bytes are
 * never written by the one who asked.  SLUB hands a freed object out again
 * last in, first out from the CPU's freelist (or sheaf), and unless the
 * kernel zeroes objects when it hands them out (init_on_alloc), the bytes
 * the new user does not write keep what the previous user left there.
 *
 * For each size class below, the module takes an object of the full class
 * size, stores a page's address in its last word, frees it, and at once
 * asks again with a request the next smaller class would not fit, on the
 * same CPU and from the same call site (one cache, even with random kmalloc
 * caches).  It gets the same object, writes the part it asked for, and
 * keeps it.  The page is lost: its only pointer is the stale word (ring
 * "kmalloc-slack"), or none at all where the kernel zeroed the object or
 * another object came back (ring "kmalloc-slack-cleared").
 *
 * It also keeps one page held the ordinary way, from a word inside the
 * request of a kmalloc-128 object (owned kind=kmalloc-request).
 *
 * And a slot's padding: a cache of 40-byte objects aligned to the cache
 * line has 64-byte slots, whose last 24 bytes no one writes.  A page that
 * named a lost page in every word is freed and, on the same CPU, at once
 * becomes the cache's first slab (the per-CPU free list hands the last
 * page freed out first); the object taken from it is written whole, and
 * its slot's padding still names the lost page (ring "slab-padding"), or
 * nothing where the kernel zeroed the new slab page or another page came
 * (ring "slab-padding-cleared").
 */
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include "vmct_truth.h"

struct slack_case {
	size_t class_size;	/* the object a first user asks for whole */
	size_t request;		/* the next user's request: above the next smaller class */
};

static const struct slack_case cases[] = { { 128, 100 }, { 256, 200 }, { 1024, 600 } };
#define NR ARRAY_SIZE(cases)

static void *holders[NR];	/* the objects the second users keep */
static void **request_holder;	/* holds a page from inside its request */

/* one call site for every allocation, so random kmalloc caches pick one cache */
static noinline void *slack_alloc(size_t size)
{
	return kmalloc(size, GFP_ATOMIC);
}

static void plant(int i)
{
	const struct slack_case *c = &cases[i];
	struct page *page = alloc_page(GFP_KERNEL);
	void **first, **again;
	size_t last = c->class_size / sizeof(void *) - 1;
	bool kept;

	if (!page)
		return;
	memset(page_address(page), 0, PAGE_SIZE);
	preempt_disable();
	first = slack_alloc(c->class_size);
	if (!first) {
		preempt_enable();
		__free_page(page);
		return;
	}
	first[last] = page_address(page);
	kfree(first);
	again = slack_alloc(c->request);
	preempt_enable();
	if (!again) {
		__free_page(page);
		return;
	}
	memset(again, 0x11, c->request);
	holders[i] = again;
	kept = again == first && again[last] == page_address(page);
	pr_info("vmct_slack: object=%px class=%zu request=%zu word=%zu kept=%d\n", again, c->class_size,
		c->request, last * sizeof(void *), kept);
	vmct_truth_leak(page_to_pfn(page), 0, page_ref_count(page),
			kept ? "kmalloc-slack" : "kmalloc-slack-cleared", ~0u);
}

#define PADDED_OBJECT 40
static struct kmem_cache *padded_cache;
static void **padded_object;            /* kept: a cache's object, its slot padded */

static void plant_padding(void)
{
	struct page *lost = alloc_page(GFP_KERNEL), *before = alloc_page(GFP_KERNEL);
	size_t i, last = cache_line_size() / sizeof(void *) - 1;
	void **words;
	bool kept;

	padded_cache = kmem_cache_create("vmct_padded", PADDED_OBJECT, 0, SLAB_HWCACHE_ALIGN, NULL);
	if (!lost || !before || !padded_cache) {
		if (lost)
			__free_page(lost);
		if (before)
			__free_page(before);
		return;
	}
	memset(page_address(lost), 0, PAGE_SIZE);
	words = page_address(before);
	for (i = 0; i < PAGE_SIZE / sizeof(void *); i++)
		words[i] = page_address(lost);
	preempt_disable();
	__free_page(before);
	padded_object = kmem_cache_alloc(padded_cache, GFP_ATOMIC);
	preempt_enable();
	if (!padded_object)
		return;
	memset(padded_object, 0x22, PADDED_OBJECT);
	kept = virt_to_page(padded_object) == before && padded_object[last] == page_address(lost);
	pr_info("vmct_slack: object=%px object_size=%d slot=%zu kept=%d\n", padded_object, PADDED_OBJECT,
		(last + 1) * sizeof(void *), kept);
	vmct_truth_leak(page_to_pfn(lost), 0, page_ref_count(lost), kept ? "slab-padding" : "slab-padding-cleared",
			~0u);
}

static int __init vmct_slack_init(void)
{
	struct page *page;
	int i;

	vmct_truth_init();
	for (i = 0; i < NR; i++)
		plant(i);
	plant_padding();
	request_holder = kmalloc(100, GFP_KERNEL);
	page = alloc_page(GFP_KERNEL);
	if (request_holder && page) {
		memset(request_holder, 0, 100);
		request_holder[1] = page_address(page);
		pr_info("vmct_slack: owned pfn=%lu kind=kmalloc-request\n", page_to_pfn(page));
	} else if (page) {
		__free_page(page);
	}
	return 0;
}

static void __exit vmct_slack_exit(void)
{
	int i;

	if (request_holder && request_holder[1])
		free_page((unsigned long)request_holder[1]);
	kfree(request_holder);
	for (i = 0; i < NR; i++)
		kfree(holders[i]);
	if (padded_object)
		kmem_cache_free(padded_cache, padded_object);
	kmem_cache_destroy(padded_cache);
	vmct_truth_exit();
}

module_init(vmct_slack_init);
module_exit(vmct_slack_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmcore-tools test: pages named only by a stale word in a kmalloc object's unused tail");
