// SPDX-License-Identifier: GPL-2.0
/*
 * vmct_shapes: pages that kernel code owns without any pointer a plain
 * scan would find next to them, each written the way the kernel or a real
 * driver keeps such pages, and a page lost inside each shape.
 *
 *  - a page pool on a list threaded through page->lru, its head in .bss
 *    (TTM's pools, the kexec image's control and destination pages, the
 *    balloon drivers' page lists);
 *  - a chain through page->private, each page naming the next one's
 *    struct page (virtio_net's big-packet page chain, rq->pages);
 *  - a three-level table of physical addresses with flag bits (an IOMMU
 *    page table: VT-d second-level entries are phys | R | W), the root
 *    held by a pointer in .bss, entries at scattered slots;
 *  - a page mapped with vm_map_ram() whose only trace is the mapping
 *    (what a driver keeps is the virtual address);
 *  - a page (and a kmalloc'd object) held in a sleeping kernel thread's
 *    local variables;
 *  - a page and a small object named only from inside a large kmalloc
 *    buffer (a kvmalloc'd table of buckets);
 *  - a driver's rx buffer array (records of dma, page, offset and bias, as
 *    i40e's rx_bi[]) kcalloc'd, each record naming a page it filled.  With
 *    leak=1 the array itself is lost, its pages in it: the pages stay
 *    referenced, by an object nothing reaches ("vmct_shapes: hidden
 *    pfn=... holder=<the array's address>");
 *  - a page_pool, used the way an rx driver uses one (mlx5, bnxt, veth):
 *    pages taken from it wait in a kcalloc'd ring; some are given back
 *    from process context (they wait in the pool's ptr_ring), some
 *    recycled from softirq context (its alloc cache, which also holds
 *    what a bulk refill took).  From 5.14 each page keeps the pool's
 *    signature in pp_magic wherever it is; with leak=1 one page is taken
 *    and never given back.  The pool DMA-maps its pages for the PCI device fake_i40e
 *    binds (QEMU's edu), as a driver's pool does, where there is one;
 *  - a per-cpu allocation a driver keeps (alloc_percpu()), naming a page
 *    in the first CPU's copy;
 *  - planted last, when the guest writes the parameter right before the
 *    dump: a page a disk read filled, then lost, that only the idle blk-mq
 *    request of that read still names (idle_request=<disk>); a page an
 *    interrupt handler filled, then lost, whose address stays in the
 *    handler's dead frame on that CPU's interrupt stack (irq_stack=1); a
 *    page whose struct page a dead slot of a per-CPU LRU batch still names
 *    (lru_batch=1); a page named in a per-cpu allocation the driver freed
 *    (percpu_freed=1: free_percpu() clears the chunk's bitmap and leaves
 *    the bytes; planted last, because a later allocation would zero them,
 *    and in the last word of 4 KiB, because the allocations each new
 *    process makes on 6.2+ -- its mm's per-CPU counters -- are served
 *    first fit from the freed area's start);
 *    an skb with a page in its frags on another CPU's defer list
 *    (defer_skbs=1, 6.0+).
 *
 * Owned pages are logged as "vmct_shapes: owned pfn=... kind=...", and
 * with leak=1 (the default) one page of the list, the chain, the table,
 * the page_pool, the disk read, the interrupt handler, the LRU batch and
 * the freed per-cpu area each is lost: "vmct_shapes: leaked pfn=... ring=<shape>" (vmct_truth.h).
 */
#include <linux/module.h>
#include <linux/percpu.h>
#include <linux/mm.h>
#include <linux/gfp.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/kthread.h>
#include <linux/delay.h>
#include <linux/io.h>
#include <linux/completion.h>
#include <linux/pci.h>
#include <linux/kprobes.h>
#include <linux/rcupdate.h>
#include <linux/skbuff.h>
#include <linux/workqueue.h>
#include <linux/bio.h>
#include <linux/blkdev.h>
#include <linux/fs.h>
#include <linux/file.h>
#include <linux/shmem_fs.h>
#include <linux/version.h>
#if __has_include(<linux/folio_batch.h>)
#include <linux/folio_batch.h>         /* 7.x */
#else
#include <linux/pagevec.h>
#endif
#if __has_include(<net/page_pool/helpers.h>)
#include <net/page_pool/helpers.h>       /* 6.6+ */
#else
#include <net/page_pool.h>
#endif
#include "vmct_truth.h"

