/* SPDX-License-Identifier: GPL-2.0 */
/*
 * fake_rx.h: the rx ring replay shared by fake_ixgbe, fake_ixgbevf, fake_igc,
 * fake_ice and fake_iavf.
 *
 * Every one of these drivers keeps, per rx ring, `count` slots
 * { dma, page, page_offset, pagecnt_bias } and the indices next_to_use,
 * next_to_clean and next_to_alloc, and recycles a buffer as i40e does
 * (fake_i40e.c tells the story in full).  A driver file includes its
 * driver's own headers, defines
 *
 *   FAKE_RING          its rx ring type            (struct ixgbe_ring)
 *   FAKE_BUF           its rx slot type            (struct ixgbe_rx_buffer)
 *   FAKE_SLOTS         the ring's slot array       (rx_buffer_info)
 *   FAKE_QUEUE         the ring's queue number     (queue_index)
 *   fake_rx_pg_order(ring)        the driver's own page order helper
 *   fake_set_large(ring)          what makes the driver use order-1 pages
 *   FAKE_SLOT_SKB      (optional) the slot keeps the skb of a frame in progress
 *
 * and then includes this file.  Rings are filled, receive frames addressed
 * to their net device and lose pages as fake_i40e's do: a consumed slot that
 * is never recycled is overwritten by a later recycle into next_to_alloc.
 * Each lost page is recorded ("<module>: leaked pfn=...", vmct_truth.h), and each
 * ring's content once the replay is over ("<module>: ring dev=... pfn_sum=..."):
 * those lines are the ground truth, the module keeps no record of a lost page.
 *
 * There is no hardware: the net device's parent is a platform device bound
 * to a platform driver named after the real driver, and a slot's dma is the
 * page's physical address (what dma-direct would give).
 */
#ifndef FAKE_RX_H
#define FAKE_RX_H

#include <linux/module.h>
#include <linux/platform_device.h>
#include <linux/etherdevice.h>
#include <linux/skbuff.h>

#undef pr_fmt		/* the driver headers may have set their own */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt
#include "vmct_truth.h"

#define FAKE_HEADROOM (NET_SKB_PAD + NET_IP_ALIGN)

struct fake_plan {
	u16 count;
	u8 order;
	int leaks;		/* slots consumed without recycling */
	bool park;		/* leave a frame in progress in a slot (FAKE_SLOT_SKB) */
};

static int packets = 300;	/* frames received per ring before the leaks */
module_param(packets, int, 0444);

static const u8 fake_peer_mac[ETH_ALEN] = { 0x52, 0x54, 0x00, 0x65, 0x43, 0x21 };

static unsigned int fake_truesize(FAKE_RING *ring)
{
	return (PAGE_SIZE << fake_rx_pg_order(ring)) / 2;
}

static bool fake_alloc_page(FAKE_RING *ring, FAKE_BUF *bi)
{
	struct page *page;

	if (bi->page)
		return true;
	page = dev_alloc_pages(fake_rx_pg_order(ring));
	if (!page)
		return false;
	bi->dma = (dma_addr_t)page_to_phys(page);
	bi->page = page;
	bi->page_offset = FAKE_HEADROOM;
	page_ref_add(page, USHRT_MAX - 1);
	bi->pagecnt_bias = USHRT_MAX;
	return true;
}

static void fake_write_frame(FAKE_RING *ring, FAKE_BUF *bi)
{
	struct ethhdr *eth = page_address(bi->page) + bi->page_offset;

	memset(eth, 0, 128);
	ether_addr_copy(eth->h_dest, ring->netdev->dev_addr);
	ether_addr_copy(eth->h_source, fake_peer_mac);
	eth->h_proto = htons(ETH_P_IP);
	snprintf((char *)(eth + 1) + 28, 64, "vmcore-tools " KBUILD_MODNAME " frame");
}

/* The driver's reuse_rx_page(): the buffer moves to next_to_alloc; a page
 * still in that slot is overwritten, and lost. */
