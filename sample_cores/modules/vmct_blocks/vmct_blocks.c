// SPDX-License-Identifier: GPL-2.0
/*
 * vmct_blocks: multi-page blocks taken without __GFP_COMP, the way HBA,
 * RDMA and GPU drivers take their queues and tables (and the kernel its
 * blk-mq request pages, PTI's PGD pair and DMA-coherent buffers), and
 * pages lost right after held buffers.
 *
 * Without __GFP_COMP, alloc_pages() gives the first page of the block a
 * reference and leaves the others as they were on the free list: refcount
 * 0, no compound head, nothing in struct page that ties them to the first.
 *
 *  - an order-2 and an order-3 block (__get_free_pages()), each known only
 *    by a pointer 16 bytes below its end, as a stack's top is kept, in
 *    the driver's kmalloc'd state ("owned pfn=<first page> kind=block-end");
 *  - an order-2 block used as a table of buffer pointers, held by its start
 *    in .bss, whose entries all lie in its pages 1 to 3, each naming a page
 *    the driver filled: pages held only through the block's tail
 *    ("kind=block-table", "kind=block-table-entry");
 *  - buffers of 1, 3 and 4 pages taken the way alloc_pages_exact() takes
 *    them (an order-3 block, split_page(), the pages past the buffer
 *    freed), held from the driver's state by their start
 *    ("kind=held-buffer"); with leak=1 (the default) the page right after
 *    each is lost, never written: "vmct_blocks: leaked pfn=...
 *    ring=after-held-N" (vmct_truth.h), the commonest driver leak (an
 *    alloc_page() with no free) where nothing in struct page tells it from
 *    a run's tail.
 */
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/gfp.h>
#include <linux/slab.h>
#include "vmct_truth.h"

#define TABLE_ENTRIES 6
#define SPLIT_ORDER 3

static int leak = 1;
module_param(leak, int, 0444);
MODULE_PARM_DESC(leak, "lose the page right after each held buffer (default 1)");

/* a driver's private state, kmalloc'd; its one global below */
struct blocks_state {
	void *end[2];           /* 16 bytes below the end of the order-2 and the order-3 block */
	void *buffer[3];        /* the starts of the 1-, 3- and 4-page buffers */
};
static struct blocks_state *state;
static void **table;            /* the order-2 table of buffer pointers, by its start */
static struct page *kept[3];    /* leak=0: the page after each buffer, kept */

/* what a driver writes into a page it fills: not zero, not a pattern */
static void fill(struct page *page, unsigned int seed)
{
	u32 *p = page_address(page);
	unsigned int i;

	for (i = 0; i < PAGE_SIZE / 4; i++)
		p[i] = seed * 2654435761u + i * 40503u;
}

static int block_end(unsigned int order, int i)
{
	unsigned long addr = __get_free_pages(GFP_KERNEL, order);
	unsigned int p;

	if (!addr)
		return -ENOMEM;
	for (p = 0; p < 1u << order; p++)
		fill(virt_to_page((void *)addr) + p, 700 + 10 * i + p);
	state->end[i] = (void *)(addr + (PAGE_SIZE << order) - 16);
	pr_info("vmct_blocks: owned pfn=%lu kind=block-end\n", page_to_pfn(virt_to_page((void *)addr)));
	return 0;
}

static int block_table(void)
{
	unsigned long per_page = PAGE_SIZE / sizeof(void *);
	struct page *page;
	int j;

	table = (void **)__get_free_pages(GFP_KERNEL | __GFP_ZERO, 2);
	if (!table)
		return -ENOMEM;
	for (j = 0; j < TABLE_ENTRIES; j++) {
		page = alloc_page(GFP_KERNEL);
		if (!page)
			return -ENOMEM;
		fill(page, 750 + j);
		/* pages 1 to 3 of the block, scattered slots */
		table[per_page * (1 + j % 3) + 37 * j + 5] = page_address(page);
		pr_info("vmct_blocks: owned pfn=%lu kind=block-table-entry\n", page_to_pfn(page));
	}
	pr_info("vmct_blocks: owned pfn=%lu kind=block-table\n", page_to_pfn(virt_to_page(table)));
	return 0;
}

static int after_held(unsigned int n, int i)
{
	static const char *const shape[] = { "after-held-1", "after-held-3", "after-held-4" };
	struct page *block = alloc_pages(GFP_KERNEL | __GFP_ZERO, SPLIT_ORDER);
	unsigned int p;

	if (!block)
		return -ENOMEM;
	split_page(block, SPLIT_ORDER);
	for (p = 0; p < n; p++)
		fill(block + p, 800 + 10 * i + p);
	state->buffer[i] = page_address(block);
	pr_info("vmct_blocks: owned pfn=%lu kind=held-buffer\n", page_to_pfn(block));
	if (leak)
		vmct_truth_leak(page_to_pfn(block + n), 0, page_ref_count(block + n), shape[i], ~0u);
	else
		kept[i] = block + n;
	for (p = n + 1; p < 1u << SPLIT_ORDER; p++)
		__free_page(block + p);
	return 0;
}

static int __init blocks_init(void)
{
	int err;

	vmct_truth_init();
	state = kzalloc(sizeof(*state), GFP_KERNEL);
	if (!state)
		return -ENOMEM;
	err = block_end(2, 0);
	err = err ?: block_end(3, 1);
	err = err ?: block_table();
	err = err ?: after_held(1, 0);
	err = err ?: after_held(3, 1);
	err = err ?: after_held(4, 2);
	return err;
}

static void __exit blocks_exit(void)
{
	int i;

	/* test guests never unload it: this gives back what leak=0 keeps (and
	 * reads the globals, so that the compiler keeps the stores to them) */
	for (i = 0; i < 3; i++)
		if (kept[i])
			__free_page(kept[i]);
	vmct_truth_exit();
}

module_init(blocks_init);
module_exit(blocks_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmcore-tools sample cores: blocks without __GFP_COMP, pages lost after held buffers");