#define POOL_PAGES 12
#define CHAIN_PAGES 6
#define TABLE_MIDS 3
#define LEAVES_PER_MID 4
#define ENTRY_RW 0x3ULL         /* VT-d second level: read | write */

static int leak = 1;
module_param(leak, int, 0444);

static LIST_HEAD(pool);                 /* ttm_pool_type.pages style */
static struct page *chain;              /* virtio_net rq->pages style */
static u64 *table_root;                 /* an IOMMU domain's pgd */
static void *mapped;                    /* vm_map_ram()'s address */
static struct task_struct *holder;
static void **large_buf;                /* a large kmalloc'd array */

struct vmct_rx_buffer {                 /* i40e_rx_buffer's layout */
	dma_addr_t dma;
	struct page *page;
	__u32 page_offset;
	__u16 pagecnt_bias;
};
#define RX_BI_COUNT 8
static struct vmct_rx_buffer *rx_bi __used;     /* kept only with leak=0 */

#define EDU_VENDOR 0x1234
#define EDU_DEVICE 0x11e8
#define PP_RING 16              /* pages a driver's rx ring takes from its pool */
#define PP_RETURNED 4           /* of those, given back from process context */
#define PP_RECYCLED 4           /* and recycled from softirq context */
static struct page_pool *pp;
static struct page **pp_ring;
static struct pci_dev *pp_dev;

#define PCPU_WORDS 8
struct vmct_pcpu_area {                 /* a driver's per-CPU state */
	void *words[PCPU_WORDS];
};
#define PCPU_FREED_WORDS (4096 / sizeof(void *))
struct vmct_pcpu_table {                /* a driver's per-CPU table, freed */
	void *words[PCPU_FREED_WORDS];
};
static struct vmct_pcpu_area __percpu *pcpu_kept __used;
static struct page *pcpu_page __used;   /* with leak=0, the page the freed area names */

static void owned(struct page *page, const char *kind)
{
	pr_info("vmct_shapes: owned pfn=%lu kind=%s\n", page_to_pfn(page), kind);
}

static void lost(struct page *page, const char *shape)
{
	vmct_truth_leak(page_to_pfn(page), 0, page_ref_count(page), shape, ~0u);
}

/* a planted page: lost with leak=1, else kept in *keep (a global: held) */
static void lose_or_keep(struct page *page, const char *shape, struct page **keep)
{
	if (leak)
		lost(page, shape);
	else
		*keep = page;
}

/* what a driver writes into a page it fills: not zero, not a pattern */
static void fill(struct page *page, unsigned int seed)
{
	u32 *p = page_address(page);
	unsigned int i;

	for (i = 0; i < PAGE_SIZE / 4; i++)
		p[i] = seed * 2654435761u + i * 40503u;
}

static int build_pool(void)
{
	struct page *page, *drop = NULL;
	int i;

	for (i = 0; i < POOL_PAGES; i++) {
		page = alloc_page(GFP_KERNEL);
		if (!page)
			return -ENOMEM;
		fill(page, i);
		list_add_tail(&page->lru, &pool);
		if (leak && i == POOL_PAGES / 2)
			drop = page;
	}
	if (drop)
		list_del(&drop->lru);   /* taken off the pool, never given back */
	list_for_each_entry(page, &pool, lru)
		owned(page, "lru-list");
	if (drop)
		lost(drop, "lru-list");
	return 0;
}

static int build_chain(void)
{
	struct page *page, *prev;
	int i;

	for (i = 0; i < CHAIN_PAGES; i++) {
		page = alloc_page(GFP_KERNEL);
		if (!page)
			return -ENOMEM;
		fill(page, 100 + i);
		set_page_private(page, (unsigned long)chain);
		chain = page;
	}
	if (leak) {     /* unlink the third page without freeing it */
		prev = chain;
		for (i = 0; i < 2; i++)
			prev = (struct page *)page_private(prev);
		page = (struct page *)page_private(prev);
		set_page_private(prev, page_private(page));
		lost(page, "private-chain");
	}
	for (page = chain; page; page = (struct page *)page_private(page))
		owned(page, "private-chain");
	return 0;
}