static void fake_reuse(FAKE_RING *ring, FAKE_BUF *old)
{
	FAKE_BUF *new = &ring->FAKE_SLOTS[ring->next_to_alloc];

	ring->next_to_alloc = (ring->next_to_alloc + 1) % ring->count;
	if (new->page && (new->page != old->page || new == old))    /* overwritten, or its own slot cleared */
		vmct_truth_leak(page_to_pfn(new->page), fake_rx_pg_order(ring), page_ref_count(new->page),
				netdev_name(ring->netdev), (unsigned int)ring->FAKE_QUEUE);
	new->dma = old->dma;
	new->page = old->page;
	new->page_offset = old->page_offset;
	new->pagecnt_bias = old->pagecnt_bias;
	old->page = NULL;
}

/* One frame at next_to_clean, handed to the stack and freed; the buffer
 * flips to its other half and is recycled; the slot at next_to_use refilled. */
static void fake_receive(FAKE_RING *ring)
{
	FAKE_BUF *bi = &ring->FAKE_SLOTS[ring->next_to_clean];

	if (bi->page) {
		fake_write_frame(ring, bi);
		bi->pagecnt_bias--;
		put_page(bi->page);
		bi->page_offset ^= fake_truesize(ring);
		fake_reuse(ring, bi);
	}
	ring->next_to_clean = (ring->next_to_clean + 1) % ring->count;
	fake_alloc_page(ring, &ring->FAKE_SLOTS[ring->next_to_use]);
	ring->next_to_use = (ring->next_to_use + 1) % ring->count;
}

#ifdef FAKE_SLOT_SKB
/*
 * A frame still being built: its first buffer left the ring (the page could
 * not be reused), the skb built on it waits in the next slot's skb (ixgbe's
 * ixgbe_is_non_eop(), ice before 6.1) and is the page's only holder.
 */
static void fake_park_in_slot(FAKE_RING *ring)
{
	u16 ntc = ring->next_to_clean;
	FAKE_BUF *bi = &ring->FAKE_SLOTS[ntc];
	struct page *page = bi->page;
	struct sk_buff *skb;
	u8 *va;

	if (!page)
		return;
	fake_write_frame(ring, bi);
	va = page_address(page) + bi->page_offset;
	bi->pagecnt_bias--;
	__page_frag_cache_drain(page, bi->pagecnt_bias);
	bi->page = NULL;
	skb = build_skb(va - FAKE_HEADROOM, fake_truesize(ring));
	if (!skb) {
		put_page(page);
		return;
	}
	skb_reserve(skb, FAKE_HEADROOM);
	__skb_put(skb, 128);
	ntc = (ntc + 1) % ring->count;
	ring->FAKE_SLOTS[ntc].skb = skb;
	ring->next_to_clean = ntc;
	pr_info("parked pfn=%lu order=%u refcount=%d kind=slot-skb ring=%s/%u\n",
		page_to_pfn(page), compound_order(page), page_ref_count(page),
		netdev_name(ring->netdev), (unsigned int)ring->FAKE_QUEUE);
}
#endif

static const struct fake_plan fake_plans[] = {
	{ .count = 128, .order = 0, .leaks = 3, .park = true },
	{ .count = 64, .order = 1, .leaks = 2 },
};

/* The rings fake_setup() made, for the traffic once the net device has its name. */
static FAKE_RING *fake_rings[ARRAY_SIZE(fake_plans)];

/* Set up a zeroed ring and fill all slots but one, as at ifup. */
static int fake_ring_init(FAKE_RING *ring, struct net_device *netdev, struct device *dev,
			  u16 q, const struct fake_plan *plan)
{
	u16 i;

	ring->netdev = netdev;
	ring->dev = dev;
	ring->FAKE_QUEUE = q;
	ring->count = plan->count;
	if (plan->order)
		fake_set_large(ring);
	ring->FAKE_SLOTS = kcalloc(ring->count, sizeof(FAKE_BUF), GFP_KERNEL);
	if (!ring->FAKE_SLOTS)
		return -ENOMEM;
	for (i = 0; i < ring->count - 1; i++)
		fake_alloc_page(ring, &ring->FAKE_SLOTS[i]);
	ring->next_to_use = ring->count - 1;
	ring->next_to_alloc = ring->count - 1;
	ring->next_to_clean = 0;
	fake_rings[q] = ring;
	return 0;
}

