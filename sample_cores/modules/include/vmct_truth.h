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
 * Once copied, the guest writes to /sys/kernel/debug/vmct_truth_release/
 * <module> and the record is freed: a production host has no such record,
 * and at the seed's scale it is tens of MiB of vmalloc that every reference
 * scan of the dump would read.  A page lost after that is an error.
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
static struct dentry *vmct_truth_file, *vmct_truth_release_file;
static bool vmct_truth_released;
static DEFINE_MUTEX(vmct_truth_lock);

/* the debugfs directory NAME, shared by every test module */
static struct dentry *vmct_truth_dir(const char *name)
{
	struct dentry *dir = debugfs_lookup(name, NULL);

	if (!dir)
		return debugfs_create_dir(name, NULL);
	dput(dir);
	return dir;
}

static ssize_t vmct_truth_release(struct file *file, const char __user *buf, size_t len, loff_t *pos)
{
	mutex_lock(&vmct_truth_lock);
	vfree(vmct_truth_blob.data);
	vmct_truth_blob.data = NULL;
	vmct_truth_blob.size = 0;
	vmct_truth_cap = 0;
	vmct_truth_released = true;
	mutex_unlock(&vmct_truth_lock);
	return len;
}

static const struct file_operations vmct_truth_release_fops = {
	.owner = THIS_MODULE,
	.write = vmct_truth_release,
};

static void vmct_truth_init(void)
{
	vmct_truth_file = debugfs_create_blob(KBUILD_MODNAME, 0444, vmct_truth_dir("vmct_truth"),
					      &vmct_truth_blob);
	vmct_truth_release_file = debugfs_create_file(KBUILD_MODNAME, 0200, vmct_truth_dir("vmct_truth_release"),
						      NULL, &vmct_truth_release_fops);
}

static void vmct_truth_exit(void)
{
	debugfs_remove(vmct_truth_release_file);
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
	if (vmct_truth_released) {
		mutex_unlock(&vmct_truth_lock);
		pr_err("%s: a page lost after the truth record was copied: the record is incomplete\n",
		       KBUILD_MODNAME);
		return;
	}
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