static u64 entry_of(struct page *page)
{
	return page_to_phys(page) | ENTRY_RW;
}

static int build_table(void)
{
	/* scattered slots, as IOVAs spread over the table */
	static const int slots[] = { 3, 77, 200, 311, 460, 509 };
	struct page *root, *mid, *leaf;
	u64 *mid_va;
	int m, l;

	root = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!root)
		return -ENOMEM;
	table_root = page_address(root);
	owned(root, "table-root");
	for (m = 0; m < TABLE_MIDS; m++) {
		mid = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!mid)
			return -ENOMEM;
		mid_va = page_address(mid);
		table_root[slots[m * 2]] = entry_of(mid);
		owned(mid, "table-level");
		for (l = 0; l < LEAVES_PER_MID; l++) {
			leaf = alloc_page(GFP_KERNEL);
			if (!leaf)
				return -ENOMEM;
			fill(leaf, 200 + m * 8 + l);
			mid_va[slots[l]] = entry_of(leaf);
			if (leak && m == 1 && l == 2) {
				mid_va[slots[l]] = 0;   /* unmapped, never freed */
				lost(leaf, "table");
			} else {
				owned(leaf, "table-leaf");
			}
		}
	}
	return 0;
}

static DECLARE_COMPLETION(holding);

/* the page and a request object live in this thread's local variables
 * only, across its sleeps (a worker holding what it is working on) */
static int hold(void *unused)
{
	struct page *mine = alloc_page(GFP_KERNEL);
	char *request = kmalloc(256, GFP_KERNEL);

	if (mine) {
		fill(mine, 300);
		owned(mine, "kthread-local");
	}
	if (request)
		snprintf(request, 256, "vmct_shapes request");
	complete(&holding);
	while (!kthread_should_stop())
		msleep_interruptible(1000);
	if (mine)
		__free_page(mine);
	kfree(request);
	return 0;
}

static int build_others(void)
{
	struct page *page;

	page = alloc_page(GFP_KERNEL);
	if (!page)
		return -ENOMEM;
	mapped = vm_map_ram(&page, 1, NUMA_NO_NODE);
	if (!mapped)
		return -ENOMEM;
	memset(mapped, 0x5a, 64);
	owned(page, "vm-map-ram");

	holder = kthread_run(hold, NULL, "vmct_holder");
	if (IS_ERR(holder))
		return PTR_ERR(holder);
	wait_for_completion(&holding);

	large_buf = kzalloc(32 * 1024, GFP_KERNEL);
	page = alloc_page(GFP_KERNEL);
	if (!large_buf || !page)
		return -ENOMEM;
	fill(page, 400);
	large_buf[1000] = page;
	large_buf[1001] = kzalloc(64, GFP_KERNEL);
	owned(page, "large-kmalloc-held");
	return 0;
}

static int build_rx_bi(void)
{
	struct vmct_rx_buffer *bi = kcalloc(RX_BI_COUNT, sizeof(*bi), GFP_KERNEL);
	struct page *page;
	int i;

	if (!bi)
		return -ENOMEM;
	for (i = 0; i < RX_BI_COUNT; i++) {
		page = alloc_page(GFP_KERNEL);
		if (!page)
			return -ENOMEM;
		fill(page, 500 + i);
		bi[i].page = page;
		bi[i].dma = page_to_phys(page);
		bi[i].pagecnt_bias = 1;
		owned(page, "rx-buffer-array");
		if (leak)
			pr_info("vmct_shapes: hidden pfn=%lu holder=%px\n", page_to_pfn(page), bi);
	}
	if (!leak)
		WRITE_ONCE(rx_bi, bi);  /* a store nothing reads: kept by WRITE_ONCE */
	/* with leak=1 the array's only pointer dies with this frame */
	return 0;
}