/* A ring of its own allocation (the drivers that keep pointers to rings;
 * iavf keeps its rings in one array). */
static __maybe_unused FAKE_RING *fake_ring_new(struct net_device *netdev, struct device *dev, u16 q,
				const struct fake_plan *plan)
{
	FAKE_RING *ring = kzalloc(sizeof(*ring), GFP_KERNEL);

	if (ring && fake_ring_init(ring, netdev, dev, q, plan)) {
		kfree(ring);
		return NULL;
	}
	return ring;
}

/* Traffic, the planted losses, a frame left in progress; then the ring's
 * content, as a sum of PFNs, for the walker to be checked against. */
static void fake_ring_traffic(FAKE_RING *ring, const struct fake_plan *plan)
{
	unsigned long pfn_sum = 0;
	u16 i, populated = 0;
	int n;

	for (n = 0; n < packets; n++)
		fake_receive(ring);
	for (n = 0; n < plan->leaks; n++) {
		ring->next_to_clean = (ring->next_to_clean + 1) % ring->count;
		fake_receive(ring);
		fake_receive(ring);
	}
	for (n = 0; n < 11; n++)
		fake_receive(ring);
#ifdef FAKE_SLOT_SKB
	if (plan->park)
		fake_park_in_slot(ring);
#endif
	for (i = 0; i < ring->count; i++) {
		if (ring->FAKE_SLOTS[i].page) {
			populated++;
			pfn_sum += page_to_pfn(ring->FAKE_SLOTS[i].page);
		}
	}
	pr_info("ring dev=%s queue=%u count=%u populated=%u pfn_sum=%lu\n",
		netdev_name(ring->netdev), (unsigned int)ring->FAKE_QUEUE, ring->count, populated,
		pfn_sum);
}

static void fake_ring_free(FAKE_RING *ring)
{
	u16 i;

	if (!ring || !ring->FAKE_SLOTS)
		return;
	for (i = 0; i < ring->count; i++) {
		FAKE_BUF *bi = &ring->FAKE_SLOTS[i];

#ifdef FAKE_SLOT_SKB
		if (bi->skb)
			dev_kfree_skb_any(bi->skb);
#endif
		if (bi->page)
			__page_frag_cache_drain(bi->page, bi->pagecnt_bias);
	}
	kfree(ring->FAKE_SLOTS);
	ring->FAKE_SLOTS = NULL;
}

static netdev_tx_t fake_xmit(struct sk_buff *skb, struct net_device *dev)
{
	dev_kfree_skb_any(skb);
	return NETDEV_TX_OK;
}

static const struct net_device_ops fake_netdev_ops = {
	.ndo_start_xmit = fake_xmit,
};

#ifdef FAKE_ADAPTER
/*
 * ixgbe, ixgbevf, igc: netdev_priv() is the driver's adapter, and its
 * rx_ring[] an array of pointers to the rings, num_rx_queues of them.
 */
#define FAKE_PRIV_SIZE sizeof(FAKE_ADAPTER)

static int fake_setup(struct net_device *netdev, struct device *dev,
		      const struct fake_plan *plans, u16 nplans)
{
	FAKE_ADAPTER *adapter = netdev_priv(netdev);
	u16 q;

	adapter->netdev = netdev;
	for (q = 0; q < nplans; q++) {
		FAKE_RING *ring = fake_ring_new(netdev, dev, q, &plans[q]);

		if (!ring)
			return -ENOMEM;
		adapter->rx_ring[q] = ring;
		adapter->num_rx_queues = q + 1;
	}
	return 0;
}

