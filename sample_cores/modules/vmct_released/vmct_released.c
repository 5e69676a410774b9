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
 *
 * Then the same right after a buffer: a four-page alloc_pages_exact()
 * buffer is taken and its last three pages given back at once, so they wait
 * on this CPU's per-CPU free list (last in, first out) for the next order-0
 * allocation of their migratetype -- the page-cache pages of a second shmem
 * file, which is truncated in turn.  The buffer's first page stays held
 * (exact_buffer, kind "exact-buffer"), and the three released pages lie
 * right after it: what an alloc_pages_exact() run of four pages would look
 * like, if their flags did not say they were page cache (ring
 * "released-after-buffer").  The buffer is taken movable, so its freed
 * pages go to the list the page cache allocates from; a try whose pages
 * landed elsewhere is undone and made again.
 *
 * Both run in the loading task, so the pages are charged to its memory
 * cgroup: loaded from a cgroup of its own (the guest's INSMOD_MEMCG), the
 * module's pages are alone on that memcg's LRU lists, whose heads then
 * name them.
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
#include <linux/sched.h>
#include <linux/cpumask.h>
#include <linux/debugfs.h>
#include <linux/umh.h>
#include <linux/string.h>
#include "vmct_truth.h"

#define NR_PAGES 6
#define NR_PINNED 2
#define NR_ANON 8               /* pages of the helper's buffer we take references on */
#define NR_ANON_PINNED 2        /* of them, pinned (FOLL_PIN) */
#define NR_ANON_HELD 2          /* of them, kept in anon_held[] */
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

#define NR_AFTER 3
#define AFTER_TRIES 8
static void *exact_buffer __used;      /* the held first page of the buffer */

/* NR_AFTER page-cache pages of a new shmem file, truncated: each kept with one reference */
static int released_pages(struct page **pages, const char *name)
{
	struct file *file;
	int i;

#ifdef HAVE_VMA_FLAGS_T
	file = shmem_file_setup(name, NR_AFTER * PAGE_SIZE, EMPTY_VMA_FLAGS);
#else
	file = shmem_file_setup(name, NR_AFTER * PAGE_SIZE, 0);
#endif
	if (IS_ERR(file))
		return PTR_ERR(file);
	for (i = 0; i < NR_AFTER; i++) {
		pages[i] = shmem_read_mapping_page(file->f_mapping, i);
		if (IS_ERR(pages[i])) {
			while (i--)
				put_page(pages[i]);
			fput(file);
			return -ENOMEM;
		}
		memset(page_address(pages[i]), 'A' + i, PAGE_SIZE);
		set_page_dirty(pages[i]);
	}
	shmem_truncate_range(file_inode(file), 0, (loff_t)-1);
	fput(file);
	return 0;
}

/* runs in a kworker bound to one CPU: the per-CPU list freed to is the one allocated from */
static long plant_after_buffer(void *unused)
{
	struct page *pages[NR_AFTER];
	int try, i, err;

	for (try = 0; try < AFTER_TRIES; try++) {
		unsigned long buf = (unsigned long)alloc_pages_exact((NR_AFTER + 1) * PAGE_SIZE,
								     GFP_KERNEL | __GFP_MOVABLE);
		unsigned long first;
		bool after = true;

		if (!buf)
			return -ENOMEM;
		first = PFN_DOWN(__pa(buf));
		free_pages_exact((void *)(buf + PAGE_SIZE), NR_AFTER * PAGE_SIZE);
		err = released_pages(pages, "vmct-after-buffer");
		if (err) {
			free_page(buf);
			return err;
		}
		for (i = 0; i < NR_AFTER; i++)
			after &= page_to_pfn(pages[i]) > first && page_to_pfn(pages[i]) <= first + NR_AFTER;
		if (after) {
			exact_buffer = (void *)buf;
			drain_this_cpu();
			pr_info("vmct_released: owned pfn=%lu kind=exact-buffer\n", first);
			for (i = 0; i < NR_AFTER; i++)
				vmct_truth_leak(page_to_pfn(pages[i]), 0, page_ref_count(pages[i]),
						"released-after-buffer", ~0u);
			return 0;
		}
		for (i = 0; i < NR_AFTER; i++)
			put_page(pages[i]);
		free_page(buf);
	}
	pr_err("vmct_released: the released pages never landed right after the buffer\n");
	return -EAGAIN;
}

static struct page *anon_taken[NR_ANON];        /* until the helper is gone and they are recorded */
static int anon_count;
static struct page *anon_held[NR_ANON_HELD] __used;
static struct dentry *dir;

static ssize_t user_write(struct file *f, const char __user *buf, size_t len, loff_t *pos)
{
	unsigned long start = PAGE_ALIGN((unsigned long)buf);
	int n = 0, pinned;

	if (start + NR_ANON * PAGE_SIZE > (unsigned long)buf + len || anon_count)
		return -EINVAL;
	pinned = pin_user_pages_fast(start, NR_ANON_PINNED, FOLL_WRITE, anon_taken);
	if (pinned == NR_ANON_PINNED)
		n = get_user_pages_fast(start + NR_ANON_PINNED * PAGE_SIZE, NR_ANON - NR_ANON_PINNED,
					FOLL_WRITE, anon_taken + NR_ANON_PINNED);
	anon_count = pinned + max(n, 0);
	return len;
}

static const struct file_operations user_fops = {
	.owner = THIS_MODULE,
	.write = user_write,
};

static long drain(void *unused)
{
	drain_this_cpu();
	return 0;
}

/* a user process hands its anonymous buffer to user_write() and exits */
static int plant_anon(void)
{
	char *argv[] = { "/usr/bin/dd", "if=/dev/urandom", "of=/sys/kernel/debug/vmct_released/user",
			 "bs=65536", "count=1", "status=none", NULL };
	char *envp[] = { "PATH=/usr/bin:/bin", NULL };
	int cpu, i, err;

	dir = debugfs_create_dir("vmct_released", NULL);
	debugfs_create_file("user", 0200, dir, NULL, &user_fops);
	err = call_usermodehelper(argv[0], argv, envp, UMH_WAIT_PROC);
	if (err || anon_count != NR_ANON) {
		pr_err("vmct_released: the user helper failed (%d, %d pages)\n", err, anon_count);
		return -EIO;
	}
	/* the LRU batches that took the pages at fault time hold references */
	for_each_online_cpu(cpu)
		work_on_cpu(cpu, drain, NULL);
	for (i = 0; i < NR_ANON; i++) {
		if (i >= NR_ANON - NR_ANON_HELD) {
			anon_held[i - (NR_ANON - NR_ANON_HELD)] = anon_taken[i];
			pr_info("vmct_released: owned pfn=%lu kind=anon-held\n", page_to_pfn(anon_taken[i]));
		} else {
			vmct_truth_leak(page_to_pfn(anon_taken[i]), 0, page_ref_count(anon_taken[i]),
					i < NR_ANON_PINNED ? "anon-pinned" : "anon-released", ~0u);
		}
	}
	memzero_explicit(anon_taken, sizeof(anon_taken));      /* the lost ones keep no pointer */
	return 0;
}

/*
 * fn run on CPU 0 by the loading task itself, bound there meanwhile: what it
 * allocates is charged to that task's memory cgroup, where work_on_cpu()'s
 * kworker (no mm) would charge the root one.
 */
static long on_cpu0(long (*fn)(void *))
{
	cpumask_var_t was;
	long ret;

	if (!alloc_cpumask_var(&was, GFP_KERNEL))
		return -ENOMEM;
	cpumask_copy(was, current->cpus_ptr);
	ret = set_cpus_allowed_ptr(current, cpumask_of(0));
	if (!ret)
		ret = fn(NULL);
	set_cpus_allowed_ptr(current, was);
	free_cpumask_var(was);
	return ret;
}

static int __init vmct_released_init(void)
{
	int err;

	vmct_truth_init();
	err = on_cpu0(plant);
	err = err ?: on_cpu0(plant_after_buffer);
	return err ?: plant_anon();
}

static void __exit vmct_released_exit(void)
{
	debugfs_remove_recursive(dir);
	vmct_truth_exit();
}

module_init(vmct_released_init);
module_exit(vmct_released_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vmcore-tools test: page-cache pages released by their owner, still referenced");