static int build_page_pool(void)
{
	struct page_pool_params params = {
		.order = 0,
		.pool_size = 256,
		.nid = NUMA_NO_NODE,
	};
	struct page *page;
	int i;

	pp_dev = pci_get_device(EDU_VENDOR, EDU_DEVICE, NULL);
	if (pp_dev) {
		params.flags = PP_FLAG_DMA_MAP;
		params.dev = &pp_dev->dev;
		params.dma_dir = DMA_FROM_DEVICE;
	}
	pp = page_pool_create(&params);
	if (IS_ERR(pp))
		return PTR_ERR(pp);
	pp_ring = kcalloc(PP_RING, sizeof(*pp_ring), GFP_KERNEL);
	if (!pp_ring)
		return -ENOMEM;
	for (i = 0; i < PP_RING; i++) {
		page = page_pool_dev_alloc_pages(pp);
		if (!page)
			return -ENOMEM;
		fill(page, 600 + i);    /* what the device wrote */
		pp_ring[i] = page;
	}
	if (leak) {     /* taken from the pool, filled, never given back */
		page = page_pool_dev_alloc_pages(pp);
		if (!page)
			return -ENOMEM;
		fill(page, 700);
		lost(page, "page-pool");
	}
	for (i = 0; i < PP_RETURNED; i++) {     /* process context: into the ptr_ring */
		page_pool_put_full_page(pp, pp_ring[i], false);
		pp_ring[i] = NULL;
	}
	/* with bottom halves off, as in NAPI: into the alloc cache (before
	 * 6.0 only a CPU serving a softirq recycles there: the ptr_ring) */
	local_bh_disable();
	for (; i < PP_RETURNED + PP_RECYCLED; i++) {
		page_pool_recycle_direct(pp, pp_ring[i]);
		pp_ring[i] = NULL;
	}
	local_bh_enable();
	for (; i < PP_RING; i++)
		owned(pp_ring[i], "page-pool-ring");
	/* where the pool keeps the others, from its own arrays */
	for (i = 0; i < pp->ring.size; i++)
		if (pp->ring.queue[i])
			owned(pp->ring.queue[i], "page-pool-ptr-ring");
	for (i = 0; i < pp->alloc.count; i++)
		owned((struct page *)(unsigned long)pp->alloc.cache[i], "page-pool-cache");
	return 0;
}

/*
 * Planted last, right before the dump: the guest writes these parameters
 * once its workload is ready (init.sh), because the next receive on a CPU,
 * or enough further I/O, would undo them.
 */

/*
 * idle_request=<disk>: a page a block read filled, then lost.
 *
 * blk-mq gives a request back with its driver data as its last I/O left it:
 * virtio-blk's scatterlist keeps the page_link (the struct page pointer,
 * low bits SG_END) of the page it read into.  A request's tag comes round
 * again only after the others (sbitmap's per-CPU hint moves on after every
 * allocation), so until then an idle request names a page that may be
 * anywhere since.  The read is the kernel's own path: a bio of one page,
 * submit_bio_wait(), bio_put().  With leak=1 the page is then lost (ring
 * "idle-request"); with leak=0 it stays in read_page.
 */
static struct page *read_page __used;

static int idle_request_set(const char *val, const struct kernel_param *kp)
{
	char path[64];
	struct file *file;
	struct page *page;
	struct bio *bio;
	int err;

	strscpy(path, val, sizeof(path));
	strim(path);
	file = filp_open(path, O_RDONLY, 0);
	if (IS_ERR(file))
		return PTR_ERR(file);
	page = alloc_page(GFP_KERNEL);
	if (!page) {
		fput(file);
		return -ENOMEM;
	}
#ifdef HAVE_BIO_ALLOC_BDEV
	bio = bio_alloc(I_BDEV(file->f_mapping->host), 1, REQ_OP_READ, GFP_KERNEL);   /* 5.18+ */
#else
	bio = bio_alloc(GFP_KERNEL, 1);
	bio_set_dev(bio, I_BDEV(file->f_mapping->host));
	bio->bi_opf = REQ_OP_READ;
#endif
	bio->bi_iter.bi_sector = 0;
	err = bio_add_page(bio, page, PAGE_SIZE, 0) == PAGE_SIZE ? submit_bio_wait(bio) : -EIO;
	bio_put(bio);
	fput(file);
	if (err) {
		__free_page(page);
		return err;
	}
	lose_or_keep(page, "idle-request", &read_page);
	return 0;
}

static const struct kernel_param_ops idle_request_ops = { .set = idle_request_set };
module_param_cb(idle_request, &idle_request_ops, NULL, 0200);