static void fake_teardown(struct net_device *netdev, u16 nplans)
{
	FAKE_ADAPTER *adapter = netdev_priv(netdev);
	int q;

	for (q = 0; q < adapter->num_rx_queues; q++) {
		fake_ring_free(adapter->rx_ring[q]);
		kfree(adapter->rx_ring[q]);
	}
}
#else
/* The driver file's part: set up its private structures around the rings
 * of `plans` in `netdev` (whose priv is the driver's, FAKE_PRIV_SIZE bytes),
 * each ring made by fake_ring_init(); and undo that. */
static int fake_setup(struct net_device *netdev, struct device *dev,
		      const struct fake_plan *plans, u16 nplans);
static void fake_teardown(struct net_device *netdev, u16 nplans);
#endif

static struct platform_device *fake_pdev;

static int fake_probe(struct platform_device *pdev)
{
	struct net_device *netdev;
	u8 mac[ETH_ALEN];
	int err;
	u16 q;

	netdev = alloc_etherdev_mq(FAKE_PRIV_SIZE, ARRAY_SIZE(fake_plans));
	if (!netdev)
		return -ENOMEM;
	netdev->netdev_ops = &fake_netdev_ops;
	SET_NETDEV_DEV(netdev, &pdev->dev);
	eth_random_addr(mac);
#ifdef HAVE_ETH_HW_ADDR_SET
	eth_hw_addr_set(netdev, mac);
#else
	memcpy(netdev->dev_addr, mac, ETH_ALEN);
#endif
	err = fake_setup(netdev, &pdev->dev, fake_plans, ARRAY_SIZE(fake_plans));
	if (!err)
		err = register_netdev(netdev);
	if (err) {
		fake_teardown(netdev, ARRAY_SIZE(fake_plans));
		free_netdev(netdev);
		return err;
	}
	platform_set_drvdata(pdev, netdev);
	for (q = 0; q < ARRAY_SIZE(fake_plans); q++)
		if (fake_rings[q])
			fake_ring_traffic(fake_rings[q], &fake_plans[q]);
	pr_info("%s ready\n", netdev_name(netdev));
	return 0;
}

static int fake_remove_netdev(struct platform_device *pdev)
{
	struct net_device *netdev = platform_get_drvdata(pdev);

	unregister_netdev(netdev);
	fake_teardown(netdev, ARRAY_SIZE(fake_plans));
	free_netdev(netdev);
	memset(fake_rings, 0, sizeof(fake_rings));
	return 0;
}

#if defined(HAVE_PLATFORM_REMOVE_NEW) || defined(HAVE_PLATFORM_REMOVE_VOID)
static void fake_remove(struct platform_device *pdev)
{
	fake_remove_netdev(pdev);
}
#ifdef HAVE_PLATFORM_REMOVE_NEW
#define FAKE_REMOVE .remove_new = fake_remove
#else
#define FAKE_REMOVE .remove = fake_remove
#endif
#else
#define FAKE_REMOVE .remove = fake_remove_netdev
#endif

static struct platform_driver fake_driver = {
	.driver = { .name = FAKE_DRIVER },
	.probe = fake_probe,
	FAKE_REMOVE,
};

static int __init fake_init(void)
{
	int err;

	vmct_truth_init();
	err = platform_driver_register(&fake_driver);

	if (err)
		goto out;
	fake_pdev = platform_device_register_simple(FAKE_DRIVER, -1, NULL, 0);
	if (IS_ERR(fake_pdev)) {
		platform_driver_unregister(&fake_driver);
		err = PTR_ERR(fake_pdev);
		goto out;
	}
	return 0;
out:
	vmct_truth_exit();
	return err;
}

static void __exit fake_exit(void)
{
	platform_device_unregister(fake_pdev);
	platform_driver_unregister(&fake_driver);
	vmct_truth_exit();
}

module_init(fake_init);
module_exit(fake_exit);
MODULE_LICENSE("GPL");

#endif /* FAKE_RX_H */
