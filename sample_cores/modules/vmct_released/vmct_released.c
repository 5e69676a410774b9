// SPDX-License-Identifier: GPL-2.0
/*
 * vmct_released: page-cache pages that their owner let go of while a
 * reference someone took on them was never dropped -- the shape of a
 * get_page() without its put_page(), as GUP-pin, splice and io_uring
 * reference leaks leave them.
 *
 * A shmem file of NR_PAGES pages is written through its page cache
 * (shmem_read_mapping_page() returns each page with a reference taken for
 * the caller), then truncated, which takes the pages out of the cache
 * (mapping gone) and drops the cache's references.  The caller's
 * references stay: each page is allocated, refcount 1 (plus FOLL_PIN's
 * 1024 on the pinned ones, pin_user_pages() style), with the flags page
 * cache left on it, and nobody points to it.  Each page is recorded as
 * lost (vmct_truth.h, ring "released" or "pinned").
 */
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/pagemap.h>
#include <linux/shmem_fs.h>
#include <linux/swap.h>
#include <linux/file.h>
#ifdef HAVE_FOLIO_BATCH_H
#include <linux/folio_batch.h>
#else
#include <linux/pagevec.h>
#endif
#include <linux/workqueue.h>
#include "vmct_truth.h"

#define NR_PAGES 6
#define NR_PINNED 2
/* include/linux/mm.h: each FOLL_PIN pin of an order-0 page adds this */
#define PIN_BIAS 1024

/*
 * A page added to the LRU waits in its CPU's lru_add batch, which holds a
 * reference, until the batch is drained.  Releasing an empty batch drains
 * this CPU's (the exported way to call lru_add_drain()).
 */
static void drain_this_cpu(void)
{
#ifdef HAVE_FOLIO_BATCH_RELEASE
	struct folio_batch fbatch;

	folio_batch_init(&fbatch);
	__folio_batch_release(&fbatch);
#else
	struct pagevec pvec;

	pagevec_init(&pvec);
	__pagevec_release(&pvec);
#endif
}

/* runs in a kworker bound to one CPU: the LRU batch filled is the one drained */
static long plant(void *unused)
{
	struct page *pages[NR_PAGES];
	struct file *file;
	int i;

#ifdef HAVE_VMA_FLAGS_T
	file = shmem_file_setup("vmct-released", NR_PAGES * PAGE_SIZE, EMPTY_VMA_FLAGS);
#else
	file = shmem_file_setup("vmct-released", NR_PAGES * PAGE_SIZE, 0);
#endif
	if (IS_ERR(file))
		return PTR_ERR(file);
	for (i = 0; i < NR_PAGES; i++) {
		struct page *page = shmem_read_mapping_page(file->f_mapping, i);

		if (IS_ERR(page)) {
			fput(file);
			return PTR_ERR(page);
		}
		/* file data: a repeated byte (x86-64 has no highmem) */
		memset(page_address(page), 'a' + i, PAGE_SIZE);
		set_page_dirty(page);
		pages[i] = page;
	}
	for (i = 0; i < NR_PINNED; i++)
		page_ref_add(pages[i], PIN_BIAS);       /* what a FOLL_PIN pin adds */
	/* the owner lets go: out of the page cache, the cache's references dropped */
	shmem_truncate_range(file_inode(file), 0, (loff_t)-1);
	drain_this_cpu();
	for (i = 0; i < NR_PAGES; i++)
		vmct_truth_leak(page_to_pfn(pages[i]), 0, page_ref_count(pages[i]),
				i < NR_PINNED ? "pinned" : "released", ~0u);
	fput(file);
	return 0;
}

static int __init vmct_released_init(void)
{
	vmct_truth_init();
	return work_on_cpu(0, plant, NULL);
}

static void __exit vmct_released_exit(void)
{
	vmct_truth_exit();
}

module_init(vmct_released_init);
module_exit(vmct_released_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmcore-tools test: page-cache pages released by their owner, still referenced");