/*
 * irq_stack=1: a page an interrupt handler filled, then lost.
 *
 * x86-64 runs a CPU's interrupt handlers, and the softirqs they raise, on
 * that CPU's own stack (irq_stack_backing_store); a handler's frame stays
 * there once it returns, until a later interrupt reaches as deep.  Here the
 * handler is a function run on another CPU by IPI
 * (smp_call_function_single(): the CPU takes it on its interrupt stack),
 * which fills the page and keeps its address in a local array, as a handler
 * keeps what it works on.  The CPU is the first one: the last may be held
 * busy for the defer list (defer_skbs), and a busy CPU is in its timer
 * interrupt, on that stack, at a fair share of the moments a dump may
 * catch it.  The array is 8 KiB of the 16 KiB stack, its first word the
 * deepest: the interrupts that follow until the dump are shallower and
 * leave the address in place.  Logged as "vmct_shapes: irq-stack pfn=...
 * cpu=..."; with leak=1 the page is lost (ring "irq-stack"), with leak=0
 * kept in irq_page.
 */
#define IRQ_FRAME_WORDS 1024
static struct page *irq_page __used;

static noinline void work_in_interrupt(void *info)
{
	struct page *page = info;
	unsigned long volatile frame[IRQ_FRAME_WORDS];

	fill(page, 900);
	frame[0] = (unsigned long)page_address(page);
}

/* from another CPU, so that the first one takes the call as an interrupt */
static long interrupt_first_cpu(void *page)
{
	return smp_call_function_single(cpumask_first(cpu_online_mask), work_in_interrupt, page, 1);
}

static int irq_stack_set(const char *val, const struct kernel_param *kp)
{
	int first = cpumask_first(cpu_online_mask);
	int other = cpumask_any_but(cpu_online_mask, first);
	struct page *page;
	long err;

	if (other >= nr_cpu_ids)
		return -EOPNOTSUPP;
	page = alloc_page(GFP_KERNEL);
	if (!page)
		return -ENOMEM;
	err = work_on_cpu(other, interrupt_first_cpu, page);
	if (err) {
		__free_page(page);
		return err;
	}
	pr_info("vmct_shapes: irq-stack pfn=%lu cpu=%d\n", page_to_pfn(page), first);
	lose_or_keep(page, "irq-stack", &irq_page);
	return 0;
}

static const struct kernel_param_ops irq_stack_ops = { .set = irq_stack_set };
module_param_cb(irq_stack, &irq_stack_ops, NULL, 0200);

/*
 * lru_batch=1: a page whose struct page a dead slot of a per-CPU LRU batch
 * still names.
 *
 * The kernel moves folios onto and within the LRU in per-CPU batches
 * (struct folio_batch; struct pagevec up to 6.4): a folio goes in at slot
 * nr, and a full batch is moved as a whole and set to nr = 0, its slots
 * left as they were.  Here, on the first CPU: shmem folios are read into a
 * file (GFP_KERNEL), this CPU's batches are drained (the release of an
 * empty batch drains them, lru_add_drain()), and invalidate_mapping_pages()
 * -- which cannot drop the folios, since they are held -- hands each to
 * deactivate_file_folio(), whose batch (lru_deactivate_file) nothing but
 * invalidation fills: the last folio fills it, it is moved, and its last
 * slot keeps naming that folio.  The folios are then freed, the last one
 * last, so that it is at the head of the CPU's free list and the next
 * alloc_page() there takes it again.  That page is filled and lost: a
 * leaked page a stale batch slot names.  Tried a few times (the freed
 * page may go to another free list, by its pageblock).  Logged as
 * "vmct_shapes: lru-batch pfn=... cpu=..."; with leak=1 the page is lost
 * (ring "lru-batch"), with leak=0 kept in batch_page.
 */
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
#define BATCH_SLOTS ARRAY_SIZE(((struct folio_batch *)NULL)->folios)
#else
#define BATCH_SLOTS ARRAY_SIZE(((struct pagevec *)NULL)->pages)
#endif
static struct page *batch_page __used;
#ifdef EMPTY_VMA_FLAGS
#define NO_VMA_FLAGS EMPTY_VMA_FLAGS   /* 7.x: shmem_file_setup() takes a vma_flags_t */
#else
#define NO_VMA_FLAGS 0
#endif

