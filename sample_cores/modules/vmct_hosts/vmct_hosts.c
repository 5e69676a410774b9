// SPDX-License-Identifier: GPL-2.0
/*
 * vmct_hosts: pages a driver keeps on the second NUMA node of a host whose
 * node 1 memory was hot-added (a pc-dimm onlined at boot), and pages it
 * lost there.
 *
 * A NUMA-aware driver allocates its buffers on its device's node
 * (alloc_pages_node(dev_to_node(dev), ...)); on a host whose memory was
 * added after boot, that node's newest memory is a hot-added block whose
 * struct pages were themselves allocated at hot-add time.  The module
 * allocates on node 1 with __GFP_THISNODE, keeps HELD pages in a kcalloc'd
 * array ("vmct_hosts: owned pfn=... kind=node1-held"), and loses LOST more
 * ("vmct_hosts: leaked pfn=... ring=node1", vmct_truth.h), each page filled
 * the way a driver fills a buffer.  A page's node and whether it lies in
 * hot-added memory are the test's to check, from the core.
 */
#include <linux/module.h>
#include <linux/mm.h>
#include <linux/gfp.h>
#include <linux/slab.h>
#include "vmct_truth.h"

#define HELD 6
#define LOST 2
#define NODE 1

static struct page **held;

static void fill(struct page *page, unsigned int seed)
{
	u32 *p = page_address(page);
	unsigned int i;

	for (i = 0; i < PAGE_SIZE / 4; i++)
		p[i] = seed * 2246822519u + i * 3266489917u;
}

static struct page *node_page(unsigned int seed)
{
	struct page *page = alloc_pages_node(NODE, GFP_KERNEL | __GFP_THISNODE, 0);

	if (page)
		fill(page, seed);
	return page;
}

static int __init vmct_hosts_init(void)
{
	struct page *page;
	int i, n = 0;

	if (!node_online(NODE)) {
		pr_err("vmct_hosts: node %d is not online\n", NODE);
		return -ENODEV;
	}
	vmct_truth_init();
	held = kcalloc(HELD, sizeof(*held), GFP_KERNEL);
	if (!held)
		return -ENOMEM;
	for (i = 0; i < HELD + LOST; i++) {
		page = node_page(i);
		if (!page)
			return -ENOMEM;
		if (i % 4 == 2) {       /* lost between held ones: pages 2 and 6 */
			vmct_truth_leak(page_to_pfn(page), 0, page_ref_count(page), "node1", ~0u);
			continue;
		}
		held[n++] = page;
		pr_info("vmct_hosts: owned pfn=%lu kind=node1-held\n", page_to_pfn(page));
	}
	return 0;
}

static void __exit vmct_hosts_exit(void)
{
	int i;

	for (i = 0; held && i < HELD; i++)
		if (held[i])
			__free_page(held[i]);
	kfree(held);
	vmct_truth_exit();
}

module_init(vmct_hosts_init);
module_exit(vmct_hosts_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmcore-tools sample cores: pages kept and lost on hot-added memory of node 1");
