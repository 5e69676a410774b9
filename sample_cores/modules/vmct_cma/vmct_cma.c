// SPDX-License-Identifier: GPL-2.0
/*
 * vmct_cma: DMA buffers from the contiguous memory area (cma=), kept and
 * lost the way a driver keeps and loses them, on the PCI device that
 * fake_i40e binds (QEMU's edu).
 *
 * Without an IOMMU, dma_alloc_coherent() and dma_alloc_pages() of more
 * than a page take their memory from CMA (dma_alloc_contiguous()):
 * order-0 pages of refcount 1, however many, recorded only in the area's
 * bitmap.  At probe time, as a driver does, the module allocates in turn:
 *
 *  - a 64 KiB coherent buffer it then drops on an error path ("lost
 *    before": nothing keeps it, and the allocation after it is held);
 *  - an 8 MiB coherent buffer (longer than the largest buddy block),
 *    whose CPU address it keeps;
 *  - 8 pages from dma_alloc_pages(), whose first struct page it keeps;
 *  - another 64 KiB coherent buffer it drops ("lost after": it lies right
 *    after the held pages in the bitmap, where nothing tells it from
 *    their tail).
 *
 * Kept pages are logged as "vmct_cma: owned pfn=... pages=... kind=...",
 * lost ones recorded page by page (vmct_truth.h, rings "cma-before" and
 * "cma-after").  That the pages came from the CMA area is the test's to
 * check, from the core (a module cannot read the area's bounds).
 */
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/dma-mapping.h>
#include <linux/mm.h>
#include "vmct_truth.h"

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define SMALL (64 << 10)
#define BIG (8 << 20)
#define PAGES 8

static struct pci_dev *pdev;
static void *big;
static dma_addr_t big_dma;
static struct page *pages;
static dma_addr_t pages_dma;

static void kept(unsigned long pfn, unsigned long n, const char *kind)
{
	pr_info("vmct_cma: owned pfn=%lu pages=%lu kind=%s\n", pfn, n, kind);
}

static int lose(const char *ring)
{
	dma_addr_t dma;
	void *buf = dma_alloc_coherent(&pdev->dev, SMALL, &dma, GFP_KERNEL);
	unsigned long i, pfn;

	if (!buf)
		return -ENOMEM;
	memset(buf, 0x5a, SMALL);
	pfn = page_to_pfn(virt_to_page(buf));
	for (i = 0; i < SMALL >> PAGE_SHIFT; i++)
		vmct_truth_leak(pfn + i, 0, page_ref_count(pfn_to_page(pfn + i)), ring, ~0u);
	return 0;
}

static int __init vmct_cma_init(void)
{
	int err;

	pdev = pci_get_device(EDU_VENDOR, EDU_DEVICE, NULL);
	if (!pdev)
		return -ENODEV;
	vmct_truth_init();
	err = lose("cma-before");
	if (err)
		return err;
	big = dma_alloc_coherent(&pdev->dev, BIG, &big_dma, GFP_KERNEL);
	if (!big)
		return -ENOMEM;
	memset(big, 0xa5, BIG);
	kept(page_to_pfn(virt_to_page(big)), BIG >> PAGE_SHIFT, "cma-coherent");
	pages = dma_alloc_pages(&pdev->dev, PAGES << PAGE_SHIFT, &pages_dma, DMA_BIDIRECTIONAL, GFP_KERNEL);
	if (!pages)
		return -ENOMEM;
	memset(page_address(pages), 0x3c, PAGES << PAGE_SHIFT);
	kept(page_to_pfn(pages), PAGES, "cma-pages");
	return lose("cma-after");
}

static void __exit vmct_cma_exit(void)
{
	if (pages)
		dma_free_pages(&pdev->dev, PAGES << PAGE_SHIFT, pages, pages_dma, DMA_BIDIRECTIONAL);
	if (big)
		dma_free_coherent(&pdev->dev, BIG, big, big_dma);
	pci_dev_put(pdev);
	vmct_truth_exit();
}

module_init(vmct_cma_init);
module_exit(vmct_cma_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmcore-tools sample cores: CMA buffers kept and lost by a driver");