/* this CPU's LRU batches emptied: lru_add_drain() by way of a release */
static void drain_this_cpu(void)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 5, 0)
	struct folio_batch empty;

	folio_batch_init(&empty);
	__folio_batch_release(&empty);
#else
	struct pagevec empty;

	pagevec_init(&empty);
	__pagevec_release(&empty);
#endif
}

/* one try on this CPU: the page the last batch slot names, taken again, or NULL */
static struct page *reuse_batched_page(void)
{
	struct page *pages[BATCH_SLOTS], *page = NULL;
	struct file *file;
	int n, i;

	file = shmem_file_setup("vmct-lru-batch", BATCH_SLOTS * PAGE_SIZE, NO_VMA_FLAGS);
	if (IS_ERR(file))
		return NULL;
	for (n = 0; n < BATCH_SLOTS; n++) {
		pages[n] = shmem_read_mapping_page_gfp(file->f_mapping, n, GFP_KERNEL);
		if (IS_ERR(pages[n]))
			break;
	}
	if (n == BATCH_SLOTS) {
		drain_this_cpu();
		invalidate_mapping_pages(file->f_mapping, 0, n - 1);
	}
	shmem_truncate_range(file_inode(file), 0, -1);
	for (i = 0; i < n; i++)
		put_page(pages[i]);
	if (n == BATCH_SLOTS) {
		page = alloc_page(GFP_KERNEL);
		if (page && page != pages[n - 1]) {
			__free_page(page);
			page = NULL;
		}
	}
	fput(file);
	return page;
}

static long lose_a_batched_page(void *unused)
{
	struct page *page = NULL;
	int tries;

	for (tries = 0; tries < 8 && !page; tries++)
		page = reuse_batched_page();
	return (long)page;
}

static int lru_batch_set(const char *val, const struct kernel_param *kp)
{
	int first = cpumask_first(cpu_online_mask);
	struct page *page = (struct page *)work_on_cpu(first, lose_a_batched_page, NULL);

	if (!page)
		return -EAGAIN;
	fill(page, 700);
	pr_info("vmct_shapes: lru-batch pfn=%lu cpu=%d\n", page_to_pfn(page), first);
	lose_or_keep(page, "lru-batch", &batch_page);
	return 0;
}

static const struct kernel_param_ops lru_batch_ops = { .set = lru_batch_set };
module_param_cb(lru_batch, &lru_batch_ops, NULL, 0200);

/*
 * defer_skbs=1: an skb waiting on another CPU's defer list, with a page.
 *
 * tcp_recvmsg() frees each skb it has read with skb_attempt_defer_free()
 * (6.0+): an skb allocated on another CPU (skb->alloc_cpu) is queued on
 * that CPU's list (softnet_data.defer_list; from 6.18 a per-node llist,
 * net_hotdata.skb_defer_nodes) and freed by that CPU's next
 * net_rx_action(), so until then it holds its pages.  Such skbs pile up on
 * CPUs that do no receive work.  This guest's CPUs all receive (its NICs
 * and loopback flows), so the last online CPU is made one that does not:
 * the skb (a filled page in its frags) is allocated there, then a thread
 * bound to it stays in a bottom-half disabled loop until the dump, so no
 * softirq runs there; the first CPU frees the skb with the kernel's own
 * skb_attempt_defer_free() (not exported: found by a kprobe).  Refused
 * where an indirect call into the kernel would trip IBT, and before 6.0.
 * Only for a dump: the CPU never comes back.
 */
static void (*defer_free)(struct sk_buff *skb);
static DECLARE_COMPLETION(quiet);

/* an skb allocated here (skb->alloc_cpu), a filled page in its frags */
static long alloc_skb_here(void *unused)
{
	struct sk_buff *skb = alloc_skb(256, GFP_KERNEL);
	struct page *page = alloc_page(GFP_KERNEL);

	if (!skb || !page) {
		kfree_skb(skb);
		if (page)
			__free_page(page);
		return 0;
	}
	fill(page, 800);
	skb_put_zero(skb, 66);          /* the headers a driver pulls into the head */
	skb_add_rx_frag(skb, 0, page, 0, 1448, PAGE_SIZE);
	return (long)skb;
}

