// SPDX-License-Identifier: GPL-2.0
/*
 * vmct_kfence: pages held, and lost, through objects KFENCE allocated.
 *
 * With KFENCE on (kfence.sample_interval=N, as distributions that enable it
 * boot), one slab allocation every N ms is served from the KFENCE pool: an
 * object alone in its page, at the page's start or against its end, the
 * page typed slab with the object's cache in slab_cache.  Freeing it leaves
 * the page as it was (slab_cache, no freelist) and its bytes in place.
 *
 * The module allocates kmalloc() objects until 2 * NR come from the pool:
 *  - NR "kept": each holds a page (alloc_page()), and the module keeps the
 *    objects in a global array: the pages are owned, not lost;
 *  - NR "freed": each holds a page and is freed: those pages are lost, their
 *    only pointer in a KFENCE object that is free (ring "kfence-freed").
 * KFENCE puts each object at its page's start or against its end at
 * random; each object's address and side are logged.
 */
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/kfence.h>
#include <linux/jiffies.h>
#include <linux/sched.h>
#include "vmct_truth.h"

#define OBJECT_SIZE 192         /* a kmalloc-192 object */
#define TRIES_FOR (60 * HZ)
#define NR 3

static void **kept[NR];         /* the kept KFENCE objects, each holding a page at [3] */

/* a kmalloc() object KFENCE served, or NULL after TRIES_FOR */
static void **kfence_object(void)
{
	unsigned long deadline = jiffies + TRIES_FOR;

	while (time_before(jiffies, deadline)) {
		void **p = kmalloc(OBJECT_SIZE, GFP_KERNEL);

		if (!p)
			return NULL;
		if (is_kfence_address(p))
			return p;
		kfree(p);
		cond_resched();
	}
	return NULL;
}

static const char *side(void *p)
{
	return offset_in_page(p) ? "right" : "left";
}

static void drop_kept(void)
{
	int i;

	for (i = 0; i < NR; i++) {
		if (kept[i] && kept[i][3])
			__free_page(virt_to_page(kept[i][3]));
		kfree(kept[i]);
		kept[i] = NULL;
	}
}

static int __init vmct_kfence_init(void)
{
	void **freed[NR] = { NULL };
	struct page *page;
	int i;

	vmct_truth_init();
	for (i = 0; i < 2 * NR; i++) {
		void **obj = kfence_object();

		if (!obj)
			goto fail;
		memset(obj, 0, OBJECT_SIZE);
		if (i < NR)
			kept[i] = obj;
		else
			freed[i - NR] = obj;
		page = alloc_page(GFP_KERNEL);
		if (!page)
			goto fail;
		obj[3] = page_address(page);
	}
	for (i = 0; i < NR; i++) {
		pr_info("vmct_kfence: object=%px side=%s kind=kept\n", kept[i], side(kept[i]));
		pr_info("vmct_kfence: owned pfn=%lu kind=kfence-held\n", page_to_pfn(virt_to_page(kept[i][3])));
	}
	for (i = 0; i < NR; i++) {
		page = virt_to_page(freed[i][3]);
		pr_info("vmct_kfence: object=%px side=%s kind=freed\n", freed[i], side(freed[i]));
		vmct_truth_leak(page_to_pfn(page), 0, page_ref_count(page), "kfence-freed", ~0u);
		kfree(freed[i]);        /* its page keeps the pointer: KFENCE does not clear a freed object */
	}
	return 0;
fail:
	pr_err("vmct_kfence: KFENCE served no object, or no page (is kfence.sample_interval set?)\n");
	for (i = 0; i < NR; i++) {
		if (freed[i] && freed[i][3])
			__free_page(virt_to_page(freed[i][3]));
		kfree(freed[i]);
	}
	drop_kept();
	vmct_truth_exit();
	return -ENODEV;
}

static void __exit vmct_kfence_exit(void)
{
	drop_kept();
	vmct_truth_exit();
}

module_init(vmct_kfence_init);
module_exit(vmct_kfence_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmcore-tools test: pages held and lost through KFENCE objects");
