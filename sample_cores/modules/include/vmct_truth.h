/* SPDX-License-Identifier: GPL-2.0 */
/*
 * vmct_truth.h: a test module's complete record of the pages it lost.
 *
 * The kernel log is a ring buffer (128 KiB on Debian's kernels): once a
 * leak is large, its first lines are overwritten before the guest copies
 * the log.  So each lost page is recorded here, one line per page in the
 * log's own format, in a buffer of this module (vmalloc'd text: numbers,
 * no pointer, so a reference scan cannot take it for an owner), exposed as
 * /sys/kernel/debug/vmct_truth/<module>; the guest copies every such file
 * before the dump.  The line also goes to the log at KERN_DEBUG, which
 * reaches the ring buffer but not the serial console.
 *
 * Call vmct_truth_init() before the first leak and vmct_truth_exit() on
 * unload.
 */
#ifndef VMCT_TRUTH_H
#define VMCT_TRUTH_H

#include <linux/debugfs.h>
#include <linux/vmalloc.h>
#include <linux/mutex.h>
#include <linux/string.h>

static struct debugfs_blob_wrapper vmct_truth_blob;
static size_t vmct_truth_cap;
static struct dentry *vmct_truth_file;
static DEFINE_MUTEX(vmct_truth_lock);

static void vmct_truth_init(void)
{
	struct dentry *dir = debugfs_lookup("vmct_truth", NULL);

	if (!dir)
		dir = debugfs_create_dir("vmct_truth", NULL);
	else
		dput(dir);
	vmct_truth_file = debugfs_create_blob(KBUILD_MODNAME, 0444, dir, &vmct_truth_blob);
}

static void vmct_truth_exit(void)
{
	debugfs_remove(vmct_truth_file);
	vfree(vmct_truth_blob.data);
}

/* one line ("<module>: leaked pfn=... order=... refcount=... ring=...") */
static void vmct_truth_leak(unsigned long pfn, unsigned int order, int refcount, const char *ring,
			    unsigned int queue)
{
	char line[128];
	int n;

	if (queue == ~0u)
		n = scnprintf(line, sizeof(line), "%s: leaked pfn=%lu order=%u refcount=%d ring=%s\n",
			      KBUILD_MODNAME, pfn, order, refcount, ring);
	else
		n = scnprintf(line, sizeof(line), "%s: leaked pfn=%lu order=%u refcount=%d ring=%s/%u\n",
			      KBUILD_MODNAME, pfn, order, refcount, ring, queue);
	printk(KERN_DEBUG "%s", line);
	mutex_lock(&vmct_truth_lock);
	if (vmct_truth_blob.size + n > vmct_truth_cap) {
		size_t cap = max_t(size_t, 2 * vmct_truth_cap, 64 * 1024);
		char *grown = vmalloc(cap);

		if (!grown) {
			mutex_unlock(&vmct_truth_lock);
			pr_err("%s: truth record full: the record is incomplete\n", KBUILD_MODNAME);
			return;
		}
		if (vmct_truth_blob.data)
			memcpy(grown, vmct_truth_blob.data, vmct_truth_blob.size);
		vfree(vmct_truth_blob.data);
		vmct_truth_blob.data = grown;
		vmct_truth_cap = cap;
	}
	memcpy((char *)vmct_truth_blob.data + vmct_truth_blob.size, line, n);
	vmct_truth_blob.size += n;
	mutex_unlock(&vmct_truth_lock);
}

#endif