/* this CPU runs no softirq from now on (a running thread's whole stack is
 * read, so it keeps nothing of the skb's); it reports a quiescent state as
 * it goes, as stop_machine()'s loop does, or RCU's grace periods would stop
 * with it and what is freed through RCU meanwhile would stay allocated */
static int receive_nothing(void *unused)
{
	local_bh_disable();
	complete(&quiet);
	for (;;) {
#ifdef HAVE_RCU_MOMENTARY_EQS
		rcu_momentary_eqs();
#endif
		udelay(100);
	}
	return 0;
}

static long defer_free_here(void *skb)
{
	defer_free(skb);
	return 0;
}

static int defer_skbs_set(const char *val, const struct kernel_param *kp)
{
	struct kprobe probe = { .symbol_name = "skb_attempt_defer_free" };
	struct task_struct *thread;
	struct sk_buff *skb;
	int cpu = cpumask_last(cpu_online_mask), first = cpumask_first(cpu_online_mask);

#ifdef X86_FEATURE_IBT
	if (cpu_feature_enabled(X86_FEATURE_IBT))
		return -EOPNOTSUPP;
#endif
	if (cpu == first)
		return -EOPNOTSUPP;
	if (register_kprobe(&probe) < 0)
		return -ENOENT;
	defer_free = (void *)probe.addr;
	unregister_kprobe(&probe);
	skb = (struct sk_buff *)work_on_cpu(cpu, alloc_skb_here, NULL);
	if (!skb)
		return -ENOMEM;
	thread = kthread_create_on_node(receive_nothing, NULL, cpu_to_node(cpu), "vmct_rx_quiet");
	if (IS_ERR(thread)) {
		kfree_skb(skb);
		return PTR_ERR(thread);
	}
	kthread_bind(thread, cpu);
	wake_up_process(thread);
	wait_for_completion(&quiet);
	owned(skb_frag_page(&skb_shinfo(skb)->frags[0]), "skb-defer-list");
	work_on_cpu(first, defer_free_here, skb);
	return 0;
}

static const struct kernel_param_ops defer_skbs_ops = { .set = defer_skbs_set };
module_param_cb(defer_skbs, &defer_skbs_ops, NULL, 0200);

static int build_percpu(void)
{
	struct page *page;

	pcpu_kept = alloc_percpu(struct vmct_pcpu_area);
	page = alloc_page(GFP_KERNEL);
	if (!pcpu_kept || !page)
		return -ENOMEM;
	fill(page, 900);
	per_cpu_ptr(pcpu_kept, cpumask_first(cpu_online_mask))->words[1] = page_address(page);
	owned(page, "percpu-held");
	return 0;
}

static int percpu_freed_set(const char *val, const struct kernel_param *kp)
{
	struct vmct_pcpu_table __percpu *freed = alloc_percpu(struct vmct_pcpu_table);
	struct page *page = alloc_page(GFP_KERNEL);
	void **word;

	if (!freed || !page) {
		free_percpu(freed);
		if (page)
			__free_page(page);
		return -ENOMEM;
	}
	fill(page, 901);
	word = &per_cpu_ptr(freed, cpumask_first(cpu_online_mask))->words[PCPU_FREED_WORDS - 1];
	*word = page_address(page);
	free_percpu(freed);
	pr_info("vmct_shapes: percpu-freed pfn=%lu word=%px\n", page_to_pfn(page), word);
	lose_or_keep(page, "percpu-freed", &pcpu_page);
	return 0;
}

static const struct kernel_param_ops percpu_freed_ops = { .set = percpu_freed_set };
module_param_cb(percpu_freed, &percpu_freed_ops, NULL, 0200);

static int __init shapes_init(void)
{
	int err;

	vmct_truth_init();
	err = build_pool();
	err = err ?: build_chain();
	err = err ?: build_table();
	err = err ?: build_others();
	err = err ?: build_rx_bi();
	err = err ?: build_page_pool();
	err = err ?: build_percpu();
	return err;
}

static void __exit shapes_exit(void)
{
	/* test guests never unload it; the memory is theirs until the dump */
	vmct_truth_exit();
}

module_init(shapes_init);
module_exit(shapes_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmcore-tools sample cores: pages owned without a plain pointer");
